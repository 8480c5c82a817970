"""The held-out check of the library's default sigma0, and the verdict across experiments.

The default E0-E13 ran at (``"lecun"``, ``syre.bench.arms.DECLARED_SIGMA0``) was chosen by the sigma0 sweep on seeds 0-4 of E1 and E5-E8.
Every experiment registered with ``heldout=True`` judges it again on its own evaluation seeds
(from 100: none of them took part in the choice), with the rule it was chosen by made stricter:

1. at the experiment's collapsing (shared) gamma, syre at the default has a higher rank metric than
   weight decay (one-sided paired t-test);
2. there, its performance metric is better than weight decay's;
3. at weight decay's own tuned gamma (where weight decay is at its best), syre at the default with
   that gamma is not worse than tuned weight decay by more than a declared margin (a
   non-inferiority test: evidence of no harm, not only the absence of significant harm, which is
   reported beside it).

Neighbouring scales (``syre_0.3x``, ``syre_3x``) against the default are reported, to say what
should change if the default does not survive. ``verdict(summaries)`` reads the committed
summaries: the default survives when every held-out experiment's ``default_survives`` is true.
New experiments take part by setting ``heldout=True`` and adding ``tests(...)`` to their design.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from .protocol import Cell, Test

__all__ = ["tests", "verdict"]


def tests(label: str, at: Callable[[str], Cell], here: Callable[[str], Cell], *, perf: str, rank: str, better: str,
          margin: float, tuned_arms: Sequence[str], scale_arms: Sequence[str] = ()) -> List[Test]:
    """The held-out tests of one setting: ``at(arm)`` is the arm's cell at the collapsing gamma,
    ``here(name)`` a cell of the setting without a gamma (``"wd@tuned"``, ``"syre@wd-gamma"``).
    ``margin``: absolute for a higher-is-better ``perf``, relative for a lower-is-better one. Keys (``Test.key``):
    ``<label>/heldout.rank``, ``.perf``, ``.noharm``, ``.harm``, ``.<scale arm>.better``."""
    if not {"syre", "wd"} <= set(tuned_arms):
        return []
    side = "greater" if better == "max" else "less"
    ni = dict(threshold=-margin) if better == "max" else dict(ratio=1.0 + margin, direction="less")
    out = [
        Test(f"{label}, held-out: syre's {rank} above weight decay's at the collapsing gamma", rank, at("syre"), at("wd"),
             family="heldout", key=f"{label}/heldout.rank"),
        Test(f"{label}, held-out: syre's {perf} better than weight decay's at the collapsing gamma", perf, at("syre"), at("wd"),
             direction=side, family="heldout", key=f"{label}/heldout.perf"),
        Test(f"{label}, held-out: syre at weight decay's tuned gamma not worse than tuned weight decay by more than {margin:g}"
             f"{'' if better == 'max' else ' (relative)'}", perf, here("syre@wd-gamma"), here("wd@tuned"), family="heldout",
             key=f"{label}/heldout.noharm", **ni),
        Test(f"{label}, held-out (harm test, passes when harmed): syre at weight decay's tuned gamma significantly worse than "
             "tuned weight decay", perf, here("syre@wd-gamma"), here("wd@tuned"), direction="less" if better == "max" else "greater",
             family="heldout", role="secondary", key=f"{label}/heldout.harm"),
    ]
    for a in scale_arms:
        out.append(Test(f"{label}, held-out: {a} better than the default at the collapsing gamma", perf, at(a), at("syre"),
                        direction=side, family="heldout", role="secondary", key=f"{label}/heldout.{a}.better"))
    return out


def verdict(summaries: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Across the summaries of held-out experiments: does the default survive, and where not, what failed."""
    rows = [s for s in summaries if "default_survives" in s]
    failed: Dict[str, List[str]] = {}
    better_scales: Dict[str, List[str]] = {}
    for s in rows:
        for t in s["tests"]:
            if t["family"] != "heldout":
                continue
            if t["role"] == "primary" and t["passed"] is False:
                failed.setdefault(s["experiment"], []).append(t["name"])
            if t["role"] == "secondary" and "better than the default" in t["name"] and t["passed"]:
                better_scales.setdefault(s["experiment"], []).append(t["name"])
    states = [s["default_survives"] for s in rows]
    survives: Optional[bool]
    if any(v is False for v in states):
        survives = False
    elif not rows or any(v is None for v in states):
        survives = None
    else:
        survives = True
    return {"experiments": [s["experiment"] for s in rows], "survives": survives, "failed": failed, "better_scales": better_scales}
