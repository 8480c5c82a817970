"""What ``Syre.coverage()`` and ``Syre.summary()`` say: one row per parameter, and a table of them."""
from __future__ import annotations

from typing import Any, Callable, Dict, List

from torch.nn.parameter import is_lazy

from .._version import __version__
from ._checks import PROBE_STEPS
from ._plan import UNHELD, Plan

__all__ = ["coverage_rows", "measured_when", "summary_text"]


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
