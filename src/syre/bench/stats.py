"""Statistics of the per-seed numbers, and the decision rules behind ``supported``.

Every test returns a JSON-safe dict that ``summary.json`` keeps: what was compared, the rule in
words, the numbers, and ``passed`` (True, False, or None when there are too few seeds to say;
a verdict needs at least ``MIN_N`` seeds per arm). A run's ``supported`` is ``all_passed`` of
its primary tests.

Arms of one experiment share their seeds (the same initial weights, data order and anchors for
seed s), so arm-vs-arm comparisons are **paired**: a one-sided t-test on the per-seed
differences (``paired=True``, the default). ``paired=False`` uses Welch's unequal-variance test.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

__all__ = ["MIN_N", "describe", "compare", "seedwise", "within", "secondary", "all_passed"]

#: Fewest seeds per arm for a statistical verdict.
MIN_N = 3


def describe(values: Iterable[float]) -> Dict[str, Any]:
    """``{"mean", "std", "n"}`` of ``values`` (sample std, ddof=1; 0.0 for a single value)."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "n": 0}
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "n": int(v.size)}


def _t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    try:
        from scipy import stats as st
    except ImportError as exc:  # pragma: no cover - exercised only without scipy
        raise ImportError("the benchmark statistics need scipy: pip install 'torch-syre[bench]'") from exc
    return float(st.t.sf(t, df))


def compare(
    name: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    metric: str,
    arms: Sequence[str],
    alternative: str = "greater",
    margin: float = 0.0,
    alpha: float = 0.05,
    paired: bool = True,
) -> Dict[str, Any]:
    """One-sided t-test that ``mean(a) - mean(b) > margin`` (``alternative="greater"``) or
    ``< -margin`` (``"less"``).

    With ``margin > 0`` and ``alternative="greater"`` this is a test of superiority by that
    margin; with a negative margin it is a non-inferiority test (``a`` is not worse than ``b``
    by more than ``|margin|``). Passed when ``p < alpha``. A zero-variance difference decides
    by its sign (p = 0 or 1).
    """
    if alternative not in ("greater", "less"):
        raise ValueError(f"Invalid alternative: {alternative!r}; expected 'greater' or 'less'")
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sign = 1.0 if alternative == "greater" else -1.0
    out: Dict[str, Any] = {
        "name": name,
        "metric": metric,
        "arms": list(arms),
        "kind": "paired t" if paired else "Welch t",
        "alternative": alternative,
        "margin": margin,
        "alpha": alpha,
        "mean_a": float(a.mean()) if a.size else None,
        "mean_b": float(b.mean()) if b.size else None,
        "n": [int(a.size), int(b.size)],
    }
    direction = ">" if alternative == "greater" else "<"
    shift = f" {'+' if sign * margin >= 0 else '-'} {abs(margin):g}" if margin else ""
    out["rule"] = (
        f"one-sided {'paired' if paired else 'Welch'} t-test, H1: mean {metric}[{arms[0]}] {direction} "
        f"mean {metric}[{arms[1]}]{shift}, passed when p < {alpha:g}"
    )
    if min(a.size, b.size) < MIN_N or (paired and a.size != b.size):
        out.update(statistic=None, df=None, p=None, passed=None)
        return out
    if paired:
        d = sign * (a - b) - margin
        mean, n = float(d.mean()), d.size
        sd = float(d.std(ddof=1))
        df = n - 1.0
        se = sd / math.sqrt(n)
    else:
        mean = sign * float(a.mean() - b.mean()) - margin
        va, vb = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / ((va**2 / (a.size - 1)) + (vb**2 / (b.size - 1))) if se > 0 else float(a.size + b.size - 2)
    if se == 0.0:
        t = math.inf if mean > 0 else (-math.inf if mean < 0 else 0.0)
        p = 0.0 if mean > 0 else 1.0
    else:
        t = mean / se
        p = _t_sf(t, df)
    out.update(statistic=t if math.isfinite(t) else (1e300 if t > 0 else -1e300), df=df, p=p, passed=bool(p < alpha))
    return out


def seedwise(
    name: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    metric: str,
    arms: Sequence[str],
    margin: float = 0.0,
) -> Dict[str, Any]:
    """Passed when ``a[s] > b[s] + margin`` for every seed ``s`` (at least ``MIN_N`` seeds)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    wins = int(np.sum(a > b + margin)) if a.size == b.size else 0
    out = {
        "name": name,
        "metric": metric,
        "arms": list(arms),
        "kind": "seed-wise",
        "rule": f"{metric}[{arms[0]}] > {metric}[{arms[1]}] + {margin:g} in every seed",
        "mean_a": float(a.mean()) if a.size else None,
        "mean_b": float(b.mean()) if b.size else None,
        "wins": wins,
        "n": [int(a.size), int(b.size)],
    }
    if a.size != b.size or a.size < MIN_N:
        out["passed"] = None
    else:
        out["passed"] = bool(wins == a.size)
    return out


def within(
    name: str,
    values: Sequence[float],
    *,
    metric: str,
    low: Optional[float] = None,
    high: Optional[float] = None,
    min_n: int = 1,
    arm: str = "",
) -> Dict[str, Any]:
    """Passed when every value lies in ``[low, high]`` (a deterministic check, e.g. a theorem)."""
    v = np.asarray(values, dtype=np.float64)
    parts = []
    if low is not None:
        parts.append(f">= {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    ok = np.ones(v.shape, dtype=bool)
    if low is not None:
        ok &= v >= low
    if high is not None:
        ok &= v <= high
    out = {
        "name": name,
        "metric": metric,
        "arms": [arm] if arm else [],
        "kind": "bound",
        "rule": f"every {metric}{f'[{arm}]' if arm else ''} {' and '.join(parts)}",
        "min": float(v.min()) if v.size else None,
        "max": float(v.max()) if v.size else None,
        "n": [int(v.size)],
        "passed": None if v.size < min_n else bool(ok.all()),
    }
    return out


def secondary(test: Dict[str, Any]) -> Dict[str, Any]:
    """Mark ``test`` as reported but not part of the verdict (``"primary": False``)."""
    test["primary"] = False
    return test


def all_passed(tests: List[Dict[str, Any]]) -> Optional[bool]:
    """Over the primary tests: True when every one passed, False when one failed, None when
    one could not decide (too few seeds). Tests marked ``secondary`` are reported only."""
    results = [t.get("passed") for t in tests if t.get("primary", True)]
    if any(r is False for r in results):
        return False
    if not results or any(r is None for r in results):
        return None
    return True
