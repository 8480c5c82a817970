"""E5: a 4-layer fully connected ReLU net on Fashion-MNIST and digits, sweeping gamma.

Three hidden layers of ``width`` units and a linear head (4 weight layers), LeCun-normal init
with gain sqrt(2), Adam with decoupled decay at gamma (the AdamW convention). Cells: no decay;
weight decay and syre (library default sigma0) at every gamma of ``gammas``; at the largest
gamma also syre AR, L2-Init and syre at other sigma0 scales (``arms_gmax``); and the tuned arms.

Metrics per trial, on ``n_rank`` test images: ``eff_rank_last``, the effective rank (Roy and
Vetterli: exp of the entropy of the normalised singular values) of the last hidden layer's
representations, the primary rank metric; the numerical rank (``rtol = rank_rtol``) of each hidden
layer (``rank_l1..3``, ``rank_last``), secondary; and the test accuracy.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np
import torch

from syre.diagnostics.metrics import effective_rank, numerical_rank

from . import fmt, heldout
from .arms import ARM_DEFAULTS, apply_arm, arms as get_arms, dropout_rate
from .common import accuracy, dataset, hidden_features, mlp, train_epochs, tuned_cells
from .protocol import Design, Test, Tuning, cell
from .registry import Experiment

CLAIM = ("Sweeping gamma on a 4-layer fully connected net, weight decay drives the representations to low rank and loses "
         "accuracy at large gamma, while syre keeps them full rank.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["wd", "syre"],
    "arms_gmax": ["syre_ar", "l2init", "syre_0.01x", "syre_0.3x", "syre_3x"],
    "datasets": ["fashion", "digits"],
    "dataset": "fashion",
    "gamma": 10.0,
    "gammas": [0.1, 1.0, 3.0, 10.0],
    "tune_arms": ["wd", "syre", "syre_ar", "l2init"],
    "tune_gammas": [0.1, 1.0, 3.0, 10.0],
    "tune_sigma0s": ["lecun:0.3", ARM_DEFAULTS["sigma0"], "lecun:3"],
    "keep_share": 0.9,
    "noninferior_margin": 0.01,
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
}
QUICK = {"datasets": ["digits"], "dataset": "digits", "gammas": [10.0], "arms_gmax": ["syre_ar"], "tune_arms": ["wd", "syre"],
         "tune_gammas": [1.0, 10.0], "tune_sigma0s": [ARM_DEFAULTS["sigma0"]], "epochs": {"fashion": 1, "digits": 4}, "width": 64,
         "n_rank": 300}


def _data(cfg, name: str):
    if name == "fashion":
        return dataset("fashion", cfg["eval_split"], n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"])
    if name == "digits":
        return dataset("digits", cfg["eval_split"])
    raise ValueError(f"Invalid dataset: {name!r}; expected 'fashion' or 'digits'")


def _epochs(cfg, name: str) -> int:
    e = cfg["epochs"]
    return int(e[name]) if isinstance(e, dict) else int(e)


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """Train the MLP on ``cfg["dataset"]`` with ``arm``; accuracy and representation ranks."""
    name = cfg["dataset"]
    data = _data(cfg, name)
    net = mlp(data.x_train.shape[1], cfg["width"], cfg["depth"], 10, dropout=dropout_rate(arm, cfg), seed=seed, gain=math.sqrt(2.0))
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    apply_arm(arm, net, opt, seed=seed, cfg=cfg)
    loss = train_epochs(net, opt, data.x_train, data.y_train, epochs=_epochs(cfg, name), batch=cfg["batch"], seed=seed)
    feats = hidden_features(net, data.x_test[: cfg["n_rank"]])
    out: Dict[str, Any] = {"test_acc": accuracy(net, data.x_test, data.y_test), "train_loss": loss}
    for i, f in enumerate(feats, 1):
        out[f"rank_l{i}"] = numerical_rank(f, rtol=cfg["rank_rtol"])
    out["rank_last"] = out[f"rank_l{len(feats)}"]
    out["rank_min"] = min(out[f"rank_l{i}"] for i in range(1, len(feats) + 1))
    out["eff_rank_last"] = effective_rank(feats[-1])
    return out


def design(cfg: Dict[str, Any]) -> Design:
    gammas = [float(g) for g in cfg["gammas"]]
    if not gammas or any(g <= 0 for g in gammas):
        raise ValueError(f"Invalid gammas: {gammas!r}; expected values > 0 (gamma = 0 is the no-decay arm)")
    gmax = max(gammas)
    arm_list = get_arms(["none"] + list(cfg["arms"]) + list(cfg["arms_gmax"]))
    names = [a.name for a in arm_list]
    contexts = tuple(((("dataset", d),) for d in cfg["datasets"]))
    tun = Tuning(metric="test_acc", better="max", arms=tuple(a for a in cfg["tune_arms"] if a in names), gammas=tuple(cfg["tune_gammas"]),
                 sigma0s=tuple(cfg["tune_sigma0s"]), contexts=contexts,
                 also=(("syre", "wd"),) if {"syre", "wd"} <= set(cfg["tune_arms"]) else ())
    cells, tests = [], []
    share, margin = cfg["keep_share"], cfg["noninferior_margin"]
    for d in cfg["datasets"]:
        none = cell("none", dataset=d)
        cells.append(none)
        cells += [cell(a, dataset=d, gamma=g) for g in gammas for a in cfg["arms"]]
        cells += [cell(a, dataset=d, gamma=gmax) for a in cfg["arms_gmax"]]
        at = lambda a: cell(a, dataset=d, gamma=gmax)  # noqa: E731
        g = f"{d}, gamma {gmax:g}"
        tests += [Test(f"{g}: weight decay lowers the effective rank", "eff_rank_last", at("wd"), none, direction="less"),
                  Test(f"{g}: weight decay loses accuracy", "test_acc", at("wd"), none, direction="less"),
                  Test(f"{g}: syre's effective rank above weight decay's", "eff_rank_last", at("syre"), at("wd")),
                  Test(f"{g}: syre's accuracy above weight decay's", "test_acc", at("syre"), at("wd")),
                  Test(f"{g}: syre keeps {share:g} of no decay's effective rank", "eff_rank_last", at("syre"), none, ratio=share),
                  Test(f"{g}: syre's numerical rank above weight decay's", "rank_last", at("syre"), at("wd"), role="secondary"),
                  Test(f"{g}: syre keeps {share:g} of no decay's numerical rank", "rank_last", at("syre"), none, ratio=share,
                       role="secondary")]
        for a in cfg["arms_gmax"]:
            tests += [Test(f"{g}: {a}'s effective rank above weight decay's", "eff_rank_last", at(a), at("wd"), role="secondary"),
                      Test(f"{g}: {a}'s accuracy above weight decay's", "test_acc", at(a), at("wd"), role="secondary")]
        tc = lambda a: cell(f"{a}@tuned", dataset=d)  # noqa: E731
        if "syre" in tun.arms:
            for ref in [r for r in tun.arms if r != "syre"]:
                tests.append(Test(f"{d}, tuned: syre's accuracy above {ref}'s", "test_acc", tc("syre"), tc(ref), family="tuned",
                                  role="primary" if ref == "wd" else "secondary"))
            tests.append(Test(f"{d}, tuned: syre's accuracy above no decay's", "test_acc", tc("syre"), none, family="tuned"))
        tests += heldout.tests(d, at, lambda n, d=d: cell(n, dataset=d), perf="test_acc", rank="eff_rank_last", better="max",
                               margin=margin, tuned_arms=tun.arms,
                               scale_arms=[a for a in ("syre_0.3x", "syre_3x") if a in cfg["arms_gmax"]])
        cells += [c for c in tuned_cells(tun) if c.where.get("dataset") == d]
    return Design(arms=arm_list, cells=cells, tests=tests, tuning=tun, notes=[
        f"MLP {cfg['depth']} x {cfg['width']} ReLU + linear head, Adam lr {cfg['lr']:g} with decoupled decay, batch {cfg['batch']}, "
        f"epochs {cfg['epochs']}; Fashion-MNIST {cfg['size']}x{cfg['size']} ({cfg['n_train']} train / {cfg['n_test']} test), digits "
        f"8x8 (75/25 split); ranks of {cfg['n_rank']} test representations (numerical rank at rtol {cfg['rank_rtol']:g})."])


def report(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    gammas = [float(g) for g in cfg["gammas"]]
    gmax = max(gammas)
    tables, heads = [], []
    for d in cfg["datasets"]:
        rows = [["0 (no decay)", "none", fmt.ms(ctx.values("none", "test_acc", dataset=d)),
                 fmt.ms(ctx.values("none", "eff_rank_last", dataset=d)), fmt.ms(ctx.values("none", "rank_last", dataset=d))]]
        for g in gammas:
            for a in list(cfg["arms"]) + (list(cfg["arms_gmax"]) if g == gmax else []):
                rows.append([f"{g:g}", a]
                            + [fmt.ms(ctx.values(a, m, dataset=d, gamma=g)) for m in ("test_acc", "eff_rank_last", "rank_last")])
        for c in ctx.protocol.design.cells:
            if "@" in c.arm and c.where.get("dataset") == d:
                rows.append(["tuned", c.arm] + [fmt.ms(ctx.values(c, m)) for m in ("test_acc", "eff_rank_last", "rank_last")])
        tables.append(f"## {d}\n\n" + fmt.md_table(["gamma", "arm", "test accuracy", "effective rank", "numerical rank"], rows))
        heads.append(f"{d} at gamma {gmax:g}: " + ", ".join(
            f"{a} acc {fmt.num(np.mean(ctx.values(a, 'test_acc', **p)))} eff rank {fmt.num(np.mean(ctx.values(a, 'eff_rank_last', **p)))}"
            for a, p in [("none", {"dataset": d})] + [(a, {"dataset": d, "gamma": gmax}) for a in ("wd", "syre")]))
    _plot(ctx, cfg, gammas)
    return {"tables": tables, "findings": {"headline": "; ".join(heads)}}


def _plot(ctx, cfg, gammas) -> None:
    ds = cfg["datasets"]
    fig, axes = ctx.subplots(2, len(ds), figsize=(4.5 * len(ds), 6.4), squeeze=False)
    for j, d in enumerate(ds):
        for row, metric, label in ((0, "test_acc", "test accuracy"), (1, "eff_rank_last", "effective rank, last hidden layer")):
            ax = axes[row][j]
            ax.axhline(np.mean(ctx.values("none", metric, dataset=d)), color="k", ls="--", lw=0.8, label="no decay")
            for i, arm in enumerate(cfg["arms"]):
                m = [np.mean(ctx.values(arm, metric, dataset=d, gamma=g)) for g in gammas]
                s = [np.std(ctx.values(arm, metric, dataset=d, gamma=g)) for g in gammas]
                ax.errorbar(gammas, m, yerr=s, marker="o", color=f"C{i}", label=arm, capsize=2)
            for i, arm in enumerate(cfg["arms_gmax"], len(cfg["arms"])):
                v = ctx.values(arm, metric, dataset=d, gamma=max(gammas))
                ax.errorbar([max(gammas) * (1.08 + 0.06 * i)], [np.mean(v)], yerr=[np.std(v)], marker="s", color=f"C{i}",
                            label=arm, capsize=2)
            ax.set_xscale("log")
            ax.set_xlabel("gamma (decoupled)")
            ax.set_ylabel(label)
            ax.set_title(d, fontsize=9)
            if row == 0 and j == 0:
                ax.legend(fontsize=7)
    ctx.save(fig, "e5_gamma_sweep")


EXPERIMENT = Experiment(id="e5", title="4-layer MLP on Fashion-MNIST and digits: rank and accuracy vs gamma", claim=CLAIM, trial=trial,
                        design=design, report=report, defaults=DEFAULTS, quick=QUICK, perf="test_acc", better="max",
                        rank="eff_rank_last", n_min=5, n_max=10, selection=2, heldout=True)
