"""E1: duplicated neurons in a 2-layer ReLU net (teacher-student regression).

The student ``y = V relu(W x + b)`` has ``width`` hidden units started as ``width / 2`` pairs of
identical units (equal incoming weights, bias and outgoing weights): a point on ``width / 2``
permutation mirrors. The teacher has ``width`` distinct units, so a student that stays duplicated
has half its capacity. Full-batch gradient descent (plain SGD on the whole training set).

Arms: no decay, weight decay, the **perturbed start** (the duplicated start plus N(0, (perturb_scale
x init std)^2) noise, then weight decay: any small noise separates an exactly duplicated start),
syre at the library default, syre AR, and syre at the paper's 1% of the init std (``syre_0.01x``).
Data are drawn per seed (teacher and samples), so the selection seeds' test data play no part in
the evaluation.

Metrics: ``distinct_units`` (``width/2`` plus the pairs whose relative distance ``||u_i - u_j|| /
||u_i||`` exceeds ``dup_tol``), ``min_separation``, ``w1_rank`` (numerical rank of ``W``),
``train_loss``, ``test_loss``; the separation over training is kept for the plot.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from syre.data import teacher_student
from syre.diagnostics.metrics import numerical_rank

from . import fmt
from .arms import ARM_DEFAULTS, apply_arm, arms as get_arms, init_stds, perturb_
from .common import mlp, tuned_cells
from .protocol import Design, Rejudge, Test, Tuning, cell
from .registry import Experiment

CLAIM_V1 = ("A 2-layer ReLU net started with duplicated hidden neurons stays duplicated under vanilla training (and weight decay); "
         "with syre the neurons separate and the loss drops.")

CLAIM = ("A 2-layer ReLU net started with duplicated hidden neurons stays duplicated under vanilla training (and weight decay); "
         "with syre the test loss drops below weight decay's and the perturbed start's (that syre separates the pairs holds by "
         "construction: a sanity check).")

#: Version 2 re-judges version 1's trials (no retraining).
VERSION = 2
CHANGES = ("v2, re-judged from v1's trials, no retraining: 'syre: every pair separates' is a sanity check (it holds by construction); "
           "the verdict reads the test loss")


def _v2_role(t, cfg):
    if t.metric == "distinct_units" and t.a.arm == "syre" and t.role == "primary":
        return ("sanity", "syre gives the two copies of a duplicated unit different anchors with probability 1, so its pull separates "
                          "every pair whatever it does to the loss; the test loss decides")
    return None


DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["none", "wd", "perturb", "syre", "syre_ar", "syre_0.01x"],
    "gamma": 0.01,
    "tune_arms": ["wd", "perturb", "syre", "syre_ar"],
    "tune_gammas": [0.001, 0.01, 0.1],
    "tune_sigma0s": ["lecun:0.3", ARM_DEFAULTS["sigma0"], "lecun:3"],
    "lr": 0.1,
    "steps": 3000,
    "width": 8,
    "d_in": 16,
    "n_train": 256,
    "n_test": 1024,
    "dup_tol": 1e-3,
    "rank_rtol": 1e-3,
    "curve_points": 20,
}
QUICK = {"steps": 300, "n_train": 128, "n_test": 256, "arms": ["none", "wd", "perturb", "syre"], "tune_arms": ["wd", "syre"],
         "tune_gammas": [0.01, 0.1], "tune_sigma0s": [ARM_DEFAULTS["sigma0"]], "curve_points": 8}


def _separation(net, h: int) -> torch.Tensor:
    with torch.no_grad():
        w, b, v = net.hidden[0].weight, net.hidden[0].bias, net.head.weight
        full = torch.cat([w, b[:, None], v.T], 1)
        return (full[:h] - full[h:]).norm(dim=1) / full[:h].norm(dim=1).clamp_min(1e-30)


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """One training run of ``arm`` from the duplicated start of ``seed``."""
    width = cfg["width"]
    if width % 2:
        raise ValueError(f"Invalid width: {width!r}; expected an even number (units come in pairs)")
    h = width // 2
    data = teacher_student(n_train=cfg["n_train"], n_test=cfg["n_test"], d_in=cfg["d_in"], d_hidden=width, seed=100 + seed)
    net = mlp(cfg["d_in"], width, 1, 1, seed=seed)
    with torch.no_grad():
        w, b, v = net.hidden[0].weight, net.hidden[0].bias, net.head.weight
        w[h:], b[h:], v[:, h:] = w[:h], b[:h], v[:, :h]
    if arm.perturb:
        stds = init_stds(net)
        names = [n for n, _ in net.named_parameters()]
        perturb_([p for p in net.parameters()], [stds[n] for n in names], float(cfg["perturb_scale"]), seed)
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"])
    apply_arm(arm, net, opt, seed=seed, cfg=cfg)
    steps = cfg["steps"]
    marks = sorted({int(round(x)) for x in np.geomspace(1, steps, cfg["curve_points"])})
    curve: List[float] = []
    for t in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        ((net(data.x_train) - data.y_train) ** 2).mean().backward()
        opt.step()
        if t in marks:
            curve.append(float(_separation(net, h).min()))
    sep = _separation(net, h)
    with torch.no_grad():
        train = float(((net(data.x_train) - data.y_train) ** 2).mean())
        test = float(((net(data.x_test) - data.y_test) ** 2).mean())
    return {"distinct_units": h + int((sep > cfg["dup_tol"]).sum()), "min_separation": float(sep.min()),
            "w1_rank": numerical_rank(net.hidden[0].weight.detach(), rtol=cfg["rank_rtol"]), "train_loss": train,
            "test_loss": test, "curve_steps": marks, "curve_min_separation": curve}


def design(cfg: Dict[str, Any]) -> Design:
    arm_list = get_arms(cfg["arms"])
    names = [a.name for a in arm_list]
    tun = Tuning(metric="test_loss", better="min", arms=tuple(a for a in cfg["tune_arms"] if a in names),
                 gammas=tuple(cfg["tune_gammas"]), sigma0s=tuple(cfg["tune_sigma0s"]))
    cells = [cell(n) for n in names] + tuned_cells(tun)
    width = cfg["width"]
    tests: List[Test] = []
    for base in ("none", "wd"):
        if base in names:
            tests.append(Test(f"{base}: the pairs stay bit-identical", "min_separation", cell(base), kind="bound", direction="less",
                              threshold=0.0, role="sanity", why="a duplicated start under deterministic full-batch GD with the "
                              "same update for both units of a pair never separates (exact symmetry)"))
    for arm in [n for n in names if n.startswith("syre") or n == "perturb"]:
        role = "primary" if arm == "syre" else "secondary"
        tests.append(Test(f"{arm}: every pair separates", "distinct_units", cell(arm), kind="bound", threshold=width, role=role))
    for arm in [n for n in names if n.startswith("syre")]:
        for ref in ("wd", "perturb"):
            if ref in names:
                tests.append(Test(f"{arm}: test loss below {ref}'s", "test_loss", cell(arm), cell(ref), direction="less",
                                  role="primary" if arm == "syre" else "secondary"))
    for arm in [a for a in tun.arms if a.startswith("syre")]:
        for ref in [r for r in ("wd", "perturb") if r in tun.arms] + (["none"] if "none" in names else []):
            b = cell("none") if ref == "none" else cell(f"{ref}@tuned")
            tests.append(Test(f"tuned: {arm} test loss below {ref}'s", "test_loss", cell(f"{arm}@tuned"), b, direction="less",
                              family="tuned", role="primary" if arm == "syre" else "secondary"))
    return Design(arms=arm_list, cells=cells, tests=tests, tuning=tun, notes=[
        f"width {width} ({width // 2} duplicated pairs), teacher with {width} units, d_in {cfg['d_in']}, full-batch GD lr "
        f"{cfg['lr']:g}, {cfg['steps']} steps, shared gamma {cfg['gamma']:g} (decoupled); perturbed start: N(0, "
        f"({cfg['perturb_scale']:g} x init std)^2) on every parameter."])


def report(ctx) -> Dict[str, Any]:
    names = [c.key for c in ctx.protocol.design.cells]
    metrics = ["distinct_units", "w1_rank", "train_loss", "test_loss"]
    rows = [[k] + [fmt.ms(ctx.arms[k].get(m, {})) for m in metrics] for k in names if k in ctx.arms]
    _plot(ctx, names)
    head = "; ".join(f"{k}: distinct {fmt.ms(ctx.arms[k]['distinct_units'])}, test loss {fmt.ms(ctx.arms[k]['test_loss'])}"
                     for k in names if k in ctx.arms)
    return {"tables": ["## Arms\n\n" + fmt.md_table(["cell"] + metrics, rows)], "findings": {"headline": head}}


def _plot(ctx, names) -> None:
    fig, axes = ctx.subplots(1, 2, figsize=(10, 3.6))
    for i, key in enumerate(names):
        rows = [r for r in ctx.records if r["arm"] == key]
        if rows:
            med = np.median(np.array([r["curve_min_separation"] for r in rows], dtype=float), axis=0)
            axes[0].plot(rows[0]["curve_steps"], np.maximum(med, 1e-17), marker=".", label=key, color=f"C{i}")
    axes[0].set(xscale="log", yscale="log", xlabel="step", ylabel="min pair separation (median; 1e-17 = exactly 0)")
    axes[0].legend(fontsize=6)
    vals = [ctx.values(k, "test_loss") for k in names]
    axes[1].bar(range(len(names)), [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], color=[f"C{i}" for i in range(len(names))])
    axes[1].set_xticks(range(len(names)))
    axes[1].set_xticklabels(names, rotation=30, fontsize=7, ha="right")
    axes[1].set_ylabel("test MSE (evaluation seeds)")
    ctx.save(fig, "e1_duplicated_neurons")


EXPERIMENT = Experiment(id="e1", title="duplicated neurons, 2-layer ReLU teacher-student", claim=CLAIM, trial=trial, design=design,
                        version=VERSION, changes=CHANGES,
                        rejudge=Rejudge(VERSION, 1, CLAIM_V1, "first pre-registered version", _v2_role),
                        report=report, defaults=DEFAULTS, quick=QUICK, perf="test_loss", better="min", rank="distinct_units",
                        n_min=5, n_max=12, selection=3)
