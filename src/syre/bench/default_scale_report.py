"""The default study's report and its registration (``EXPERIMENT``, beside the report so that the study's module
is imported by its report and never the other way round): the table candidate x setting x gamma (task metric, 95% interval), its plot, the
selection outcome, the held-out verdict and the power of each primary test (``summary.json``)."""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

import syre

from . import fmt, stats
from .arms import sigma0_label
from .default_scale import ARMS_DS, CLAIM, COMPARED, DEFAULTS, QUICK, VERSION, _c, choose, design, pilot, plan, select, trial
from .registry import Experiment

ROWS = ["none"] + COMPARED + ["chosen"]


def interval(values: List[float]) -> Dict[str, Any]:
    """Mean and its 95% t-interval over seeds (``half`` None with fewer than 2 values)."""
    v = np.asarray(values, float)
    if v.size == 0:
        return {"mean": None, "lo": None, "hi": None, "half": None, "n": 0}
    if v.size < 2:
        return {"mean": float(v.mean()), "lo": None, "hi": None, "half": None, "n": 1}
    half = float(stats._scipy_stats().t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return {"mean": float(v.mean()), "lo": float(v.mean() - half), "hi": float(v.mean() + half), "half": half, "n": int(v.size)}


def table(ctx) -> List[Dict[str, Any]]:
    """One row per (arm, setting, gamma): the task metric's mean and 95% interval on the evaluation seeds."""
    rows = []
    for s, st in ctx.config["settings"].items():
        for g in st["gammas"]:
            for a in ROWS:
                c = _c(a, s, g) if a != "none" else None
                from .protocol import cell

                vals = ctx.values(c if c is not None else cell("none", setting=s), st["metric"])
                rows.append({"arm": a, "setting": s, "role": st["role"], "gamma": float(g), "metric": st["metric"], **interval(vals)})
    return rows


def _md(rows, chosen: str) -> str:
    out = []
    for r in rows:
        ci = f"{fmt.num(r['mean'], 4)} [{fmt.num(r['lo'], 4)}, {fmt.num(r['hi'], 4)}]" if r["half"] is not None else fmt.num(r["mean"], 4)
        arm = f"chosen ({chosen})" if r["arm"] == "chosen" else r["arm"]
        out.append([r["setting"], r["role"], f"{r['gamma']:g}", r["metric"], arm, ci])
    return fmt.md_table(["setting", "role", "gamma", "task metric", "arm", "mean [95% interval]"], out)


def tables(selection: Dict[str, Any], rows: List[Dict[str, Any]]) -> List[str]:
    """The markdown tables of ``results.md``: the selection's scores and the task metric per arm, setting and gamma (from
    ``summary["selection"]`` and ``summary["table"]``)."""
    chosen = selection["chosen"]
    scores = fmt.md_table(["candidate", "score (mean standardised gain over weight decay)", "harmed at a typical gamma"],
                          [[c, fmt.num(v), ", ".join(selection["harmed"][c]) or "no"] for c, v in selection["scores"].items()])
    return ["## Selection (selection settings, selection seeds, validation splits)\n\n" + scores + f"\n\nChosen: **{chosen}** "
            f"({selection['why']}).", "## Task metric per arm, setting and gamma (evaluation seeds)\n\n" + _md(rows, chosen)]


def plot(ctx, rows) -> None:
    settings = list(ctx.config["settings"])
    fig, axes = ctx.subplots(1, len(settings), figsize=(3.3 * len(settings), 3.4))
    axes = np.atleast_1d(axes)
    for ax, s in zip(axes, settings):
        st = ctx.config["settings"][s]
        for k, a in enumerate(COMPARED + ["none"]):
            pts = [r for r in rows if r["setting"] == s and r["arm"] == a and r["mean"] is not None]
            if a == "none":
                pts = pts[:1]
            xs = [st["gammas"].index(r["gamma"]) + (k - 2.5) * 0.08 for r in pts] if a != "none" else [0.5]
            err = [r["half"] or 0.0 for r in pts]
            ax.errorbar(xs[: len(pts)], [r["mean"] for r in pts], yerr=err, fmt="o", capsize=3, label=a)
        ax.set_xticks([0, 1])
        ax.set_xticklabels([f"{g:g}\n(typical)" if i == 0 else f"{g:g}\n(collapsing)" for i, g in enumerate(st["gammas"])])
        ax.set_title(f"{s} ({st['role']})")
        ax.set_ylabel(st["metric"])
    axes[0].legend(fontsize=7)
    ctx.save(fig, "default_scale")


def report(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    selection = choose(cfg, lambda a, s, g: [float(r[cfg["settings"][s]["metric"]]) for r in sorted(
        (r for r in ctx.selection_records if r["arm"] == a and r["point"]["setting"] == s and r["point"]["gamma"] == g),
        key=lambda r: r["seed"])], ctx.protocol.alpha)
    chosen = selection["chosen"]
    rows = table(ctx)
    plot(ctx, rows)
    prim = [t for t in ctx.tests if t["role"] == "primary"]
    verdict = stats.verdict(ctx.tests, "heldout") if stats.sanity_ok(ctx.tests) and not ctx.quick else None
    cand = (ctx.protocol.power.get("candidates") or {}).get(chosen, {})
    power = {t["name"]: {"power": cand.get(t["name"], {}).get("power"), "basis": cand.get(t["name"], {}).get("basis"),
                         "pilot_sd": cand.get(t["name"], {}).get("pilot_sd"),
                         "effect_toward_h1": cand.get(t["name"], {}).get("effect_toward_h1"), "n": t["n"]} for t in prim}
    failed = [t["name"] for t in prim if t["passed"] is False]
    word = {True: "holds", False: "does not hold", None: "is undecided"}[verdict]
    head = (f"chosen on the selection settings: {chosen} (sigma0={selection['sigma0']!r}; {selection['why']}); on the held-out "
            f"settings and fresh seeds the choice {word}" + (f" (failed: {'; '.join(failed)})" if failed else ""))
    sig = {"library_default": syre.DEFAULT_SIGMA0, "default_meaning": sigma0_label(syre.DEFAULT_SIGMA0),
           "arms": {n: {"spec": a.sigma0, "meaning": sigma0_label(a.sigma0)} for n, a in ARMS_DS.items() if a.decay == "syre" and a.sigma0}}
    sig["arms"]["chosen"] = {"spec": selection["sigma0"], "meaning": sigma0_label(selection["sigma0"])}
    return {"tables": tables(selection, rows),
            "findings": {"headline": head},
            "summary": {"chosen": {"candidate": chosen, "sigma0": selection["sigma0"], "why": selection["why"]},
                        "heldout_verdict": verdict, "power": power, "table": rows, "sigma0": sig}}


EXPERIMENT = Experiment(id="default-scale", title="The default sigma0: chosen on an MLP and a char LM, judged on held-out models and seeds",
                        claim=CLAIM, trial=trial, design=design, report=report, defaults=DEFAULTS, quick=QUICK, version=VERSION,
                        perf=None, better="max", n_min=6, n_max=8, selection=3, quick_seeds=3, select=select, plan=plan, pilot=pilot)
