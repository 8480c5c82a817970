"""Anchor format 2 as a Triton kernel: the generator of ``syre.rng._format2`` on CUDA, the same bits.

``tl.philox`` is Philox4x32-10 word for word (same multipliers, Weyl constants and round order;
``seed = k0 | k1 << 32``), then the integer-only normal, one exact conversion and one rounded
product. ``_theta`` and ``_xi`` (an element's anchor and spread, in registers) are also called by
the seeded decay kernel of ``syre.kernels._triton``. Every launch passes ``enable_fp_fusion=False``
(see there). Tested bitwise against the CPU path under Triton's interpreter (``tests/test_triton.py``).
"""
from __future__ import annotations

import torch

from . import _format2

__all__ = ["anchors", "available", "blocks"]

BLOCK = 1024
#: Elements per block of ``blocks`` (one launch each).
GPU_BLOCK = 1 << 24


try:
    import triton
    import triton.language as tl
except ImportError:  # the kernels below are defined only with Triton
    triton = tl = None


def available() -> bool:
    return triton is not None


def _require() -> None:
    if triton is None:
        raise ImportError("syre's GPU kernels need Triton, which is not installed: pip install 'torch-syre[triton]'")


if triton is not None:
    # The constants of syre.rng._format2 / syre.rng._normal_table, written out (jit code reads no Python globals):
    # 129 table entries per octave, SCALE = 2**-21, XI_SCALE = 2**-24.

    @triton.jit
    def _normal(w, tab_ptr):
        v = w | 1
        t = v
        k = tl.zeros_like(v)
        for s in tl.static_range(5):
            c = (t >> (32 - (16 >> s))) == 0
            t = tl.where(c, t << (16 >> s), t)
            k = tl.where(c, k + (16 >> s), k)
        base = (k * 129 + ((t >> 24) & 127)).to(tl.int32)
        f = ((t >> 8) & 0xFFFF).to(tl.int32)
        a = tl.load(tab_ptr + base)
        b = tl.load(tab_ptr + base + 1)
        z = a - (((a - b) * (2 * f + 1)) >> 17)
        return tl.where((w & 1) == 1, -z, z)

    @triton.jit
    def _lane(idx, seed, stream: tl.constexpr):
        j = idx >> 2
        x0, x1, x2, x3 = tl.philox(seed, (j & 0xFFFFFFFF).to(tl.uint32), (j >> 32).to(tl.uint32),
                                   tl.full(j.shape, stream, tl.uint32), tl.zeros(j.shape, tl.uint32))
        lane = idx & 3
        return tl.where(lane == 0, x0, tl.where(lane == 1, x1, tl.where(lane == 2, x2, x3)))

    @triton.jit
    def _theta(idx, seed, tab_ptr, s0, like):
        n = _normal(_lane(idx, seed, 0), tab_ptr)
        return (n.to(like.dtype) * 4.76837158203125e-07) * s0

    @triton.jit
    def _xi(idx, seed, ds, like):
        w = _lane(idx, seed, 1)
        return ((2 * (w >> 8).to(tl.int32) + (1 - (1 << 24))).to(like.dtype) * 5.9604644775390625e-08) * ds

    @triton.jit
    def anchor_kernel(t_ptr, x_ptr, start, n, seed, tab_ptr, s0, ds, HAS_T: tl.constexpr, HAS_X: tl.constexpr,
                      BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        like = tl.zeros([BLOCK], t_ptr.dtype.element_ty)
        if HAS_T:
            tl.store(t_ptr + offs, _theta(offs + start, seed, tab_ptr, s0, like), mask=mask)
        if HAS_X:
            tl.store(x_ptr + offs, _xi(offs + start, seed, ds, like), mask=mask)


def _grid(n: int):
    return (max(1, -(-n // BLOCK)),)


def _seed(key) -> int:
    return key[0] | (key[1] << 32)


def _launch(kernel, n, *args, **kw):
    kernel[_grid(n)](*args, BLOCK=BLOCK, enable_fp_fusion=False, **kw)


def anchors(key, start: int, stop: int, sigma0: float, d_spread: float, dtype, device):
    """``(theta0, xi)`` of elements ``[start, stop)`` (format 2) by the Triton kernel (None where off)."""
    _require()
    n = stop - start
    t = torch.empty(n, dtype=dtype, device=device) if sigma0 != 0.0 else None
    x = torch.empty(n, dtype=dtype, device=device) if d_spread != 0.0 else None
    if n and (t is not None or x is not None):
        tab = _format2.table(device, torch.int32)
        _launch(anchor_kernel, n, t if t is not None else x, x if x is not None else t, start, n, _seed(key), tab,
                sigma0, d_spread, HAS_T=t is not None, HAS_X=x is not None)
    return t, x


def blocks(key, start: int, stop: int, sigma0: float, d_spread: float, dtype, device):
    """Yield ``(lo, hi, theta0, xi)`` for consecutive blocks of ``GPU_BLOCK`` elements of ``[start, stop)``."""
    for lo in range(start, stop, GPU_BLOCK):
        hi = min(lo + GPU_BLOCK, stop)
        yield (lo, hi) + anchors(key, lo, hi, sigma0, d_spread, dtype, device)
