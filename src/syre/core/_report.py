"""What a ``Syre`` reports: ``coverage()`` (one row per parameter), ``pull_report()`` and ``pull_ratios()``
(does syre matter here?) and ``summary()`` (a table of them).

``Reporting`` holds these methods of ``Syre`` (as ``syre.core._state.Checkpointing`` holds its checkpoint
ones); they read the attachment's plan, groups, pull probe and store.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

from torch.nn.parameter import is_lazy

from .._version import __version__
from ._checks import PROBE_STEPS, verdict
from ._plan import UNHELD, Plan

__all__ = ["Reporting", "coverage_rows", "measured_when", "summary_text"]


def coverage_rows(plan: Plan, gamma_of: Callable[[int], float], ratios: Dict[str, Dict[str, float]]) -> List[Dict[str, Any]]:
    rows = []
    for e in plan.entries:
        gamma = gamma_of(e.group) if e.covered else 0.0
        lazy = is_lazy(e.param)
        rows.append({
            "name": e.name,
            "shape": None if lazy else list(e.param.shape),
            "numel": 0 if lazy else e.param.numel(),
            "module": e.info.module_type,
            "group": e.group,
            "covered": e.covered,
            "decayed": e.covered and gamma > 0.0,
            "reason": e.reason if not e.covered else ("" if gamma > 0.0 else "gamma 0"),
            "sigma0": e.sigma0,
            "gamma": gamma,
            "strength": gamma * e.sigma0,
            "pull_ratio": ratios.get(e.name, {}).get("pull"),
            "decay_ratio": ratios.get(e.name, {}).get("decay"),
            "anchor_ratio": ratios.get(e.name, {}).get("anchor"),
        })
    for name in plan.unheld:
        rows.append({"name": name, "shape": None, "numel": 0, "module": "", "group": None, "covered": False,
                     "decayed": False, "reason": UNHELD, "sigma0": 0.0, "gamma": 0.0, "strength": 0.0,
                     "pull_ratio": None, "decay_ratio": None, "anchor_ratio": None})
    return rows


def measured_when(steps_since_attach: int) -> str:
    """What the verdict measured and when: the pull numbers over the first steps, not the task metric."""
    later = steps_since_attach - PROBE_STEPS
    when = (f"over optimizer steps 1-{PROBE_STEPS} after attach (this summary: "
            + (f"{later} step(s) later, at step {steps_since_attach}" if later > 0 else "right after them") + ")")
    return (f"measured {when}: how strongly syre can break symmetries here (the decay against the optimizer's update, "
            "the anchor against the weights), not whether it improves the task metric, which only a comparison "
            "with weight decay on held-out data can tell")


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def _ratio(x) -> str:
    return f"{x:.2g}" if x is not None else "-"


def summary_text(s, rows: List[Dict[str, Any]], nbytes: int, report: Dict[str, Any]) -> str:
    head = ("parameter", "shape", "module", "group", "syre", "sigma0", "gamma", "gamma*sigma0", "decay/update",
            "anchor/weights", "pull/update")
    body = []
    for r in rows:
        body.append((
            r["name"],
            "x".join(map(str, r["shape"])) if r["shape"] is not None else "-",
            r["module"],
            "-" if r["group"] is None else str(r["group"]),
            "yes" if r["decayed"] else f"no ({r['reason']})",
            f"{r['sigma0']:.3g}" if r["covered"] else "-",
            f"{r['gamma']:.3g}" if r["covered"] else "-",
            f"{r['strength']:.3g}" if r["covered"] else "-",
            _ratio(r["decay_ratio"]),
            _ratio(r["anchor_ratio"]),
            _ratio(r["pull_ratio"]),
        ))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    decayed = [r for r in rows if r["decayed"]]
    idle = [r for r in rows if r["covered"] and not r["decayed"]]
    c = s.config
    lines = [
        f"syre {__version__}: seed={c.seed} mode={c.mode} d_spread={c.d_spread:g} "
        + (f"sigma0={c.describe_sigma0()}" if s._target.random else f"target={s._target.describe()}"),
        f"decays {len(decayed)}/{len(rows)} parameters ({sum(r['numel'] for r in decayed):,}/"
        f"{sum(r['numel'] for r in rows):,} elements); anchors held: {_bytes(nbytes)} ({c.mode})",
    ]
    if idle:
        groups = sorted({r["group"] for r in idle})
        lines.append(f"{len(idle)} covered parameter(s) have gamma 0 (param group(s) {groups}) and are not decayed")
    t = report["total"]
    lines.append(f"does syre matter here? {report['verdict']}")
    if t["decay"] is not None:
        lines.append(f"  (totals over the covered elements: decay/update {_ratio(t['decay'])}, anchor/weights "
                     f"{_ratio(t['anchor'])}, pull/update {_ratio(t['pull'])}; thresholds in docs/defaults.md)")
        lines.append(f"  {measured_when(s._probe.steps_since_attach)}")
    lines += [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*b) for b in body]
    return "\n".join(lines)


class Reporting:
    """The reports of ``Syre`` (a mixin: ``self`` is the attachment)."""

    def coverage(self) -> List[Dict[str, Any]]:
        """One row per parameter: name, shape, module type, group, covered, decayed, reason, sigma0,
        gamma, strength (``gamma * sigma0``) and the measured ``pull_ratio`` (None until measured).
        ``decayed`` is ``covered`` with a gamma above 0."""
        return coverage_rows(self._refresh(), self._groups.gamma, self._probe.ratios)

    def pull_report(self) -> Dict[str, Any]:
        """Does syre matter here? The ratios measured over the first PROBE_STEPS steps, and the verdict.

        ``{"params": {name: {"decay", "anchor", "pull"}}, "total": {...}, "verdict": str}``:
        ``decay`` is ``lr * gamma * RMS(p) / RMS(update)`` (is the decay strong enough to shape the
        weights?), ``anchor`` is ``sigma0 / RMS(p)`` (does syre differ from weight decay?), ``pull``
        their product; totals are element-weighted medians. See ``syre.core._checks`` for the thresholds.
        """
        self._refresh()
        total = self._probe.totals()
        return {"params": {n: dict(r) for n, r in self._probe.ratios.items()}, "total": total,
                "verdict": verdict(total["decay"], total["anchor"])}

    def pull_ratios(self) -> Dict[str, float]:
        """Measured per-step pull / optimizer update of each checked parameter (empty before step PROBE_STEPS).

        The pull is ``lr * gamma * sigma0``, the update the RMS of the optimizer's own change of the
        parameter in that step (syre's decay excluded); the median over the first PROBE_STEPS steps.
        """
        return dict(self._probe.ratio)

    def summary(self) -> str:
        """A table of what is decayed, with sigma0, gamma, the breaking strength gamma * sigma0 and,
        after the first PROBE_STEPS steps, the measured pull / update ratio."""
        return summary_text(self, self.coverage(), self._store.nbytes(), self.pull_report())
