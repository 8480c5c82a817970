"""Argument validators shared by every entry point (public through ``syre.config``).

Each raises with the argument's name, the bad value and what is allowed, and returns the value
normalised (a Python ``float`` or ``int``).
"""
from __future__ import annotations

import math
import operator
import os
import sys

import torch

__all__ = ["MODES", "check_bool", "check_shape", "check_d_spread", "check_mode", "check_nonneg_float", "check_seed"]

#: Anchor storage modes: ``"stored"`` keeps theta0 (and xi), ``"seeded"`` regenerates them each step.
MODES = ("stored", "seeded")


def check_nonneg_float(arg: str, value) -> float:
    """A finite float >= 0: a Python or numpy real scalar, or a 0-d real tensor (not a bool, not complex)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_real_scalar(value):
        kind = _kind(value)
        got = f" (a {kind})" if kind else ""
        raise TypeError(f"Invalid {arg} value: {value!r}{got}; expected a finite float >= 0")
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"Invalid {arg} value: {value!r}; expected a finite float >= 0")
    return value


def _is_real_scalar(value) -> bool:
    """numpy scalars and 0-d arrays of a real dtype (``numpy.float32(0.1)``), and 0-d real torch tensors."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or tuple(getattr(value, "shape", (None,))) != ():
        return False
    if isinstance(dtype, torch.dtype):  # torch dtypes have no numpy ``kind``
        return dtype != torch.bool and not dtype.is_complex
    kind = getattr(dtype, "kind", None)
    return isinstance(kind, str) and len(kind) == 1 and kind in "fiu"


def _kind(value) -> str:
    """What a refused value is, where its repr does not say: a bool or complex tensor or array."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return "complex number" if isinstance(value, complex) else ""
    what = "tensor" if isinstance(value, torch.Tensor) else "numpy value"
    if dtype == torch.bool or getattr(dtype, "kind", None) == "b":
        return f"bool {what}"
    if getattr(dtype, "is_complex", False) or getattr(dtype, "kind", None) == "c":
        return f"complex {what}"
    shape = tuple(getattr(value, "shape", ()))
    return f"{type(value).__name__} of shape {shape}" if shape else ""


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


def check_shape(shape) -> torch.Size:
    """A tensor shape: a sequence of ints >= 0 (``torch.Size``, tuple, list)."""
    try:
        dims = list(shape)
    except TypeError:
        dims = None
    if dims is None or not all(isinstance(d, int) and not isinstance(d, bool) or _is_int_scalar(d) for d in dims):
        raise TypeError(f"Invalid shape: {shape!r}; expected a sequence of ints >= 0 (e.g. (16, 6))")
    if any(int(d) < 0 for d in dims):
        raise ValueError(f"Invalid shape: {shape!r}; expected a sequence of ints >= 0 (e.g. (16, 6))")
    return torch.Size([int(d) for d in dims])


def _is_int_scalar(value) -> bool:
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return tuple(getattr(value, "shape", (None,))) == () and kind in ("i", "u")


def stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside syre and torch (the ``optimizer.step()`` line): a warning
    names the user's line, from whichever of syre's modules it is issued."""
    skip = tuple(os.path.dirname(m.__file__) for m in (torch, sys.modules[__package__]))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level
