"""Compiled CPU kernels for syre's hot loops: built on first need, checked, eager fallback.

A ``LazyKernel`` wraps a function of tensors that has an eager meaning. On CPU it is compiled with
``torch.compile`` (inductor emits a C++ loop; no Triton) once the process has done enough of
that work eagerly for the compile (seconds, then cached on disk by torch) to pay off. Each
compiled variant (one per ``key``, e.g. dtype) is run once on sample data and compared bitwise
with the eager function; any failure -- no C++ compiler, an unsupported platform, a torch bug, a
mismatch -- turns that kernel off for the process with one warning, and the callers keep using
their eager path, which computes the same numbers.

``SYRE_COMPILE=1`` builds at first use, ``SYRE_COMPILE=0`` never builds; unset, the budgets of
the callers decide.
"""
from __future__ import annotations

import functools
import importlib
import os
import warnings
from typing import Any, Callable, Dict, Optional

import torch

__all__ = ["LazyKernel", "compile_setting", "is_compiling", "no_grad"]


def compile_setting() -> Optional[bool]:
    """``SYRE_COMPILE`` read as True (always compile), False (never) or None (by budget)."""
    flag = os.environ.get("SYRE_COMPILE", "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    return None


def is_compiling() -> bool:
    """True while torch.compile traces the caller (then syre's own kernels stay eager)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def no_grad(fn: Callable) -> Callable:
    """``@torch.no_grad()`` for a method run at every step: the grad mode set and restored directly.

    torch's decorator makes and enters a context manager at every call (about 4 us); this costs a
    flag read, and two writes where grad mode was on. Under ``torch.compile`` it is torch's.
    """
    traced = torch.no_grad()(fn)
    enabled, set_enabled = torch.is_grad_enabled, torch._C._set_grad_enabled

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if not enabled():
            return fn(*args, **kwargs)
        if is_compiling():
            return traced(*args, **kwargs)
        set_enabled(False)
        try:
            return fn(*args, **kwargs)
        finally:
            set_enabled(True)

    return run


class LazyKernel:
    """``fn`` compiled for CPU on first need; ``get`` returns it, or None to use the eager path.

    Args:
        name: what the kernel computes, for the warning.
        fn: the function to compile (it must also be correct when run eagerly).
        verify: ``verify(kernel, key) -> bool``, run once per key after compiling: True when the
            compiled kernel reproduces the eager one bitwise on sample data.
        budget: elements of eager work after which the kernel is built (``SYRE_COMPILE`` unset).
    """

    def __init__(self, name: str, fn: Callable, verify: Callable[[Callable, Any], bool], budget: int):
        self.name = name
        self.fn = fn
        self.verify = verify
        self.budget = budget
        self.eager_done = 0
        self._compiled: Optional[Callable] = None
        self._state: Dict[Any, bool] = {}  # key -> checked and usable
        self._failed = False

    def get(self, n: int, key: Any = None) -> Optional[Callable]:
        """The compiled kernel for ``key`` if it is (or now becomes) usable for ``n`` elements."""
        if self._failed or is_compiling():
            return None
        ok = self._state.get(key)
        if ok is not None:
            return self._compiled if ok else None
        setting = compile_setting()
        if setting is False or (setting is None and self.eager_done + n < self.budget):
            self.eager_done += n
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch's own, from its compiler stack
                if self._compiled is None:
                    importlib.import_module("torch._inductor.inductor_prims")  # registers prims.fma
                    self._compiled = torch.compile(self.fn, dynamic=True, fullgraph=True, **self.compile_options())
                with torch.no_grad():
                    ok = bool(self.verify(self._compiled, key))
            if not ok:
                raise RuntimeError("the compiled kernel does not reproduce the eager one bitwise on sample data")
        except Exception as exc:  # no C++ compiler, unsupported platform, a torch.compile bug, ...
            self._failed = True
            warnings.warn(
                f"syre: the compiled {self.name} is unavailable ({type(exc).__name__}: {str(exc)[:300]}); "
                "using the eager path (same values, slower). Set SYRE_COMPILE=0 to skip the attempt.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        self._state[key] = True
        return self._compiled

    def compile_options(self) -> dict:
        """Keyword arguments of ``torch.compile`` (a subclass may choose its backend)."""
        return {"options": {"cpp.dynamic_threads": True}}

    def reset(self) -> None:
        """Forget the compiled kernel and the eager work done (for tests)."""
        self.eager_done = 0
        self._compiled = None
        self._state = {}
        self._failed = False
