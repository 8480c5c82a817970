"""Monitor alarms: a drop against the run's own history and the fresh-init value (private).

Collapse metrics are not monotone in training: ranks rise while features form and fall as they
specialise, and healthy values differ by architecture. So no alarm compares with an absolute
number. For a metric that is healthy when high (ranks, effective ranks, embedding spread), the
*baseline* is the lower of the run's best value so far and the layer's fresh-init value, and the
alarm fires when the value falls below ``share x baseline``: a real drop, from a level the layer
both had and could have. For a metric that is healthy when low (dead, duplicated, low-rank
shares), the baseline is the higher of the run's lowest value so far and the fresh-init value,
and the alarm fires when the value exceeds ``baseline + margin``. An alarm needs ``patience``
consecutive recordings past its limit, and fires once until the metric recovers.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from . import _verdict

#: Share of the baseline below which a rank (counted at rtol) alarms. Lower than the audit's
#: RANK_SHARE: during training a healthy layer's rank dips while ReLU units die and revive (E5
#: without decay, digits: 117 -> 105 -> 111, a 10% dip), while weight decay at gamma 10 takes it
#: to 60% of its fresh-init value.
TREND_RANK_SHARE = 0.8
#: Share of the baseline below which a smooth spectral measure (effective rank, RankMe, weight
#: effective rank, embedding spread) alarms. On E5 (digits, gamma 10) training without decay and
#: with syre keeps these above half of the fresh-init value in every hidden layer; weight decay
#: takes them below a fifth.
SOFT_SHARE = 1 / 3
#: Rise of the dead-unit share above its baseline that alarms (twice the audit's INACTIVE_SHARE:
#: one recording sees one batch, so the share moves with the batch).
DEAD_MARGIN = 2 * _verdict.INACTIVE_SHARE

#: metric -> (kind, value): "drop" alarms below value x baseline, "rise" above baseline + value.
#: ``low_rank_fraction`` has no alarm: it counts the tail of a healthy spectrum, which grows as
#: features form (E5 without decay: 0.25 at init to 0.6), so a rise is not collapse.
ALARMS: Dict[str, Tuple[str, float]] = {
    "rank": ("drop", TREND_RANK_SHARE),
    "numerical_rank": ("drop", TREND_RANK_SHARE),
    "weight_rank": ("drop", TREND_RANK_SHARE),
    "effective_rank": ("drop", SOFT_SHARE),
    "rankme": ("drop", SOFT_SHARE),
    "weight_effective_rank": ("drop", SOFT_SHARE),
    "embedding_std": ("drop", SOFT_SHARE),
    "dead_fraction": ("rise", DEAD_MARGIN),
    "duplicate_fraction": ("rise", _verdict.EXACT_SHARE),
}


class AlarmTracker:
    """Keeps per ``<layer>/<metric>`` the best value so far and the run of recordings past the limit."""

    def __init__(self, patience: int, reference: Optional[Dict[str, float]] = None):
        self.patience = patience
        self.reference = reference or {}
        self.best: Dict[str, float] = {}
        self.streak: Dict[str, int] = {}
        self.active: Dict[str, Dict[str, Any]] = {}

    def update(self, step: int, row: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Judge the ``<layer>/<metric>`` values of ``row``; return the alarms that fire now."""
        fired = []
        for key, value in row.items():
            if "/" not in key or value is None:
                continue
            layer, metric = key.rsplit("/", 1)
            rule = ALARMS.get(metric)
            if rule is None:
                continue
            kind, amount = rule
            best = self.best.get(key)
            ref = self.reference.get(key)
            limit = baseline = None
            if best is not None:
                if kind == "drop":
                    baseline = min(best, ref) if ref is not None else best
                    limit = amount * baseline
                    past = value < limit
                else:
                    baseline = max(best, ref) if ref is not None else best
                    limit = baseline + amount
                    past = value > limit
            else:
                past = False
            self.streak[key] = self.streak.get(key, 0) + 1 if past else 0
            if not past:
                self.active.pop(key, None)
            elif self.streak[key] >= self.patience and key not in self.active:
                alarm = {"step": int(step), "layer": layer, "metric": metric, "value": float(value),
                         "baseline": float(baseline), "limit": float(limit), "best": float(best),
                         "reference": None if ref is None else float(ref), "rule": kind, "amount": amount}
                self.active[key] = alarm
                fired.append(alarm)
            if best is None or (value > best if kind == "drop" else value < best):
                self.best[key] = float(value)
        return fired


def describe(a: Dict[str, Any]) -> str:
    """One sentence for an alarm."""
    ref = "" if a["reference"] is None else f", fresh init {a['reference']:.4g}"
    if a["rule"] == "drop":
        return (f"step {a['step']}: {a['layer']}/{a['metric']} = {a['value']:.4g}, below {a['amount']:.3g} x "
                f"{a['baseline']:.4g} (the lower of the run's best so far, {a['best']:.4g}{ref})")
    return (f"step {a['step']}: {a['layer']}/{a['metric']} = {a['value']:.4g}, above {a['baseline']:.4g} + "
            f"{a['amount']:.3g} (the higher of the run's lowest so far, {a['best']:.4g}{ref})")
