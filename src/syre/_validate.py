"""Argument validators shared by every entry point (public through ``syre.config``).

Each raises with the argument's name, the bad value and what is allowed, and returns the value
normalised (a Python ``float`` or ``int``).
"""
from __future__ import annotations

import math
import operator

__all__ = ["MODES", "check_bool", "check_d_spread", "check_mode", "check_nonneg_float", "check_seed"]

#: Anchor storage modes: ``"stored"`` keeps theta0 (and xi), ``"seeded"`` regenerates them each step.
MODES = ("stored", "seeded")


def check_nonneg_float(arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_real_scalar(value):
        raise TypeError(f"Invalid {arg} value: {value!r}; expected a finite float >= 0")
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"Invalid {arg} value: {value!r}; expected a finite float >= 0")
    return value


def _is_real_scalar(value) -> bool:
    """numpy scalars and 0-d arrays of a real dtype (``numpy.float32(0.1)``), without importing numpy."""
    dtype = getattr(value, "dtype", None)
    return getattr(value, "shape", None) == () and getattr(dtype, "kind", "") in "fiu" and dtype is not None


def check_d_spread(value) -> float:
    value = check_nonneg_float("d_spread", value)
    if value >= 1.0:
        raise ValueError(f"Invalid d_spread value: {value!r}; expected 0 <= d_spread < 1 (D must stay positive)")
    return value


def check_seed(seed) -> int:
    """An int in ``[0, 2**64)``; integer-like values (``numpy.int64``) are accepted, floats and bools not."""
    if isinstance(seed, bool):
        raise ValueError(f"Invalid seed: {seed!r}; expected an int in [0, 2**64)")
    try:
        value = operator.index(seed)
    except TypeError:
        raise ValueError(f"Invalid seed: {seed!r}; expected an int in [0, 2**64)") from None
    if not 0 <= value < 2**64:
        raise ValueError(f"Invalid seed: {seed!r}; expected an int in [0, 2**64)")
    return int(value)


def check_mode(mode) -> str:
    if mode not in MODES:
        raise ValueError(f"Invalid mode value: {mode!r}; expected one of {MODES}")
    return str(mode)


def check_bool(arg: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"Invalid {arg} value: {value!r}; expected a bool")
    return value
