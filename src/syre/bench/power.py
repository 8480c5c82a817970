"""How many evaluation seeds: power of the primary tests, estimated from a recorded pilot.

A pilot (``syre bench pilot ID``) trains the cells of an experiment's primary shared-gamma tests
on ``PILOT_SEEDS`` pilot seeds (their own range, disjoint from selection and evaluation seeds) and
records, per test, the mean and standard deviation of its per-seed statistic ``x``
(``syre.bench.pilots``, written by ``--write``). The protocol then takes the smallest number of
evaluation seeds ``n`` in ``[n_min, n_max]`` at which every primary t-test whose pilot effect lies
on the side of its H1 reaches ``TARGET_POWER`` (one-sided t-test at alpha, noncentral t with the
pilot's effect size ``(mean - threshold) / sd``); tests whose pilot effect points the other way
cannot be powered and are listed as such. ``n_max`` caps the cost. The power at the chosen ``n``
of every primary test is stated in the protocol (and so in every ``summary.json``). For bound
tests (every seed) the pilot share of seeds in which the bound held is stated instead.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

from . import stats

__all__ = ["TARGET_POWER", "PILOT_SEEDS", "power_t", "plan", "pilot_record"]

TARGET_POWER = 0.8
PILOT_SEEDS = 3


def power_t(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of a one-sided one-sample t-test with ``n`` seeds for a true mean shift ``effect`` (signed
    toward H1) and per-seed standard deviation ``sd``."""
    if n < 2:
        return 0.0
    if sd <= 0:
        return 1.0 if effect > 0 else 0.0
    st = stats._scipy_stats()
    crit = st.t.ppf(1.0 - alpha, n - 1)
    return float(st.nct.sf(crit, n - 1, effect / sd * math.sqrt(n)))


def _signed(rec: Dict[str, Any]) -> float:
    d = rec["mean"] - rec["threshold"]
    return d if rec["direction"] == "greater" else -d


def plan(pilot: Optional[Dict[str, Any]], tests, *, n_min: int, n_max: int, alpha: float = 0.05) -> Dict[str, Any]:
    """The seed count and the power statement for the primary shared tests ``tests`` given ``pilot``."""
    if not 1 <= n_min <= n_max:
        raise ValueError(f"Invalid seed range: n_min {n_min!r}, n_max {n_max!r}; expected 1 <= n_min <= n_max")
    rule = (f"smallest n in [{n_min}, {n_max}] at which every primary t-test whose pilot effect lies on its H1 side has power >= "
            f"{TARGET_POWER:g} (one-sided t-test, alpha {alpha:g}, noncentral t at the pilot's effect size)")
    out: Dict[str, Any] = {"rule": rule, "target": TARGET_POWER, "n_min": n_min, "n_max": n_max}
    if not pilot:
        out.update(n=n_min, pilot=None, tests={}, statement=f"no pilot recorded: n = n_min = {n_min}, power not estimated")
        return out
    recs = pilot.get("tests", {})
    n = n_min
    powered = []
    for t in tests:
        r = recs.get(t.name)
        if t.kind != "t" or r is None or r.get("sd") is None:
            continue
        eff = _signed(r)
        if eff <= 0:
            continue
        powered.append(t.name)
        while n < n_max and power_t(eff, r["sd"], n, alpha) < TARGET_POWER:
            n += 1
    per: Dict[str, Any] = {}
    for t in tests:
        r = recs.get(t.name)
        if r is None:
            per[t.name] = {"note": "not in the pilot"}
        elif t.kind == "bound":
            per[t.name] = {"kind": "bound", "pilot_holds_in": r.get("holds_in"), "pilot_n": r.get("n")}
        else:
            eff = _signed(r)
            per[t.name] = {"pilot_mean": r["mean"], "pilot_sd": r["sd"], "pilot_n": r["n"], "effect_toward_h1": eff,
                           "power": power_t(eff, r["sd"], n, alpha) if eff > 0 else None,
                           "note": "" if eff > 0 else "the pilot effect lies against H1: the test is not expected to pass"}
    low = [k for k, v in per.items() if v.get("power") is not None and v["power"] < TARGET_POWER]
    statement = f"n = {n} evaluation seeds"
    if low:
        statement += f" (capped at n_max; power below {TARGET_POWER:g} for: {', '.join(low)})"
    out.update(n=n, pilot={k: pilot.get(k) for k in ("seeds", "git_revision", "date", "wall_time_s")}, tests=per,
               powered=powered, statement=statement)
    return out


def pilot_record(results: List[Dict[str, Any]], seeds: List[int], wall: float, revision: Optional[str], date: str) -> Dict[str, Any]:
    """The record of a pilot run from its evaluated tests (what ``syre.bench.pilots`` keeps)."""
    tests = {}
    for r in results:
        if r.get("mean_x") is None:
            continue
        tests[r["name"]] = {"kind": r["kind"], "mean": r["mean_x"], "sd": r.get("sd_x"), "n": r["n"],
                            "threshold": r["threshold"], "direction": r["direction"]}
        if r["kind"] == "bound":
            tests[r["name"]]["holds_in"] = r.get("holds_in")
    return {"seeds": seeds, "git_revision": revision, "date": date, "wall_time_s": round(wall, 1), "tests": tests}
