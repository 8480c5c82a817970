"""Hand-written CPU kernels: syre's decay and the fused optimizers' steps as C loops over many tensors at once.

Why. On CPU the per-tensor cost of torch's dispatch (a multi-tensor call still costs ~1 us per tensor) and
of compiled calls (tens of microseconds each) dominated small models, and inductor's loop for the fused
AdamW step moved its bytes slower than torch's hand-written fused AdamW. These kernels take a whole
group in one call (arrays of pointers) and compile to vector loops at the machine's width, so the fused
step moves the bytes it must at about torch's fused AdamW's rate, and syre's hook costs one call per
group.

Build. The C source (``syre.kernels._native_source``) is compiled on first use with the system C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``) -- ``-O3 -march=native -fno-math-errno -fopenmp``, dropping OpenMP and then
``-march=native`` where the compiler refuses them -- into ``$SYRE_CACHE_DIR`` (default
``$XDG_CACHE_HOME/syre`` or ``~/.cache/syre``), under a name hashed from the source, the compiler's
version, the flags and the CPU's feature flags: a home directory shared between machines holds one
build per kind of CPU. The library is written under a temporary name and renamed, so concurrent
processes never load half a file. It is loaded with ``ctypes``; it links nothing of torch.

Checked. Before first use each kernel runs on sample data (a vector body and a ragged tail, one thread
and several): the decay kernels must equal ``syre.kernels.functional``'s for-loop **bitwise** (``lerp``:
``fma(w, a - p, p)`` below a weight of 1/2, ``fma(w - 1, a - p, a)`` above, as ATen's ``lerp_``;
advanced removal ``d = p - a; d = fma(d, xi, d); p = fma(-w, d, p)``, as ATen's ``addcmul_`` and
``sub_``), and the optimizer steps must agree with their eager definitions
(``syre.kernels._fused_kernels``) to a few ulps (compilers contract products into FMAs differently).

Off. ``SYRE_NATIVE=0`` turns them off; no compiler, a failed build or a failed check turns them off for
the process with one warning. Callers then take their torch paths (the same values bitwise for the
decay, within the stated tolerance for the fused steps), only slower.

Threads. ``torch.get_num_threads()`` threads (OpenMP) split the concatenated elements of a call once it
has at least ``PARALLEL_MIN`` elements; elementwise results do not depend on the split.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from typing import Callable, List, Optional, Sequence

import torch

from .._compile import is_compiling
from ._native_source import SOURCE as _SOURCE

__all__ = ["Batch", "PARALLEL_MIN", "adamw", "available", "disable_reason", "fits", "lib", "on", "sgd"]

#: A call splits its elements over threads from this many on (below, one thread: a parallel region
#: costs a few microseconds).
PARALLEL_MIN = 1 << 17


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_FLAG_SETS = (["-march=native", "-fopenmp"], ["-march=native"], [])
_BASE_FLAGS = ["-O3", "-std=gnu99", "-fno-math-errno", "-fPIC", "-shared"]

_lock = threading.Lock()
_state: dict = {}  # "lib": the loaded library or None; "reason": why not


def _setting() -> bool:
    return os.environ.get("SYRE_NATIVE", "").strip().lower() not in ("0", "false", "no", "off")


def _cache_dir() -> str:
    base = os.environ.get("SYRE_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "syre")
    return os.path.join(base, "native")


def build_dir() -> str:
    """Where built libraries are kept: the cache directory, or a per-user temporary one where it cannot be written."""
    out_dir = _cache_dir()
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, delete=True)
        probe.close()
    except OSError:
        out_dir = os.path.join(tempfile.gettempdir(), f"syre-native-{os.getuid() if hasattr(os, 'getuid') else 0}")
        os.makedirs(out_dir, exist_ok=True)
    return out_dir


def _compiler() -> Optional[str]:
    for cand in (os.environ.get("CC", "").split(" ")[0], "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found ($CC, cc, gcc or clang)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    out_dir = build_dir()
    errors = []
    for extra in _FLAG_SETS:
        flags = _BASE_FLAGS + extra
        key = hashlib.sha256("\0".join([_SOURCE, cc, version, " ".join(flags), _cpu_flags(),
                                        platform.machine()]).encode()).hexdigest()[:16]
        lib, err = build_cached(os.path.join(out_dir, f"syre_native_{key}.so"), ctypes.CDLL, lambda path, flags=flags: compile_source(
            _SOURCE, path, ".c", lambda src, out: [cc, *flags, "-o", out, src, "-lm"], timeout=120))
        if err:
            errors.append(f"{' '.join(extra) or 'plain'}: {err}")
            continue
        lib.syre_native_abi.restype = ctypes.c_int
        if lib.syre_native_abi() != 1:
            raise RuntimeError("the cached library is not this version's")
        lib.threads = "-fopenmp" in extra
        _declare(lib)
        return lib
    raise RuntimeError("the C compiler refused the kernels: " + "; ".join(errors))


def build_cached(path: str, load: Callable, compile_to: Callable[[str], Optional[str]]):
    """``(load(path), None)``, building ``path`` first with ``compile_to(path)`` where it is missing, and again where a
    cached file does not load (truncated by a full disk, built for another libc); ``(None, the compiler's error)``
    where the compiler refuses the source."""
    if not os.path.exists(path):
        err = compile_to(path)
        if err:
            return None, err
    try:
        return load(path), None
    except (OSError, ImportError):
        os.remove(path)
        err = compile_to(path)
        if err:
            raise RuntimeError(f"the cached {path} did not load, and rebuilding it failed: {err}") from None
        return load(path), None


def compile_source(source: str, path: str, suffix: str, argv: Callable[[str, str], List[str]], timeout: int) -> Optional[str]:
    """Build ``path`` from ``source`` with the command ``argv(source file, output)``, written under a temporary name and
    renamed (concurrent processes never load half a file); the compiler's first error line, or None."""
    fd, src = tempfile.mkstemp(suffix=suffix, dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as f:
        f.write(source)
    tmp = src[: -len(suffix)] + ".so"
    try:
        done = subprocess.run(argv(src, tmp), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            return next((ln.strip() for ln in lines if "error" in ln), lines[-1] if lines else f"exit status {done.returncode}")
        os.replace(tmp, path)
        return None
    finally:
        for leftover in (src, tmp):
            if os.path.exists(leftover):
                os.remove(leftover)


def _declare(lib) -> None:
    vp, i64, dbl, cint = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    for s in _SUFFIX.values():
        for name, args in (("lerp", [i64, vp, vp, vp, dbl, cint, i64]), ("ar", [i64, vp, vp, vp, vp, dbl, cint, i64]),
                           ("adamw", [i64, vp, vp, vp, vp, vp, vp, vp, vp, cint, i64]),
                           ("sgd", [i64, vp, vp, vp, vp, vp, vp, vp, cint, i64])):
            fn = getattr(lib, f"syre_{name}_{s}")
            fn.argtypes = args
            fn.restype = None


def lib():
    """The loaded kernels, built and checked on first call; None where they are off (``disable_reason()``)."""
    if "lib" in _state:
        return _state["lib"]
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        if not _setting():
            _state.update(lib=None, reason="SYRE_NATIVE=0")
            return None
        try:
            loaded = _build()
            _state["lib"] = loaded  # the checks call through it
            bad = _check()
            if bad:
                raise RuntimeError(f"its {bad} kernel disagreed with the reference on sample data")
        except Exception as exc:  # noqa: BLE001 -- any failure means: use torch's kernels
            _state.update(lib=None, reason=f"{type(exc).__name__}: {exc}")
            warnings.warn(f"syre: the native CPU kernels are off ({_state['reason']}); using torch's kernels "
                          "(the same values, slower). Set SYRE_NATIVE=0 to skip the attempt.", RuntimeWarning, stacklevel=3)
    return _state["lib"]


def disable_reason() -> Optional[str]:
    """Why the kernels are off (None: on, or not tried yet)."""
    return _state.get("reason")


def available(t: torch.Tensor) -> bool:
    """Whether ``t`` (and its like) can take the kernels: a plain contiguous fp32/fp64 CPU tensor, kernels on."""
    return fits(t) and on()


def on() -> bool:
    """Whether the kernels are on for this call (built, checked, not under ``torch.compile``'s tracing)."""
    got = _state.get("lib", False)
    return got is not None and not is_compiling() and (got is not False or lib() is not None)


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def fits(p: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether ``p`` and ``others`` (its optimizer state) can take a fused step: plain contiguous CPU tensors of
    one fp32/fp64 dtype (``on()`` checked by the caller)."""
    dtype = p.dtype
    if not (type(p) in _PLAIN and dtype in _SUFFIX and p.is_cpu and p.is_contiguous()):
        return False
    for t in others:
        if t.dtype is not dtype or not t.is_contiguous() or not t.is_cpu:
            return False
    return True


def _ptrs(ts: Sequence[Optional[torch.Tensor]]):
    return (ctypes.c_void_p * len(ts))(*[t.data_ptr() for t in ts])


def _sizes(ts: Sequence[torch.Tensor]):
    return (ctypes.c_int64 * len(ts))(*[t.numel() for t in ts])


def _threads() -> int:
    return torch.get_num_threads() if _state["lib"].threads else 1


class Batch:
    """The decay of a fixed list of same-dtype CPU tensors, in one call per step.

    The anchors' pointers are taken once; the parameters' are read at every call and the pointer
    array rebuilt only when one changed (``p.data`` replaced), after checking the new storage.
    """

    def __init__(self, ps: List[torch.Tensor], ts: Optional[List[torch.Tensor]], xs: Optional[List[torch.Tensor]]):
        self.ps, self.ts, self.xs = ps, ts, xs
        self.dtype = ps[0].dtype
        s = _SUFFIX[self.dtype]
        self._fn = getattr(_state["lib"], f"syre_{'lerp' if xs is None else 'ar'}_{s}")
        self._a = _ptrs(ts) if ts is not None else None
        self._x = _ptrs(xs) if xs is not None else None
        self._n = _sizes(ps)
        self._nt = len(ps)
        self._numels = [p.numel() for p in ps]
        self._total = sum(self._numels)
        self._seen: Optional[list] = None
        self._p = None

    @staticmethod
    def fits(ps, ts, xs) -> bool:
        """Whether these tensors can be one batch (the anchors as contiguous as the parameters, same dtype)."""
        first = ps[0]
        if not available(first):
            return False
        for i, p in enumerate(ps):
            for t in (p, ts[i] if ts is not None else None, xs[i] if xs is not None else None):
                if t is not None and not (t.device.type == "cpu" and t.dtype == first.dtype and t.is_contiguous()
                                          and type(t.data) is torch.Tensor):
                    return False
            if (ts is not None and ts[i].numel() != p.numel()) or (xs is not None and xs[i].numel() != p.numel()):
                return False
        return True

    def __call__(self, weight: float, threads: Optional[int] = None, parallel_min: int = PARALLEL_MIN) -> bool:
        """Decay every tensor by ``weight``; False (nothing done) where a parameter's storage no longer fits."""
        ptrs = list(map(torch.Tensor.data_ptr, self.ps))
        if ptrs != self._seen:
            ok = all(p.is_contiguous() and p.dtype == self.dtype and p.device.type == "cpu" and p.numel() == n
                     for p, n in zip(self.ps, self._numels))
            if not ok:
                return False
            self._seen, self._p = ptrs, (ctypes.c_void_p * self._nt)(*ptrs)
        self.run(weight, threads, parallel_min)
        return True

    def run(self, weight: float, threads: Optional[int] = None, parallel_min: int = PARALLEL_MIN) -> None:
        """The decay through the pointers of the last call, not read again (``syre.kernels._scan.Steady`` checked
        that they still hold)."""
        if threads is None:  # below parallel_min elements the kernels run on one thread whatever this says
            threads = 1 if self._total < parallel_min else _threads()
        if self._x is None:
            self._fn(self._nt, self._p, self._a, self._n, weight, threads, parallel_min)
        else:
            self._fn(self._nt, self._p, self._a, self._x, self._n, weight, threads, parallel_min)


def _packed(lists) -> tuple:
    """One pointer array for several equal-length tensor lists: ``(array, address of each list's part)``."""
    n = len(lists[0])
    arr = (ctypes.c_void_p * (n * len(lists)))(*[t.data_ptr() for ts in lists for t in ts])
    base, width = ctypes.addressof(arr), n * ctypes.sizeof(ctypes.c_void_p)
    return arr, [base + i * width for i in range(len(lists))]


def adamw(ps, gs, ms, vs, ts, xs, s: Sequence[float]) -> None:
    """The fused AdamW + syre step (``_fused_kernels._adamw_kernel``'s equations) on same-dtype contiguous CPU
    tensors, one call; ``xs`` None for basic syre; ``s`` the kernel's eight scalars."""
    fn = getattr(_state["lib"], f"syre_adamw_{_SUFFIX[ps[0].dtype]}")
    arr, (p, g, m, v, t, *x) = _packed((ps, gs, ms, vs, ts) if xs is None else (ps, gs, ms, vs, ts, xs))
    fn(len(ps), p, g, m, v, t, x[0] if x else None, _sizes(ps), (ctypes.c_double * 8)(*s), _threads(), PARALLEL_MIN)
    del arr  # alive through the call


def sgd(ps, gs, bs, ts, xs, s: Sequence[float]) -> None:
    """The fused SGD-momentum + syre step (``_fused_kernels._sgd_kernel``'s equations), one call."""
    fn = getattr(_state["lib"], f"syre_sgd_{_SUFFIX[ps[0].dtype]}")
    arr, (p, g, b, t, *x) = _packed((ps, gs, bs, ts) if xs is None else (ps, gs, bs, ts, xs))
    fn(len(ps), p, g, b, t, x[0] if x else None, _sizes(ps), (ctypes.c_double * 4)(*s), _threads(), PARALLEL_MIN)
    del arr


# ----------------------------------------------------------------------------- the checks before first use
def _decay_one(p, theta0, xi, weight) -> None:
    """The for-loop decay's ATen operations (``syre.kernels.functional._decay_one`` on fp32/fp64; tested equal)."""
    if xi is None:
        p.lerp_(theta0, weight)
        return
    diff = p - theta0 if theta0 is not None else p.clone()
    diff.addcmul_(diff, xi)
    p.sub_(diff, alpha=weight)


def _check() -> Optional[str]:
    """The name of the first kernel that disagrees with its reference on sample data, or None."""
    from . import _fused_kernels as fk

    for dtype in _SUFFIX:
        for n in (7, (1 << 16) + 5, PARALLEL_MIN + 37):
            gen = torch.Generator().manual_seed(n)
            p = torch.randn(n, generator=gen, dtype=dtype)
            t = torch.randn(n, generator=gen, dtype=dtype) * 1.5
            x = (torch.rand(n, generator=gen, dtype=dtype) - 0.5) * 0.4
            for w in (0.3, 0.7, 1.0):
                for name, anchor, xi in (("lerp", t, None), ("ar", t, x), ("ar0", None, x)):
                    want = p.clone()
                    _decay_one(want, anchor, xi, w)
                    for threads in (1, 2):
                        got = p.clone()
                        Batch([got], None if anchor is None else [anchor], None if xi is None else [xi])(
                            w, threads if _state["lib"].threads else 1, 1 if threads > 1 else PARALLEL_MIN)
                        if not torch.equal(got, want):
                            return f"{name} ({dtype}, {n} elements, {threads} threads)"
            g, m, v = (torch.randn(n, generator=gen, dtype=dtype) for _ in range(3))
            v = v.abs()
            for xi in (None, x):
                s = [0.1, 0.99, 0.1, 0.999, 0.001, 0.01, 0.03, 1e-8]
                got, want = [u.clone() for u in (p, g, m, v)], [u.clone() for u in (p, g, m, v)]
                adamw([got[0]], [got[1]], [got[2]], [got[3]], [t], None if xi is None else [xi], s)
                fk._adamw_kernel(*want, t, xi, torch.tensor(s, dtype=dtype))
                if not all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, want)):
                    return f"AdamW ({dtype}, {n} elements)"
                s = [0.1, 0.9, 1.0, 0.01]
                got, want = [u.clone() for u in (p, g, m)], [u.clone() for u in (p, g, m)]
                sgd([got[0]], [got[1]], [got[2]], [t], None if xi is None else [xi], s)
                fk._sgd_kernel(*want, t, xi, torch.tensor(s, dtype=dtype))
                if not all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, want)):
                    return f"SGD ({dtype}, {n} elements)"
    return None
