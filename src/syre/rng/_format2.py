"""Anchor format v2: an integer-only normal generator, bitwise the same on every device.

Element ``i`` of a parameter reads lane ``l = i mod 4`` of Philox4x32-10 block ``j = i // 4``
under the parameter's key (``syre.rng._philox.stream_key``): one block serves four elements.

* ``theta0``: the word ``w = x_l`` of counter ``(j mod 2**32, j >> 32, 0, 0)``. Its bit 0 is the
  sign; ``v = w | 1`` is the two-sided tail probability ``q = v / 2**32`` in ``(0, 1)``. With
  ``k = clz32(v)`` (the octave, 0..31) and ``m = v << k`` (top bit set), ``i = m[30:24]`` picks
  a subinterval of the octave and ``f = m[23:8]`` the position in it; between the table's
  fixed-point quantiles ``a = T[k][i]`` and ``b = T[k][i + 1]`` (``syre.rng._normal_table``)::

      z = a - ((a - b) * (2 f + 1)) >> 17        # integer interpolation, midpoint of f's cell

  so ``|Z| = z / 2**21`` approximates ``Q^-1(q)``, ``Q(x) = P(|Z| > x)``; ``N = +-z`` by the sign.
  ``|N| < 2**24``, so ``N`` converts to float32 exactly and ``N * 2**-21`` is exact;
  ``theta0 = (N * 2**-21) * sigma0`` is the one rounded operation, in the anchor's dtype (sigma0
  rounded to it first).
* ``xi``: the word ``w = x_l`` of counter ``(j mod 2**32, j >> 32, 1, 0)``;
  ``u = (2 (w >> 8) + 1 - 2**24) * 2**-24`` (exact, uniform on 2**24 odd points of (-1, 1)) and
  ``xi = u * d_spread``, one rounding.

Every step before the last multiplication is integer arithmetic on 32-bit words or an exact
conversion, so eager torch (int64 emulation, here), the compiled CPU kernel (int32 lanes, here),
the Triton kernels (``syre.rng._triton``) and JAX in 32-bit mode (``syre.optax``) give the same bits
by construction. Largest ``|theta0|``: ``T[31][0] / 2**21 = 6.34 sigma0``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._compile import LazyKernel
from . import _normal_table
from ._philox import MASK32, lsr32, philox4x32, philox4x32_i32, round_keys

__all__ = ["at", "blocks", "fill", "normal_fixed", "unit_xi_int"]

ROW = _normal_table.ROW
SCALE = 2.0 ** -_normal_table.FRACTION_BITS
XI_SCALE = 2.0**-24
#: Elements per block of the block generator (a multiple of ``_ALIGN``).
BLOCK = 1 << 18
#: Compiled calls cover whole multiples of this many elements (16 Philox blocks: full vectors).
_ALIGN = 64

_TABLES = {}


def table(device, dtype=torch.int64) -> torch.Tensor:
    """The quantile table as a flat tensor on ``device`` (cached)."""
    key = (torch.device(device), dtype)
    if key not in _TABLES:
        _TABLES[key] = torch.tensor(_normal_table.table(), dtype=dtype, device=key[0])
    return _TABLES[key]


# ----------------------------------------------------------------------------- eager (the reference)
def normal_fixed(w: torch.Tensor, tab: torch.Tensor) -> torch.Tensor:
    """``N`` (int64, ``|N| < 2**24``) of each 32-bit word ``w`` (int64 tensor); see the module doc."""
    v = w | 1
    t, k = v, torch.zeros_like(v)
    for s in (16, 8, 4, 2, 1):
        c = (t >> (32 - s)) == 0
        t = torch.where(c, (t << s) & MASK32, t)
        k = k + c.to(k.dtype) * s
    base = k * ROW + ((t >> 24) & 127)
    f = (t >> 8) & 0xFFFF
    a, b = tab[base], tab[base + 1]
    z = a - (((a - b) * (2 * f + 1)) >> 17)
    return torch.where((w & 1) == 1, -z, z)


def unit_xi_int(w: torch.Tensor) -> torch.Tensor:
    """``2 (w >> 8) + 1 - 2**24``: odd integers in ``(-2**24, 2**24)``, ``u = that * 2**-24``."""
    return 2 * (w >> 8) + (1 - (1 << 24))


def _scaled(n: torch.Tensor, unit: float, scale: float, dtype) -> torch.Tensor:
    s = torch.tensor(scale, dtype=dtype, device=n.device)
    return (n.to(dtype) * unit) * s


def _range_words(key, stream: int, start: int, stop: int, device) -> torch.Tensor:
    """The words of elements ``[start, stop)`` (int64), one Philox block per four elements."""
    j0, j1 = start >> 2, (stop + 3) >> 2
    j = torch.arange(j0, j1, dtype=torch.int64, device=device)
    c2 = torch.full_like(j, stream)
    x = philox4x32(j & MASK32, j >> 32, key, c2=c2)
    return torch.stack(x, dim=1).reshape(-1)[start - 4 * j0 : stop - 4 * j0]


def _at_words(key, stream: int, idx: torch.Tensor) -> torch.Tensor:
    j = idx >> 2
    x = philox4x32(j & MASK32, j >> 32, key, c2=torch.full_like(j, stream))
    return torch.stack(x, dim=0).gather(0, (idx & 3).unsqueeze(0))[0]


def _pair(words_of, sigma0: float, d_spread: float, dtype, device):
    theta0 = xi = None
    if sigma0 != 0.0:
        theta0 = _scaled(normal_fixed(words_of(0), table(device)), SCALE, sigma0, dtype)
    if d_spread != 0.0:
        xi = _scaled(unit_xi_int(words_of(1)), XI_SCALE, d_spread, dtype)
    return theta0, xi


#: Elements per eager chunk: bounds the int64 temporaries (about 40 MB).
CHUNK = 1 << 20


def fill_eager(key, start: int, stop: int, sigma0: float, d_spread: float, device, dtype):
    """``(theta0, xi)`` of elements ``[start, stop)``, eagerly, chunk by chunk (None where off)."""
    if stop - start <= CHUNK:
        return _pair(lambda s: _range_words(key, s, start, stop, device), sigma0, d_spread, dtype, device)
    theta0 = torch.empty(stop - start, dtype=dtype, device=device) if sigma0 != 0.0 else None
    xi = torch.empty(stop - start, dtype=dtype, device=device) if d_spread != 0.0 else None
    for lo in range(start, stop, CHUNK):
        hi = min(lo + CHUNK, stop)
        t, x = _pair(lambda s: _range_words(key, s, lo, hi, device), sigma0, d_spread, dtype, device)
        if t is not None:
            theta0[lo - start : hi - start] = t
        if x is not None:
            xi[lo - start : hi - start] = x
    return theta0, xi


def at(key, idx: torch.Tensor, sigma0: float, d_spread: float, dtype):
    """``(theta0, xi)`` at the global flat indices ``idx`` (an int64 tensor of any shape)."""
    if idx.dtype != torch.int64:
        raise TypeError(f"Invalid indices dtype: {idx.dtype}; expected torch.int64 (global flat element indices)")
    return _pair(lambda s: _at_words(key, s, idx), sigma0, d_spread, dtype, idx.device)


# ----------------------------------------------------------------------------- compiled (CPU)
def _normal_i32(w, tab):
    """``normal_fixed`` on int32 bit patterns (``tab`` int32)."""
    v = w | 1
    t, k = v, torch.zeros_like(v)
    for s in (16, 8, 4, 2, 1):
        c = lsr32(t, 32 - s) == 0
        t = torch.where(c, t << s, t)
        k = k + c.to(torch.int32) * s
    base = k * ROW + (lsr32(t, 24) & 127)
    f = lsr32(t, 8) & 0xFFFF
    a, b = tab[base], tab[base + 1]
    z = a - (((a - b) * (2 * f + 1)) >> 17)
    return torch.where((w & 1) == 1, -z, z)


def _words_i32(nb: int, j0, rk, stream: int):
    j = torch.arange(nb, dtype=torch.int64) + j0
    c0 = j.to(torch.int32)  # the low word (conversion wraps)
    c1 = (j >> 32).to(torch.int32)
    z = torch.zeros_like(c0)
    return philox4x32_i32(c0, c1, z + stream, z, rk)


# Each kernel writes lane l of blocks j0, j0 + 1, ... to its own output ``o[l]`` (one contiguous
# tensor per lane: strided stores into one interleaved output miscompiled in this torch's CPU
# backend); ``_interleave`` then puts element 4 b + l in place.
def _theta_kernel(o0, o1, o2, o3, j0, rk, tab, s0) -> None:
    """``o[l][b] = theta0`` of block ``j0 + b``, lane ``l`` (float32/64 outputs, length a multiple of 16)."""
    x = _words_i32(o0.shape[0], j0, rk, 0)
    for o, w in zip((o0, o1, o2, o3), x):
        o.copy_((_normal_i32(w, tab).to(o.dtype) * SCALE) * s0)


def _xi_kernel(o0, o1, o2, o3, j0, rk, ds) -> None:
    x = _words_i32(o0.shape[0], j0, rk, 1)
    for o, w in zip((o0, o1, o2, o3), x):
        o.copy_(((2 * lsr32(w, 8) + (1 - (1 << 24))).to(o.dtype) * XI_SCALE) * ds)


def _run(kernel, out: torch.Tensor, lanes: torch.Tensor, j0: int, *args) -> None:
    """``out[4 b + l]`` for the blocks ``j0 ..`` (``out``'s length a multiple of 64; ``lanes`` scratch (4, >= nb))."""
    nb = out.shape[0] // 4
    ls = lanes[:, :nb]
    with torch.no_grad():
        kernel(ls[0], ls[1], ls[2], ls[3], torch.tensor(j0), *args)
        torch.stack(tuple(ls), dim=1, out=out.view(nb, 4))


def _verifier(with_theta: bool):
    def verify(kernel, dtype) -> bool:
        key = (0x243F6A88, 0x85A308D3)
        start, n = (1 << 34) - 4 * 1000, BLOCK + 128  # counters past 2**32 blocks, a full block and more
        got = torch.empty(n, dtype=dtype)
        lanes = torch.empty(4, n // 4, dtype=dtype)
        rk = torch.tensor(round_keys(key), dtype=torch.int32)
        scale = torch.tensor(0.37, dtype=dtype)
        if with_theta:
            _run(kernel, got, lanes, start >> 2, rk, table("cpu", torch.int32), scale)
        else:
            _run(kernel, got, lanes, start >> 2, rk, scale)
        want = fill_eager(key, start, start + n, 0.37 if with_theta else 0.0, 0.0 if with_theta else 0.37, "cpu", dtype)
        return torch.equal(got, want[0] if with_theta else want[1])

    return verify


_THETA = LazyKernel("anchor generator (format 2)", _theta_kernel, _verifier(True), budget=1 << 22)
_XI = LazyKernel("anchor generator (format 2)", _xi_kernel, _verifier(False), budget=1 << 22)


def _kernels(n: int, sigma0: float, d_spread: float, device, dtype):
    if torch.device(device).type != "cpu" or n < _ALIGN:
        return None, None
    kt = _THETA.get(n, dtype) if sigma0 != 0.0 else None
    kx = _XI.get(n, dtype) if d_spread != 0.0 else None
    return kt, kx


def blocks(key, start: int, stop: int, sigma0: float, d_spread: float, dtype, device):
    """Yield ``(lo, hi, theta0, xi)`` for consecutive blocks of ``[start, stop)`` (scratch tensors).

    Blocks end at multiples of ``BLOCK``; each is computed by the compiled kernels where they are
    available (over the enclosing 64-aligned range), eagerly otherwise; the values are the same.
    """
    device = torch.device(device)
    kt, kx = _kernels(stop - start, sigma0, d_spread, device, dtype)
    buf_t = buf_x = lanes = None
    rk = torch.tensor(round_keys(key), dtype=torch.int32) if (kt is not None or kx is not None) else None
    lo = start
    while lo < stop:
        hi = min(stop, (lo // BLOCK + 1) * BLOCK)
        a, b = lo & ~(_ALIGN - 1), -(-hi // _ALIGN) * _ALIGN
        theta0 = xi = None
        if (sigma0 != 0.0 and kt is None) or (d_spread != 0.0 and kx is None):
            theta0, xi = fill_eager(key, lo, hi, sigma0 if kt is None else 0.0, d_spread if kx is None else 0.0, device, dtype)
        if kt is not None or kx is not None:
            lanes = _scratch(lanes, (4, (BLOCK + 2 * _ALIGN) // 4), dtype)
        if kt is not None:
            buf_t = _scratch(buf_t, (BLOCK + 2 * _ALIGN,), dtype)
            _run(kt, buf_t[: b - a], lanes, a >> 2, rk, table("cpu", torch.int32), torch.tensor(sigma0, dtype=dtype))
            theta0 = buf_t[lo - a : hi - a]
        if kx is not None:
            buf_x = _scratch(buf_x, (BLOCK + 2 * _ALIGN,), dtype)
            _run(kx, buf_x[: b - a], lanes, a >> 2, rk, torch.tensor(d_spread, dtype=dtype))
            xi = buf_x[lo - a : hi - a]
        yield lo, hi, theta0, xi
        lo = hi


def _scratch(buf: Optional[torch.Tensor], shape, dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype) if buf is None else buf


def fill(key, start: int, stop: int, sigma0: float, d_spread: float, device,
         dtype) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(theta0, xi)`` of ``[start, stop)`` as new tensors: compiled blocks where available (CPU), eager otherwise.

    CUDA tensors take ``syre.rng._triton`` instead (``syre.rng.anchors`` picks), the same bits.
    """
    kt, kx = _kernels(stop - start, sigma0, d_spread, device, dtype)
    if kt is None and kx is None:
        return fill_eager(key, start, stop, sigma0, d_spread, device, dtype)
    n = stop - start
    theta0 = torch.empty(n, dtype=dtype) if sigma0 != 0.0 else None
    xi = torch.empty(n, dtype=dtype) if d_spread != 0.0 else None
    for lo, hi, t, x in blocks(key, start, stop, sigma0, d_spread, dtype, device):
        if theta0 is not None:
            theta0[lo - start : hi - start].copy_(t)
        if xi is not None:
            xi[lo - start : hi - start].copy_(x)
    return theta0, xi


def fill_batch(batch, lo: int, theta_all, xi_all, d_spread: float, device) -> None:
    """One pass over the concatenated requests ``(index, key, n, sigma0)`` of ``batch``, written from ``lo`` on.

    Element ``e`` of a request gets what ``fill_eager(key, 0, n, ...)`` gives it (the same blocks,
    lanes and operations; ``sigma0`` as a per-element tensor: the same IEEE product as the scalar).
    """
    lengths = torch.tensor([n for _, _, n, _ in batch], dtype=torch.int64, device=device)
    nblocks = (lengths + 3) // 4
    size, total_blocks = int(lengths.sum()), int(nblocks.sum())
    bstarts = torch.cumsum(nblocks, 0) - nblocks
    estarts = torch.cumsum(lengths, 0) - lengths
    j = torch.arange(total_blocks, dtype=torch.int64, device=device) - torch.repeat_interleave(bstarts, nblocks)
    keys = [torch.repeat_interleave(torch.tensor([k[w] for _, k, _, _ in batch], dtype=torch.int64, device=device), nblocks)
            for w in (0, 1)]
    pos = (torch.arange(size, dtype=torch.int64, device=device) - torch.repeat_interleave(estarts, lengths)
           + torch.repeat_interleave(4 * bstarts, lengths))

    def words(stream: int) -> torch.Tensor:
        x = philox4x32(j & MASK32, j >> 32, (keys[0], keys[1]), c2=torch.full_like(j, stream))
        return torch.stack(x, dim=1).reshape(-1)[pos]

    dtype = (theta_all if theta_all is not None else xi_all).dtype
    if theta_all is not None:
        s0 = torch.repeat_interleave(torch.tensor([s for _, _, _, s in batch], dtype=dtype, device=device), lengths)
        theta_all[lo : lo + size] = (normal_fixed(words(0), table(device)).to(dtype) * SCALE) * s0
    if xi_all is not None:
        xi_all[lo : lo + size] = _scaled(unit_xi_int(words(1)), XI_SCALE, d_spread, dtype)

