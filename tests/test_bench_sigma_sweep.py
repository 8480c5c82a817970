"""The sigma-sweep study in quick mode: run directory, records and their fields."""
import json
import math

import pytest
import torch

from syre.anchors import DEFAULT_SIGMA0_SCALE
from syre.bench import get_experiment, run_experiment
from syre.bench.arms import ARMS, apply_arm, capture
from syre.bench.sigma_sweep import available, norm_sigma0, NormMLP

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

OVERRIDES = {
    "parts": ["scale", "norm", "spread"],
    "experiments": ["e1", "e5", "not-an-experiment"],
    "settings": {"e1": {"steps": 100, "n_train": 64, "n_test": 128},
                 "e5": {"datasets": ["digits"], "epochs": {"fashion": 1, "digits": 1}, "width": 32, "n_rank": 100}},
    "n_train": 300,
    "n_test": 200,
    "n_rank": 100,
    "trap_steps": 100,
}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("sigma-sweep")
    summary = run_experiment("sigma-sweep", quick=True, out=out, verbose=False, overrides=OVERRIDES)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, summary, rows


def test_quick_run_writes_the_run_directory(quick):
    out, summary, rows = quick
    for f in ("config.json", "command.txt", "environment.json", "metrics.jsonl", "summary.json", "results.md",
              "sigma_sweep.png", "sigma_sweep_pull.png"):
        assert (out / f).is_file(), f
    assert summary["supported"] is None and summary["experiment"] == "sigma-sweep"
    assert {r["seed"] for r in rows} == {0, 1}
    md = (out / "results.md").read_text()
    for heading in ("### e1: test_loss", "### e5: test_acc", "### 1-D parameters", "### d_spread"):
        assert heading in md
    assert any("skipped" in n and "not-an-experiment" in n for n in summary["notes"])


def test_scale_records_have_distance_and_pull_ratio(quick):
    out, summary, rows = quick
    cfg = get_experiment("sigma-sweep").config(quick=True, overrides=OVERRIDES)
    syre_rows = [r for r in rows if r["arm"] == "syre"]
    # every experiment x gamma x scale x seed
    want = sum(len(cfg["gammas"][e]) for e in ("e1", "e5")) * len(cfg["scales"]) * 2
    assert len(syre_rows) == want
    for r in syre_rows:
        assert set(r["point"]) == {"experiment", "gamma", "scale"}
        assert r["dist_wd"] > 0 and r["pull_ratio"] > 0 and not any(isinstance(v, list) for v in r.values())
    wd = [r for r in rows if r["arm"] == "wd"]
    assert wd and all(r["dist_wd"] == 0.0 for r in wd)
    assert {r["point"]["experiment"] for r in rows if r["arm"] == "none"} == {"e1", "e5"}
    # the pull grows in proportion to sigma0: same gamma and seed, scale hi vs lo -> ratio hi / lo
    lo_s, hi_s = min(cfg["scales"]), max(cfg["scales"])
    assert hi_s / lo_s >= 10
    by = {(r["point"]["experiment"], r["point"]["gamma"], r["point"]["scale"], r["seed"]): r["pull_ratio"] for r in syre_rows}
    for (e, g, s, seed), v in by.items():
        if s == lo_s:
            assert by[(e, g, hi_s, seed)] / v == pytest.approx(hi_s / lo_s, rel=0.05)
    # a larger anchor moves the trained weights further from weight decay's
    for e in ("e1", "e5"):
        lo = [r["dist_wd"] for r in syre_rows if r["point"]["experiment"] == e and r["point"]["scale"] == lo_s]
        hi = [r["dist_wd"] for r in syre_rows if r["point"]["experiment"] == e and r["point"]["scale"] == hi_s]
        assert sum(hi) > sum(lo)


def test_norm_and_spread_records(quick):
    out, summary, rows = quick
    rules = {r["arm"] for r in rows if r["arm"].startswith("norm:")}
    assert rules == {"norm:none", "norm:wd", "norm:unit", "norm:one"}
    for r in rows:
        if r["arm"].startswith("norm:"):
            assert 0.0 <= r["dead_units"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0
    trap = {r["point"]["d_spread"]: r["mirror_distance"] for r in rows if r["arm"] == "trap"}
    assert trap[0.0] < 1e-12 < 1e-6 < trap[0.1]  # basic syre stays on the rotation mirror, AR leaves it
    assert {r["point"]["d_spread"] for r in rows if r["arm"] == "spread"} == {0.0, 0.1}
    names = [t["name"] for t in summary["tests"]]
    assert any(f"no significant harm at the default scale {DEFAULT_SIGMA0_SCALE:g}" in n for n in names)


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
                       ({"parts": ["spread"], "spreads": [1.0]}, "Invalid spreads")):
        with pytest.raises(ValueError, match=text):
            run_experiment("sigma-sweep", quick=True, out=tmp_path / "x", verbose=False, overrides=over)
    assert available(["e1", "e99", "sigma-sweep"]) == ["e1", "sigma-sweep"]
