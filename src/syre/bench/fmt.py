"""The one place numbers become text: mean ± std, p-values, verdicts, markdown tables, results.md."""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

__all__ = ["num", "ms", "pval", "verdict_word", "md_cell", "md_table", "test_result", "tests_table", "results_markdown"]

Number = Union[int, float]


def num(x: Optional[Number], digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits (plain notation between 1e-3 and 1e5); ``-`` for None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.{max(digits - 1, 1)}e}"
    if abs(x) >= 10 ** digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def _desc(v: Union[Dict[str, Any], Iterable[float]]) -> Dict[str, Any]:
    if isinstance(v, dict):
        return v
    from .stats import describe

    return describe(v)


def ms(v: Union[Dict[str, Any], Iterable[float]], digits: int = 3, pct: bool = False) -> str:
    """``"mean ± std"`` of values or of a ``{mean, std, n}`` dict; ``pct`` prints percentages."""
    d = _desc(v)
    if not d or d.get("mean") is None:
        return "-"
    m, s = d["mean"], d["std"] or 0.0
    if pct:
        return f"{100 * m:.1f}% ± {100 * s:.1f}"
    return f"{num(m, digits)} ± {num(s, 2)}"


def pval(p: Optional[float]) -> str:
    if p is None:
        return "p = -"
    if p == 0.0:
        return "p = 0 (no variance)"
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def verdict_word(v: Optional[bool]) -> str:
    return {True: "supported", False: "not supported", None: "undecided"}[v]


def md_cell(text: Any) -> str:
    """``text`` safe inside a markdown table cell (pipes escaped, no newlines)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def test_result(t: Dict[str, Any]) -> str:
    """``"pass: means 0.74 vs 0.65, p = 0.001"``-style summary of one evaluated test."""
    res = {True: "pass", False: "FAIL", None: "undecided"}[t.get("passed")]
    bits = []
    if t.get("mean_a") is not None:
        bits.append(f"means {num(t['mean_a'])}" + (f" vs {num(t['mean_b'])}" if t.get("mean_b") is not None else ""))
    if t.get("p") is not None:
        bits.append(pval(t["p"]))
    if t.get("holds_in") is not None:
        bits.append(f"holds in {t['holds_in']}/{t['n']} seeds, range [{num(t.get('min_x'))}, {num(t.get('max_x'))}]")
    return res + (": " + ", ".join(bits) if bits else "") + power_words(t)


def power_words(t: Dict[str, Any]) -> str:
    """``"; power 0.27 at n = 10: underpowered, n = 51 needed"`` for a primary t-test whose power was estimated."""
    if t.get("role") != "primary" or t.get("kind") != "t" or "power" not in t:
        return ""
    if t["power"] is None:
        return "; power not estimated" if "against H1" not in t.get("power_source", "") else "; pilot effect against H1"
    if t["power"] >= 0.8:
        return f"; power {num(t['power'], 2)}"
    need = f"n = {t['n_needed']} needed" if t.get("n_needed") else "no n up to 5000 suffices"
    return f"; power {num(t['power'], 2)} at n = {t['n']}: underpowered, {need}"


def tests_table(tests: List[Dict[str, Any]], families: Sequence[str] = ("shared", "tuned", "heldout")) -> str:
    order = {"primary": 0, "sanity": 1, "secondary": 2}
    rows = []
    for fam in families:
        for t in sorted((t for t in tests if t.get("family") == fam), key=lambda t: order[t["role"]]):
            rows.append([fam, t["role"], t["name"], t["rule"] + (f" ({t['why']})" if t.get("why") else ""), test_result(t)])
    return md_table(["family", "role", "test", "rule", "result"], rows) if rows else "(no tests)\n"


def arms_table(arms: Dict[str, Dict[str, Any]], metrics: Optional[Sequence[str]] = None) -> str:
    """One row per cell key, one column per metric (mean ± std)."""
    if not arms:
        return "(no results)\n"
    if metrics is None:
        metrics = []
        for m in arms.values():
            metrics += [k for k in m if k not in metrics]
    rows = [[key] + [ms(m.get(k, {})) for k in metrics] for key, m in arms.items()]
    n = max((d.get("n", 0) for m in arms.values() for d in m.values()), default=0)
    return md_table(["cell"] + list(metrics), rows) + f"\nmean ± std over n = {n} seeds per row.\n"


def results_markdown(summary: Dict[str, Any], tables: Sequence[str] = ()) -> str:
    """``results.md`` of a run, from its summary (and the experiment's own tables)."""
    env = summary.get("environment", {})
    pr = summary["protocol"]
    seeds = summary["seeds"]
    lines = [
        f"# {summary['experiment']}: {summary['title']}", "",
        f"**Claim (paper).** {summary['claim']}", "",
        (f"**Verdict.** The candidate chosen on the selection settings ({summary['chosen']['candidate']}) on the held-out settings and "
         f"fresh seeds: {verdict_word(summary['heldout_verdict'])}. " if "heldout_verdict" in summary else
         f"**Verdicts.** At the shared gamma: {verdict_word(summary['supported'])}. ")
        + (f"At each arm's tuned gamma: {verdict_word(summary.get('supported_tuned'))}." if pr["declaration"].get("tuning")
           else "No tuned comparison (nothing is tuned in this experiment).")
        + (" The library default sigma0 on held-out seeds: "
           f"{'survives' if summary['default_survives'] else 'does not survive' if summary['default_survives'] is False else 'undecided'}."
           if "default_survives" in summary else ""), "",
        f"Protocol version {pr['version']} (hash `{pr['hash']}`{', registered' if pr.get('registered') else ', not registered'}); "
        f"{pr['power'].get('statement', '')}. Evaluation seeds {seeds['evaluation']}; "
        f"selection seeds {seeds['selection'] or 'none (no tuning)'}.",
        "",
        f"{'Quick' if summary['quick'] else 'Full'} run, wall time {summary['wall_time_s']:.1f} s"
        + (f" (CPU time {summary['cpu_time_s']:.1f} s)" if cpu_known(summary) else
           " (CPU time of the worker processes not recorded)" if summary.get("cpu_time_s") is not None else "")
        + f", syre {env.get('syre')}, torch "
        f"{env.get('torch')}, git {str(env.get('git_revision'))[:10]}{' (dirty tree)' if env.get('git_dirty') else ''}.", "",
        f"Gamma convention: {summary['gamma_convention']}.", "",
        "sigma0: " + "; ".join(f"`{k}` {v['meaning']}" for k, v in summary["sigma0"]["arms"].items()) + ".", "",
        "## Tests", "", tests_table(summary["tests"]), "",
    ]
    if summary.get("power_check"):
        lines += [f"Power: {summary['power_check']['note']}.", ""]
    if summary.get("selection") and pr["declaration"].get("tuning"):
        lines += ["## Tuning (selection seeds, validation split)", "", selection_table(summary["selection"]), ""]
    if summary.get("findings"):
        lines += ["## Findings", ""] + [f"- {k}: {v}" for k, v in summary["findings"].items()] + [""]
    for t in tables:
        lines += [t, ""]
    lines += ["## All cells (evaluation seeds)", "", arms_table(summary["arms"]), ""]
    if summary.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""]
    lines += [f"![{p}]({p})\n" for p in summary.get("plots", [])]
    return "\n".join(lines)


def cpu_known(summary: Dict[str, Any]) -> bool:
    """Whether a run's recorded CPU time covers its trials (runs with worker processes recorded only the parent's before
    ``cpu_time_includes_workers``)."""
    if summary.get("cpu_time_s") is None:
        return False
    return bool(summary.get("cpu_time_includes_workers")) or "--jobs" not in " ".join(summary.get("command", []))


def selection_table(selection: Dict[str, Any]) -> str:
    rows = []
    for ctx_key, by_arm in selection.items():
        for arm, s in by_arm.items():
            grid = ", ".join(f"{_point(g)}: {num(g['mean'])}" for g in s["grid"])
            rows.append([ctx_key or "-", arm, _point(s["chosen"]), grid])
    return md_table(["context", "arm", "chosen", "grid (mean score)"], rows)


def _point(g: Dict[str, Any]) -> str:
    parts = []
    if g.get("gamma") is not None:
        parts.append(f"gamma {g['gamma']:g}")
    if g.get("sigma0") is not None:
        parts.append(f"sigma0 {g['sigma0']}")
    return ", ".join(parts) or "(no knob)"
