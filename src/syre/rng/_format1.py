"""Anchor format v1: Box-Muller in float64 on Philox4x32-10, one block per element.

The generator of the first format (states with ``"version": 1`` keep it; new attachments use
format 2, ``syre.rng._format2``). Element ``i`` reads block ``(i mod 2**32, i >> 32, 0, 0)``:

* ``theta0 = sigma0 * sqrt(-2 ln u1) * cos(2 pi u2)`` with ``u1 = (x0 + 1) / 2**32`` in (0, 1] and
  ``u2 = x1 / 2**32``, computed in float64 and rounded once to the storage dtype;
* ``xi = d_spread * (2 u3 - 1)`` with ``u3 = (x2 + 0.5) / 2**32``.

On CPU, large requests go through a compiled kernel for the exact part (Philox and the uniforms;
``torch.compile``, a C++ loop) and leave ``log``/``sqrt``/``cos`` to the same eager torch calls as
the reference, so both agree bitwise. Across device types the float64 ``log``/``cos`` may differ in
the last bit of a double (format 2 has no such operation).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from .._compile import LazyKernel
from ._philox import MASK32, philox4x32, stream_key

_TWO_NEG32 = 2.0**-32
_CHUNK = 1 << 20  # elements per generator chunk: bounds the int64 temporaries to ~40 MB


def _words(seed: int, name: str, start: int, stop: int, device) -> Tuple[torch.Tensor, ...]:
    idx = torch.arange(start, stop, dtype=torch.int64, device=device)
    return philox4x32(idx & MASK32, idx >> 32, stream_key(seed, name))


def _fill_eager(
    seed: int, name: str, start: int, stop: int, sigma0: float, d_spread: float, device, dtype
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The reference generator: torch integer ops for Philox, float64 Box-Muller, chunk by chunk."""
    n = stop - start
    theta0 = torch.empty(n, dtype=dtype, device=device) if sigma0 != 0.0 else None
    xi = torch.empty(n, dtype=dtype, device=device) if d_spread != 0.0 else None
    if theta0 is None and xi is None:
        return None, None
    for lo in range(start, stop, _CHUNK):
        hi = min(lo + _CHUNK, stop)
        x0, x1, x2, _ = _words(seed, name, lo, hi, device)
        if theta0 is not None:
            u1 = (x0.to(torch.float64) + 1.0) * _TWO_NEG32
            u2 = x1.to(torch.float64) * _TWO_NEG32
            z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
            theta0[lo - start : hi - start] = z * sigma0
        if xi is not None:
            u3 = (x2.to(torch.float64) + 0.5) * _TWO_NEG32
            xi[lo - start : hi - start] = (2.0 * u3 - 1.0) * d_spread
    return theta0, xi


# ----------------------------------------------------------------------------- fast generator
# The eager generator spends ~120 full-size int64 tensor operations per chunk on Philox. The fast
# generator compiles the exact part -- Philox on integers, and the float64 operations that are
# exact or a single IEEE rounding: u1 = (x0 + 1) 2**-32, v = 2 pi u2, xi = (2 u3 - 1) d_spread --
# into one loop (torch.compile: a C++ kernel on CPU, no Triton), and leaves log, sqrt and cos to
# the same eager torch calls as the reference, block by block in cache. Compiled code uses other
# log/sqrt/cos implementations than eager torch (on x86 CPUs eager torch uses MKL's vector
# math), whose last bits differ; keeping those eager makes both generators bitwise equal by
# construction, in float32 and float64.
_FAST_BLOCK = 1 << 18  # elements per block: three float64 scratch buffers of 2 MiB (fewer kernel calls)
_FAST_MIN = 64  # fills shorter than this stay eager (sizes 0 and 1 would recompile)


def _uniforms(u1, v, xi, start, k0, k1, d_spread) -> None:
    """u1 = (x0 + 1) 2**-32, v = 2 pi x1 2**-32, xi = (2 (x2 + 1/2) 2**-32 - 1) d_spread, in float64.

    ``(x0, x1, x2, x3) = philox4x32((start + i) mod 2**32, (start + i) >> 32; (k0, k1))``; every
    operation is exact or one IEEE-rounded float64 operation, so eager and compiled agree.
    """
    idx = torch.arange(u1.shape[0], dtype=torch.int64, device=u1.device) + start
    x0, x1, x2, _ = philox4x32(idx & MASK32, idx >> 32, (k0, k1))
    u1.copy_((x0.to(torch.float64) + 1.0) * _TWO_NEG32)
    v.copy_((2.0 * math.pi) * (x1.to(torch.float64) * _TWO_NEG32))
    xi.copy_((2.0 * ((x2.to(torch.float64) + 0.5) * _TWO_NEG32) - 1.0) * d_spread)


def _verify_uniforms(kernel, key) -> bool:
    n = _FAST_BLOCK + 3  # a full block and a ragged tail; the size hint makes the loop parallel
    args = (torch.tensor(2**32 - 5), torch.tensor(0x243F6A88), torch.tensor(0x85A308D3), torch.tensor(0.5, dtype=torch.float64))
    got = [torch.empty(n, dtype=torch.float64) for _ in range(3)]
    want = [torch.empty(n, dtype=torch.float64) for _ in range(3)]
    kernel(*got, *args)
    _uniforms(*want, *args)
    return all(torch.equal(a, b) for a, b in zip(got, want))


#: The compiled ``_uniforms``: built once the process has asked for 2**22 anchor elements (about
#: two seconds of the eager generator; the build takes seconds too, then is cached on disk by
#: torch), so small models never pay for it and a seeded run pays it once.
_UNIFORMS = LazyKernel("anchor generator", _uniforms, _verify_uniforms, budget=1 << 22)


def _blocks(seed: int, name: str, start: int, stop: int, sigma0: float, d_spread: float, dtype, device):
    """Yield ``(lo, hi, theta0, xi)`` for consecutive blocks of ``[start, stop)``.

    ``theta0``/``xi`` are 1-D ``dtype`` tensors of length ``hi - lo`` (``None`` where off) and are
    scratch: the next block may overwrite them. Equal, block by block, to ``anchor_slice``. Uses
    the compiled kernel where it is available, the eager generator otherwise.
    """
    device = torch.device(device)
    kernel = _fast_kernel(stop - start, sigma0, d_spread, device)
    if kernel is not None:
        yield from _fast_blocks(kernel, seed, name, start, stop, sigma0, d_spread, dtype)
        return
    step = _FAST_BLOCK if device.type == "cpu" else _CHUNK
    for lo in range(start, stop, step):
        hi = min(lo + step, stop)
        yield (lo, hi) + _fill_eager(seed, name, lo, hi, sigma0, d_spread, device, dtype)


def _fast_kernel(n: int, sigma0: float, d_spread: float, device: torch.device):
    if device.type != "cpu" or n < _FAST_MIN or (sigma0 == 0.0 and d_spread == 0.0):
        return None
    return _UNIFORMS.get(n)


def _fast_blocks(kernel, seed, name, start, stop, sigma0, d_spread, dtype):
    m = min(_FAST_BLOCK, stop - start)
    u1, v, x = (torch.empty(m, dtype=torch.float64) for _ in range(3))
    t_out = torch.empty(m, dtype=dtype) if (sigma0 != 0.0 and dtype != torch.float64) else None
    x_out = torch.empty(m, dtype=dtype) if (d_spread != 0.0 and dtype != torch.float64) else None
    k0, k1 = (torch.tensor(k, dtype=torch.int64) for k in stream_key(seed, name))
    ds = torch.tensor(d_spread, dtype=torch.float64)
    pos = torch.empty((), dtype=torch.int64)
    for lo in range(start, stop, _FAST_BLOCK):
        hi = min(lo + _FAST_BLOCK, stop)
        n = hi - lo
        a, c, e = (u1, v, x) if n == m else (u1[:n], v[:n], x[:n])
        pos.fill_(lo)
        with torch.no_grad():
            kernel(a, c, e, pos, k0, k1, ds)
            theta0 = xi = None
            if sigma0 != 0.0:
                # The eager operations of _fill_eager, in its order: sqrt(-2 log u1) * cos(v) * sigma0.
                a.log_().mul_(-2.0).sqrt_().mul_(c.cos_()).mul_(sigma0)
                theta0 = a if t_out is None else t_out[:n].copy_(a)
            if d_spread != 0.0:
                xi = e if x_out is None else x_out[:n].copy_(e)
        yield lo, hi, theta0, xi


def _fill(
    seed: int, name: str, start: int, stop: int, sigma0: float, d_spread: float, device, dtype
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    kernel = _fast_kernel(stop - start, sigma0, d_spread, device)
    if kernel is None:
        return _fill_eager(seed, name, start, stop, sigma0, d_spread, device, dtype)
    n = stop - start
    theta0 = torch.empty(n, dtype=dtype, device=device) if sigma0 != 0.0 else None
    xi = torch.empty(n, dtype=dtype, device=device) if d_spread != 0.0 else None
    for lo, hi, t, x in _fast_blocks(kernel, seed, name, start, stop, sigma0, d_spread, dtype):
        if theta0 is not None:
            theta0[lo - start : hi - start].copy_(t)
        if xi is not None:
            xi[lo - start : hi - start].copy_(x)
    return theta0, xi

def at(seed: int, name: str, idx: torch.Tensor, sigma0: float, d_spread: float, dtype):
    """``(theta0, xi)`` at the global flat indices ``idx`` (an int64 tensor), format 1."""
    x0, x1, x2, _ = philox4x32(idx & MASK32, idx >> 32, stream_key(seed, name))
    theta0 = xi = None
    if sigma0 != 0.0:
        u1 = (x0.to(torch.float64) + 1.0) * _TWO_NEG32
        u2 = x1.to(torch.float64) * _TWO_NEG32
        theta0 = (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2) * sigma0).to(dtype)
    if d_spread != 0.0:
        xi = ((2.0 * ((x2.to(torch.float64) + 0.5) * _TWO_NEG32) - 1.0) * d_spread).to(dtype)
    return theta0, xi


def _fill_batch(batch, lo: int, theta_all, xi_all, d_spread: float, device) -> None:
    """One generator pass over the concatenated requests of ``batch``, written from ``lo`` on.

    Element ``j`` of request ``(name, n, sigma0)`` gets counter ``j`` under ``stream_key(seed, name)``
    and the float64 operations of ``_fill_eager`` (``sigma0`` as a per-element tensor: the same
    IEEE product as the scalar).
    """
    lengths = torch.tensor([n for _, _, n, _ in batch], dtype=torch.int64, device=device)
    starts = torch.cumsum(lengths, 0) - lengths
    size = int(lengths.sum())
    idx = torch.arange(size, dtype=torch.int64, device=device) - torch.repeat_interleave(starts, lengths)
    k0 = torch.repeat_interleave(torch.tensor([k[0] for _, k, _, _ in batch], dtype=torch.int64, device=device), lengths)
    k1 = torch.repeat_interleave(torch.tensor([k[1] for _, k, _, _ in batch], dtype=torch.int64, device=device), lengths)
    x0, x1, x2, _ = philox4x32(idx & MASK32, idx >> 32, (k0, k1))
    if theta_all is not None:
        s0 = torch.repeat_interleave(torch.tensor([s for _, _, _, s in batch], dtype=torch.float64, device=device), lengths)
        u1 = (x0.to(torch.float64) + 1.0) * _TWO_NEG32
        u2 = x1.to(torch.float64) * _TWO_NEG32
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
        theta_all[lo : lo + size] = z * s0
    if xi_all is not None:
        u3 = (x2.to(torch.float64) + 0.5) * _TWO_NEG32
        xi_all[lo : lo + size] = (2.0 * u3 - 1.0) * d_spread
