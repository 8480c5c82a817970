"""E14 (loss of plasticity on random-label tasks): its quick run, its power statement, its checks of the input."""
import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from syre.bench import get_experiment, run_experiment
from syre.bench.e14 import ARMS14, LNMLP, plan, trial
from syre.bench.runner import build_protocol


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("e14")
    return out, run_experiment("e14", quick=True, out=out, verbose=False)


def test_quick_summary_records_plasticity_loss_and_power_per_primary_test(quick):
    out, s = quick
    cfg = s["config"]
    # plasticity_loss is no decay's drop from its first to its last tasks, as its trials measured it
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    none = [r for r in rows if r["phase"] == "evaluate" and r["arm"] == "none"]
    assert len(none) == len(s["seeds"]["evaluation"]) >= 2
    k = cfg["last_tasks"]
    drops = [sum(r["task_acc"][:k]) / k - sum(r["task_acc"][-k:]) / k for r in none]
    assert s["plasticity_loss"] == pytest.approx(sum(drops) / len(drops), abs=1e-12)
    assert s["arms"]["none"]["plasticity_loss"]["mean"] == pytest.approx(s["plasticity_loss"], abs=1e-12)
    for r in rows:
        assert len(r["task_acc"]) == len(r["task_online"]) == len(r["task_eff_rank"]) == cfg["tasks"]
        assert all(0.0 <= a <= 1.0 for a in r["task_acc"] + r["task_online"])
    # every primary test of every family has its power entry (a quick run has no pilot: power not estimated)
    prim = {t["name"]: t["family"] for t in s["tests"] if t["role"] == "primary"}
    assert {"shared", "tuned", "heldout"} == set(prim.values())
    per = s["protocol"]["power"]["tests"]
    assert set(per) == set(prim)
    assert all("power" in v and v["family"] == prim[name] for name, v in per.items())
    # the arms that were asked for, each tuned one with a tuned cell
    assert set(s["arms"]) == {"none", "wd", "syre", "syre@wd-gamma"} | {f"{a}@tuned" for a in ARMS14 if a != "none"}
    assert set(ARMS14) == {"none", "wd", "wd_ln", "l2init", "sp", "syre", "syre_ar", "syre_lecun", "syre_ar_lecun"}
    assert s["sigma0"]["arms"]["syre"]["spec"] == "match" and s["sigma0"]["arms"]["syre_lecun"]["spec"] == "lecun:1"
    assert "library default" not in s["sigma0"]["arms"]["syre_lecun"]["meaning"]  # "lecun" is no longer the default
    assert s["plots"] and all((out / p).is_file() for p in s["plots"])
    assert s["supported"] is None and s["supported_tuned"] is None  # quick runs never decide


def test_primary_tests_read_the_task_metric_and_compare_two_cells():
    exp = get_experiment("e14")
    d = exp.design(exp.config())
    prim = [t for t in d.tests if t.role == "primary"]
    assert prim and all(t.metric in ("acc_last", "acc_online") for t in prim)
    assert all(t.b is not None and t.b != t.a for t in prim)
    assert any(t.metric == "eff_rank_last" for t in d.tests)  # rank is reported, as a secondary test
    assert all(t.role == "secondary" for t in d.tests if t.metric == "eff_rank_last")


def test_power_is_stated_for_tuned_and_heldout_tests_from_a_pilot():
    exp = get_experiment("e14")
    d = exp.design(exp.config())
    prim = [t for t in d.tests if t.role == "primary"]
    # a pilot in which every primary statistic lies 1 sd toward its H1, except one that lies against it
    tests = {t.name: {"kind": "t", "mean": 0.01, "sd": 0.01, "n": 3, "threshold": 0.0, "direction": "greater"} for t in prim}
    against = prim[-1].name
    tests[against]["mean"] = -0.01
    p = plan({"seeds": [901, 902, 903], "tests": tests, "selection_seeds": [900], "plasticity_loss": 0.1}, d, exp, False)
    assert exp.n_min <= p["n"] <= exp.n_max
    for t in prim:
        v = p["tests"][t.name]
        assert v["family"] == t.family
        if t.name == against:
            assert v["power"] is None and "against H1" in v["note"]
        else:  # effect size 1: power at n is that of a one-sided t-test, well above alpha
            assert 0.8 <= v["power"] < 1.0
    assert p["pilot"]["plasticity_loss"] == 0.1


def test_the_full_protocol_states_power_for_every_primary_test():
    exp = get_experiment("e14")
    pr = build_protocol(exp, exp.config())
    prim = {t.name for t in pr.design.tests if t.role == "primary"}
    assert set(pr.power["tests"]) == prim
    assert exp.n_min <= len(pr.evaluation_seeds) <= exp.n_max


def test_layernorm_arm_normalises_every_hidden_layer():
    torch.manual_seed(0)
    net = LNMLP(6, 8, 2, 3)
    keep = []
    net(torch.randn(5, 6) * 10 + 3, keep)
    assert len(keep) == 2
    pre = net.norms[0](net.hidden[0](torch.randn(5, 6) * 10 + 3))
    assert torch.allclose(pre.mean(dim=1), torch.zeros(5), atol=1e-5)
    assert torch.allclose(pre.var(dim=1, unbiased=False), torch.ones(5), atol=1e-3)


def test_labels_are_shared_by_the_arms_and_fit_from_scratch_beats_chance():
    exp = get_experiment("e14")
    cfg = exp.config(quick=True, overrides={"tasks": 2, "epochs": 20})
    a, b = trial(cfg, ARMS14["none"], 3), trial(cfg, ARMS14["none"], 3)
    assert a["task_acc"] == b["task_acc"]  # seeded: the same trial twice gives the same numbers
    assert a["task_acc"][0] > 2.0 / cfg["classes"]  # 100 images, 20 epochs: the first labelling is fitted well above chance
    assert math.isfinite(a["eff_rank_last"]) and a["eff_rank_last"] >= 1.0


@pytest.mark.parametrize("key,value,match", [
    ("tasks", 1, "tasks"), ("last_tasks", 0, "last_tasks"), ("classes", 1, "classes"), ("lr", 0.0, "lr"),
    ("batch", 0, "batch"), ("arms", ["none", "adamw"], "arms"), ("sp_noise", -1.0, "sp_noise"),
    ("shared_arms", ["none", "adamw"], "shared_arms")])
def test_bad_configuration_is_refused_naming_the_key(key, value, match):
    exp = get_experiment("e14")
    cfg = exp.config(quick=True, overrides={key: value})
    with pytest.raises(ValueError, match=match):
        exp.design(cfg)
    with pytest.raises(ValueError, match=match):
        trial(cfg, ARMS14["wd"], 0)


# ----------------------------------------------------------------------------- the committed run and its text
ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "benchmarks" / "results" / "e14" / "summary.json"
committed = pytest.mark.skipif(not COMMITTED.is_file(), reason="E14's results are not committed yet")


@committed
def test_committed_run_loses_plasticity_and_states_power_for_every_primary_test():
    s = json.loads(COMMITTED.read_text())
    assert s["quick"] is False and s["protocol"]["registered"] is True
    assert s["plasticity_loss"] >= 0.05  # the stream is long enough: no decay loses at least 5 points
    assert s["plasticity_loss"] == pytest.approx(s["arms"]["none"]["plasticity_loss"]["mean"], abs=1e-12)
    per = s["protocol"]["power"]["tests"]
    prim = [t for t in s["tests"] if t["role"] == "primary"]
    assert {t["family"] for t in prim} == {"shared", "tuned", "heldout"}
    for t in prim:
        v = per[t["name"]]
        assert v["family"] == t["family"]
        assert (v["power"] is not None and 0.0 <= v["power"] <= 1.0) or "against H1" in v["note"], t["name"]
        assert t["metric"] in ("acc_last", "acc_online") and t["b"] != t["a"]
        # the label says what was tested (the held-out helper's non-inferiority label does not: its rule does)
        assert "accuracy" in t["name"] or t["metric"] in t["name"] or (t["family"] == "heldout" and t["metric"] in t["rule"]), t["name"]


@committed
def test_committed_text_of_e14_is_the_summarys():
    from syre.bench.docs import blocks_in, load, render

    text = (ROOT / "benchmarks" / "README_e14.md").read_text()
    s = json.loads(COMMITTED.read_text())
    bodies = {(name, args): body for name, args, body in blocks_in(text)}
    flat = " ".join  # generated prose is wrapped (tables are not): compare the words
    assert flat(bodies[("finding", "e14 headline")].split()).startswith(flat(s["findings"]["headline"].split()))
    assert bodies[("finding", "e14 table")].startswith(s["findings"]["table"])
    assert flat(bodies[("finding", "e14 power")].split()).startswith(flat(s["findings"]["power"].split()))
    assert render(text, load(ROOT)) == text  # every block as `syre bench docs` writes it
    for v in per_arm_numbers(s):
        assert v in text
    head = s["findings"]["headline"]  # where syre does not help comes first
    assert head.startswith("Where syre does not help") or not any(t["passed"] is False for t in s["tests"] if t["role"] == "primary")


def per_arm_numbers(s):
    """The late-task accuracy of every cell, as the interval table prints it."""
    from syre.bench import fmt

    return [fmt.num(v["acc_last"]["mean"]) for v in s["arms"].values()]
