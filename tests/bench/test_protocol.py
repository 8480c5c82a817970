"""Pre-registration: declarations and their hashes, the ledger, the power rule, the tests' statistics."""
import copy
import json

import numpy as np
import pytest

from syre.bench import build_protocol, cell, get_experiment, heldout, power, stats
from syre.bench.protocol import SEED_BASE, Design, Test, Tuning, digest, register, seeds_for
from syre.bench.registry import experiment_ids

scipy_stats = pytest.importorskip("scipy.stats")


# ----------------------------------------------------------------------------- declarations and hashes
def test_every_experiment_declares_a_protocol_with_disjoint_seeds_and_reasons_for_its_sanity_checks():
    for i in experiment_ids():
        exp = get_experiment(i)
        p = build_protocol(exp, exp.config())
        d = p.declaration()
        assert d["experiment"] == i and d["version"] >= 1 and d["claim"] == exp.claim
        assert not set(d["evaluation_seeds"]) & set(d["selection_seeds"])
        assert len(d["evaluation_seeds"]) == d["power"]["n"] >= exp.n_min
        assert all(t["why"] for t in d["tests"] if t["role"] == "sanity")
        assert any(t["role"] == "primary" for t in d["tests"]), i
        cells = set(d["cells"])
        for t in d["tests"]:  # every test compares cells the run trains
            assert t["a"] in cells and (t["b"] is None or t["b"] in cells), (i, t["name"])
        if exp.heldout:
            assert any(t["family"] == "heldout" and t["role"] == "primary" for t in d["tests"]), i
        assert p.hash() == digest(json.loads(json.dumps(d)))  # stable through a JSON round trip


def test_a_changed_rule_changes_the_hash():
    exp = get_experiment("e3")
    base = build_protocol(exp, exp.config()).hash()
    assert build_protocol(exp, exp.config()).hash() == base
    assert build_protocol(exp, exp.config(overrides={"dead_tol": 1e-4})).hash() != base  # a threshold of a metric
    assert build_protocol(exp, exp.config(overrides={"tune_gammas": [0.01, 0.1]})).hash() != base  # the tuning grid
    assert build_protocol(exp, exp.config(), seeds=7).hash() != base  # the seeds


def test_the_ledger_registers_once_and_refuses_changed_rules(tmp_path):
    exp = get_experiment("e3")
    ledger = tmp_path / "protocols.json"
    p = build_protocol(exp, exp.config(), version=1)
    entry = register(p, ledger)
    assert entry["hash"] == p.hash() and json.loads(ledger.read_text())["e3"]["1"]["declaration"] == p.declaration()
    assert register(p, ledger)["registered"] == entry["registered"]  # a rerun of the same rules
    changed = build_protocol(exp, exp.config(overrides={"dead_tol": 1e-4}), version=1)
    with pytest.raises(ValueError, match="a rule changed after a run.*VERSION = 2"):
        register(changed, ledger)
    changed.version = 2
    assert register(changed, ledger)["hash"] == changed.hash()
    p.version = 1
    with pytest.raises(ValueError, match="version 2 is registered"):
        p.version = 0
        register(p, ledger)


def test_seed_ranges_never_overlap():
    ranges = [set(seeds_for(u, 100)) for u in SEED_BASE]
    assert all(not (a & b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    with pytest.raises(ValueError, match="0 to 100"):
        seeds_for("evaluation", 101)


def test_test_and_tuning_declarations_are_validated():
    with pytest.raises(ValueError, match="must say why"):
        Test("x", "m", cell("a"), role="sanity")
    with pytest.raises(ValueError, match="Invalid test direction"):
        Test("x", "m", cell("a"), direction="up")
    with pytest.raises(ValueError, match="Invalid tuning gammas"):
        Tuning(metric="m", better="max", arms=("wd",), gammas=(0.0,), sigma0s=())


# ----------------------------------------------------------------------------- statistics
def test_paired_t_tests_are_scipys():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 6), rng.normal(0.0, 1.0, 6)
    r = stats.evaluate(Test("x", "m", cell("a"), cell("b")), a, b)
    ref = scipy_stats.ttest_rel(a, b, alternative="greater")
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-12) and r["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    # non-inferiority by a margin: a plain test on a + margin
    ni = stats.evaluate(Test("x", "m", cell("a"), cell("b"), threshold=-0.5), a, b)
    assert ni["p"] == pytest.approx(scipy_stats.ttest_rel(a + 0.5, b, alternative="greater").pvalue, rel=1e-12)
    # a ratio: x = a - 0.9 b
    rt = stats.evaluate(Test("x", "m", cell("a"), cell("b"), ratio=0.9, direction="less"), a, b)
    assert rt["p"] == pytest.approx(scipy_stats.ttest_1samp(a - 0.9 * b, 0.0, alternative="less").pvalue, rel=1e-12)


def test_tests_need_three_seeds_pair_by_seed_and_decide_zero_variance_by_sign():
    t = Test("x", "m", cell("a"), cell("b"))
    assert stats.evaluate(t, [1, 2], [0, 1])["passed"] is None
    same = stats.evaluate(t, [2, 3, 4], [1, 2, 3])  # differences all exactly 1
    assert same["passed"] is True and same["p"] == 0.0
    assert stats.evaluate(t, [1, 2, 3], [1, 2, 3])["passed"] is False
    assert stats.evaluate(t, [1, 2, 3], [1, 2, 3], seeds_a=[1, 2, 3], seeds_b=[1, 2, 4])["passed"] is None
    bound = Test("x", "m", cell("a"), kind="bound", threshold=0.15, direction="less")
    assert stats.evaluate(bound, [0.1, 0.2, 0.1])["passed"] is False
    assert stats.evaluate(bound, [0.1, 0.15, 0.1])["passed"] is True and stats.evaluate(bound, [0.1, 0.15, 0.1])["holds_in"] == 3


def test_verdicts_are_over_primary_tests_of_a_family():
    ok = {"role": "primary", "family": "shared", "passed": True}
    bad = dict(ok, passed=False)
    und = dict(ok, passed=None)
    sec = dict(bad, role="secondary")
    assert stats.verdict([ok, sec], "shared") is True
    assert stats.verdict([ok, bad], "shared") is False and stats.verdict([und, bad], "shared") is False
    assert stats.verdict([ok, und], "shared") is None and stats.verdict([ok], "tuned") is None
    assert stats.sanity_ok([dict(ok, role="sanity")]) and not stats.sanity_ok([dict(bad, role="sanity")])


# ----------------------------------------------------------------------------- power
def test_power_matches_a_simulation_and_the_plan_picks_the_smallest_n():
    rng = np.random.default_rng(1)
    n, eff, sd = 6, 0.8, 1.0
    sims = rng.normal(eff, sd, size=(20000, n))
    rej = np.mean(scipy_stats.ttest_1samp(sims, 0.0, axis=1, alternative="greater").pvalue < 0.05)
    assert power.power_t(eff, sd, n) == pytest.approx(rej, abs=0.01)
    tests = [Test("big", "m", cell("a"), cell("b")), Test("small", "m", cell("a"), cell("b")),
             Test("against", "m", cell("a"), cell("b")), Test("bound", "m", cell("a"), kind="bound")]
    pilot = {"seeds": [900, 901, 902], "tests": {
        "big": {"kind": "t", "mean": 2.0, "sd": 1.0, "n": 3, "threshold": 0.0, "direction": "greater"},
        "small": {"kind": "t", "mean": 0.6, "sd": 1.0, "n": 3, "threshold": 0.0, "direction": "greater"},
        "against": {"kind": "t", "mean": -1.0, "sd": 1.0, "n": 3, "threshold": 0.0, "direction": "greater"},
        "bound": {"kind": "bound", "mean": 1.0, "sd": 0.0, "n": 3, "threshold": 0.0, "direction": "greater", "holds_in": 3}}}
    p = power.plan(pilot, tests, n_min=3, n_max=40)
    n = p["n"]
    assert power.power_t(0.6, 1.0, n) >= 0.8 > power.power_t(0.6, 1.0, n - 1)
    assert p["tests"]["against"]["power"] is None and "against H1" in p["tests"]["against"]["note"]
    assert p["tests"]["bound"]["pilot_holds_in"] == 3 and p["powered"] == ["big", "small"]
    capped = power.plan(pilot, tests, n_min=3, n_max=5)
    assert capped["n"] == 5 and "small" in capped["statement"]
    assert power.plan(None, tests, n_min=4, n_max=9)["n"] == 4


# ----------------------------------------------------------------------------- held-out aggregation
def test_heldout_verdict_across_experiments():
    def s(exp, survives, failed=()):
        tests = [{"family": "heldout", "role": "primary", "passed": n not in failed, "name": n} for n in ("h1", "h2")]
        return {"experiment": exp, "default_survives": survives, "tests": tests}

    assert heldout.verdict([s("e5", True), s("e6", True), {"experiment": "e1", "tests": []}]) == {
        "experiments": ["e5", "e6"], "survives": True, "failed": {}, "better_scales": {}}
    v = heldout.verdict([s("e5", True), s("e6", False, failed=("h2",))])
    assert v["survives"] is False and v["failed"] == {"e6": ["h2"]}
    assert heldout.verdict([s("e5", None), s("e6", True)])["survives"] is None
    assert heldout.verdict([])["survives"] is None


def test_heldout_tests_are_declared_for_both_directions_of_the_metric():
    at = lambda a: cell(a, gamma=10.0)  # noqa: E731
    here = lambda n: cell(n)  # noqa: E731
    up = heldout.tests("x", at, here, perf="acc", rank="r", better="max", margin=0.01, tuned_arms=("wd", "syre"))
    down = heldout.tests("x", at, here, perf="loss", rank="r", better="min", margin=0.02, tuned_arms=("wd", "syre"))
    ni_up = [t for t in up if "not worse" in t.name][0]
    ni_down = [t for t in down if "not worse" in t.name][0]
    assert (ni_up.direction, ni_up.threshold, ni_up.ratio) == ("greater", -0.01, 1.0)
    assert (ni_down.direction, ni_down.threshold, ni_down.ratio) == ("less", 0.0, 1.02)
    assert heldout.tests("x", at, here, perf="acc", rank="r", better="max", margin=0.01, tuned_arms=("wd",)) == []
    assert copy.deepcopy(up) == up


def test_a_test_key_is_what_reports_read_and_no_part_of_the_rules():
    from syre.bench.protocol import Protocol

    a = Test("syre beats wd", "acc", cell("syre"), cell("wd"))
    b = Test("syre beats wd", "acc", cell("syre"), cell("wd"), key="collapse.syre_perf")
    assert a.declaration() == b.declaration() and "key" not in b.declaration()
    design = Design(arms=[], cells=[cell("syre"), cell("wd")],
                    tests=[b, Test("syre beats none", "acc", cell("syre"), cell("none"), key="collapse.syre_perf")])
    with pytest.raises(ValueError, match="test keys must be unique, repeated: \\['collapse.syre_perf'\\]"):
        Protocol(experiment="x", version=1, changes="", claim="", design=design, evaluation_seeds=[100], selection_seeds=[], power={},
                 config={})


@pytest.mark.parametrize("exp_id", ["e10", "e11", "e12"])
def test_the_gamma_sweeps_key_the_tests_their_reports_read(exp_id):
    """E10-E12 declare their tests with keys through one design helper (syre.bench.gsweep) and report by those keys."""
    import inspect

    from syre.bench import gsweep

    exp = get_experiment(exp_id)
    design = build_protocol(exp, exp.config()).design
    keys = {t.key for t in design.tests if t.key}
    assert {"cost", "collapse.syre_perf", "tuned.wd", "tuned.none"} <= keys | {k.split("@")[0] + "." + k.split(".")[-1]
                                                                               for k in keys if k.startswith("collapse@")}
    src = inspect.getsource(exp.report)
    assert "weight decay's" not in src, "the report re-spells a test name instead of reading its key"
    assert inspect.getsource(exp.design).count("Sweep(") == 1 and gsweep.Sweep.tuned_tests
