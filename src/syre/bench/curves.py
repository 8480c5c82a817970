"""Report pieces shared by the gamma sweeps of E10 to E12: metric-vs-gamma plots, pull-number tables, the collapse finding.

Every number they print comes from the run's records (``ctx.values``) or its evaluated tests
(``ctx.result``), so the findings say what the tests found, including "no collapse in the tested
range" and "syre does nothing here".
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import fmt

__all__ = ["plot_curves", "pull_table", "cell_table", "collapse_finding", "cost_finding", "mean"]

PULL = ("pull_decay", "pull_anchor", "pull_pull")


def mean(ctx, c, metric: str) -> Optional[float]:
    v = ctx.values(c, metric)
    return float(np.mean(v)) if v else None


def plot_curves(ctx, name: str, panels: Sequence[tuple], gammas: Sequence[float], arms: Sequence[str], extra: Dict[float, List[str]],
                where: Optional[Dict[str, Any]] = None, title: str = "") -> None:
    """One panel per ``(metric, label)``: mean ± std against gamma for ``arms``, no decay as a dashed line, the
    ``extra`` arms at their gamma as offset squares."""
    where = dict(where or {})
    fig, axes = ctx.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels):
        none = ctx.values("none", metric, **where)
        if none:
            ax.axhline(np.mean(none), color="k", ls="--", lw=0.8, label="no decay")
        for i, arm in enumerate(arms):
            vals = [ctx.values(arm, metric, **where, gamma=g) for g in gammas]
            ax.errorbar(gammas, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], marker="o", color=f"C{i}", capsize=2, label=arm)
        k = len(arms)
        for g, names in extra.items():
            for j, arm in enumerate(names):
                v = ctx.values(arm, metric, **where, gamma=g)
                if v:
                    ax.errorbar([g * (1.1 + 0.08 * j)], [np.mean(v)], yerr=[np.std(v)], marker="s", color=f"C{k + j}", capsize=2,
                                label=arm if g == max(extra) else None)
        ax.set_xscale("log")
        ax.set_xlabel("gamma (decoupled)")
        ax.set_ylabel(label)
        ax.set_title(title, fontsize=9)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    axes[0][0].legend(handles, labels, fontsize=7)
    ctx.save(fig, name)


def cell_table(ctx, metrics: Sequence[str], keys: Optional[Sequence[str]] = None) -> str:
    """Every evaluated cell (or ``keys``) with mean ± std of ``metrics``."""
    keys = [c.key for c in ctx.protocol.design.cells] if keys is None else keys
    rows = [[fmt.md_cell(k)] + [fmt.ms(ctx.arms.get(k, {}).get(m, {})) for m in metrics] for k in keys if k in ctx.arms]
    return fmt.md_table(["cell"] + list(metrics), rows)


def pull_table(ctx) -> str:
    """The pull numbers of every cell whose arm attached syre (``Syre.pull_report()`` totals)."""
    rows = []
    for c in ctx.protocol.design.cells:
        d = ctx.arms.get(c.key, {})
        if "pull_decay" in d:
            rows.append([fmt.md_cell(c.key)] + [fmt.ms(d.get(m, {})) for m in PULL])
    return ("## Does syre matter here? Pull numbers (`Syre.pull_report()`, first steps)\n\n"
            "decay = lr x gamma x RMS(p) / RMS(update) (is the decay strong enough to shape the weights?), anchor = sigma0 / RMS(p) "
            "(does syre differ from weight decay?), pull = their product; element-weighted medians over the decayed parameters.\n\n"
            + fmt.md_table(["cell", "decay", "anchor", "pull"], rows))


def _brief(ctx, names) -> str:
    """``name: mean_a vs mean_b (passed|failed|undecided, p)`` of each evaluated test of ``names``."""
    out = []
    for n in names:
        t = ctx.result(n)
        p = "" if t.get("p") is None else f", {fmt.pval(t['p'])}"
        word = "passed" if t["passed"] else "undecided" if t["passed"] is None else "failed"
        out.append(f"{t['name']}: {fmt.num(t.get('mean_a'))} vs {fmt.num(t.get('mean_b'))} ({word}{p})")
    return "; ".join(out)


def collapse_finding(ctx, *, premise: Sequence[str], syre_tests: Sequence[str], others: Sequence[str], gamma: float, what: str) -> str:
    """Sentences from the evaluated tests: does weight decay collapse ``what`` at ``gamma`` (the ``premise`` tests),
    and what syre (``syre_tests``) and the other arms (``others``) do there; where syre's tests fail it says so first."""
    prem = [ctx.result(n)["passed"] for n in premise]
    if all(v is True for v in prem):
        head = f"Weight decay collapses {what} at gamma {gamma:g}: {_brief(ctx, premise)}."
    elif any(v is False for v in prem):
        head = f"No collapse of {what} by weight decay at gamma {gamma:g}: {_brief(ctx, premise)}."
    else:
        head = f"Whether weight decay collapses {what} at gamma {gamma:g} is undecided: {_brief(ctx, premise)}."
    ok = {n: ctx.result(n)["passed"] for n in syre_tests}
    failed = [n for n, v in ok.items() if v is False]
    rest = [n for n in syre_tests if n not in failed]
    if failed and not rest:
        text = f"{head} Syre does nothing measurable there: {_brief(ctx, failed)}."
    elif failed and any(ok[n] for n in rest):
        text = f"{head} Syre helps there only in part. Not: {_brief(ctx, failed)}. Yes: {_brief(ctx, rest)}."
    elif failed:
        text = f"{head} Syre does not help measurably there: {_brief(ctx, failed)}; undecided: {_brief(ctx, rest)}."
    elif all(ok.values()):
        text = f"{head} Syre helps there: {_brief(ctx, syre_tests)}."
    else:
        text = f"{head} What syre does there is undecided: {_brief(ctx, syre_tests)}."
    if others:
        text += f" Other arms there: {_brief(ctx, others)}."
    return text


def cost_finding(ctx, tests: Sequence[str]) -> str:
    """What syre costs at the typical setting (its non-inferiority tests), from the evaluated tests."""
    ok = [ctx.result(n)["passed"] for n in tests]
    word = ("costs nothing measurable" if all(v is True for v in ok) else
            "is not shown to be harmless" if any(v is False for v in ok) else "has an undecided cost")
    return f"At the typical setting syre {word}: {_brief(ctx, tests)}."


def sigma0_finding(ctx, pairs: Sequence[tuple]) -> str:
    """``pairs``: ``(label, better_test, worse_test)``: for each, whether the other sigma0 did significantly better than
    the library default, significantly worse, or neither (from the evaluated tests)."""
    out = []
    for label, better, worse in pairs:
        b, w = ctx.result(better), ctx.result(worse)
        word = ("better than" if b["passed"] else "worse than" if w["passed"] else
                "undecided against" if b["passed"] is None else "not significantly different from")
        p = b.get("p") if b["passed"] or not w["passed"] else w.get("p")
        out.append(f"{label}: {word} the default ({fmt.num(b.get('mean_a'))} vs {fmt.num(b.get('mean_b'))}"
                   + (f", {fmt.pval(p)}" if p is not None else "") + ")")
    return "; ".join(out) + "."
