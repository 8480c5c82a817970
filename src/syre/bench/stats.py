"""Statistics of the per-seed numbers and the decision rules behind the verdicts (scipy).

``evaluate(test, a, b)`` decides one declared ``protocol.Test`` from the per-seed values of its two
cells (paired by seed: arms of one experiment share their seeds, so seed s gives every arm the same
initial weights, data order and anchor directions). t-tests are ``scipy.stats.ttest_1samp`` on the
per-seed statistic ``x = a - ratio * b``; a zero-variance ``x`` decides by its sign (p = 0 or 1).
A test needs at least ``MIN_N`` seeds; with fewer it is undecided (``passed`` None).

Verdicts (``verdict``): over the primary tests of a family, True when every one passed, False when
one failed, None when one could not decide or there are none. Requiring every primary test is an
intersection-union rule: it keeps the level alpha of each test for the conjunction, without a
multiplicity correction.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

__all__ = ["MIN_N", "describe", "evaluate", "verdict", "sanity_ok"]

#: Fewest seeds per cell for a statistical verdict.
MIN_N = 3


def _scipy_stats():
    try:
        from scipy import stats as st
    except ImportError as exc:  # pragma: no cover - exercised only without scipy
        raise ImportError("the benchmark statistics need scipy: pip install 'torch-syre[bench]'") from exc
    return st


def describe(values: Iterable[float]) -> Dict[str, Any]:
    """``{"mean", "std", "n"}`` of ``values`` (sample std, ddof=1; 0.0 for a single value)."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def ttest(x: Sequence[float], threshold: float, direction: str) -> Dict[str, Any]:
    """One-sided one-sample t-test of ``mean(x)`` against ``threshold`` (``direction``: H1 side)."""
    x = np.asarray(x, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _scipy_stats().ttest_1samp(x, threshold, alternative=direction)
    t, p = float(res.statistic), float(res.pvalue)
    if math.isnan(p):  # zero variance: decide by the sign of the (exact) difference
        diff = float(x.mean()) - threshold
        beyond = diff > 0 if direction == "greater" else diff < 0
        p, t = (0.0, math.copysign(1e300, diff)) if beyond else (1.0, 0.0 if diff == 0 else math.copysign(1e300, diff))
    return {"statistic": t if math.isfinite(t) else math.copysign(1e300, t), "df": int(x.size - 1), "p": p}


def evaluate(test, a: Sequence[float], b: Optional[Sequence[float]] = None, *, alpha: float = 0.05,
             seeds_a: Optional[Sequence[int]] = None, seeds_b: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Decide ``test`` (a ``protocol.Test``) from the per-seed values of its cells; a JSON-safe dict."""
    a = np.asarray(a, dtype=np.float64)
    out: Dict[str, Any] = {
        "name": test.name, "role": test.role, "family": test.family, "kind": test.kind, "metric": test.metric,
        "metric_b": test.metric_b, "a": test.a.key, "b": test.b.key if test.b else None, "direction": test.direction,
        "threshold": test.threshold, "ratio": test.ratio, "alpha": alpha, "rule": test.rule(alpha),
        "mean_a": float(a.mean()) if a.size else None, "n": int(a.size),
    }
    if test.why:
        out["why"] = test.why
    if test.key:
        out["key"] = test.key
    if test.b is not None:
        b = np.asarray(b if b is not None else [], dtype=np.float64)
        out["mean_b"] = float(b.mean()) if b.size else None
        if a.size != b.size or (seeds_a is not None and seeds_b is not None and list(seeds_a) != list(seeds_b)):
            out.update(passed=None, note="the two cells do not have the same seeds")
            return out
        x = a - test.ratio * b
    else:
        x = a
    if x.size:
        out.update(mean_x=float(x.mean()), sd_x=float(x.std(ddof=1)) if x.size > 1 else 0.0,
                   min_x=float(x.min()), max_x=float(x.max()))
    if x.size < MIN_N:
        out["passed"] = None
        return out
    if test.kind == "bound":
        ok = x >= test.threshold if test.direction == "greater" else x <= test.threshold
        out.update(holds_in=int(ok.sum()), passed=bool(ok.all()))
    else:
        out.update(ttest(x, test.threshold, test.direction))
        out["passed"] = bool(out["p"] < alpha)
    return out


def verdict(results: List[Dict[str, Any]], family: str) -> Optional[bool]:
    """The verdict of ``family`` over its primary tests (see the module docstring)."""
    got = [r.get("passed") for r in results if r.get("role") == "primary" and r.get("family") == family]
    if not got or any(g is None for g in got):
        return None if not any(g is False for g in got) else False
    return all(got)


def sanity_ok(results: List[Dict[str, Any]]) -> bool:
    """True unless a sanity check failed (undecided ones do not void the verdicts)."""
    return not any(r.get("role") == "sanity" and r.get("passed") is False for r in results)
