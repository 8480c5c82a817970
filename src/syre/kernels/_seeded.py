"""Seeded decay on CPU in one compiled pass: the anchor generated and applied where it is read.

Seeded mode (anchor format 2) holds no anchor: each step regenerates ``theta0`` (and ``xi``) from
the Philox stream and decays toward it. The block path (``syre.rng._format2.blocks`` then
``functional.decay_``) writes the four Philox lanes to scratch, interleaves them into element
order and sweeps the parameter once more. Here one compiled kernel per call reads the parameter
as ``(blocks, 4)`` rows (row ``b`` = the four elements of Philox block ``j0 + b``), generates the
four words of each block, turns them into anchors and writes the decayed row back: no scratch,
no interleaving pass, no second sweep.

The arithmetic is the reference's, operation for operation: Philox on zero-extended words in
int64 lanes (``syre.rng._philox.philox4x32_rk``: the low 64 bits of a product of two words below
2**32 are exact, so ``hi``/``lo`` are the Philox ``mulhi``/``mullo``), format 2's integer normal
in int32 lanes, then the decay as ``functional.decay_`` computes it (basic: ``lerp``; advanced
removal: ``d = p - theta0``, ``p = fma(-w, fma(d, xi, d), p)``). Each compiled kernel is checked
bitwise against the eager reference before first use (``syre._compile.LazyKernel``); the
elements outside the 64-aligned interior of a range, and everything when a kernel is unavailable,
take the block path. The Triton kernel (``syre.kernels._triton``) and the JAX twin keep their
own code.
"""
from __future__ import annotations

import torch

from .._compile import LazyKernel
from ..rng import _format2
from ..rng._philox import MASK32, lsr32, philox4x32_rk, round_keys
from . import functional

__all__ = ["seeded_decay"]

_ALIGN = _format2._ALIGN


def _words(p2, j0, rk, stream: int):
    """The four Philox words (int64) of blocks ``j0 .. j0 + rows`` of stream ``stream``."""
    j = torch.arange(p2.shape[0], dtype=torch.int64) + j0
    z = torch.zeros_like(j)
    return philox4x32_rk(j & MASK32, j >> 32, z + stream, z, rk)


def _theta(w, tab, s0, dtype):
    return (_format2._normal_i32(w.to(torch.int32), tab).to(dtype) * _format2.SCALE) * s0


def _xi(w, ds, dtype):
    return ((2 * lsr32(w.to(torch.int32), 8) + (1 - (1 << 24))).to(dtype) * _format2.XI_SCALE) * ds


def _basic(p2, j0, rk, tab, s0, w) -> None:
    """``p2[b, l] <- lerp(p2[b, l], theta0, w)`` (basic syre), ``theta0`` of block ``j0 + b``, lane ``l``."""
    t = torch.stack([_theta(x, tab, s0, p2.dtype) for x in _words(p2, j0, rk, 0)], dim=1)
    fma = torch.ops.prims.fma  # ATen's CPU lerp: fma(w, t - p, p) for |w| < 1/2, else fma(p - t, 1 - w, t)
    d = t - p2
    p2.copy_(torch.where(w.abs() < 0.5, fma(w, d, p2), fma(-d, 1 - w, t)))


def _ar(p2, j0, rk, tab, s0, ds, nw) -> None:
    """Advanced removal toward the anchor: ``d = p - theta0``, ``p <- fma(-w, fma(d, xi, d), p)``."""
    t = torch.stack([_theta(x, tab, s0, p2.dtype) for x in _words(p2, j0, rk, 0)], dim=1)
    x = torch.stack([_xi(x, ds, p2.dtype) for x in _words(p2, j0, rk, 1)], dim=1)
    fma = torch.ops.prims.fma
    d = p2 - t
    p2.copy_(fma(nw, fma(d, x, d), p2))


def _ar0(p2, j0, rk, ds, nw) -> None:
    """Advanced removal toward the origin (``sigma0 = 0``): ``p <- fma(-w, fma(p, xi, p), p)``."""
    x = torch.stack([_xi(x, ds, p2.dtype) for x in _words(p2, j0, rk, 1)], dim=1)
    fma = torch.ops.prims.fma
    p2.copy_(fma(nw, fma(p2, x, p2), p2))


def _reference(flat, key, start: int, sigma0: float, d_spread: float, weight: float) -> None:
    """The block path: generate, interleave, decay (``SeededStore.decay``'s CPU path)."""
    stop = start + flat.numel()
    for lo, hi, t, x in _format2.blocks(key, start, stop, sigma0, d_spread, flat.dtype, flat.device):
        functional.decay_([flat[lo - start : hi - start]], [t], [x], weight=weight, foreach=False)


def _call(kernel, kind: str, p2, j0: int, key, sigma0: float, d_spread: float, weight: float) -> None:
    dt = p2.dtype
    rk = torch.tensor(round_keys(key), dtype=torch.int64) & MASK32
    j0 = torch.tensor(j0)
    tab = _format2.table("cpu", torch.int32)
    with torch.no_grad():
        if kind == "basic":
            kernel(p2, j0, rk, tab, torch.tensor(sigma0, dtype=dt), torch.tensor(weight, dtype=dt))
        elif kind == "ar":
            kernel(p2, j0, rk, tab, torch.tensor(sigma0, dtype=dt), torch.tensor(d_spread, dtype=dt),
                   torch.tensor(-weight, dtype=dt))
        else:
            kernel(p2, j0, rk, torch.tensor(d_spread, dtype=dt), torch.tensor(-weight, dtype=dt))


def _verifier(kind: str):
    def verify(kernel, dtype) -> bool:
        key = (0x243F6A88, 0x85A308D3)
        sigma0 = 0.0 if kind == "ar0" else 0.37
        d_spread = 0.0 if kind == "basic" else 0.45
        ok = True
        # counters across 2**32 blocks; weights below and above 1/2 (lerp's two branches)
        for start, n, weight in (((1 << 34) - 4 * 1000, _format2.BLOCK + 128, 0.3), (64, 4096, 0.75)):
            p = torch.randn(n, dtype=dtype, generator=torch.Generator().manual_seed(n))
            want = p.clone()
            _reference(want, key, start, sigma0, d_spread, weight)
            _call(kernel, kind, p.view(-1, 4), start >> 2, key, sigma0, d_spread, weight)
            ok = ok and torch.equal(p, want)
        return ok

    return verify


_KERNELS = {
    kind: LazyKernel("seeded decay kernel (format 2)", fn, _verifier(kind), budget=1 << 22)
    for kind, fn in (("basic", _basic), ("ar", _ar), ("ar0", _ar0))
}


def seeded_decay(flat: torch.Tensor, key, start: int, sigma0: float, d_spread: float, weight: float) -> bool:
    """Seeded decay of flat contiguous CPU ``flat`` (elements ``start ..`` of its parameter) in place.

    Returns False, touching nothing, when this path does not apply (not fp32/fp64, a tensor
    weight, too short, or the kernel unavailable); the caller then takes the block path.
    """
    n = flat.numel()
    if flat.device.type != "cpu" or flat.dtype not in (torch.float32, torch.float64) or isinstance(weight, torch.Tensor) \
            or (sigma0 == 0.0 and d_spread == 0.0):
        return False
    a, b = -(-start // _ALIGN) * _ALIGN, (start + n) & ~(_ALIGN - 1)  # the 64-aligned interior
    if b - a < _ALIGN:
        return False
    kind = "basic" if d_spread == 0.0 else ("ar" if sigma0 != 0.0 else "ar0")
    kernel = _KERNELS[kind].get(b - a, flat.dtype)
    if kernel is None:
        return False
    weight = float(weight)
    if a > start:
        _reference(flat[: a - start], key, start, sigma0, d_spread, weight)
    _call(kernel, kind, flat[a - start : b - start].view(-1, 4), a >> 2, key, sigma0, d_spread, weight)
    if start + n > b:
        _reference(flat[b - start :], key, b, sigma0, d_spread, weight)
    return True
