"""The default study: which sigma0 should ``attach`` use, chosen on some settings and judged on others.

Candidates (random anchors, syre with D = I): ``lecun`` (``sigma0="lecun"``, 1 / sqrt(fan_in), the
default when the study was registered), ``match`` (``"match"``: each tensor's own RMS at attach) and
``match0.3`` (``"match:0.3"``). References: ``l2init`` (L2-Init, ``target="init"``), ``wd`` (weight
decay toward zero) and ``none`` (no decay).

Settings, each the trial of an existing experiment at a smaller configuration (``SETTINGS``):
``mlp`` (E5's MLP), ``charlm`` (E10's nanoGPT-style char LM, std-0.02 init) are the *selection*
settings; ``gpt2`` (a GPT-2 model from transformers' ``GPT2Config``, ``Conv1D`` layers,
``syre.bench.gpt2lm``), ``resnet`` (E11's BatchNorm ResNet, norm layers excluded from every decay)
and ``gcn`` (E12's GCN) are *held-out*. Each setting runs at two gammas of its registered
experiment: a typical one (no harm allowed) and a collapsing one (the task metric must improve on
weight decay's).

The choice (``select``, declared in ``SELECTION_RULE``) is made on the selection settings and the
selection seeds only (validation splits); the chosen candidate (cells ``chosen[...]``, the same
trials as the candidate's) is then judged on the evaluation seeds: primary tests on the held-out
settings, secondary on the selection settings. Every candidate against weight decay and against
``lecun`` is reported (secondary). The seed count comes from a pilot (``pilot``) by ``plan``.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

import syre

from . import power as pw
from .arms import ARM_DEFAULTS, Arm
from .protocol import Design, Test, cell, seeds_for
from .registry import Experiment

VERSION = 1
CLAIM = ("A sigma0 rule chosen among 'lecun', 'match' and 'match:0.3' on an MLP and a nanoGPT-style char LM (selection seeds) "
         "does no harm at a typical weight decay (non-inferior to weight decay within a stated margin) and beats weight decay's "
         "task metric at a collapsing one, on settings and seeds that played no part in the choice: a GPT-2 (Conv1D) char LM, a "
         "BatchNorm ResNet with its norm layers excluded, and a GCN.")

CANDIDATES = {"lecun": "lecun", "match": "match", "match0.3": "match:0.3"}
ARMS_DS: Dict[str, Arm] = {
    "none": Arm("none", "no decay", decay="none"),
    "wd": Arm("wd", "weight decay", decay="wd"),
    **{n: Arm(n, f"syre, sigma0={s!r}", decay="syre", sigma0=s, d_spread=0.0) for n, s in CANDIDATES.items()},
    "l2init": Arm("l2init", "L2-Init (target='init')", decay="l2init"),
    "chosen": Arm("chosen", "syre at the candidate chosen on the selection settings", decay="syre", sigma0=None, d_spread=0.0),
}
COMPARED = ["wd", "lecun", "match", "match0.3", "l2init"]

_LM = {"n_layer": 2, "n_head": 4, "n_embd": 64, "block": 32, "batch": 16, "steps": 250, "warmup": 20, "lr": 1e-3, "init_std": 0.02,
       "n_eval": 256, "n_probe": 32}
#: setting -> experiment, role, task metric, rank metric, gammas (typical, collapsing: from the registered experiment), margin, config.
SETTINGS: Dict[str, Dict[str, Any]] = {
    "mlp": {"from": "e5", "role": "selection", "metric": "test_acc", "better": "max", "rank": "eff_rank_last", "gammas": [0.1, 10.0],
            "margin": 0.01, "config": {"dataset": "digits", "width": 64, "depth": 3, "lr": 1e-3, "batch": 64, "epochs": {"digits": 10},
                                       "n_train": 4000, "n_test": 2000, "size": 14, "n_rank": 300, "rank_rtol": 1e-3}},
    "charlm": {"from": "e10", "role": "selection", "metric": "val_loss", "better": "min", "rank": "qk_rank", "gammas": [0.1, 10.0],
               "margin": 0.01, "config": dict(_LM)},
    "gpt2": {"from": "gpt2lm", "role": "heldout", "metric": "val_loss", "better": "min", "rank": "qk_rank", "gammas": [0.1, 10.0],
             "margin": 0.01, "config": dict(_LM)},
    "resnet": {"from": "e11", "role": "heldout", "metric": "test_acc", "better": "max", "rank": "rank_last", "gammas": [5e-3, 1.0],
               "margin": 0.01, "config": {"dataset": "digits", "width": 8, "stages": 2, "lr": 0.1, "momentum": 0.9, "batch": 64,
                                          "epochs": 4, "n_train": 4000, "n_test": 2000, "size": 14, "n_rank": 300}},
    "gcn": {"from": "e12", "role": "heldout", "metric": "test_acc", "better": "max", "rank": "emb_rank", "gammas": [0.01, 10.0],
            "margin": 0.01, "config": {"n_nodes": 60, "blocks": 4, "n_feat": 16, "p_in": 0.3, "p_out": 0.02, "signal": 1.0,
                                       "n_train": 128, "n_eval_graphs": 16, "width": 32, "layers": 2, "lr": 1e-2, "batch": 16,
                                       "steps": 150, "equiv_tol": 1e-12}},
}
SELECTION_RULE = (
    "on the selection settings (role 'selection'), at both gammas, on the selection seeds (validation splits), each candidate's "
    "per-seed gain over weight decay (task metric, signed so that positive is better) is standardised by the pooled within-cell "
    "standard deviation of that (setting, gamma) over weight decay and the candidates; a candidate's score is the mean of its "
    "standardised mean gains over the (setting, gamma) pairs. A candidate significantly worse than weight decay at a typical gamma "
    "by more than harm_tolerance times the setting's non-inferiority margin (one-sided paired t-test, p < alpha; the margin is "
    "relative to weight decay's mean for a lower-is-better metric) is excluded. The highest-scoring remaining candidate is "
    "chosen unless its score exceeds "
    "lecun's by no more than tie_margin (a tie), or every candidate is excluded: then lecun, the existing default, is chosen.")

#: ``sigma0`` and ``d_spread`` pinned at the library defaults of the registered run (every arm sets its own sigma0; the pin keeps
#: the registered declaration when the library's default moves).
DEFAULTS: Dict[str, Any] = {**ARM_DEFAULTS, "sigma0": "lecun", "d_spread": 0.1, "settings": SETTINGS, "candidates": CANDIDATES,
                            "selection_rule": SELECTION_RULE, "tie_margin": 0.1, "harm_tolerance": 0.1, "gamma": 0.0, "setting": ""}
QUICK = {"settings": {
    "mlp": {**SETTINGS["mlp"], "config": {**SETTINGS["mlp"]["config"], "width": 16, "epochs": {"digits": 1}, "n_rank": 64}},
    "charlm": {**SETTINGS["charlm"], "config": {**_LM, "n_layer": 1, "n_embd": 16, "block": 8, "batch": 4, "steps": 6, "warmup": 2,
                                                 "n_eval": 16, "n_probe": 4}},
    "gpt2": {**SETTINGS["gpt2"], "config": {**_LM, "n_layer": 1, "n_embd": 16, "block": 8, "batch": 4, "steps": 6, "warmup": 2,
                                             "n_eval": 16, "n_probe": 4}},
    "resnet": {**SETTINGS["resnet"], "config": {**SETTINGS["resnet"]["config"], "width": 2, "epochs": 1, "n_rank": 64}},
    "gcn": {**SETTINGS["gcn"], "config": {**SETTINGS["gcn"]["config"], "n_train": 8, "n_eval_graphs": 4, "width": 8, "batch": 4,
                                          "steps": 5}},
}}


def _sub(cfg: Dict[str, Any], name: str) -> Dict[str, Any]:
    settings = cfg["settings"]
    if name not in settings:
        raise ValueError(f"Invalid setting: {name!r}; expected one of {sorted(settings)}")
    return settings[name]


def trial(cfg: Dict[str, Any], arm: Arm, seed: int) -> Dict[str, Any]:
    """Run the trial of ``cfg["setting"]`` (its experiment's trial, at this study's configuration) with ``arm``."""
    st = _sub(cfg, cfg["setting"])
    sub = {**ARM_DEFAULTS, **st["config"], "gamma": float(cfg.get("gamma") or 0.0), "eval_split": cfg.get("eval_split", "test")}
    with warnings.catch_warnings():
        for name in dir(syre):  # an anchor far from its tensor's scale is this study's question, not a mistake
            cls = getattr(syre, name)
            if isinstance(cls, type) and issubclass(cls, Warning) and "nchor" in name:
                warnings.simplefilter("ignore", cls)
        if st["from"] == "gpt2lm":
            from . import gpt2lm

            return gpt2lm.trial({**sub, "n_eval": sub["n_eval"]}, arm, seed)
        if st["from"] == "e11":  # the norm layers are excluded from every decay, as users do
            from . import e11

            return e11.trial(sub, replace(arm, tag="bn_exclude") if arm.decay != "none" else arm, seed)
        from .registry import get_experiment

        return get_experiment(st["from"]).trial(sub, arm, seed)


def _c(arm: str, s: str, g: float):
    return cell(arm, setting=s, gamma=float(g))


def primary_tests(cfg: Dict[str, Any], who: str = "chosen") -> List[Test]:
    """The tests of ``who`` (a candidate or ``chosen``) against weight decay: primary on the held-out settings."""
    out = []
    for s, st in cfg["settings"].items():
        gt, gc = (float(x) for x in st["gammas"])
        m, met = st["margin"], st["metric"]
        role = "primary" if st["role"] == "heldout" else "secondary"
        side = "greater" if st["better"] == "max" else "less"
        ni = dict(threshold=-m) if st["better"] == "max" else dict(ratio=1.0 + m, direction="less")
        word = "accuracy" if met == "test_acc" else "validation loss"
        out += [Test(f"{s}, gamma {gt:g} (typical): {who}'s {word} not worse than weight decay's by more than {m:g}"
                     f"{' (relative)' if st['better'] == 'min' else ''}", met, _c(who, s, gt), _c("wd", s, gt), role=role,
                     family="heldout", **ni),
                Test(f"{s}, gamma {gc:g} (collapsing): {who}'s {word} better than weight decay's", met, _c(who, s, gc), _c("wd", s, gc),
                     direction=side, role=role, family="heldout")]
    return out


def design(cfg: Dict[str, Any]) -> Design:
    settings = cfg["settings"]
    roles = {st["role"] for st in settings.values()}
    if not roles <= {"selection", "heldout"} or "selection" not in roles:
        raise ValueError(f"Invalid settings: roles {sorted(roles)}; expected 'selection' and 'heldout' settings")
    cells, tests = [], primary_tests(cfg)
    for s, st in settings.items():
        gt, gc = (float(x) for x in st["gammas"])
        met, side = st["metric"], "greater" if st["better"] == "max" else "less"
        cells.append(cell("none", setting=s))
        cells += [_c(a, s, g) for g in (gt, gc) for a in COMPARED + ["chosen"]]
        tests += [Test(f"{s}, gamma {gt:g} (harm test, passes when harmed): chosen's {met} worse than weight decay's",
                       met, _c("chosen", s, gt),
                       _c("wd", s, gt), direction="less" if side == "greater" else "greater", role="secondary", family="heldout"),
                  Test(f"{s}, gamma {gc:g}: chosen's {st['rank']} above weight decay's", st["rank"], _c("chosen", s, gc), _c("wd", s, gc),
                       role="secondary", family="heldout"),
                  Test(f"{s}, gamma {gc:g}: weight decay's {met} worse than no decay's", met, _c("wd", s, gc), cell("none", setting=s),
                       direction="less" if side == "greater" else "greater", role="secondary")]
        for g in (gt, gc):
            for a in COMPARED[1:]:
                tests.append(Test(f"{s}, gamma {g:g}: {a}'s {met} better than weight decay's", met, _c(a, s, g), _c("wd", s, g),
                                  direction=side, role="secondary"))
                if a != "lecun":
                    tests.append(Test(f"{s}, gamma {g:g}: {a}'s {met} better than lecun's", met, _c(a, s, g), _c("lecun", s, g),
                                      direction=side, role="secondary"))
    return Design(arms=list(ARMS_DS.values()), cells=cells, tests=tests, notes=notes(cfg))


def _epochs(c: Dict[str, Any]):
    e = c["epochs"]
    return e.get(c["dataset"], e) if isinstance(e, dict) else e


def notes(cfg: Dict[str, Any]) -> List[str]:
    s = cfg["settings"]
    what = {
        "mlp": lambda c: f"E5's MLP at width {c['width']}, {_epochs(c)} epochs on {c['dataset']}",
        "charlm": lambda c: f"E10's char LM at {c['n_layer']} layers, width {c['n_embd']}, context {c['block']}, {c['steps']} steps of "
                            f"{c['batch']} windows",
        "gpt2": lambda c: f"the GPT-2 model at {c['n_layer']} layers, width {c['n_embd']}, context {c['block']}, {c['steps']} steps",
        "resnet": lambda c: f"E11's ResNet at width {c['width']}, {c['stages']} stages, {c['epochs']} epochs on "
                            f"{c.get('dataset', 'fashion')}",
        "gcn": lambda c: f"E12's GCN at width {c['width']}, {c['layers']} layers, {c['steps']} steps on {c['n_train']} graphs",
    }
    parts = [what[k](v["config"]) for k, v in s.items() if k in what]
    return [
        "what was shrunk, to fit both CPU cores in about 40 minutes: " + "; ".join(parts) + ". Fashion-MNIST is not on the machine "
        "the study ran on: the MLP and the ResNet use scikit-learn's digits (8x8).",
        "the ResNet's norm layers (BatchNorm) are excluded from every decay (syre.NORM_TYPES), as users do.",
        "the 'lecun' candidate is the library's rule as it stood at the run: for transformers' Conv1D (weight [in, out]) it read "
        "the fan-in from dim 1.",
    ]


# ----------------------------------------------------------------------------- the selection rule
def _signed(st, a: List[float], b: List[float]) -> np.ndarray:
    d = np.asarray(a, float) - np.asarray(b, float)
    return d if st["better"] == "max" else -d


def choose(cfg: Dict[str, Any], values, alpha: float = 0.05) -> Dict[str, Any]:
    """Apply ``SELECTION_RULE``; ``values(arm, setting, gamma) -> per-seed task metric`` (seed order)."""
    from .stats import ttest

    scores: Dict[str, List[float]] = {c: [] for c in cfg["candidates"]}
    harmed: Dict[str, List[str]] = {c: [] for c in cfg["candidates"]}
    pairs = []
    for s, st in cfg["settings"].items():
        if st["role"] != "selection":
            continue
        for i, g in enumerate(float(x) for x in st["gammas"]):
            wd = values("wd", s, g)
            cells = {c: values(c, s, g) for c in cfg["candidates"]}
            resid = [np.asarray(v, float) - np.mean(v) for v in [wd] + list(cells.values())]
            dof = sum(len(r) - 1 for r in resid)
            sd = math.sqrt(sum(float((r ** 2).sum()) for r in resid) / max(dof, 1)) or 1e-12
            pairs.append(f"{s} gamma {g:g}")
            for c, v in cells.items():
                d = _signed(st, v, wd)
                scores[c].append(float(d.mean()) / sd)
                tol = float(cfg["harm_tolerance"]) * float(st["margin"]) * (abs(float(np.mean(wd))) if st["better"] == "min" else 1.0)
                if i == 0 and len(d) >= 2 and ttest(d, -tol, "less")["p"] < alpha:
                    harmed[c].append(f"{s} gamma {g:g}")
    mean = {c: float(np.mean(v)) for c, v in scores.items()}
    ok = [c for c in cfg["candidates"] if not harmed[c]]
    best = max(ok, key=lambda c: mean[c]) if ok else None
    if best is None:
        chosen, why = "lecun", "every candidate was harmed at a typical gamma: the existing default"
    elif best != "lecun" and "lecun" in ok and mean[best] - mean["lecun"] <= float(cfg["tie_margin"]):
        chosen, why = "lecun", f"{best} scored within tie_margin {cfg['tie_margin']:g} of lecun: a tie goes to the existing default"
    else:
        chosen, why = best, "the highest score among the candidates not harmed at a typical gamma"
    return {"chosen": chosen, "sigma0": cfg["candidates"][chosen], "why": why, "scores": mean, "per_pair": scores, "pairs": pairs,
            "harmed": harmed}


def select(ctx) -> Tuple[Dict[str, Any], Dict[str, Arm]]:
    """The selection phase: the candidates and weight decay on the selection settings and seeds; the choice."""
    cfg, seeds = ctx.config, ctx.protocol.selection_seeds
    jobs = [(ARMS_DS[a], seed, {"setting": s, "gamma": float(g), "eval_split": "val"}) for s, st in cfg["settings"].items()
            if st["role"] == "selection" for g in st["gammas"] for a in ["wd"] + list(cfg["candidates"]) for seed in seeds]
    ctx._progress.total += len(jobs)
    recs = ctx.run_many(jobs, phase="select")

    def values(a, s, g):
        metric = cfg["settings"][s]["metric"]
        rows = sorted((r for r in recs if r["arm"] == a and r["point"]["setting"] == s and r["point"]["gamma"] == g),
                      key=lambda r: r["seed"])
        return [float(r[metric]) for r in rows]

    out = choose(cfg, values, ctx.protocol.alpha)
    arm = replace(ARMS_DS[out["chosen"]], name="chosen", label=f"chosen: {ARMS_DS[out['chosen']].label}")
    resolved = {c.key: arm for c in ctx.protocol.design.cells if c.arm == "chosen"}
    ctx.log(f"selection: {out['chosen']} ({out['why']}); scores {out['scores']}")
    return out, resolved


# ----------------------------------------------------------------------------- pilot and power
def _effect(t: Test, cells: Dict[str, Dict[str, List[float]]]) -> Optional[Dict[str, Any]]:
    a = cells.get(t.a.key, {}).get(t.metric)
    b = cells.get(t.b.key, {}).get(t.metric)
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return None
    x = np.asarray(a, float) - t.ratio * np.asarray(b, float)
    sd = float(x.std(ddof=1))
    ni = t.ratio != 1.0 or t.threshold != 0.0
    if ni:  # non-inferiority: the power at the margin (the two arms equal)
        eff = t.threshold * -1.0 if t.direction == "greater" else (t.ratio - 1.0) * float(np.mean(b))
        basis = "the margin (equal arms)"
    else:
        d = float(x.mean()) - t.threshold
        eff, basis = (d if t.direction == "greater" else -d), "the pilot effect"
    return {"pilot_mean_x": float(x.mean()), "pilot_sd": sd, "effect_toward_h1": eff, "basis": basis, "pilot_n": len(a)}


def plan(pilot: Optional[Dict[str, Any]], design_: Design, exp: Experiment, quick: bool) -> Dict[str, Any]:
    """Seed count: the smallest n in [n_min, n_max] at which each primary test of the candidate that the selection rule picks on
    the pilot data has power >= TARGET_POWER (at the pilot effect; at the margin for non-inferiority); power for every candidate."""
    rule = (f"smallest n in [{exp.n_min}, {exp.n_max}] at which every primary test of the candidate the selection rule picks on the "
            f"pilot's selection settings, whose effect lies on its H1 side, has power >= {pw.TARGET_POWER:g} (one-sided t-test, "
            "noncentral t; at the pilot effect, at the margin for non-inferiority tests)")
    out: Dict[str, Any] = {"rule": rule, "target": pw.TARGET_POWER, "n_min": exp.n_min, "n_max": exp.n_max}
    if not pilot or quick:
        out.update(n=exp.n_min, pilot=None, statement=f"no pilot recorded: n = n_min = {exp.n_min}, power not estimated")
        return out
    cfg = exp.config()
    cells = pilot["cells"]

    def values(a, s, g):
        return cells.get(_c(a, s, g).key, {}).get(cfg["settings"][s]["metric"], [])

    predicted = choose(cfg, values)["chosen"]
    eff = {c: [(t, _effect(t, cells)) for t in primary_tests(cfg, c) if t.role == "primary"] for c in cfg["candidates"]}
    n = exp.n_min
    for t, e in eff[predicted]:
        while e and e["effect_toward_h1"] > 0 and n < exp.n_max and pw.power_t(e["effect_toward_h1"], e["pilot_sd"], n) < pw.TARGET_POWER:
            n += 1
    per = {}
    for c, rows in eff.items():
        per[c] = {}
        for t, e in rows:
            name = t.name.replace(f"{c}'s", "chosen's")
            if e is None:
                per[c][name] = {"note": "not in the pilot"}
            else:
                p = pw.power_t(e["effect_toward_h1"], e["pilot_sd"], n) if e["effect_toward_h1"] > 0 else None
                per[c][name] = {**e, "power": p, "note": "" if p is not None else "the pilot effect lies against H1"}
    low = [k for k, v in per[predicted].items() if v.get("power") is not None and v["power"] < pw.TARGET_POWER]
    statement = f"n = {n} evaluation seeds (pilot's choice: {predicted})"
    if low:
        statement += f"; capped at n_max, power below {pw.TARGET_POWER:g} for: {', '.join(low)}"
    out.update(n=n, predicted=predicted, candidates=per, statement=statement,
               pilot={k: pilot.get(k) for k in ("seeds", "git_revision", "date", "wall_time_s", "trial_time_s")})
    return out


def pilot(exp: Experiment, *, n: int = pw.PILOT_SEEDS, verbose: bool = True, jobs: int = 1, out=None) -> Dict[str, Any]:
    """Weight decay and the candidates at every (setting, gamma) on the pilot seeds; per-seed task metrics per cell."""
    import tempfile
    from pathlib import Path

    from .protocol import Protocol
    from .runner import Context, Progress, environment

    cfg = exp.config()
    cells = [_c(a, s, g) for s, st in cfg["settings"].items() for g in st["gammas"] for a in ["wd"] + list(cfg["candidates"])]
    design_ = Design(arms=list(ARMS_DS.values()), cells=cells, tests=[])
    proto = Protocol(experiment=exp.id, version=exp.version, changes="pilot", claim=exp.claim, design=design_,
                     evaluation_seeds=seeds_for("pilot", n), selection_seeds=[], power={}, config={})
    proto.config = cfg
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix=f"pilot-{exp.id}-"))
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(exp, proto, False, out, verbose, jobs)
    ctx.config = cfg
    ctx._progress = Progress(f"{exp.id} pilot", len(cells) * n, verbose)
    t0 = time.perf_counter()
    try:
        recs = ctx.run_many([(ARMS_DS[c.arm], seed, c.where) for c in cells for seed in proto.evaluation_seeds])
    finally:
        ctx.close()
    per: Dict[str, Dict[str, List[float]]] = {}
    for c in cells:
        st = cfg["settings"][c.where["setting"]]
        per[c.key] = {st["metric"]: ctx.values(c, st["metric"]), "time_s": ctx.values(c, "time_s")}
    times = [r["time_s"] for r in recs]
    return {"seeds": proto.evaluation_seeds, "git_revision": environment().get("git_revision"), "date": time.strftime("%Y-%m-%d"),
            "wall_time_s": round(time.perf_counter() - t0, 1), "trial_time_s": round(float(np.mean(times)), 2), "cells": per}
