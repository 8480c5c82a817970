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

__all__ = ["TARGET_POWER", "PILOT_SEEDS", "power_t", "plan", "pilot_record", "n_needed", "pilot_of", "annotate", "underpowered"]

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


# ----------------------------------------------------------------------------- power where verdicts are decided
#: The largest seed count ``n_needed`` searches; beyond it a test is reported as needing more.
N_CAP = 5000


def n_needed(effect: float, sd: float, alpha: float = 0.05, target: float = TARGET_POWER, cap: int = N_CAP) -> Optional[int]:
    """The smallest n with ``power_t(effect, sd, n) >= target`` (None above ``cap`` or for an effect against H1)."""
    if effect <= 0:
        return None
    if power_t(effect, sd, cap, alpha) < target:
        return None
    lo, hi = 2, 2
    while power_t(effect, sd, hi, alpha) < target:
        lo, hi = hi, min(hi * 2, cap)
    while lo < hi:
        mid = (lo + hi) // 2
        if power_t(effect, sd, mid, alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return hi


def _split(key: str):
    """``"syre@tuned[dataset=digits]"`` -> ``("syre", "tuned", "dataset=digits")``; no tag -> ``(arm, None, ...)``."""
    base, _, ctx = key.partition("[")
    arm, _, tag = base.partition("@")
    return arm, (tag or None), (ctx.rstrip("]") or "all")


def _selection_point(selection: Dict[str, Any], key: str) -> Optional[Dict[str, Any]]:
    """The selection-seed grid point (mean, std, n on the validation split) behind a tuned cell, or None."""
    arm, tag, ctx = _split(key)
    by_arm = (selection or {}).get(ctx, {})
    if tag is None or arm not in by_arm:
        return None
    if tag == "tuned":
        g = by_arm[arm]["chosen"]["gamma"]
        s0 = by_arm[arm]["chosen"].get("sigma0")
        pts = [p for p in by_arm[arm]["grid"] if p["gamma"] == g and p.get("sigma0") == s0]
    elif tag.endswith("-gamma") and tag[:-6] in by_arm:
        g = by_arm[tag[:-6]]["chosen"]["gamma"]
        pts = [p for p in by_arm[arm]["grid"] if p["gamma"] == g]
    else:
        return None
    return pts[0] if pts else None


def pilot_of(t: Dict[str, Any], tests: List[Dict[str, Any]], pilot: Optional[Dict[str, Any]],
             selection: Optional[Dict[str, Any]], alias=lambda key: key) -> Optional[Dict[str, Any]]:
    """The pilot effect of an evaluated t-test ``t``: ``{"mean", "sd", "n", "source"}`` (``mean`` of ``x`` before the
    threshold), from the recorded pilot (the test, or a test of the same cells and metric), else from the selection
    seeds (tuned cells: their grid points; unpaired sd); None when neither has it. ``alias(key)``: the pilot's name of a
    cell (the default study's ``chosen`` is its chosen candidate)."""
    recs = (pilot or {}).get("tests", {})
    same = [u["name"] for u in tests if (u["a"], u["b"], u["metric"], u.get("metric_b"), u["ratio"]) ==
            (t["a"], t["b"], t["metric"], t.get("metric_b"), t["ratio"])]
    for name in [t["name"]] + [n for n in same if n != t["name"]]:
        r = recs.get(name)
        if r is not None and r.get("sd") is not None:
            src = "pilot" if name == t["name"] else f"pilot of the test on the same cells ({name})"
            return {"mean": r["mean"], "sd": r["sd"], "n": r["n"], "source": f"{src}, seeds {(pilot or {}).get('seeds')}"}
    cells = (pilot or {}).get("cells", {})  # a pilot that recorded per-seed values per cell (paired by seed)
    ka, kb = (alias(k) for k in (t["a"], t["b"]))
    if ka in cells and (t["b"] is None or kb in cells):
        va = cells[ka].get(t["metric"])
        vb = cells[kb].get(t.get("metric_b") or t["metric"]) if t["b"] else [0.0] * len(va or [])
        if va and vb and len(va) == len(vb) >= 2:
            x = [u - t["ratio"] * v for u, v in zip(va, vb)]
            m = sum(x) / len(x)
            sd = math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1))
            return {"mean": m, "sd": sd, "n": len(x), "source": f"pilot cells {ka} and {kb}, seeds {pilot.get('seeds')}"}
    a = _selection_point(selection, t["a"])
    b = _selection_point(selection, t["b"]) if t["b"] else None
    if a is None or (t["b"] and b is None):
        return None
    if a["n"] < 2 or (b is not None and b["n"] < 2):
        return {"mean": None, "sd": None, "n": a["n"], "source": f"selection seeds as pilot: {a['n']} seed, no sd (not estimated)"}
    ratio = t["ratio"]
    mean = a["mean"] - ratio * (b["mean"] if b else 0.0)
    sd = math.sqrt(a["std"] ** 2 + (ratio * b["std"]) ** 2 if b else a["std"] ** 2)
    return {"mean": mean, "sd": sd, "n": a["n"], "source": f"selection seeds as pilot ({a['n']} seeds, validation split, unpaired sd)"}


def annotate(summary: Dict[str, Any], pilot: Optional[Dict[str, Any]], alpha: float = 0.05) -> List[Dict[str, Any]]:
    """Add ``power`` (at the seed count the test ran with), ``n_needed`` and where the effect came from to every primary
    t-test of ``summary``; return one row per primary test."""
    if not pilot:  # the pilot statistics the protocol's power statement recorded (an experiment with its own power rule)
        declared = summary.get("protocol", {}).get("power", {})
        recs = {k: {"mean": v["pilot_mean"], "sd": v.get("pilot_sd"), "n": v.get("pilot_n")}
                for k, v in (declared.get("tests") or {}).items() if v.get("pilot_mean") is not None}
        pilot = {"seeds": (declared.get("pilot") or {}).get("seeds"), "tests": recs} if recs else None
    rows = []
    for t in summary["tests"]:
        if t["role"] != "primary":
            continue
        row = {"name": t["name"], "family": t["family"], "n": t["n"]}
        if t["kind"] != "t":
            row.update(power=None, n_needed=None, power_source="a bound test (every seed): no power to state")
        else:
            cand = (summary.get("chosen") or {}).get("candidate")
            alias = (lambda k: k.replace("chosen[", f"{cand}[", 1) if k and k.startswith("chosen[") else k) if cand else (lambda k: k)
            p = pilot_of(t, summary["tests"], pilot, summary.get("selection"), alias)
            if p is None or p["sd"] is None:
                row.update(power=None, n_needed=None, power_source=p["source"] if p else "no pilot of these cells (not estimated)")
            else:
                d = p["mean"] - t["threshold"]
                eff = d if t["direction"] == "greater" else -d
                row.update(power_effect=eff, power_sd=p["sd"], power_source=p["source"],
                           power=power_t(eff, p["sd"], t["n"], alpha) if eff > 0 else None, n_needed=n_needed(eff, p["sd"], alpha))
                if eff <= 0:
                    row["power_source"] += "; the pilot effect lies against H1: no seed count is expected to pass it"
        t.update({k: v for k, v in row.items() if k not in ("name", "family", "n")})
        rows.append(row)
    return rows


POWER_NOTE = (f"power of each primary t-test at the seed count it ran with, for the pilot's effect size (target {TARGET_POWER:g}); "
              "tests without a pilot of their cells (tuned and held-out ones) take the selection seeds' grid points as their pilot "
              "(validation split, unpaired sd); n_needed: the seed count that would reach the target")


def underpowered(t: Dict[str, Any]) -> bool:
    return t.get("role") == "primary" and t.get("power") is not None and t["power"] < TARGET_POWER


def annotate_committed(root, ids=None, revision: Optional[str] = None, date: Optional[str] = None) -> List[str]:
    """Add the power of every primary test to the committed summaries under ``root/benchmarks/results`` (runs made
    before summaries recorded it), and its table to their ``results.md``; returns the experiments annotated."""
    import json
    from pathlib import Path

    from . import fmt, pilots

    done = []
    for f in sorted((Path(root) / "benchmarks" / "results").glob("*/summary.json")):
        s = json.loads(f.read_text())
        if ("protocol" not in s or (ids is not None and s["experiment"] not in ids)
                or (s.get("power_check") or {}).get("when") == "at the run"):
            continue
        rows = annotate(s, pilots.load().get(s["experiment"]), s["protocol"].get("alpha", 0.05))
        s["power_check"] = {"note": POWER_NOTE, "when": f"added after the run ({date}, at {str(revision)[:7]}): the run predates the check"}
        f.write_text(json.dumps(s, indent=1) + "\n")
        md = f.parent / "results.md"
        text = md.read_text()
        head = "## Power of the primary tests (added after the run)"
        text = text[: text.index(head)].rstrip("\n") + "\n" if head in text else text
        table = fmt.md_table(["family", "test", "n", "power", "n needed", "effect from"],
                             [[r["family"], r["name"], r["n"], fmt.num(r.get("power"), 2), r.get("n_needed") or "-", r["power_source"]]
                              for r in rows])
        md.write_text(text + f"\n{head}\n\n{s['power_check']['note']}.\n\n{table}")
        done.append(s["experiment"])
    return done
