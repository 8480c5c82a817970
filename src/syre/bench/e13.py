"""E13: pairs of runs that share an anchor: the loss barrier between them, without and with permutation alignment.

Each trial trains two MLPs (``depth`` hidden ReLU layers of ``width``) from different
initialisations and data orders (both a function of the trial's seed and the run's index), with
Adam and decoupled decay at gamma. Arms: ``none`` (standard), ``wd``, ``syre`` (the library
default sigma0, the **same anchor seed in both runs**: syre's anchors are a pure function of
(seed, parameter name, element index), so the two runs decay toward the same theta0),
``syre_diff`` (a different anchor seed per run), ``wfix`` (W-fix with the same fixed weights in
both runs, plus weight decay).

Measured on the evaluation images along ``(1 - t) A + t B`` at ``n_t`` points: ``barrier`` (the loss
barrier, see ``syre.bench.merging``), ``barrier_acc`` (the accuracy drop), ``mid_loss`` / ``mid_acc``
(the average of the two models), and the same after aligning B to A by weight matching
(``*_aligned``). Two data sets: Fashion-MNIST at ``size`` x ``size`` (``fashion``) and the same
images projected onto their top ``pca_dims`` principal components (``pca``, same input size): data
on a low-dimensional subspace, where Bürgin et al. (ICML 2026) argue that breaking the parameter
symmetry need not break the effective one (neurons that differ only off the data's subspace
compute the same function there), so shared anchors need not remove the barrier.

Sanity checks (hold by construction): the permuted B computes the function B computes; weight
matching does not lower its objective.
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np
import torch

from . import fmt, merging
from .arms import ARM_DEFAULTS, Arm, apply_arm, arms as get_arms
from .common import dataset, mlp, train_epochs, trial_rng
from .protocol import Design, Rejudge, Test, cell
from .registry import Experiment

CLAIM_V1 = ("Two runs trained from different initialisations and data orders with syre and the same anchor seed have a lower "
         "loss barrier on the straight line between them, without any alignment, than standard runs and than syre runs with "
         "different anchors, on Fashion-MNIST and on a low-dimensional (PCA) projection of it; Bürgin et al. (2026) predict "
         "the second to fail.")

CLAIM = ("Two runs trained from different initialisations and data orders with syre and the same anchor seed, at a gamma below "
         "the experiment's strong ones (gamma 1, where each run stays within about 1.5 points of standard training's accuracy), "
         "have a lower loss barrier on the straight line between them, without any alignment, than "
         "standard runs and than syre runs with different anchors, and their average has a lower loss than the average of two "
         "standard runs, on Fashion-MNIST and on a low-dimensional (PCA) projection of it (Bürgin et al. (2026) predict the "
         "second to fail). At the strong gammas (3 and 10) both runs sit near the shared anchor, 3-8 points below standard "
         "training's accuracy, and the low barrier holds by construction: sanity checks, not judged.")

#: Version 2 re-judges version 1's trials (no retraining).
VERSION = 2
CHANGES = ("v2, re-judged from v1's trials, no retraining: the barrier tests at gamma >= the experiment's gamma (3, 10) are sanity checks "
           "(both runs sit near the shared anchor, their end points 3-8 points below no decay's); at gamma 1 the average's loss "
           "against two standard runs' (the merged model's task metric) is primary beside the barrier tests")


def _v2_role(t, cfg):
    g = dict(t.a.point).get("gamma")
    if g is None or t.family != "shared":
        return None
    strong = g >= float(cfg["gamma"]) and g > min(float(x) for x in cfg["gammas"])  # (a grid of one gamma keeps its tests)
    if t.metric == "barrier" and t.role == "primary" and strong:
        return ("sanity", "at a gamma this strong both runs sit near the shared anchor (their end points 3-8 points below no decay's "
                          "accuracy in v1), so a low barrier between them holds (almost) by construction")
    if t.metric == "mid_loss" and t.b is not None and t.b.arm == "none" and g < float(cfg["gamma"]):
        return ("primary", "")
    return None


SYRE_DIFF = Arm("syre_diff", "syre, a different anchor seed per run", decay="syre", d_spread=0.0, tag="diff_anchor")
ANCHOR_OFFSET = 50_000

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "gamma": 3.0,
    "gammas": [1.0, 3.0, 10.0],
    "arms": ["none", "wd", "syre", "syre_diff", "wfix"],
    "datasets": ["fashion", "pca"],
    "dataset": "fashion",
    "pca_dims": 10,
    "width": 128,
    "depth": 2,
    "lr": 1e-3,
    "batch": 64,
    "epochs": 10,
    "n_train": 6000,
    "n_test": 2000,
    "size": 14,
    "n_t": 11,
    "perm_tol": 1e-4,
}
QUICK = {"arms": ["none", "syre", "syre_diff"], "gammas": [3.0], "datasets": ["fashion", "pca"], "width": 16, "epochs": 3, "n_train": 500,
         "n_test": 200, "n_t": 5}


def _check(cfg: Dict[str, Any]) -> None:
    for key in ("width", "depth", "batch", "epochs", "n_train", "n_test", "pca_dims"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Invalid {key}: {v!r}; expected an int >= 1")
    if isinstance(cfg["n_t"], bool) or not isinstance(cfg["n_t"], int) or cfg["n_t"] < 3:
        raise ValueError(f"Invalid n_t: {cfg['n_t']!r}; expected an int >= 3")
    bad = [d for d in cfg["datasets"] if d not in ("fashion", "pca")]
    if bad or cfg["dataset"] not in ("fashion", "pca"):
        raise ValueError(f"Invalid dataset: {bad or cfg['dataset']!r}; expected 'fashion' or 'pca'")


def _arm_list(cfg):
    return [SYRE_DIFF if n == "syre_diff" else get_arms([n])[0] for n in cfg["arms"]]


def data(cfg):
    """``(x_train, y_train, x_eval, y_eval)`` of ``cfg["dataset"]`` (the PCA fitted on the training images)."""
    d = dataset("fashion", cfg["eval_split"], n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"])
    if cfg["dataset"] == "fashion":
        return d.x_train, d.y_train, d.x_test, d.y_test
    mean, basis = merging.pca_project(d.x_train, cfg["pca_dims"])
    proj = lambda x: mean + (x - mean) @ basis @ basis.T  # noqa: E731
    return proj(d.x_train), d.y_train, proj(d.x_test), d.y_test


def _train(cfg, arm, x, y, seed: int, run: int):
    net = mlp(x.shape[1], cfg["width"], cfg["depth"], 10, seed=2 * seed + run + 20_000, gain=math.sqrt(2.0))
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    anchor_seed = seed + (ANCHOR_OFFSET * run if arm.tag == "diff_anchor" else 0)
    handle = apply_arm(arm, net, opt, seed=anchor_seed, cfg=cfg)
    train_epochs(net, opt, x, y, epochs=cfg["epochs"], batch=cfg["batch"], seed=2 * seed + run + 30_000)
    handle.remove()
    return net.eval()


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """Train the pair of runs with ``arm``; barriers and midpoints without and with alignment, the sanity numbers."""
    _check(cfg)
    with trial_rng(seed):
        return _trial(cfg, arm, seed)


def _trial(cfg, arm, seed):
    x, y, xe, ye = data(cfg)
    a, b = _train(cfg, arm, x, y, seed, 0), _train(cfg, arm, x, y, seed, 1)
    perms, info = merging.weight_matching(a, b, torch.Generator().manual_seed(90_000 + seed))
    b_al = merging.permute(b, perms)
    ts = [i / (cfg["n_t"] - 1) for i in range(cfg["n_t"])]
    out: Dict[str, Any] = {}
    for tag, bb in (("", b), ("_aligned", b_al)):
        path = merging.interpolate(a, bb, xe, ye, ts)
        out[f"barrier{tag}"] = merging.barrier(path["loss"], ts)
        out[f"barrier_acc{tag}"] = merging.barrier(path["acc"], ts, higher_is_worse=False)
        mid = len(ts) // 2
        out[f"mid_loss{tag}"], out[f"mid_acc{tag}"] = path["loss"][mid], path["acc"][mid]
        out[f"path_loss{tag}"], out[f"path_acc{tag}"] = path["loss"], path["acc"]
        flat = lambda n: torch.cat([p.detach().reshape(-1) for p in n.parameters()])  # noqa: E731
        out[f"dist{tag}"] = float((flat(a) - flat(bb)).norm() / (0.5 * (flat(a).norm() + flat(bb).norm())))
    with torch.no_grad():
        out["perm_error"] = float((b(xe) - b_al(xe)).abs().max())
    sq = lambda n: float(sum((p.detach().double() ** 2).sum() for p in n.parameters()))  # noqa: E731
    out["match_gain"] = info["gain"] / math.sqrt(sq(a) * sq(b))  # the gain in cosine similarity of the weight vectors
    out["end_acc"] = 0.5 * (out["path_acc"][0] + out["path_acc"][-1])
    out["end_loss"] = 0.5 * (out["path_loss"][0] + out["path_loss"][-1])
    out["ts"] = ts
    return out


def design(cfg: Dict[str, Any]) -> Design:
    _check(cfg)
    gammas = [float(g) for g in cfg["gammas"]]
    if not gammas or any(g <= 0 for g in gammas):
        raise ValueError(f"Invalid gammas: {gammas!r}; expected values > 0 (no decay is the arm 'none')")
    arm_list = _arm_list(cfg)
    names = [a.name for a in arm_list]
    decayed = [n for n in names if n != "none"]
    cells, tests = [], []
    why_p = ("a hidden unit that moves with its incoming weights, bias and outgoing weights leaves the network's function "
             "unchanged (float32 round-off only)")
    why_m = "each step of the coordinate ascent takes a linear assignment's optimum given the others, starting from the identity"
    for d in cfg["datasets"]:
        none = cell("none", dataset=d)
        cells += ([none] if "none" in names else []) + [cell(a, dataset=d, gamma=g) for g in gammas for a in decayed]
        ref0 = cells[-1] if "none" not in names else none
        tests += [Test(f"{d}: permuted B computes B's function ({ref0.key}, max |logit difference| <= {cfg['perm_tol']:g})", "perm_error",
                       ref0, kind="bound", direction="less", threshold=cfg["perm_tol"], role="sanity", why=why_p),
                  Test(f"{d}: weight matching does not lower its objective ({ref0.key})", "match_gain", ref0, kind="bound",
                       threshold=-1e-9, role="sanity", why=why_m)]
        if "none" in names:
            tests.append(Test(f"{d}: alignment lowers standard training's loss barrier", "barrier_aligned", none, none, metric_b="barrier",
                              direction="less", role="secondary"))
        for g in gammas:
            c = lambda a, d=d, g=g: none if a == "none" else cell(a, dataset=d, gamma=g)  # noqa: E731
            s = f"{d}, gamma {g:g}"
            if "syre" in names:
                for ref in [r for r in ("none", "syre_diff") if r in names]:
                    tests.append(Test(f"{s}: shared-anchor syre's loss barrier (no alignment) below {ref}'s", "barrier", c("syre"), c(ref),
                                      direction="less"))
                for ref in [r for r in ("wd", "wfix") if r in names]:
                    tests.append(Test(f"{s}: shared-anchor syre's loss barrier (no alignment) below {ref}'s", "barrier", c("syre"), c(ref),
                                      direction="less", role="secondary"))
                if "none" in names:
                    tests += [Test(f"{s}: shared-anchor syre's aligned barrier below standard training's aligned one", "barrier_aligned",
                                   c("syre"), c("none"), direction="less", role="secondary"),
                              Test(f"{s}: the average of two shared-anchor syre runs has a lower loss than that of two standard runs",
                                   "mid_loss", c("syre"), c("none"), direction="less", role="secondary"),
                              Test(f"{s}: shared-anchor syre's end points not below standard training's by more than 0.01 accuracy",
                                   "end_acc", c("syre"), c("none"), threshold=-0.01, role="secondary")]
            if "wfix" in names and "none" in names:
                tests.append(Test(f"{s}: W-fix's loss barrier (no alignment) below standard training's", "barrier", c("wfix"), c("none"),
                                  direction="less", role="secondary"))
    if "syre" in names and {"fashion", "pca"} <= set(cfg["datasets"]):
        for g in gammas:
            tests.append(Test(f"gamma {g:g}, the follow-up's prediction: shared-anchor syre's barrier higher on the PCA data than on the "
                              "full data", "barrier", cell("syre", dataset="pca", gamma=g), cell("syre", dataset="fashion", gamma=g),
                              role="secondary"))
    return Design(arms=arm_list, cells=cells, tests=tests, notes=[
        f"MLP {cfg['size'] ** 2}-{'-'.join([str(cfg['width'])] * cfg['depth'])}-10 (ReLU), Adam lr {cfg['lr']:g}, batch {cfg['batch']}, "
        f"{cfg['epochs']} epochs on {cfg['n_train']} Fashion-MNIST images at {cfg['size']}x{cfg['size']}; gammas {gammas} (decoupled); PCA "
        f"data: the images projected onto their top {cfg['pca_dims']} principal components (fitted on the training images), same input "
        f"size; {cfg['n_t']} points on each line, loss and accuracy on {cfg['n_test']} evaluation images; weight matching by coordinate "
        "ascent with scipy.optimize.linear_sum_assignment. No tuning: the claim compares barriers at each gamma, not methods at their "
        "best; E13 does not take part in the held-out check of the default (it measures no collapse)."])


METRICS = ("end_acc", "barrier", "barrier_aligned", "barrier_acc", "barrier_acc_aligned", "mid_acc", "mid_acc_aligned", "dist",
           "dist_aligned")


def report(ctx) -> Dict[str, Any]:
    from .curves import _brief, cell_table

    cfg = ctx.config
    _plot(ctx, cfg)
    g = max(float(x) for x in cfg["gammas"])
    head = "; ".join(f"{d}: " + ", ".join(
        f"{fmt.md_cell(k)} barrier {fmt.num(ctx.arms[k]['barrier']['mean'])} (aligned {fmt.num(ctx.arms[k]['barrier_aligned']['mean'])}), "
        f"end accuracy {fmt.num(ctx.arms[k]['end_acc']['mean'])}"
        for k in [f"none[dataset={d}]"] + [f"{a}[dataset={d},gamma={g:g}]" for a in cfg["arms"] if a != "none"] if k in ctx.arms)
        for d in cfg["datasets"])
    names = [t.name for t in ctx.protocol.design.tests]
    findings = {"headline": head}
    for d in cfg["datasets"]:
        prim = [n for n in names if n.startswith(f"{d}, gamma") and ctx.result(n)["role"] == "primary"]
        ok = [ctx.result(n)["passed"] for n in prim]
        word = ("holds at every gamma" if all(v is True for v in ok) else "fails at every gamma" if all(v is False for v in ok)
                else "holds in part" if any(v is True for v in ok) else "is undecided" if all(v is None for v in ok) else "does not hold")
        findings[f"shared anchor {d}"] = f"{d}: the shared anchor's lower barrier {word}: {_brief(ctx, prim)}." if prim else ""
    follow = [n for n in names if "the follow-up's prediction" in n]
    if follow:
        findings["follow-up"] = _brief(ctx, follow) + "."
    return {"tables": ["## Pairs of runs\n\n" + cell_table(ctx, METRICS)], "findings": findings}


def _plot(ctx, cfg) -> None:
    ds, gammas = cfg["datasets"], [float(x) for x in cfg["gammas"]]
    fig, axes = ctx.subplots(2 * len(ds), len(gammas), figsize=(4.0 * len(gammas), 3.0 * 2 * len(ds)), squeeze=False, sharey="row")
    for j, d in enumerate(ds):
        for row, tag in ((0, ""), (1, "_aligned")):
            for k, g in enumerate(gammas):
                ax = axes[2 * j + row][k]
                for i, a in enumerate(cfg["arms"]):
                    rows = ctx.rows(cell("none", dataset=d) if a == "none" else cell(a, dataset=d, gamma=g))
                    if not rows:
                        continue
                    c = np.array([r[f"path_loss{tag}"] for r in rows])
                    t = rows[0]["ts"]
                    ax.plot(t, c.mean(0), marker="o", ms=3, color=f"C{i}", label=a)
                    ax.fill_between(t, c.mean(0) - c.std(0), c.mean(0) + c.std(0), color=f"C{i}", alpha=0.12)
                ax.set_xlabel("t: (1 - t) A + t B")
                ax.set_ylabel("test loss")
                ax.set_title(f"{d}, gamma {g:g}, {'aligned' if tag else 'no alignment'}", fontsize=8)
    axes[0][0].legend(fontsize=7)
    ctx.save(fig, "e13_barriers")


EXPERIMENT = Experiment(id="e13", title="runs that share an anchor: loss barriers between pairs of runs, without and with alignment",
                        version=VERSION, changes=CHANGES,
                        rejudge=Rejudge(VERSION, 1, CLAIM_V1, "first pre-registered version", _v2_role),
                        claim=CLAIM, trial=trial, design=design, report=report, defaults=DEFAULTS, quick=QUICK, perf="end_acc",
                        better="max", n_min=5, n_max=10)
