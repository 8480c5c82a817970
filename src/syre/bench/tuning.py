"""Tuned comparisons: each arm's gamma (and sigma0) chosen on the selection seeds by one grid and rule.

``select(ctx)`` trains every grid point of every tuned arm of the protocol's ``Tuning`` on the
selection seeds, with ``eval_split = "val"`` (scores on a validation split drawn from the training
pool, never on the test images), picks the best mean (ties: the first point in grid order) and
returns the arms the evaluation phase trains as ``<arm>@tuned`` (and ``<arm>@<source>-gamma``).
``plot(ctx)`` draws the scores against gamma: the sensitivity of every arm to its decay strength.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .arms import Arm
from .protocol import Cell, point_key

__all__ = ["select", "context_key", "plot"]


def context_key(context) -> str:
    return point_key("", dict(context)).strip("[]") or "all"


def _better(a: float, b: Optional[float], better: str) -> bool:
    if b is None:
        return True
    return a > b if better == "max" else a < b


def select(ctx) -> Tuple[Dict[str, Any], Dict[str, Arm]]:
    """Run the selection phase; ``(selection report, cell key -> resolved Arm)``."""
    tuning = ctx.protocol.design.tuning
    design = ctx.protocol.design
    report: Dict[str, Any] = {}
    resolved: Dict[str, Arm] = {}
    chosen: Dict[Tuple[str, str], Tuple[Optional[float], Any]] = {}
    for context in tuning.contexts:
        where = dict(context)
        ck = context_key(context)
        report[ck] = {}
        for name in tuning.arms:
            arm = design.arm(name)
            grid = []
            best, best_score = None, None
            for gamma, sigma0 in tuning.grid(arm):
                candidate = arm.tuned(gamma, sigma0, suffix="")
                point = {**where, "gamma": gamma}
                if sigma0 is not None:
                    point["sigma0"] = sigma0
                scores = []
                for seed in ctx.protocol.selection_seeds:
                    rec = ctx.run_trial(candidate, seed, {**where, "eval_split": "val"}, phase="select", point=point)
                    scores.append(float(rec[tuning.metric]))
                mean = float(np.mean(scores))
                grid.append({"gamma": gamma, "sigma0": sigma0, "mean": mean, "std": float(np.std(scores, ddof=1)) if len(scores) > 1
                             else 0.0, "n": len(scores)})
                if _better(mean, best_score, tuning.better):
                    best, best_score = (gamma, sigma0), mean
            chosen[(ck, name)] = best
            report[ck][name] = {"grid": grid, "chosen": {"gamma": best[0], "sigma0": best[1], "mean": best_score}}
            resolved[Cell(f"{name}@tuned", tuple(context)).key] = arm.tuned(*best)
        for name, source in tuning.also:
            gamma = chosen[(ck, source)][0]
            resolved[Cell(f"{name}@{source}-gamma", tuple(context)).key] = design.arm(name).tuned(gamma, None, suffix=f"@{source}-gamma")
    return report, resolved


def plot(ctx, selection: Dict[str, Any]) -> None:
    """Score against gamma for every tuned arm (syre arms: one line per sigma0), one panel per context."""
    tuning = ctx.protocol.design.tuning
    if not selection:
        return
    fig, axes = ctx.subplots(1, len(selection), figsize=(4.6 * len(selection), 3.6), squeeze=False)
    for ax, (ck, by_arm) in zip(axes[0], selection.items()):
        for i, (name, s) in enumerate(by_arm.items()):
            sig = sorted({str(g["sigma0"]) for g in s["grid"]})
            for j, sg in enumerate(sig):
                pts = [g for g in s["grid"] if str(g["sigma0"]) == sg]
                label = name if sg == "None" else f"{name}, sigma0 {sg}"
                ax.errorbar([g["gamma"] for g in pts], [g["mean"] for g in pts], yerr=[g["std"] for g in pts], marker="o",
                            color=f"C{i}", ls=["-", "--", ":", "-."][j % 4], capsize=2, label=label)
            ch = s["chosen"]
            ax.scatter([ch["gamma"]], [ch["mean"]], s=120, facecolors="none", edgecolors=f"C{i}", zorder=5)
        ax.set_xscale("log")
        means = [g["mean"] for s in by_arm.values() for g in s["grid"]]
        if min(means) > 0 and max(means) > 20 * min(means):
            ax.set_yscale("log")
        ax.set_xlabel("gamma (decoupled)")
        ax.set_ylabel(f"{tuning.metric} (validation, selection seeds)")
        ax.set_title(f"{ctx.exp.id} tuning: {ck} (circle: chosen)", fontsize=9)
        ax.legend(fontsize=6)
    ctx.save(fig, f"{ctx.exp.id}_tuning")


def tuned_sigma0(selection: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The chosen points as a flat list (for the summary's sigma0 statement)."""
    return [{"context": ck, "arm": name, **s["chosen"]} for ck, by_arm in selection.items() for name, s in by_arm.items()]
