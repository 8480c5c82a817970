"""E5: a 4-layer fully connected ReLU net on Fashion-MNIST and digits, sweeping gamma.

Three hidden layers of ``width`` units and a linear head (4 weight layers), LeCun-normal init
with gain sqrt(2), Adam with decoupled decay at gamma (the AdamW convention) for each arm:
weight decay, syre (library default sigma0) and syre with sigma0 = the init std (AR with
``--set arms=["wd","syre","syre_ar","syre_big"]``: the MLP's permutation mirrors are countable, which
basic syre already removes). gamma = 0 is the no-decay arm.

Metrics per trial, on ``n_rank`` test images: the numerical rank (``rtol = rank_rtol``) of each
hidden layer's representations (``rank_l1..3``; ``rank_last`` is the last hidden layer), the
effective rank of the last hidden layer (``eff_rank_last``), and the test accuracy.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np
import torch

from syre.diagnostics.metrics import effective_rank, numerical_rank

from . import stats
from .arms import ARM_DEFAULTS, ARMS, apply_arm, arms as get_arms, dropout_rate, sigma0_label
from .common import accuracy, dataset, hidden_features, mlp, train_epochs
from .registry import Experiment

CLAIM = ("Sweeping gamma on a 4-layer fully connected net, weight decay drives the representations to low rank and loses "
         "accuracy at large gamma, while syre keeps them full rank.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["wd", "syre", "syre_big"],
    "datasets": ["fashion", "digits"],
    "gammas": [0.1, 1.0, 3.0, 10.0],
    "width": 128,
    "depth": 3,
    "lr": 1e-3,
    "batch": 64,
    "epochs": {"fashion": 5, "digits": 15},
    "n_train": 4000,
    "n_test": 2000,
    "size": 14,
    "n_rank": 1000,
    "rank_rtol": 1e-3,
    "full_rank_share": 0.9,
}
QUICK = {"arms": ["wd", "syre", "syre_big"], "datasets": ["digits"], "gammas": [10.0], "epochs": {"fashion": 1, "digits": 4},
         "width": 64, "n_rank": 300}


def _data(cfg, name: str):
    if name == "fashion":
        return dataset("fashion", n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"])
    if name == "digits":
        return dataset("digits")
    raise ValueError(f"Invalid dataset: {name!r}; expected 'fashion' or 'digits'")


def _epochs(cfg, name: str) -> int:
    e = cfg["epochs"]
    return int(e[name]) if isinstance(e, dict) else int(e)


def trial(cfg: Dict[str, Any], arm, seed: int, dataset: str, gamma: float) -> Dict[str, Any]:
    """Train the MLP on ``dataset`` with ``arm`` at ``gamma``; accuracy and representation ranks."""
    data = _data(cfg, dataset)
    net = mlp(data.x_train.shape[1], cfg["width"], cfg["depth"], 10, dropout=dropout_rate(arm, cfg), seed=seed, gain=math.sqrt(2.0))
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    apply_arm(arm, net, opt, gamma=gamma, seed=seed, cfg=cfg)
    loss = train_epochs(net, opt, data.x_train, data.y_train, epochs=_epochs(cfg, dataset), batch=cfg["batch"], seed=seed)
    feats = hidden_features(net, data.x_test[: cfg["n_rank"]])
    out: Dict[str, Any] = {"test_acc": accuracy(net, data.x_test, data.y_test), "train_loss": loss}
    for i, f in enumerate(feats, 1):
        out[f"rank_l{i}"] = numerical_rank(f, rtol=cfg["rank_rtol"])
    out["rank_last"] = out[f"rank_l{len(feats)}"]
    out["rank_min"] = min(out[f"rank_l{i}"] for i in range(1, len(feats) + 1))
    out["eff_rank_last"] = effective_rank(feats[-1])
    return out


def run(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    arm_list = get_arms(cfg["arms"])
    gammas = [float(g) for g in cfg["gammas"]]
    if any(g <= 0 for g in gammas):
        raise ValueError(f"Invalid gammas: {gammas!r}; expected values > 0 (gamma = 0 is run once as the no-decay arm)")
    for name in cfg["datasets"]:
        _data(cfg, name)
    points = [{"dataset": d, "gamma": 0.0} for d in cfg["datasets"]]
    ctx.progress(len(cfg["datasets"]) * len(ctx.seeds) * (1 + len(gammas) * len(arm_list)))
    none = ARMS["none"]
    for p in points:
        for seed in ctx.seeds:
            ctx.record("none", seed, p, **trial(cfg, none, seed, **p))
            ctx.step(f"{p['dataset']} none seed {seed}")
    for d in cfg["datasets"]:
        for g in gammas:
            for arm in arm_list:
                for seed in ctx.seeds:
                    ctx.record(arm.name, seed, {"dataset": d, "gamma": g}, **trial(cfg, arm, seed, d, g))
                    ctx.step(f"{d} {arm.name} gamma={g:g} seed {seed}")

    gmax = max(gammas)
    names = [a.name for a in arm_list]
    tests: List[Dict[str, Any]] = []
    findings: Dict[str, str] = {}
    share = cfg["full_rank_share"]
    for d in cfg["datasets"]:
        at = {"dataset": d, "gamma": gmax}
        zero = {"dataset": d, "gamma": 0.0}
        v = lambda arm, m, p=at: ctx.values(arm, m, p)  # noqa: E731
        if "wd" in names:
            tests.append(stats.compare(f"{d}: weight decay lowers the rank at gamma = {gmax:g}", v("wd", "rank_last"),
                                       v("none", "rank_last", zero), metric="rank_last", arms=[f"wd[gamma={gmax:g}]", "none"],
                                       alternative="less"))
            tests.append(stats.compare(f"{d}: weight decay loses accuracy at gamma = {gmax:g}", v("wd", "test_acc"),
                                       v("none", "test_acc", zero), metric="test_acc", arms=[f"wd[gamma={gmax:g}]", "none"],
                                       alternative="less"))
        base_rank = np.array(v("none", "rank_last", zero), dtype=float)
        for arm in ("syre", "syre_ar", "syre_big"):
            if arm not in names or "wd" not in names:
                continue
            wrap = (lambda t: t) if arm == "syre" else stats.secondary
            r = np.array(v(arm, "rank_last"), dtype=float)
            ratio = r / base_rank if len(r) == len(base_rank) else np.array([])
            tests.append(wrap(stats.within(f"{d}: {arm} keeps full rank at gamma = {gmax:g}", ratio,
                                           metric="rank_last / no-decay rank", low=share, arm=arm, min_n=stats.MIN_N)))
            tests.append(wrap(stats.compare(f"{d}: {arm}'s rank above weight decay's at gamma = {gmax:g}", v(arm, "rank_last"),
                                            v("wd", "rank_last"), metric="rank_last", arms=[arm, "wd"], alternative="greater")))
            tests.append(wrap(stats.compare(f"{d}: {arm}'s accuracy above weight decay's at gamma = {gmax:g}", v(arm, "test_acc"),
                                            v("wd", "test_acc"), metric="test_acc", arms=[arm, "wd"], alternative="greater")))
        parts = []
        for arm in ["none"] + names:
            p = zero if arm == "none" else at
            a, rk = stats.describe(v(arm, "test_acc", p)), stats.describe(v(arm, "rank_last", p))
            parts.append(f"{arm} acc {a['mean']:.3f} rank {rk['mean']:.0f}")
        findings[f"{d} at gamma {gmax:g} (none at 0)"] = "; ".join(parts)
    table = _table(ctx, cfg, names, gammas)
    first = cfg["datasets"][0]
    findings["headline"] = f"{first}, gamma {gmax:g}: " + findings[f"{first} at gamma {gmax:g} (none at 0)"]
    _plot(ctx, cfg, arm_list, gammas)
    return {
        "tests": tests,
        "rule": f"per dataset at the largest gamma ({gmax:g}): weight decay's last-layer rank and accuracy are below no decay's, and "
        f"syre (library default sigma0) keeps >= {share:g} of no decay's rank in every seed with rank and accuracy above weight "
        "decay's (one-sided paired t-tests, p < 0.05); AR and sigma0 = init std are reported (secondary)",
        "findings": findings,
        "tables": [table],
        "notes": [f"MLP {cfg['depth']} x {cfg['width']} ReLU + linear head, Adam lr {cfg['lr']:g} with decoupled decay (AdamW convention), "
                  f"batch {cfg['batch']}, epochs {cfg['epochs']}; Fashion-MNIST {cfg['size']}x{cfg['size']} ({cfg['n_train']} train / "
                  f"{cfg['n_test']} test), digits 8x8 (75/25 split); rank: numerical rank at rtol {cfg['rank_rtol']:g} of "
                  f"{cfg['n_rank']} test representations.",
                  f"syre sigma0: {sigma0_label(cfg['sigma0'])}; syre_big: {sigma0_label(cfg['sigma0_big'])}."],
    }


def _table(ctx, cfg, names, gammas) -> str:
    rows = ["## Accuracy and last-layer rank vs gamma", ""]
    for d in cfg["datasets"]:
        rows += [f"### {d}", "", "| gamma | " + " | ".join(f"{n} acc | {n} rank" for n in names) + " |",
                 "|---|" + "---|---|" * len(names)]
        zero = {"dataset": d, "gamma": 0.0}
        a0, r0 = stats.describe(ctx.values("none", "test_acc", zero)), stats.describe(ctx.values("none", "rank_last", zero))
        rows.append("| 0 (no decay) | " + " | ".join(f"{a0['mean']:.3f} ± {a0['std']:.3f} | {r0['mean']:.1f} ± {r0['std']:.1f}" for _ in names) + " |")
        for g in gammas:
            p = {"dataset": d, "gamma": g}
            cells = []
            for n in names:
                a, r = stats.describe(ctx.values(n, "test_acc", p)), stats.describe(ctx.values(n, "rank_last", p))
                cells.append(f"{a['mean']:.3f} ± {a['std']:.3f} | {r['mean']:.1f} ± {r['std']:.1f}")
            rows.append(f"| {g:g} | " + " | ".join(cells) + " |")
        rows.append("")
    return "\n".join(rows) + "\n"


def _plot(ctx, cfg, arm_list, gammas) -> None:
    ds = cfg["datasets"]
    fig, axes = ctx.subplots(2, len(ds), figsize=(4.5 * len(ds), 6.4), squeeze=False)
    for j, d in enumerate(ds):
        zero = {"dataset": d, "gamma": 0.0}
        for row, metric, label in ((0, "test_acc", "test accuracy"), (1, "rank_last", "rank of last hidden layer")):
            ax = axes[row][j]
            base = np.mean(ctx.values("none", metric, zero))
            ax.axhline(base, color="k", ls="--", lw=0.8, label="no decay")
            for i, arm in enumerate(arm_list):
                m = [np.mean(ctx.values(arm.name, metric, {"dataset": d, "gamma": g})) for g in gammas]
                s = [np.std(ctx.values(arm.name, metric, {"dataset": d, "gamma": g})) for g in gammas]
                ax.errorbar(gammas, m, yerr=s, marker="o", color=f"C{i}", label=arm.label, capsize=2)
            ax.set_xscale("log")
            ax.set_xlabel("gamma (decoupled)")
            ax.set_ylabel(label)
            ax.set_title(d, fontsize=9)
            if row == 0 and j == 0:
                ax.legend(fontsize=7)
    ctx.save(fig, "e5_gamma_sweep")


EXPERIMENT = Experiment(
    id="e5",
    title="4-layer MLP on Fashion-MNIST and digits: rank and accuracy vs gamma",
    claim=CLAIM,
    run=run,
    defaults=DEFAULTS,
    quick=QUICK,
)
