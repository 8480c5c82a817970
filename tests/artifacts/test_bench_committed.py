"""The committed benchmark results: protocol, sigma0, seeds and tests of every summary, and the text written from them."""
import copy
import json
import re

import pytest

import syre
from repo import ROOT
from syre.bench import build_protocol, get_experiment
from syre.bench.arms import DECLARED_SIGMA0
from syre.bench.doc_blocks import anchor_format
from syre.bench.docs import blocks_in, check, documents, load
from syre.bench.ledger import last_completed
from syre.bench.protocol import digest, read_ledger

RESULTS = ROOT / "benchmarks" / "results"
#: Summaries of registered `syre bench` runs (benchmarks/results/pull-numbers is a script's summary, tested in
#: test_pull_numbers.py: it has no protocol).
SUMMARIES = sorted(p for p in RESULTS.glob("*/summary.json") if "protocol" in json.loads(p.read_text()))

#: Tests that hold by construction (experiment, arm cell, metric): they may be sanity checks, never primary.
BY_CONSTRUCTION = [("e1", "none", "min_separation"), ("e1", "wd", "min_separation"), ("e3", "none", "dead_started_dead"),
                   ("e3", "wd", "dead_started_dead"), ("e4", "wd", "min_symmetry"), ("e4", "dropout", "min_symmetry"),
                   ("e4", "wfix", "max_symmetry_on"), ("e0", "escape", "escape_vanilla.error"), ("e0", "trap", "trap_syre.measured")]
# E12's node-permutation equivariance holds for any parameters; E13's permuted network computes the same function and
# weight matching never lowers its objective.
BY_CONSTRUCTION += [("e12", a, "equiv_error") for a in ("none", "wd", "syre")] + [(
    "e13", a, m) for a in ("none", "wd", "syre", "syre_diff", "wfix") for m in ("perm_error", "match_gain")]
# Syre's own pull makes these hold: its weights near the random anchor have a random matrix's rank (E10), its anchors part the
# copies of a duplicated unit (E1) and move a started-dead coefficient (E3); E0's implementation identities check the code.
BY_CONSTRUCTION += [("e10", "syre", "qk_rank"), ("e1", "syre", "distinct_units"), ("e3", "syre", "dead_started_dead")]
BY_CONSTRUCTION += [("e0", c, m) for c, m in (("escape", "escape_syre.error"), ("escape", "escape_ar.error"),
                                              ("asymmetry", "asymmetry.error"),
                                              ("ridge", "ridge_coupled.error"), ("ridge", "ridge_attach.error"))]
BY_CONSTRUCTION += [("e0", "ridge", f"ridge_shift_s{s:g}.error") for s in (0.01, 0.1, 1.0)]

pytestmark = pytest.mark.skipif(not SUMMARIES, reason="no committed benchmark results")


@pytest.fixture(scope="module", params=[p.parent.name for p in SUMMARIES])
def summary(request):
    return json.loads((RESULTS / request.param / "summary.json").read_text())


def test_every_committed_summary_carries_its_registered_protocol(summary):
    pr = summary["protocol"]
    assert pr["hash"] == digest(pr["declaration"]), "the declaration does not hash to the stated hash"
    assert pr["registered"] is True and summary["quick"] is False
    ledger = read_ledger(ROOT / "benchmarks" / "protocols.json")
    entry = ledger[summary["experiment"]][str(pr["version"])]
    assert entry["hash"] == pr["hash"] and entry["declaration"] == pr["declaration"]
    # the code declares the same rules today: a rule changed after the run would need a new version and a rerun
    exp = get_experiment(summary["experiment"])
    assert exp.version == pr["version"]
    assert build_protocol(exp, exp.config()).hash() == pr["hash"], "the code's rules differ from the committed run's"


def _ledger_disagreements(summary, ledger):
    """What a summary and the latest completed run of its version in the ledger disagree on."""
    run = last_completed(ledger, summary["experiment"], summary["protocol"]["version"])
    if run is None:
        return ["the ledger lists no completed run of this version"]
    out = []
    trials = summary.get("rejudged", {})
    if run.get("trials_revision", run["revision"]) != trials.get("trials_revision", summary["environment"]["git_revision"]):
        out.append("revision")
    if trials and not (run["kind"] == "rejudged" and run["revision"] == trials["revision"] and run["from"] == trials["from"]):
        out.append("re-judgement")
    if summary.get("anchor_format") is not None and run["anchor_format"] != summary["anchor_format"]:
        out.append("anchor format")
    if anchor_format(summary) != run["anchor_format"]:
        out.append("the texts' anchor format label")
    return out


def test_the_ledger_lists_the_run_each_committed_summary_comes_from(summary):
    """The latest completed run of the summary's version is this summary's: same revision, same anchor format."""
    assert _ledger_disagreements(summary, read_ledger(ROOT / "benchmarks" / "protocols.json")) == []


def test_the_ledger_check_notices_another_revision_or_anchor_format():
    ledger = read_ledger(ROOT / "benchmarks" / "protocols.json")
    s = json.loads(SUMMARIES[0].read_text())
    run = last_completed(ledger, s["experiment"], s["protocol"]["version"])
    for key, value, what in (("revision", "0" * 40, "revision"), ("anchor_format", 7, "the texts' anchor format label")):
        changed = copy.deepcopy(ledger)
        done = [r for r in changed[s["experiment"]][str(s["protocol"]["version"])]["runs"] if r == run]
        done[-1][key if key != "revision" or "trials_revision" not in run else "trials_revision"] = value
        assert what in _ledger_disagreements(s, changed)


def test_the_default_arm_used_the_library_default_sigma0(summary):
    s0 = summary["sigma0"]
    # the library default when the committed runs ran; runs after the switch of the default to "match" record that one,
    # while their arm named syre stays the declared "lecun"
    assert s0["library_default"] in (DECLARED_SIGMA0, syre.DEFAULT_SIGMA0)
    arms = {a["name"]: a for a in summary["protocol"]["declaration"]["arms"]}
    if s0["library_default"] != DECLARED_SIGMA0 and arms.get("syre", {}).get("sigma0") == syre.DEFAULT_SIGMA0:
        # a run declared after the library default moved, at that default (E14): its syre arm is it
        assert arms["syre"]["sigma0"] == s0["arms"]["syre"]["spec"] == syre.DEFAULT_SIGMA0
        return
    if "syre" in arms:  # the arm named syre is that default (when E0-E13 ran), in the config and as run
        assert summary["config"]["sigma0"] == DECLARED_SIGMA0 and arms["syre"]["sigma0"] in (None, DECLARED_SIGMA0)
        if arms["syre"]["decay"] == "syre":  # (E4's methods are not decay arms: its syre method reads the config's sigma0)
            assert s0["arms"]["syre"]["spec"] == DECLARED_SIGMA0 and "library default" in s0["arms"]["syre"]["meaning"]


def test_selection_and_evaluation_seeds_are_disjoint_and_match_the_tests(summary):
    seeds = summary["seeds"]
    d = summary["protocol"]["declaration"]
    assert not set(seeds["selection"]) & set(seeds["evaluation"]) and seeds["evaluation"]
    assert seeds["evaluation"] == d["evaluation_seeds"] and seeds["selection"] == d["selection_seeds"]
    assert bool(seeds["selection"]) == bool(d["tuning"] or d["config"].get("selection_rule"))
    for t in summary["tests"]:
        assert t["n"] == len(seeds["evaluation"]), t["name"]
    for k, metrics in summary["arms"].items():
        assert all(v["n"] == len(seeds["evaluation"]) for v in metrics.values()), k


def test_only_tests_that_can_fail_are_primary(summary):
    declared = {t["name"]: t for t in summary["protocol"]["declaration"]["tests"]}
    assert [t["name"] for t in summary["tests"]] == list(declared)
    for t in summary["tests"]:
        assert t["role"] == declared[t["name"]]["role"] and t["family"] == declared[t["name"]]["family"]
        if t["role"] == "sanity":
            assert t["why"]
        if t["role"] == "primary":
            key = (summary["experiment"], t["a"].split("[")[0], t["metric"])
            assert key not in BY_CONSTRUCTION, f"{t['name']} holds by construction"
            assert t["b"] != t["a"] or t.get("metric_b") not in (None, t["metric"]), f"{t['name']} compares a cell with itself"
    assert any(t["role"] == "primary" for t in summary["tests"])
    for fam, key in (("shared", "supported"), ("tuned", "supported_tuned"), ("heldout", "default_survives")):
        prim = [t["passed"] for t in summary["tests"] if t["role"] == "primary" and t["family"] == fam]
        if key in summary and prim and summary["sanity_ok"]:
            want = False if False in prim else (None if None in prim else True)
            assert summary[key] is want, (fam, prim)


def test_results_md_and_plots_are_committed_beside_each_summary(summary):
    here = RESULTS / summary["experiment"]
    assert (here / "results.md").is_file() and summary["protocol"]["hash"] in (here / "results.md").read_text()
    for p in summary["plots"]:
        assert (here / p).is_file(), p


# ----------------------------------------------------------------------------- the text written from the results
def test_the_documents_say_what_the_committed_summaries_say():
    assert check(ROOT) == [], ("run `syre bench docs` (new committed results, a changed block generator, or a module "
                               "added, moved or resized: docs/layout.md)")


def test_the_check_notices_a_changed_number_or_verdict():
    S = load(ROOT)
    i = next(iter(S))
    changed = copy.deepcopy(S)
    changed[i]["supported"] = not changed[i]["supported"] if changed[i]["supported"] is not None else True
    key = next(iter(changed[i]["arms"]))
    metric = next(iter(changed[i]["arms"][key]))
    changed[i]["arms"][key][metric]["mean"] += 1.0
    assert check(ROOT, changed), "a changed verdict went unnoticed"


#: A program's output shown as it printed (the demo, an example): its numbers are that program's, not the benchmarks'.
PROGRAM_OUTPUT = re.compile(r"<!-- output of [^>]*: begin -->.*?<!-- output of [^>]*: end -->", re.S)


def test_outside_the_generated_blocks_the_documents_state_no_result():
    pattern = re.compile(r"±|\bp = 0\.|\(p = |\d+ of \d+ seeds|\d+/\d+ seeds")
    assert {"README.md", "docs/evidence.md", "docs/defaults.md", "benchmarks/README.md"} <= set(documents(ROOT))
    for rel in documents(ROOT):
        text = (ROOT / rel).read_text()
        for name, args, body in blocks_in(text):
            text = text.replace(body, "")
        text = PROGRAM_OUTPUT.sub("", text)
        hits = pattern.findall(text)
        assert not hits, f"{rel}: result-like text outside the generated blocks: {hits}"


def test_every_committed_experiment_has_its_account_in_the_documents():
    text = "\n".join((ROOT / rel).read_text() for rel in documents(ROOT))
    for p in SUMMARIES:
        i = p.parent.name
        assert f"bench:begin account {i}" in text, i
