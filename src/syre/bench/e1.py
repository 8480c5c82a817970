"""E1: duplicated neurons in a 2-layer ReLU net (teacher-student regression).

The student ``y = V relu(W x + b)`` has ``width`` hidden units started as ``width / 2`` pairs of
identical units (equal incoming weights, bias and outgoing weights): a point on ``width / 2``
permutation mirrors. The teacher has ``width`` distinct units, so a student that stays
duplicated has only half its capacity. Training is full-batch gradient descent (plain SGD on
the whole training set) for ``steps`` steps.

Metrics per trial: ``distinct_units`` (``width/2`` plus the pairs whose relative distance
``||u_i - u_j|| / ||u_i||`` exceeds ``dup_tol``), ``min_separation`` (the smallest relative
distance over the pairs), ``w1_rank`` (numerical rank of ``W`` at ``rtol = rank_rtol``),
``train_loss``, ``test_loss``; the separation over training is kept for the plot.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from syre.data import teacher_student

from . import stats
from .arms import ARM_DEFAULTS, apply_arm, arms as get_arms
from .common import mlp
from syre.diagnostics.metrics import numerical_rank
from .registry import Experiment

CLAIM = ("A 2-layer ReLU net started with duplicated hidden neurons stays duplicated under vanilla training (and weight decay); "
         "with syre the neurons separate and the loss drops.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["none", "wd", "syre", "syre_ar", "syre_big"],
    "gamma": 0.01,
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
QUICK = {"steps": 300, "n_train": 128, "n_test": 256, "arms": ["none", "wd", "syre"], "curve_points": 8}


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
        w[h:] = w[:h]
        b[h:] = b[:h]
        v[:, h:] = v[:, :h]
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"])
    apply_arm(arm, net, opt, gamma=cfg["gamma"], seed=seed, cfg=cfg)
    steps = cfg["steps"]
    marks = sorted({int(round(x)) for x in np.geomspace(1, steps, cfg["curve_points"])})
    curve: List[float] = []
    for t in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = ((net(data.x_train) - data.y_train) ** 2).mean()
        loss.backward()
        opt.step()
        if t in marks:
            curve.append(float(_separation(net, h).min()))
    sep = _separation(net, h)
    with torch.no_grad():
        train = float(((net(data.x_train) - data.y_train) ** 2).mean())
        test = float(((net(data.x_test) - data.y_test) ** 2).mean())
    return {
        "distinct_units": h + int((sep > cfg["dup_tol"]).sum()),
        "min_separation": float(sep.min()),
        "w1_rank": numerical_rank(net.hidden[0].weight.detach(), rtol=cfg["rank_rtol"]),
        "train_loss": train,
        "test_loss": test,
        "curve_steps": marks,
        "curve_min_separation": curve,
    }


def run(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    arm_list = get_arms(cfg["arms"])
    ctx.run_grid(arm_list, trial)
    names = [a.name for a in arm_list]
    width = cfg["width"]
    tests = []
    for base in ("none", "wd"):
        if base in names:
            tests.append(stats.within(f"{base}: the pairs stay bit-identical", ctx.values(base, "min_separation"),
                                      metric="min_separation", high=0.0, arm=base, min_n=stats.MIN_N))
    if "syre" in names:
        tests.append(stats.within("syre: every pair separates", ctx.values("syre", "distinct_units"), metric="distinct_units",
                                  low=width, arm="syre", min_n=stats.MIN_N))
        ref = "wd" if "wd" in names else "none"
        tests.append(stats.compare("syre lowers the test loss", ctx.values("syre", "test_loss"), ctx.values(ref, "test_loss"),
                                   metric="test_loss", arms=["syre", ref], alternative="less"))
    for other in ("syre_ar", "syre_big"):
        if other in names:
            ref = "wd" if "wd" in names else "none"
            tests.append(stats.secondary(stats.within(f"{other}: every pair separates", ctx.values(other, "distinct_units"),
                                                      metric="distinct_units", low=width, arm=other, min_n=stats.MIN_N)))
            tests.append(stats.secondary(stats.compare(f"{other} lowers the test loss", ctx.values(other, "test_loss"),
                                                       ctx.values(ref, "test_loss"), metric="test_loss", arms=[other, ref],
                                                       alternative="less")))
    _plot(ctx, arm_list)

    def ms(arm, m):
        d = stats.describe(ctx.values(arm, m))
        return f"{d['mean']:.3g} ± {d['std']:.2g}" if d["n"] else "-"

    findings = {"headline": "distinct units " + ", ".join(f"{a} {ms(a, 'distinct_units')}" for a in names)
                + "; test loss " + ", ".join(f"{a} {ms(a, 'test_loss')}" for a in names)}
    return {
        "tests": tests,
        "rule": "vanilla and weight decay keep every pair bit-identical (all seeds), syre separates every pair "
        f"(relative distance > {cfg['dup_tol']:g}, all seeds), and syre's test loss is below weight decay's "
        "(one-sided paired t-test over seeds, p < 0.05)",
        "findings": findings,
        "notes": [f"width {width} ({width // 2} duplicated pairs), teacher with {width} units, d_in {cfg['d_in']}, "
                  f"full-batch GD lr {cfg['lr']:g}, {cfg['steps']} steps, gamma {cfg['gamma']:g} (decoupled)."],
    }


def _plot(ctx, arm_list) -> None:
    fig, axes = ctx.subplots(1, 2, figsize=(9, 3.4))
    ax = axes[0]
    for i, arm in enumerate(arm_list):
        rows = [r for r in ctx.records if r["arm"] == arm.name]
        if not rows:
            continue
        steps = rows[0]["curve_steps"]
        curves = np.array([r["curve_min_separation"] for r in rows], dtype=float)
        med = np.median(curves, axis=0)
        ax.plot(steps, np.maximum(med, 1e-17), marker=".", label=arm.label, color=f"C{i}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("min pair separation (median; 1e-17 = exactly 0)")
    ax.legend(fontsize=7)
    ax = axes[1]
    names = [a.name for a in arm_list]
    means = [np.mean(ctx.values(n, "test_loss")) for n in names]
    stds = [np.std(ctx.values(n, "test_loss")) for n in names]
    ax.bar(range(len(names)), means, yerr=stds, color=[f"C{i}" for i in range(len(names))])
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    ax.set_ylabel("test MSE")
    ctx.save(fig, "e1_duplicated_neurons")


EXPERIMENT = Experiment(
    id="e1",
    title="duplicated neurons, 2-layer ReLU teacher-student",
    claim=CLAIM,
    run=run,
    defaults=DEFAULTS,
    quick=QUICK,
)
