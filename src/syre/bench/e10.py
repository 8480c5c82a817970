"""E10: a small nanoGPT-style character LM, AdamW with nanoGPT's decay groups, from a typical to a collapsing weight decay.

The model, corpus and metrics are in ``syre.bench.charlm`` (CPython's ``pydoc_data.topics``, the
text of ``help()``; chunks of 1000 characters, every 10th to the test split, the one before it to
the validation split). AdamW (betas 0.9 / 0.99, nanoGPT's character-level setting), ``lr`` with a
linear warmup of ``warmup`` steps and a cosine decay to ``lr / 10``, gradient clipping at 1,
``steps`` steps of ``batch`` random windows of ``block`` characters. The arms decay nanoGPT's decay
group only (the 2-D parameters) at the decoupled gamma (AdamW's ``weight_decay``): ``gamma = 0.1`` is
nanoGPT's own setting; the larger ones are where weight decay collapses the attention maps.

Arms: ``none``, ``wd``, ``syre`` (the library default sigma0, ``"lecun"``: for the tied embedding,
whose fan-in is 1, that is an anchor of std 1, 50 x its weights), ``syre_match`` (``"match"``: the
anchor at the weights' own RMS at attach), ``syre_ar``, ``l2init``; tuned arms.

Metrics per trial: ``val_loss`` (cross-entropy in nats per character on the evaluation split),
``qk_rank`` / ``vo_rank`` (the mean over layers and heads of the effective rank of ``W_Q,h^T W_K,h``
/ ``W_O,h W_V,h``; ``qk_rank_min``), ``resid_rank`` (the residual stream's effective rank after each
block; ``resid_rank_last``), ``mlp_dead`` / ``mlp_dup`` (shares of MLP units), and, for the arms
that attach syre, its pull numbers (``Syre.pull_report()``'s totals: ``pull_decay`` = lr x gamma x
RMS(p) / RMS(update), ``pull_anchor`` = sigma0 / RMS(p), ``pull_pull`` their product).
"""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np

from . import charlm, fmt
from .arms import ARM_DEFAULTS
from .common import trial_rng
from .gsweep import Sweep
from .protocol import Design, Rejudge, Test, cell
from .registry import Experiment

CLAIM_V1 = ("In a small causal transformer LM trained with AdamW and nanoGPT's decay groups, a weight decay strong enough to "
         "collapse the attention maps (lower effective rank of W_Q W_K^T per head) also raises the validation loss; syre at "
         "the same gamma keeps the rank and a lower loss, and at nanoGPT's own weight decay (0.1) it costs nothing.")

CLAIM = ("In a small causal transformer LM trained with AdamW and nanoGPT's decay groups, a weight decay strong enough to "
         "collapse the attention maps (lower effective rank of W_Q W_K^T per head) also raises the validation loss; syre at "
         "the same gamma has a lower validation loss, and at nanoGPT's own weight decay (0.1) it costs nothing. (That syre's "
         "attention rank is higher there holds by construction: its weights sit near the random anchor; a sanity check.)")

#: Version 2 re-judges version 1's trials (no retraining).
VERSION = 2
CHANGES = ("v2, re-judged from v1's trials, no retraining: syre's attention rank above weight decay's (shared and held-out) is a sanity "
           "check (at a dominating decay syre's W_Q, W_K sit near the random anchor); the verdict reads the validation loss")


def _v2_role(t, cfg):
    if t.metric == "qk_rank" and t.a.arm == "syre" and t.b is not None and t.b.arm == "wd" and t.role == "primary":
        return ("sanity", "at a gamma where the decay dominates, syre's W_Q and W_K sit near the random anchor, whose product has the "
                          "effective rank of a random matrix (29.8 of 32 per head at gamma 10 in v1): a rank above weight decay's "
                          "holds (almost) by construction; the validation loss decides")
    return None


DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "gamma": 10.0,
    "gamma_typical": 0.1,
    "gammas": [0.1, 1.0, 10.0],
    "gammas_strong": [1.0, 10.0],
    "arms": ["wd", "syre"],
    "arms_gmax": ["syre_ar", "l2init", "syre_match"],
    "arms_typical": ["syre_match"],
    "tune_arms": ["wd", "syre", "syre_ar", "l2init"],
    "tune_gammas": [0.1, 1.0, 10.0],
    "tune_sigma0s": [ARM_DEFAULTS["sigma0"]],
    "noninferior_margin": 0.01,
    "n_layer": 3,
    "n_head": 4,
    "n_embd": 128,
    "block": 32,
    "batch": 16,
    "steps": 600,
    "warmup": 40,
    "lr": 1e-3,
    "init_std": 0.02,
    "n_eval": 512,
    "n_probe": 64,
}
QUICK = {"gammas": [0.1, 10.0], "gammas_strong": [10.0], "arms_gmax": ["syre_match"], "arms_typical": [], "tune_arms": ["wd", "syre"],
         "tune_gammas": [0.1, 10.0], "n_layer": 1, "n_embd": 32, "block": 16, "batch": 8, "steps": 40, "warmup": 4,
         "n_eval": 64, "n_probe": 16}


def _check(cfg: Dict[str, Any]) -> None:
    for key in ("n_layer", "n_head", "n_embd", "block", "batch", "steps", "n_eval", "n_probe"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Invalid {key}: {v!r}; expected an int >= 1")
    if cfg["n_embd"] % cfg["n_head"]:
        raise ValueError(f"Invalid n_embd: {cfg['n_embd']!r}; expected a multiple of n_head = {cfg['n_head']}")
    if not 0 <= cfg["warmup"] < cfg["steps"]:
        raise ValueError(f"Invalid warmup: {cfg['warmup']!r}; expected 0 <= warmup < steps = {cfg['steps']}")
    if not cfg["lr"] > 0:
        raise ValueError(f"Invalid lr: {cfg['lr']!r}; expected a number > 0")


def _schedule(cfg):
    w, n = int(cfg["warmup"]), int(cfg["steps"])

    def f(step: int) -> float:
        if step < w:
            return (step + 1) / w
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * (step - w) / max(1, n - w)))

    return f


def pull_numbers(handle) -> Dict[str, Any]:
    """``Syre.pull_report()``'s totals of an arm's handle (None for the arms without syre)."""
    if handle is None or handle.syre is None:
        return {"pull_decay": None, "pull_anchor": None, "pull_pull": None}
    t = handle.syre.pull_report()["total"]
    return {"pull_decay": t["decay"], "pull_anchor": t["anchor"], "pull_pull": t["pull"]}


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """Train the LM with ``arm``; validation loss, attention and residual ranks, MLP units, pull numbers."""
    _check(cfg)
    with trial_rng(seed):
        return _trial(cfg, arm, seed)


def _trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    data = charlm.splits()
    net = charlm.build(cfg, seed)
    handle, losses = charlm.train(net, charlm.groups(net), cfg, arm, seed, _schedule(cfg), lambda m, x: m(x))
    ev = data["val" if cfg["eval_split"] == "val" else "test"]
    xe, ye = charlm.eval_windows(ev, cfg["block"], cfg["n_eval"])
    ranks = charlm.attention_ranks(net)
    keep = charlm.probe(net, xe[: cfg["n_probe"]])
    resid = charlm.residual_ranks(keep)
    units = charlm.mlp_units(net, keep)
    out = {"val_loss": charlm.evaluate_loss(net, xe, ye), "train_loss": float(np.mean(losses[-50:])),
           "qk_rank": float(np.mean(ranks["qk"])), "qk_rank_min": float(np.min(ranks["qk"])), "vo_rank": float(np.mean(ranks["vo"])),
           "resid_rank_last": resid[-1], "resid_rank": resid, "qk_rank_heads": ranks["qk"], "vo_rank_heads": ranks["vo"],
           "mlp_dead": units["dead"], "mlp_dup": units["duplicated"], "emb_rms": float(net.wte.weight.detach().square().mean().sqrt()),
           **pull_numbers(handle)}
    if handle.syre is not None:
        handle.syre.remove()
    return out


def design(cfg: Dict[str, Any]) -> Design:
    _check(cfg)
    strong = [float(x) for x in cfg["gammas_strong"]]
    sw = Sweep(cfg, metric="val_loss", better="min", required={"gammas_strong": strong})
    g, gt, at, ty, none = sw.g, sw.gt, sw.at, sw.ty, sw.none
    if g not in strong:
        raise ValueError(f"Invalid gammas_strong: {strong!r}; expected values that include gamma = {g:g}")
    m = cfg["noninferior_margin"]
    s = f"gamma {g:g}"
    tests = []
    for x in strong:
        sx, c = f"gamma {x:g}", (lambda a, x=x: cell(a, gamma=x))
        tests += [Test(f"{sx}: weight decay lowers the attention rank (W_Q W_K^T per head)", "qk_rank", c("wd"), none, direction="less",
                       key=f"collapse@{x:g}.wd_rank"),
                  Test(f"{sx}: weight decay raises the validation loss", "val_loss", c("wd"), none, key=f"collapse@{x:g}.wd_perf"),
                  Test(f"{sx}: syre's attention rank above weight decay's", "qk_rank", c("syre"), c("wd"), key=f"collapse@{x:g}.syre_rank"),
                  Test(f"{sx}: syre's validation loss below weight decay's", "val_loss", c("syre"), c("wd"), direction="less",
                       key=f"collapse@{x:g}.syre_perf")]
    tests += [
        Test(f"gamma {gt:g} (nanoGPT's): syre's validation loss not above weight decay's by more than {m:g} (relative)", "val_loss",
             ty("syre"), ty("wd"), direction="less", ratio=1.0 + m, key="cost"),
        Test(f"gamma {gt:g} (nanoGPT's, harm test, passes when harmed): syre's validation loss above weight decay's", "val_loss",
             ty("syre"), ty("wd"), role="secondary", key="harm"),
        Test(f"{s}: syre's value-output rank (W_O W_V per head) above weight decay's", "vo_rank", at("syre"), at("wd"), role="secondary",
             key="vo_rank"),
        Test(f"{s}: syre's residual-stream rank (last block) above weight decay's", "resid_rank_last", at("syre"), at("wd"),
             role="secondary", key="resid_rank"),
        Test(f"{s}: weight decay lowers the residual-stream rank (last block)", "resid_rank_last", at("wd"), none, direction="less",
             role="secondary", key="resid_rank.wd"),
    ]
    for a in cfg["arms_gmax"]:
        tests += [Test(f"{s}: {a}'s attention rank above weight decay's", "qk_rank", at(a), at("wd"), role="secondary", key=f"{a}.rank"),
                  Test(f"{s}: {a}'s validation loss below weight decay's", "val_loss", at(a), at("wd"), direction="less", role="secondary",
                       key=f"{a}.perf")]
    for a, gg in _variants(cfg):
        c = cell(a, gamma=gg)
        tests.append(Test(f"gamma {gg:g}: {a}'s validation loss below the default's (lecun)", "val_loss", c, cell("syre", gamma=gg),
                          direction="less", role="secondary", key=f"{a}@{gg:g}.better"))
        tests.append(Test(f"gamma {gg:g}: {a}'s validation loss above the default's (lecun)", "val_loss", c, cell("syre", gamma=gg),
                          role="secondary", key=f"{a}@{gg:g}.worse"))
    tests += sw.tuned_tests("validation loss", "val_loss", direction="less")
    tests += sw.heldout_tests("char LM", perf="val_loss", rank="qk_rank", better="min",
                              scale_arms=[a for a in cfg["arms_gmax"] if a.startswith("syre_match")])
    text, info = charlm.corpus()
    return sw.design(tests, [
        f"nanoGPT-style LM: {cfg['n_layer']} pre-LN blocks, {cfg['n_head']} heads, width {cfg['n_embd']}, context {cfg['block']}, tied "
        f"embedding/head, init N(0, {cfg['init_std']:g}^2); AdamW lr {cfg['lr']:g} (warmup {cfg['warmup']}, cosine to lr/10), betas "
        f"(0.9, 0.99), clip 1, {cfg['steps']} steps of {cfg['batch']} windows; decay on nanoGPT's decay group (2-D parameters) only. "
        f"Corpus: {info['source']}, {info['chars']} characters, {info['vocab']} distinct, SHA-256 {info['sha256']} (it depends on the "
        f"Python version); validation and test splits of {len(charlm.splits()['val'])} characters each; loss on {cfg['n_eval']} "
        f"windows, ranks of the residual stream on {cfg['n_probe']} windows."])


def _variants(cfg):
    """The sigma0 variants judged against the default: 'match' arms at the collapsing gamma, arms_typical at the typical one."""
    g, gt = float(cfg["gamma"]), float(cfg["gamma_typical"])
    return [(a, g) for a in cfg["arms_gmax"] if a.startswith("syre_match")] + [(a, gt) for a in cfg["arms_typical"]]


METRICS = ("val_loss", "qk_rank", "vo_rank", "resid_rank_last", "mlp_dead", "mlp_dup", "emb_rms")


def report(ctx) -> Dict[str, Any]:
    from .curves import (
        cell_table,
        collapse_finding,
        cost_finding,
        plot_curves,
        pull_table,
        sigma0_finding,
    )

    cfg = ctx.config
    g, gt = float(cfg["gamma"]), float(cfg["gamma_typical"])
    gammas = [float(x) for x in cfg["gammas"]]
    plot_curves(ctx, "e10_rank_vs_gamma", [("val_loss", "validation loss (nats/char)"), ("qk_rank", "eff. rank of W_Q W_K^T per head"),
                                           ("vo_rank", "eff. rank of W_O W_V per head"), ("resid_rank_last", "eff. rank, residual stream")],
                gammas, list(cfg["arms"]), {g: list(cfg["arms_gmax"]), gt: list(cfg["arms_typical"])}, title="E10 char LM")
    layers = [[fmt.md_cell(c.key)] + [fmt.ms([r["resid_rank"][i] for r in ctx.rows(c)]) for i in range(int(cfg["n_layer"]))]
              for c in ctx.protocol.design.cells if ctx.rows(c)]
    others = [f"{a}.{k}" for a in cfg["arms_gmax"] for k in ("rank", "perf")]
    parts = []
    for x in [float(v) for v in cfg["gammas_strong"]]:
        parts.append(collapse_finding(ctx, premise=[f"collapse@{x:g}.wd_rank", f"collapse@{x:g}.wd_perf"],
                                      syre_tests=[f"collapse@{x:g}.syre_rank", f"collapse@{x:g}.syre_perf"],
                                      others=others if x == g else [], gamma=x, what="the attention maps"))
    cost = cost_finding(ctx, ["cost"])
    finding = " ".join(parts)
    pairs = [(f"{a} at gamma {x:g}", f"{a}@{x:g}.better", f"{a}@{x:g}.worse") for a, x in _variants(cfg)]
    s0 = sigma0_finding(ctx, pairs) if pairs else ""
    head = "; ".join(f"{fmt.md_cell(k)} val loss {fmt.num(ctx.arms[k]['val_loss']['mean'])}, "
                     f"qk rank {fmt.num(ctx.arms[k]['qk_rank']['mean'])}"
                     for k in ("none", f"wd[gamma={g:g}]", f"syre[gamma={g:g}]", f"wd[gamma={gt:g}]", f"syre[gamma={gt:g}]")
                     if k in ctx.arms)
    return {"tables": ["## Cells\n\n" + cell_table(ctx, METRICS),
                       "## Residual-stream effective rank per block\n\n"
                       + fmt.md_table(["cell"] + [f"block {i + 1}" for i in range(int(cfg["n_layer"]))], layers),
                       pull_table(ctx)],
            "findings": {"headline": head, "collapse": finding, "cost": cost, "sigma0": s0}}


EXPERIMENT = Experiment(id="e10", title="nanoGPT-style character LM (AdamW, nanoGPT's decay groups): attention rank and loss vs gamma",
                        version=VERSION, changes=CHANGES,
                        rejudge=Rejudge(VERSION, 1, CLAIM_V1, "first pre-registered version", _v2_role),
                        claim=CLAIM, trial=trial, design=design, report=report, defaults=DEFAULTS, quick=QUICK, perf="val_loss",
                        better="min", rank="qk_rank", n_min=5, n_max=6, selection=1, heldout=True)
