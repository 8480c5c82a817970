"""The benchmark harness: configuration, statistics, arms, run directory and command line."""
import argparse
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from syre.bench import Experiment, run_experiment
from syre.bench import cli as bench_cli
from syre.bench import stats
from syre.anchors import DEFAULT_SIGMA0_SCALE
from syre.bench.arms import ARMS, apply_arm, arms, dropout_rate, sigma0_label, sigma0_values
from syre.bench.registry import experiment_ids, get_experiment

scipy_stats = pytest.importorskip("scipy.stats")


# ----------------------------------------------------------------------------- configuration
def test_registry_lists_e0_to_e5_and_rejects_unknown_ids():
    assert experiment_ids()[:6] == ["e0", "e1", "e2", "e3", "e4", "e5"]
    with pytest.raises(ValueError, match="Invalid experiment id: 'e99'"):
        get_experiment("e99")


def test_config_overrides_are_checked_and_coerced():
    exp = get_experiment("e1")
    cfg = exp.config(quick=True, overrides={"steps": 10.0, "gamma": 1, "sigma0": "rel:1.0"})
    assert cfg["steps"] == 10 and isinstance(cfg["steps"], int)
    assert cfg["gamma"] == 1.0 and isinstance(cfg["gamma"], float)
    assert cfg["sigma0"] == "rel:1.0"
    assert cfg["n_test"] == exp.quick["n_test"] != exp.defaults["n_test"]
    with pytest.raises(ValueError, match="Invalid configuration key for e1: 'stepz'"):
        exp.config(overrides={"stepz": 1})
    with pytest.raises(ValueError, match="Invalid value for steps: 1.5; expected an int"):
        exp.config(overrides={"steps": 1.5})
    with pytest.raises(ValueError, match="expected a list"):
        exp.config(overrides={"arms": "wd"})


def test_parse_set_reads_json_and_falls_back_to_strings():
    assert bench_cli.parse_set(["a=1", "b=[1, 2]", "c=rel:1.0", 'd="x"', "e=true"]) == {
        "a": 1, "b": [1, 2], "c": "rel:1.0", "d": "x", "e": True}
    with pytest.raises(ValueError, match="expected key=value"):
        bench_cli.parse_set(["gamma"])


# ----------------------------------------------------------------------------- statistics
def test_paired_and_welch_tests_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 6), rng.normal(0.0, 1.0, 6)
    t = stats.compare("x", a, b, metric="m", arms=["a", "b"], alternative="greater")
    ref = scipy_stats.ttest_rel(a, b, alternative="greater")
    assert t["p"] == pytest.approx(ref.pvalue, rel=1e-10) and t["statistic"] == pytest.approx(ref.statistic, rel=1e-10)
    w = stats.compare("x", a, b, metric="m", arms=["a", "b"], alternative="less", paired=False)
    ref = scipy_stats.ttest_ind(a, b, equal_var=False, alternative="less")
    assert w["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    # a margin shifts the null: non-inferiority by 0.5 equals a plain test on a + 0.5
    ni = stats.compare("x", a, b, metric="m", arms=["a", "b"], margin=-0.5)
    assert ni["p"] == pytest.approx(scipy_stats.ttest_rel(a + 0.5, b, alternative="greater").pvalue, rel=1e-10)


def test_tests_need_three_seeds_and_decide_zero_variance_by_sign():
    assert stats.compare("x", [1, 2], [0, 1], metric="m", arms=["a", "b"])["passed"] is None
    same = stats.compare("x", [2, 3, 4], [1, 2, 3], metric="m", arms=["a", "b"])  # differences all exactly 1
    assert same["passed"] is True and same["p"] == 0.0
    assert stats.compare("x", [1, 2, 3], [1, 2, 3], metric="m", arms=["a", "b"])["passed"] is False
    assert stats.seedwise("x", [2, 3, 1], [1, 2, 0.5], metric="m", arms=["a", "b"])["passed"] is True
    assert stats.seedwise("x", [2, 3, 1], [1, 2, 1.5], metric="m", arms=["a", "b"])["passed"] is False
    assert stats.within("x", [0.1, 0.2], metric="m", high=0.15)["passed"] is False
    assert stats.within("x", [0.1, 0.2], metric="m", low=0.1, high=0.2)["passed"] is True


def test_all_passed_ignores_secondary_tests_and_is_none_when_undecided():
    ok, bad, undecided = {"passed": True}, {"passed": False}, {"passed": None}
    assert stats.all_passed([ok, stats.secondary(dict(bad))]) is True
    assert stats.all_passed([ok, bad]) is False
    assert stats.all_passed([ok, undecided]) is None
    assert stats.all_passed([]) is None


# ----------------------------------------------------------------------------- arms
def _net(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net


def _steps(net, opt, n=3):
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    for _ in range(n):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()


def test_weight_decay_arm_is_adamw_weight_decay_bitwise():
    a, b = _net(), _net()
    opt_a = torch.optim.AdamW(a.parameters(), lr=0.01, weight_decay=0.3)
    opt_b = torch.optim.AdamW(b.parameters(), lr=0.01, weight_decay=0.0)
    apply_arm(ARMS["wd"], b, opt_b, gamma=0.3, seed=0)
    _steps(a, opt_a)
    _steps(b, opt_b)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_arm_rejects_an_optimizer_that_already_decays():
    net = _net()
    with pytest.raises(ValueError, match="weight_decay=0.1"):
        apply_arm(ARMS["syre"], net, torch.optim.AdamW(net.parameters(), weight_decay=0.1), gamma=0.1, seed=0)


def test_relative_sigma0_is_a_multiple_of_the_lecun_init_std():
    net = _net()
    vals = sigma0_values("rel:2.0", net)
    assert vals["0.weight"] == pytest.approx(2.0 / math.sqrt(6)) and vals["2.bias"] == pytest.approx(2.0 / math.sqrt(5))
    assert sigma0_values(f"rel:{DEFAULT_SIGMA0_SCALE}", net) == pytest.approx(sigma0_values("lecun", net))
    assert sigma0_values("rel:0.3", net) == pytest.approx(sigma0_values("lecun:0.3", net))
    assert sigma0_values(0.3, net)["0.weight"] == 0.3 == sigma0_values("abs:0.3", net)["2.weight"]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    h = apply_arm(ARMS["syre_big"], net, opt, gamma=0.1, seed=0, cfg={"sigma0_big": "rel:2.0"})
    cov = {r["name"]: r["sigma0"] for r in h.syre.coverage()}
    assert cov["0.weight"] == pytest.approx(2.0 / math.sqrt(6))
    for bad in ("rel:x", "big", -1.0, True):
        with pytest.raises(ValueError, match="Invalid sigma0"):
            sigma0_label(bad)


def test_syre_ar_arm_takes_d_spread_from_the_config_and_basic_has_none():
    net = _net()
    h = apply_arm(ARMS["syre_ar"], net, torch.optim.SGD(net.parameters(), lr=0.1), gamma=0.1, seed=0, cfg={"d_spread": 0.25})
    assert h.syre.d_spread == 0.25
    net = _net()
    h = apply_arm(ARMS["syre"], net, torch.optim.SGD(net.parameters(), lr=0.1), gamma=0.1, seed=0, cfg={"d_spread": 0.25})
    assert h.syre.d_spread == 0.0


def test_l2init_decays_toward_the_initial_weights():
    net = _net()
    init = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    apply_arm(ARMS["l2init"], net, opt, gamma=0.4, seed=0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    moved = [p.detach().clone() for p in net.parameters()]
    opt.zero_grad()
    (0.0 * sum(p.sum() for p in net.parameters())).backward()  # zero gradients: only the decay acts
    opt.step()
    for p, m, i in zip(net.parameters(), moved, init):
        torch.testing.assert_close(p.detach(), m + 0.2 * (i - m))


def test_wfix_freezes_a_share_of_each_units_incoming_weights():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    h = apply_arm(ARMS["wfix"], net, opt, gamma=0.1, seed=3, cfg={"wfix_frac": 0.4})
    assert len(h.frozen) == 2
    for p, mask, values in h.frozen:
        assert (mask.flatten(1).sum(1) == max(1, round(0.4 * p[0].numel()))).all()
    before = [(p.detach().clone(), mask) for p, mask, _ in h.frozen]
    _steps(net, opt)
    for (old, mask), (p, _, values) in zip(before, h.frozen):
        assert torch.equal(p[mask], values[mask]) and torch.equal(p[mask], old[mask])
        assert not torch.equal(p[~mask], old[~mask])


def test_arm_names_and_dropout():
    assert [a.name for a in arms(["wd", "syre"])] == ["wd", "syre"]
    with pytest.raises(ValueError, match="Invalid arm: 'sgd'"):
        arms(["sgd"])
    assert dropout_rate(ARMS["dropout"], {"dropout": 0.3}) == 0.3 and dropout_rate(ARMS["wd"]) == 0.0


# ----------------------------------------------------------------------------- runner
def _toy_run(ctx):
    ctx.run_grid(arms(["wd", "syre"]), lambda cfg, arm, seed, x: {"score": seed + (cfg["shift"] if arm.name == "syre" else 0.0) + x},
                 points=[{"x": 0.0}, {"x": 1.0}])
    fig, ax = ctx.subplots()
    ax.plot([0, 1])
    ctx.save(fig, "toy")
    a, b = ctx.values("syre", "score", {"x": 0.0}), ctx.values("wd", "score", {"x": 0.0})
    return {"tests": [stats.compare("syre scores higher", a, b, metric="score", arms=["syre", "wd"])]}


TOY = Experiment(id="toy", title="toy", claim="syre scores higher", run=_toy_run, defaults={"shift": 1.0}, quick={"shift": 0.0})


def test_run_directory_has_every_file_and_field(tmp_path):
    s = run_experiment(TOY, seeds=3, out=tmp_path, verbose=False, command=["syre", "bench", "run", "toy"])
    for f in ("config.json", "command.txt", "environment.json", "metrics.jsonl", "summary.json", "results.md", "toy.png"):
        assert (tmp_path / f).is_file(), f
    disk = json.loads((tmp_path / "summary.json").read_text())
    assert disk["experiment"] == "toy" and disk["claim"] == "syre scores higher" and disk["supported"] is True
    assert disk["arms"]["syre[x=0]"]["score"] == {"mean": 2.0, "std": 1.0, "n": 3}
    assert disk["arms"]["wd[x=1]"]["score"]["mean"] == 2.0
    assert {"torch", "numpy", "syre", "git_revision", "python"} <= set(disk["environment"])
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 12
    assert (tmp_path / "command.txt").read_text().strip() == "syre bench run toy"
    assert json.loads((tmp_path / "config.json").read_text())["seeds"] == [0, 1, 2]
    md = (tmp_path / "results.md").read_text()
    assert "syre scores higher" in md and "![toy.png](toy.png)" in md and "**Verdict.** supported" in md
    assert torch.get_num_threads() >= 1


def test_quick_runs_leave_the_verdict_undecided_and_a_false_test_fails_the_claim(tmp_path):
    q = run_experiment(TOY, seeds=3, quick=True, out=tmp_path / "q", verbose=False)
    assert q["supported"] is None and q["tests"][0]["passed"] is False  # shift 0 in quick mode: no difference
    assert "quick run" in q["notes"][0]
    f = run_experiment(TOY, seeds=3, out=tmp_path / "f", verbose=False, overrides={"shift": -1.0})
    assert f["supported"] is False
    with pytest.raises(ValueError, match="Invalid seeds: 0"):
        run_experiment(TOY, seeds=0, out=tmp_path / "z", verbose=False)


# ----------------------------------------------------------------------------- command line
def _main(argv):
    parser = argparse.ArgumentParser(prog="syre")
    bench_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_run_and_table(tmp_path, capsys):
    assert _main(["bench", "list"]) == 0
    out = capsys.readouterr().out
    assert all(f"e{i} " in out for i in range(6)) and "claim:" in out
    assert _main(["bench", "run", "e0", "--quick", "--seeds", "1", "--quiet", "--out", str(tmp_path / "e0"),
                  "--set", "scaling_draws=50", "--set", "trap_steps=50", "--set", "ridge_steps=50", "--set", "scaling_n=[1, 10]"]) == 0
    s = json.loads((tmp_path / "e0" / "summary.json").read_text())
    assert s["config"]["scaling_draws"] == 50 and s["seeds"] == [0] and s["quick"] is True
    assert "| e0 |" in capsys.readouterr().out
    assert _main(["bench", "table", str(tmp_path)]) == 0
    assert "| e0 | theorem checks" in capsys.readouterr().out
    assert _main(["bench", "run", "e0", "--quick", "--set", "nope=1"]) == 2
    assert "Invalid configuration key for e0: 'nope'" in capsys.readouterr().err
    assert _main(["bench", "run", "e42"]) == 2
    assert _main(["bench", "run", "e1", "--sigma-scale", "-1"]) == 2
