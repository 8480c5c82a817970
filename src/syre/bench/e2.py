"""E2: compatibility: where there is nothing to break, syre should cost nothing at small sigma0.

1. **Ridge regression** (no symmetry): the syre solution ``(X^T X/n + gamma I)^-1 (X^T y/n + gamma theta0)``
   (its GD fixed point, checked in E0) against plain ridge; test MSE and the distance between
   the two solutions as sigma0 grows.
2. **A small CNN on Fashion-MNIST** (14 x 14 average-pooled images, a subset): conv(8) - pool -
   conv(16) - pool - linear, SGD with momentum, decoupled decay at ``gamma``. Test accuracy of
   weight decay (sigma0 = 0) and of basic syre over a sweep of sigma0: absolute values (the
   paper's unit in this experiment, "no harm below 0.2"), the library default ``lecun``
   (0.01 x init std) and one init std.

**No significant harm** at a sigma0 (the verdict): the one-sided paired t-test of harm, H1
``acc(sigma0) < acc(wd)``, is not significant (p >= 0.05) **and** the mean paired difference is
above ``-harm_margin`` (1 percentage point), so neither a significant nor a large drop. The
stricter non-inferiority test (H1 ``acc(sigma0) - acc(wd) > -harm_margin``, p < 0.05: evidence
*of* no harm) is reported beside it; with 5 seeds of these short runs it lacks power. Seeds
pair the runs: the same initial weights, data order and anchor directions.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np
import torch
from torch import nn

import syre

from . import stats
from .arms import ARM_DEFAULTS, ARMS, apply_arm, sigma0_label, sigma0_values
from .common import accuracy, dataset, lecun_init_, train_epochs
from .registry import Experiment
from .runner import md_cell

CLAIM = "Where there is no symmetry to break syre is harmless: the ridge solution moves by O(sigma0), and a CNN's test accuracy is unchanged for sigma0 up to 0.2."

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "sigma0_grid": [0.001, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0, "lecun", "rel:1.0"],
    "claim_up_to": 0.2,
    "harm_margin": 0.01,
    "gamma": 0.05,
    "lr": 0.05,
    "momentum": 0.9,
    "epochs": 5,
    "batch": 64,
    "n_train": 6000,
    "n_test": 2000,
    "size": 14,
    "channels": [8, 16],
    "ridge_n": 100,
    "ridge_d": 50,
    "ridge_gamma": 0.1,
}
QUICK = {"sigma0_grid": [0.01, "lecun"], "epochs": 1, "n_train": 600, "n_test": 300}


def cnn(channels, size: int, seed: int) -> nn.Module:
    c1, c2 = channels
    side = size // 4
    net = nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(c2 * side * side, 10),
    )
    return lecun_init_(net, torch.Generator().manual_seed(seed), gain=math.sqrt(2.0))


def trial(cfg: Dict[str, Any], arm, seed: int, sigma0=None) -> Dict[str, Any]:
    """Train the CNN with ``arm`` (weight decay, or syre at ``sigma0``); test accuracy."""
    data = dataset("fashion", n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"], flat=False)
    net = cnn(cfg["channels"], cfg["size"], seed)
    opt = torch.optim.SGD(net.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    run_cfg = dict(cfg)
    if sigma0 is not None:
        run_cfg["sigma0"] = sigma0
    apply_arm(arm, net, opt, gamma=cfg["gamma"], seed=seed, cfg=run_cfg)
    loss = train_epochs(net, opt, data.x_train, data.y_train, epochs=cfg["epochs"], batch=cfg["batch"], seed=seed)
    return {"test_acc": accuracy(net, data.x_test, data.y_test), "train_loss": loss}


def ridge_points(cfg: Dict[str, Any], seed: int, grid) -> List[Dict[str, Any]]:
    """Closed-form ridge vs syre-ridge at each absolute sigma0 of ``grid``."""
    g = torch.Generator().manual_seed(500 + seed)
    n, d, gamma = cfg["ridge_n"], cfg["ridge_d"], cfg["ridge_gamma"]
    w = torch.randn(d, generator=g, dtype=torch.float64) / math.sqrt(d)
    x = torch.randn(2 * n, d, generator=g, dtype=torch.float64)
    y = x @ w + 0.5 * torch.randn(2 * n, generator=g, dtype=torch.float64)
    xt, yt, xs, ys = x[:n], y[:n], x[n:], y[n:]
    a = xt.T @ xt / n + gamma * torch.eye(d, dtype=torch.float64)
    ridge = torch.linalg.solve(a, xt.T @ yt / n)
    base = float(((xs @ ridge - ys) ** 2).mean())
    out = []
    for s0 in grid:
        th = syre.anchor(seed, "weight", (1, d), sigma0=float(s0), dtype=torch.float64).theta0.view(-1)
        sol = torch.linalg.solve(a, xt.T @ yt / n + gamma * th)
        mse = float(((xs @ sol - ys) ** 2).mean())
        out.append({"sigma0": float(s0), "test_mse": mse, "mse_change": mse - base, "solution_shift": float((sol - ridge).norm())})
    return out


def run(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    grid = list(cfg["sigma0_grid"])
    if cfg["sigma0"] not in grid:  # e.g. --sigma-scale X adds rel:X to the sweep
        grid.append(cfg["sigma0"])
    for s in grid:
        sigma0_label(s)  # validate before training
    # 1. ridge (closed form: cheap)
    abs_grid = [float(s) for s in grid if isinstance(s, (int, float))] or [0.01]
    for seed in ctx.seeds:
        for row in ridge_points(cfg, seed, abs_grid):
            s0 = row.pop("sigma0")
            ctx.record("ridge", seed, {"sigma0": s0}, **row)
    # 2. the CNN
    wd, syre_arm = ARMS["wd"], ARMS["syre"]
    ctx.progress(len(ctx.seeds) * (1 + len(grid)))
    for seed in ctx.seeds:
        ctx.record("wd", seed, None, **trial(cfg, wd, seed))
        ctx.step(f"wd seed {seed}")
    for s in grid:
        for seed in ctx.seeds:
            ctx.record("syre", seed, {"sigma0": s}, **trial(cfg, syre_arm, seed, sigma0=s))
            ctx.step(f"syre sigma0={s} seed {seed}")

    base = ctx.values("wd", "test_acc")
    margin = cfg["harm_margin"]
    tests, rows = [], []
    harmful = []
    probe = cnn(cfg["channels"], cfg["size"], 0)
    stds = {k: v for k, v in sigma0_values("rel:1.0", probe).items() if k.endswith("weight")}
    for s in grid:
        acc = ctx.values("syre", "test_acc", {"sigma0": s})
        ni = stats.compare(f"no harm at sigma0 = {s}", acc, base, metric="test_acc", arms=[f"syre[sigma0={s}]", "wd"],
                           alternative="greater", margin=-margin)
        harm = stats.compare(f"harm at sigma0 = {s}", acc, base, metric="test_acc", arms=[f"syre[sigma0={s}]", "wd"],
                             alternative="less")
        in_claim = isinstance(s, (int, float)) and float(s) <= cfg["claim_up_to"]
        d = stats.describe(acc)
        diff = np.array(acc) - np.array(base) if len(acc) == len(base) else np.array([np.nan])
        no_harm = {
            "name": f"no significant harm at sigma0 = {s}",
            "metric": "test_acc",
            "arms": [f"syre[sigma0={s}]", "wd"],
            "kind": "paired t (harm) + margin",
            "rule": f"one-sided paired t-test of harm (H1: acc < acc[wd]) not significant (p >= 0.05) and mean paired difference "
                    f">= -{margin:g}",
            "mean_a": d["mean"],
            "mean_b": stats.describe(base)["mean"],
            "p": harm["p"],
            "mean_diff": float(diff.mean()),
            "n": harm["n"],
            "passed": None if harm["passed"] is None else bool(not harm["passed"] and diff.mean() >= -margin),
        }
        tests.append(no_harm if in_claim else stats.secondary(no_harm))
        ni["name"] = f"non-inferiority at sigma0 = {s} (evidence of no harm)"
        tests.append(stats.secondary(ni))
        if harm["passed"]:
            harmful.append(str(s))
        ratio = ""
        if isinstance(s, (int, float)):
            ratio = ", ".join(f"{float(s) / v:.2g}" for v in stds.values())
        p_ni = "-" if ni["p"] is None else f"{ni['p']:.3g}"
        rows.append(f"| {md_cell(s)} | {md_cell(sigma0_label(s))} | {ratio or '-'} | {d['mean']:.4f} ± {d['std']:.4f} | "
                    f"{diff.mean() * 100:+.2f} pp | {p_ni} | "
                    f"{'yes' if harm['passed'] else ('no' if harm['passed'] is False else '-')} |")
    b = stats.describe(base)
    table = "\n".join([
        "## CNN test accuracy vs sigma0",
        "",
        f"weight decay (sigma0 = 0): {b['mean']:.4f} ± {b['std']:.4f} (n = {b['n']}). Columns: sigma0 as given; its meaning; "
        "sigma0 / init std of conv1, conv2, linear (absolute values only); accuracy; mean paired difference to weight decay; "
        f"p of the non-inferiority test (margin {margin * 100:g} pp); significant harm (one-sided paired t-test, p < 0.05).",
        "",
        "| sigma0 | meaning | / init std | test acc | vs wd | p (no harm) | harm |",
        "|---|---|---|---|---|---|---|",
    ] + rows) + "\n"
    ridge_rows = ["## Ridge regression: syre vs plain ridge (closed form)", "", "| sigma0 | solution shift | test MSE change |", "|---|---|---|"]
    for s in abs_grid:
        sh = stats.describe(ctx.values("ridge", "solution_shift", {"sigma0": s}))
        mc = stats.describe(ctx.values("ridge", "mse_change", {"sigma0": s}))
        ridge_rows.append(f"| {s:g} | {sh['mean']:.3g} ± {sh['std']:.2g} | {mc['mean']:+.3g} ± {mc['std']:.2g} |")
    _plot(ctx, grid, base, abs_grid)
    findings = {
        "headline": f"wd {b['mean']:.4f}; " + ", ".join(
            f"{s}: {np.mean(ctx.values('syre', 'test_acc', {'sigma0': s})):.4f}" for s in grid),
        "significant harm at": ", ".join(harmful) or "none of the sigma0 tried",
    }
    return {
        "tests": tests,
        "rule": f"no significant harm at every absolute sigma0 <= {cfg['claim_up_to']:g} of the grid: the one-sided paired t-test of "
        f"harm (H1 acc(syre) < acc(wd)) has p >= 0.05 and the mean paired difference is >= -{margin:g}; the stricter non-inferiority "
        "test and the other grid points are reported",
        "findings": findings,
        "tables": [table, "\n".join(ridge_rows) + "\n"],
        "notes": [
            f"CNN: channels {cfg['channels']}, {cfg['size']}x{cfg['size']} inputs, {cfg['n_train']} training / {cfg['n_test']} test "
            f"images, SGD lr {cfg['lr']:g} momentum {cfg['momentum']:g}, {cfg['epochs']} epochs, gamma {cfg['gamma']:g} (decoupled, "
            "applied beside the momentum update as in SGDW).",
            "LeCun init std of the layers: " + ", ".join(f"{k} {v:.3g}" for k, v in stds.items()) + "; so an absolute sigma0 of 0.2 is "
            "0.6 to 2.4 init stds here.",
        ],
    }


def _plot(ctx, grid, base, abs_grid) -> None:
    fig, axes = ctx.subplots(1, 2, figsize=(9, 3.4))
    ax = axes[0]
    xs = [float(s) for s in grid if isinstance(s, (int, float))]
    m = [np.mean(ctx.values("syre", "test_acc", {"sigma0": s})) for s in xs]
    e = [np.std(ctx.values("syre", "test_acc", {"sigma0": s})) for s in xs]
    ax.errorbar(xs, m, yerr=e, marker="o", label="syre (absolute sigma0)")
    ax.axhline(np.mean(base), color="k", ls="--", label="weight decay")
    ax.axhspan(np.mean(base) - np.std(base), np.mean(base) + np.std(base), color="k", alpha=0.1)
    for i, s in enumerate(s for s in grid if not isinstance(s, (int, float))):
        ax.axhline(np.mean(ctx.values("syre", "test_acc", {"sigma0": s})), color=f"C{i + 1}", ls=":", label=f"syre {s}")
    ax.set_xscale("log")
    ax.set_xlabel("sigma0")
    ax.set_ylabel("test accuracy")
    ax.set_title("CNN, Fashion-MNIST 14x14", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    sh = [np.mean(ctx.values("ridge", "solution_shift", {"sigma0": s})) for s in abs_grid]
    ax.loglog(abs_grid, sh, marker="o")
    ax.set_xlabel("sigma0")
    ax.set_ylabel("||phi_syre - phi_ridge||")
    ax.set_title("ridge regression (closed form)", fontsize=9)
    ctx.save(fig, "e2_compatibility")


EXPERIMENT = Experiment(
    id="e2",
    title="compatibility: ridge and a CNN on Fashion-MNIST vs sigma0",
    claim=CLAIM,
    run=run,
    defaults=DEFAULTS,
    quick=QUICK,
)
