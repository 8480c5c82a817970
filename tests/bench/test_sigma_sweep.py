"""The sigma-sweep study in quick mode: every experiment through its own trial, distances, pull ratios, side studies."""
import math

import pytest
import torch

from quick_runs import overrides, quick_run, records
from syre.bench import get_experiment, run_experiment
from syre.bench.arms import ARMS, apply_arm, capture
from syre.bench.studies import NormMLP, norm_sigma0

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

OVERRIDES = overrides("sigma-sweep")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    _, out, summary = quick_run("sigma-sweep", tmp_path_factory)  # the run test_quick_runs.py checks too
    return out, summary, records(out)


def test_quick_run_writes_the_run_directory(quick):
    out, summary, rows = quick
    assert summary["supported"] is None and summary["experiment"] == "sigma-sweep"
    assert {p.name for p in out.glob("*.png")} == set(summary["plots"]) == {"sigma_sweep.png", "sigma_sweep_pull.png"}
    assert summary["protocol"]["hash"] in (out / "results.md").read_text() and summary["seeds"]["selection"] == []
    assert {r["seed"] for r in rows} == {0, 1} == set(summary["seeds"]["evaluation"])  # the sweep's own seed range
    md = (out / "results.md").read_text()
    for heading in ("### e1: test_loss", "### e5: test_acc", "### 1-D parameters", "### d_spread"):
        assert heading in md
    assert "rule re-applied" in summary["findings"]


def test_scale_records_have_distance_and_pull_ratio(quick):
    out, summary, rows = quick
    cfg = get_experiment("sigma-sweep").config(quick=True, overrides=OVERRIDES)
    syre_rows = [r for r in rows if r["arm"].startswith("syre_")]
    assert len(syre_rows) == sum(len(cfg["gammas"][e]) for e in ("e1", "e5")) * len(cfg["scales"]) * 2
    for r in syre_rows:
        assert set(r["point"]) == {"experiment", "gamma"}
        assert r["dist_wd"] > 0 and r["pull_ratio"] > 0 and not any(isinstance(v, list) for v in r.values())
    assert all(r["dist_wd"] == 0.0 for r in rows if r["arm"] == "wd")
    assert {r["point"]["experiment"] for r in rows if r["arm"] == "none"} == {"e1", "e5"}
    # the pull grows in proportion to sigma0: same gamma and seed, scale hi vs lo -> ratio hi / lo
    lo, hi = min(cfg["scales"]), max(cfg["scales"])
    by = {(r["point"]["experiment"], r["point"]["gamma"], r["arm"], r["seed"]): r for r in syre_rows}
    for (e, g, arm, seed), r in by.items():
        if arm == f"syre_{lo:g}x":
            big = by[(e, g, f"syre_{hi:g}x", seed)]
            assert big["pull_ratio"] / r["pull_ratio"] == pytest.approx(hi / lo, rel=0.05)
            assert big["dist_wd"] > r["dist_wd"]  # a larger anchor moves the weights further from weight decay's


def test_the_sweep_runs_the_experiments_own_trials_on_the_validation_split():
    from syre.bench.sigma_sweep import _target_cfg

    cfg = get_experiment("sigma-sweep").config()
    t = _target_cfg({**cfg, "gamma": 10.0}, "e5")
    assert t["eval_split"] == "val" and t["dataset"] == "fashion" and t["gamma"] == 10.0
    assert {k: v for k, v in t.items() if k not in ("eval_split", "dataset", "gamma")} == {
        k: v for k, v in get_experiment("e5").config().items() if k not in ("eval_split", "dataset", "gamma")}


def test_norm_and_spread_records(quick):
    out, summary, rows = quick
    assert {r["arm"] for r in rows if r["arm"].startswith("norm:")} == {"norm:none", "norm:wd", "norm:unit", "norm:one"}
    for r in rows:
        if r["arm"].startswith("norm:"):
            assert 0.0 <= r["dead_units"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0
    trap = {r["point"]["d_spread"]: r["mirror_distance"] for r in rows if r["arm"] == "trap"}
    assert trap[0.0] < 1e-12 < 1e-6 < trap[0.1]  # basic syre stays on the rotation mirror, AR leaves it
    assert {r["point"]["d_spread"] for r in rows if r["arm"] == "spread"} == {0.0, 0.1}


def test_norm_rules_give_the_documented_sigma0():
    net = NormMLP(10, 16, 2, 3)
    for rule, want in (("origin", 0.0), ("unit", 0.5 * 0.01), ("width", 0.5 / 4), ("one", 0.5)):
        f = norm_sigma0(rule, net, 0.5)
        assert f("norms.0.weight", None) == pytest.approx(want) and f("norms.1.bias", None) == pytest.approx(want)
        assert f("lins.0.weight", None) == pytest.approx(0.5 / math.sqrt(10))
    f = norm_sigma0("bias-origin", net, 0.5)
    assert f("lins.1.bias", None) == 0.0 and f("lins.1.weight", None) == pytest.approx(0.5 / 4)


def test_capture_sees_the_models_of_a_trial():
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with capture() as seen:
        h = apply_arm(ARMS["syre"], net, torch.optim.SGD(net.parameters(), lr=0.1), gamma=0.1, seed=0)
    assert seen == [(net, h)]
    apply_arm(ARMS["wd"], net, torch.optim.SGD(net.parameters(), lr=0.1), gamma=0.1, seed=0)
    assert len(seen) == 1  # nothing recorded outside the block


def test_bad_configuration_is_refused(tmp_path):
    for over, text in (({"parts": ["scales"]}, "Invalid parts"), ({"scales": [0.0]}, "Invalid scales"),
                       ({"parts": ["norm"], "norm_rules": ["fanin"]}, "Invalid norm_rules"),
                       ({"experiments": ["e0"]}, "declares no perf/rank metric"), ({"gammas": {}}, "Invalid gammas")):
        with pytest.raises(ValueError, match=text):
            run_experiment("sigma-sweep", quick=True, out=tmp_path / "x", verbose=False, overrides=over)
