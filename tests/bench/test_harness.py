"""The benchmark harness: configuration, arms, the runner's phases, run directory and command line."""
import argparse
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import syre
from syre.bench import Design, Experiment, Test, Tuning, cell, cli as bench_cli, run_experiment
from syre.bench.arms import (
    ARMS,
    DECLARED_SIGMA0,
    apply_arm,
    arms,
    default_scale,
    dropout_rate,
    init_stds,
    library_scale,
    perturb_,
    sigma0_label,
    syre_arm,
)
from syre.bench.registry import experiment_ids, get_experiment

pytest.importorskip("scipy")


# ----------------------------------------------------------------------------- configuration
def test_registry_lists_the_experiments_and_rejects_unknown_ids():
    assert experiment_ids()[:10] == [f"e{i}" for i in range(10)] and "sigma-sweep" in experiment_ids()
    with pytest.raises(ValueError, match="Invalid experiment id: 'e99'"):
        get_experiment("e99")


def test_config_overrides_are_checked_and_coerced():
    exp = get_experiment("e1")
    cfg = exp.config(quick=True, overrides={"steps": 10.0, "gamma": 1, "sigma0": "lecun:0.3"})
    assert cfg["steps"] == 10 and isinstance(cfg["steps"], int) and cfg["gamma"] == 1.0 and isinstance(cfg["gamma"], float)
    assert cfg["n_test"] == exp.quick["n_test"] != exp.defaults["n_test"] and cfg["eval_split"] == "test"
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


def test_an_arm_takes_its_own_gamma_before_the_configs():
    net = _net()
    h = apply_arm(ARMS["wd"].tuned(0.7), net, torch.optim.SGD(net.parameters(), lr=0.1), seed=0, cfg={"gamma": 0.1})
    assert h.syre.group_gamma(0) == pytest.approx(0.7)
    net = _net()
    h = apply_arm(ARMS["wd"], net, torch.optim.SGD(net.parameters(), lr=0.1), seed=0, cfg={"gamma": 0.1})
    assert h.syre.group_gamma(0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="weight_decay=0.1"):
        apply_arm(ARMS["syre"], net, torch.optim.AdamW(net.parameters(), weight_decay=0.1), gamma=0.1, seed=0)


def test_each_arm_name_means_one_sigma0():
    assert ARMS["syre"].sigma0 is None  # the run's sigma0 key, whose default is the one E0-E13 were declared with
    assert syre_arm(DECLARED_SIGMA0).name == "syre" and syre_arm("lecun:0.3").name == "syre_0.3x"
    assert syre_arm(0.5).name == "syre_abs0.5" and syre_arm("lecun:3", d_spread=None).name == "syre_ar_3x"
    assert [a.sigma0 for a in arms(["syre_0.01x", "syre_abs0.1"])] == ["lecun:0.01", "abs:0.1"]
    with pytest.raises(ValueError, match="Invalid arm: 'syre_big'"):
        arms(["syre_big"])
    net = _net()
    h = apply_arm(arms(["syre_0.3x"])[0], net, torch.optim.SGD(net.parameters(), lr=0.1), gamma=0.1, seed=0)
    cov = {r["name"]: r["sigma0"] for r in h.syre.coverage()}
    assert cov["0.weight"] == pytest.approx(0.3 / math.sqrt(6)) and cov["2.bias"] == pytest.approx(0.3 / math.sqrt(5))


def test_sigma0_labels_and_the_library_scale():
    assert library_scale("lecun") == pytest.approx(default_scale())
    assert "(the library default)" in sigma0_label(DECLARED_SIGMA0)
    assert sigma0_label("lecun:0.3") == "0.3 x lecun init std" and sigma0_label(0.05) == "0.05 (absolute)"
    assert sigma0_label("rel:2") == "2 x lecun init std"
    for bad in ("rel:x", "big", -1.0, True, "lecun:-1"):
        with pytest.raises(ValueError, match="Invalid sigma0"):
            sigma0_label(bad)


def test_init_stds_and_the_perturbed_start():
    net = _net()
    stds = init_stds(net)
    assert stds["0.weight"] == stds["0.bias"] == pytest.approx(1 / math.sqrt(6)) and stds["2.weight"] == pytest.approx(1 / math.sqrt(5))
    a = [p.detach().clone() for p in net.parameters()]
    perturb_(list(net.parameters()), [stds[n] for n, _ in net.named_parameters()], 0.01, seed=3)
    d = [p.detach() - q for p, q in zip(net.parameters(), a)]
    assert all(0 < float(x.abs().max()) < 0.1 for x in d)
    net2 = _net()
    perturb_(list(net2.parameters()), [stds[n] for n, _ in net2.named_parameters()], 0.01, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), net2.parameters()))  # seeded, not the global RNG


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
    assert ARMS["none"].tunable == [] and ARMS["wd"].tunable == ["gamma"] and ARMS["syre"].tunable == ["gamma", "sigma0"]


# ----------------------------------------------------------------------------- the runner on a toy experiment
def _toy_trial(cfg, arm, seed):
    """score = the seed's noise + a gain for syre that peaks at gamma 1, minus 0.1 gamma for wd; the validation split adds 100."""
    g = 0.0 if arm.decay == "none" else float(cfg["gamma"] if arm.gamma is None else arm.gamma)
    noise = float(np.random.default_rng(seed).normal(0, 0.1))
    gain = cfg["shift"] * (2.0 - abs(math.log10(g))) if arm.decay == "syre" and g > 0 else 0.0
    return {"score": noise + gain + (100.0 if cfg["eval_split"] == "val" else 0.0) - 0.1 * g * (arm.decay == "wd")}


def _toy_design(cfg):
    arm_list = arms(["none", "wd", "syre"])
    tun = Tuning(metric="score", better="max", arms=("wd", "syre"), gammas=(0.1, 1.0, 10.0), sigma0s=(syre.DEFAULT_SIGMA0,))
    cells = [cell("none"), cell("wd"), cell("syre"), cell("wd@tuned"), cell("syre@tuned")]
    tests = [Test("syre beats wd", "score", cell("syre"), cell("wd")),
             Test("tuned: syre beats wd", "score", cell("syre@tuned"), cell("wd@tuned"), family="tuned"),
             Test("none is none", "score", cell("none"), cell("none"), kind="bound", direction="less", role="sanity",
                  why="a cell minus itself is zero")]
    return Design(arms=arm_list, cells=cells, tests=tests, tuning=tun)


TOY = Experiment(id="toy", title="toy", claim="syre scores higher", trial=_toy_trial, design=_toy_design,
                 defaults={"shift": 1.0, "gamma": 10.0}, quick={"shift": 0.0}, n_min=4, n_max=4, selection=2)


def test_run_directory_has_every_file_and_field(tmp_path):
    s = run_experiment(TOY, out=tmp_path, verbose=False, command=["syre", "bench", "run", "toy"])
    for f in ("protocol.json", "config.json", "command.txt", "environment.json", "metrics.jsonl", "summary.json", "results.md",
              "toy_tuning.png"):
        assert (tmp_path / f).is_file(), f
    disk = json.loads((tmp_path / "summary.json").read_text())
    assert disk == s and disk["experiment"] == "toy" and disk["quick"] is False
    assert disk["seeds"] == {"selection": [500, 501], "evaluation": [100, 101, 102, 103]}
    # at the shared gamma 10 syre gains 1 and wd pays 1: syre beats wd; tuned, syre picks gamma 1 (gain 2) and wd gamma 0.1
    assert disk["supported"] is True and disk["supported_tuned"] is True and disk["sanity_ok"] is True
    assert disk["selection"]["all"]["syre"]["chosen"]["gamma"] == 1.0 and disk["selection"]["all"]["wd"]["chosen"]["gamma"] == 0.1
    assert disk["arms"]["syre@tuned"]["score"]["mean"] == pytest.approx(2.0, abs=0.2)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    sel = [r for r in rows if r["phase"] == "select"]
    assert len(sel) == 2 * 3 * 2 and all(r["score"] > 50 for r in sel)  # tuning scored on the validation split only
    assert all(r["score"] < 50 for r in rows if r["phase"] == "evaluate")
    assert {r["seed"] for r in sel}.isdisjoint({r["seed"] for r in rows if r["phase"] == "evaluate"})
    assert (tmp_path / "command.txt").read_text().strip() == "syre bench run toy"
    proto = json.loads((tmp_path / "protocol.json").read_text())
    assert proto["hash"] == disk["protocol"]["hash"] and proto["declaration"] == disk["protocol"]["declaration"]
    md = (tmp_path / "results.md").read_text()
    assert "syre scores higher" in md and "At the shared gamma: supported" in md and "## Tuning" in md


def test_quick_runs_leave_the_verdicts_undecided_and_a_failed_test_fails_the_claim(tmp_path):
    q = run_experiment(TOY, quick=True, out=tmp_path / "q", verbose=False)
    assert q["supported"] is None and q["supported_tuned"] is None and "quick run" in q["notes"][0]
    assert q["seeds"]["selection"] == [500] and q["seeds"]["evaluation"] == [100, 101]
    f = run_experiment(TOY, out=tmp_path / "f", verbose=False, overrides={"shift": -1.0})
    assert f["supported"] is False  # shared gamma 10: syre loses 1, as much as wd pays: no difference
    assert f["supported_tuned"] is False  # tuned, syre's best (-1) is below wd's best (-0.01)
    assert [t["passed"] for t in f["tests"] if t["role"] == "primary"] == [False, False]


def test_a_failed_sanity_check_voids_every_verdict(tmp_path):
    def design(cfg):
        d = _toy_design(cfg)
        d.tests[-1] = Test("none beats itself", "score", cell("none"), cell("none"), kind="bound", threshold=1.0, role="sanity",
                           why="deliberately false")
        return d

    exp = Experiment(id="toy2", title="toy", claim="x", trial=_toy_trial, design=design, defaults={"shift": 1.0, "gamma": 10.0},
                     n_min=3, n_max=3)
    s = run_experiment(exp, out=tmp_path, verbose=False)
    assert s["sanity_ok"] is False and s["supported"] is None and s["supported_tuned"] is None
    assert "sanity check failed" in s["notes"][0]


def test_seed_count_and_registration_errors(tmp_path):
    with pytest.raises(ValueError, match="Invalid seeds: 0"):
        run_experiment(TOY, seeds=0, out=tmp_path / "z", verbose=False)
    with pytest.raises(ValueError, match="no --set, no --seeds"):
        run_experiment(TOY, seeds=3, out=tmp_path / "z", verbose=False, ledger=tmp_path / "ledger.json")


# ----------------------------------------------------------------------------- command line
def _main(argv):
    parser = argparse.ArgumentParser(prog="syre")
    bench_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_protocol_run_and_table(tmp_path, capsys):
    assert _main(["bench", "list"]) == 0
    out = capsys.readouterr().out
    assert all(f"e{i} " in out for i in range(10)) and "claim:" in out
    assert _main(["bench", "protocol", "e3", "--quick"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert len(p["hash"]) == 16 and p["declaration"]["experiment"] == "e3"
    assert _main(["bench", "run", "e0", "--quick", "--seeds", "1", "--quiet", "--out", str(tmp_path / "e0"),
                  "--set", "scaling_draws=50", "--set", "trap_steps=50", "--set", "ridge_steps=50", "--set", "scaling_n=[1, 10]"]) == 0
    s = json.loads((tmp_path / "e0" / "summary.json").read_text())
    assert s["config"]["scaling_draws"] == 50 and s["seeds"]["evaluation"] == [100] and s["quick"] is True
    assert "| e0 |" in capsys.readouterr().out
    assert _main(["bench", "table", str(tmp_path)]) == 0
    assert "| e0 | theorem checks" in capsys.readouterr().out
    assert _main(["bench", "run", "e0", "--quick", "--set", "nope=1"]) == 2
    assert "Invalid configuration key for e0: 'nope'" in capsys.readouterr().err
    assert _main(["bench", "run", "e42"]) == 2
    assert _main(["bench", "run", "e1", "--sigma-scale", "-1"]) == 2
    assert _main(["bench", "table", str(tmp_path / "nothing")]) == 2
