"""Anchors: theta0 and D as pure functions of (seed, parameter name, element index).

Every number syre draws comes from a counter-based generator, Philox4x32-10 (Salmon, Moraes,
Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the generator behind
cuRAND's and JAX's counter-based streams), written with torch integer ops so that it runs
unchanged on any device:

* the **key** of a parameter is ``blake2b(seed || name)`` cut to two 32-bit words, so the
  anchors of one parameter do not depend on any other parameter of the model, on the global
  RNG, on the rank or on the number of processes;
* the **counter** of an element is its row-major index in the full (logical) parameter, split
  into two 32-bit words; so the anchor of a contiguous slice of the flattened parameter (a shard)
  is computed from that slice's indices alone, without building the full tensor, and so is the
  anchor at any set of indices (``anchor_at``: a tensor-parallel shard's).

One Philox block per element gives four 32-bit words ``x0..x3``:

* ``theta0 = sigma0 * sqrt(-2 ln u1) * cos(2 pi u2)`` (Box-Muller) with
  ``u1 = (x0 + 1) / 2**32`` in (0, 1] and ``u2 = x1 / 2**32`` in [0, 1), computed in float64
  and rounded once to the storage dtype;
* ``xi = d_spread * (2 u3 - 1)`` with ``u3 = (x2 + 0.5) / 2**32``, so that
  ``D = 1 + xi ~ Uniform(1 - d_spread, 1 + d_spread)``. syre keeps ``xi``, not ``D``: in fp32
  ``1 + xi`` rounds many small ``xi`` to exactly 1, while ``diff + xi * diff`` keeps every entry
  distinct.

On CPU, large requests go through a compiled kernel (``torch.compile``, a C++ loop; built once a
process has asked for about 4M anchor elements, or at once with ``SYRE_COMPILE=1``) that is bitwise
equal to the eager generator by construction; the eager generator remains the fallback.

Within one device type the values are bitwise reproducible. Across device types (CPU vs CUDA)
the float64 ``log``/``cos`` may differ in the last bit of a double; after rounding to float32 the
anchors agree except, with probability about 2**-29 per element, by one float32 ulp.
"""
from __future__ import annotations

import hashlib
import math
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from ._compile import LazyKernel
from ._validate import check_d_spread, check_nonneg_float, check_seed
from .config import DEFAULT_D_SPREAD
# The sigma0 presets and fan-in rules live in ``syre.sigma0``; these names stay importable from here.
from .sigma0 import (  # noqa: F401
    DEFAULT_SIGMA0,
    DEFAULT_SIGMA0_SCALE,
    PRESETS,
    SIGMA0_PRESETS,
    UNIT_SIGMA0,
    Sigma0Spec,
    check_sigma0_spec,
    init_std,
    parse_sigma0,
    resolve_sigma0,
)

__all__ = [
    "Anchor",
    "DEFAULT_D_SPREAD",
    "DEFAULT_SIGMA0",
    "DEFAULT_SIGMA0_SCALE",
    "PHILOX_M0",
    "PHILOX_M1",
    "PHILOX_W0",
    "PHILOX_W1",
    "PRESETS",
    "SIGMA0_PRESETS",
    "anchor",
    "anchor_at",
    "anchor_like",
    "anchor_many",
    "anchor_slice",
    "init_std",
    "parse_sigma0",
    "philox4x32",
    "resolve_sigma0",
    "stream_key",
]

MASK32 = 0xFFFFFFFF
#: Philox4x32's multipliers and Weyl key increments (Salmon et al. 2011), shared with ``syre.optax``.
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
_M0, _M1, _W0, _W1 = PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1
_TWO_NEG32 = 2.0**-32
_CHUNK = 1 << 20  # elements per generator chunk: bounds the int64 temporaries to ~40 MB


class Anchor(NamedTuple):
    """The anchor of one parameter: ``theta0`` and the diagonal ``d`` of D (both full shape)."""

    theta0: torch.Tensor
    d: torch.Tensor


def stream_key(seed: int, name: str) -> Tuple[int, int]:
    """The Philox key (two 32-bit words) of parameter ``name`` under ``seed``.

    ``blake2b(seed as 8 little-endian bytes || utf-8 name)``; stable across processes, Python
    versions and platforms (unlike ``hash``).
    """
    seed = check_seed(seed)
    if not isinstance(name, str):
        raise TypeError(f"Invalid name: {name!r}; expected a str (a parameter name)")
    digest = hashlib.blake2b(
        seed.to_bytes(8, "little") + name.encode("utf-8"), digest_size=8, person=b"syre-anchor-v1"
    ).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


def _check_seed(seed) -> int:  # kept for code that imported it; use syre.config.check_seed
    return check_seed(seed)


def philox4x32(
    c0: torch.Tensor,
    c1: torch.Tensor,
    key: Tuple[int, int],
    rounds: int = 10,
    c2: Optional[torch.Tensor] = None,
    c3: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-``rounds`` on counters ``(c0, c1, c2, c3)`` (``c2 = c3 = 0`` by default).

    ``c0`` and ``c1`` are int64 tensors holding 32-bit unsigned values. Unsigned 32-bit
    arithmetic is emulated in int64: products of two 32-bit words wrap modulo 2**64, whose low
    and high halves are exactly the Philox ``mullo``/``mulhi``. Returns four int64 tensors of
    32-bit words.
    """
    k0, k1 = key
    z = torch.zeros_like(c0)
    x0, x1 = c0, c1
    x2 = z if c2 is None else c2
    x3 = z if c3 is None else c3
    for r in range(rounds):
        if r:
            k0 = (k0 + _W0) & MASK32
            k1 = (k1 + _W1) & MASK32
        p0 = x0 * _M0
        p1 = x2 * _M1
        hi0 = (p0 >> 32) & MASK32
        hi1 = (p1 >> 32) & MASK32
        x0, x1, x2, x3 = (hi1 ^ x1) ^ k0, p1 & MASK32, (hi0 ^ x3) ^ k1, p0 & MASK32
    return x0, x1, x2, x3


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


def _probe_uniforms(kernel, key) -> bool:
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
_UNIFORMS = LazyKernel("anchor generator", _uniforms, _probe_uniforms, budget=1 << 22)


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


def anchor_slice(
    seed: int,
    name: str,
    start: int,
    stop: int,
    *,
    sigma0: float,
    d_spread: float = 0.0,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(theta0, xi)`` for elements ``[start, stop)`` of the flattened parameter ``name``.

    Equal to ``anchor(...)`` flattened and sliced, computed without the full tensor. ``theta0``
    is ``None`` when ``sigma0 == 0`` (the anchor is the origin) and ``xi`` is ``None`` when
    ``d_spread == 0`` (D = I); ``D = 1 + xi``.
    """
    seed = check_seed(seed)
    sigma0 = check_nonneg_float("sigma0", sigma0)
    d_spread = check_d_spread(d_spread)
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop < 2**63):
        raise ValueError(f"Invalid slice: start={start!r}, stop={stop!r}; need 0 <= start <= stop < 2**63")
    return _fill(seed, name, start, stop, sigma0, d_spread, torch.device(device or "cpu"), dtype)


def anchor_at(
    seed: int,
    name: str,
    indices: torch.Tensor,
    *,
    sigma0: float,
    d_spread: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device, None] = None,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(theta0, xi)`` at the global flat indices ``indices`` of parameter ``name``, shaped like ``indices``.

    ``indices`` is an int64 tensor of row-major element indices into the full (flattened)
    parameter, in any order and shape (a tensor-parallel shard's indices are not one range).
    Element ``i`` of the result is bitwise element ``indices[i]`` of ``anchor_slice`` (and of
    ``anchor``): the same counters, key and float64 operations. ``None`` where off, as in
    ``anchor_slice``. On ``device`` (default: that of ``indices``).
    """
    seed = check_seed(seed)
    sigma0 = check_nonneg_float("sigma0", sigma0)
    d_spread = check_d_spread(d_spread)
    if not isinstance(indices, torch.Tensor) or indices.dtype != torch.int64:
        got = indices.dtype if isinstance(indices, torch.Tensor) else type(indices).__name__
        raise TypeError(f"Invalid indices: {got}; expected an int64 tensor of global element indices")
    device = torch.device(device) if device is not None else indices.device
    idx = indices.to(device).reshape(-1)
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError(f"Invalid indices: the smallest is {int(idx.min())}; element indices are >= 0")
    theta0 = torch.empty(idx.numel(), dtype=dtype, device=device) if sigma0 != 0.0 else None
    xi = torch.empty(idx.numel(), dtype=dtype, device=device) if d_spread != 0.0 else None
    if theta0 is None and xi is None:
        return None, None
    key = stream_key(seed, name)
    for lo in range(0, idx.numel(), _CHUNK):
        part = idx[lo : lo + _CHUNK]
        x0, x1, x2, _ = philox4x32(part & MASK32, part >> 32, key)
        # The float64 operations of _fill_eager, in its order.
        if theta0 is not None:
            u1 = (x0.to(torch.float64) + 1.0) * _TWO_NEG32
            u2 = x1.to(torch.float64) * _TWO_NEG32
            z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)
            theta0[lo : lo + part.numel()] = z * sigma0
        if xi is not None:
            u3 = (x2.to(torch.float64) + 0.5) * _TWO_NEG32
            xi[lo : lo + part.numel()] = (2.0 * u3 - 1.0) * d_spread
    shape = indices.shape
    return (None if theta0 is None else theta0.view(shape)), (None if xi is None else xi.view(shape))


def anchor(
    seed: int,
    name: str,
    shape,
    *,
    sigma0: float,
    d_spread: float = 0.0,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> Anchor:
    """Full-shape ``Anchor(theta0, d)`` of parameter ``name`` (``d = 1 + xi``, zeros/ones when off)."""
    shape = torch.Size(shape)
    theta0, xi = anchor_slice(
        seed, name, 0, shape.numel(), sigma0=sigma0, d_spread=d_spread, device=device, dtype=dtype
    )
    dev = torch.device(device or "cpu")
    theta0 = torch.zeros(shape, dtype=dtype, device=dev) if theta0 is None else theta0.view(shape)
    d = torch.ones(shape, dtype=dtype, device=dev) if xi is None else (1.0 + xi).view(shape)
    return Anchor(theta0, d)


def anchor_like(
    seed: int, name: str, param: torch.Tensor, *, sigma0: float, d_spread: float
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(theta0, xi)`` shaped, strided and placed like ``param`` (``None`` where off).

    The dtype is float64 for float64 parameters and float32 otherwise (also for fp16/bf16
    parameters: the decay arithmetic stays in fp32).
    """
    dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
    theta0, xi = anchor_slice(
        seed, name, 0, param.numel(), sigma0=sigma0, d_spread=d_spread, device=param.device, dtype=dtype
    )
    # Keep the parameter's strides (channels_last, transposed views) so sweeps are contiguous;
    # a contiguous parameter takes the flat buffers as they are (no second copy).
    contiguous = param.is_contiguous()
    if theta0 is not None:
        theta0 = theta0.view(param.shape) if contiguous else torch.empty_like(param, dtype=dtype).copy_(theta0.view(param.shape))
    if xi is not None:
        xi = xi.view(param.shape) if contiguous else torch.empty_like(param, dtype=dtype).copy_(xi.view(param.shape))
    return theta0, xi


#: Requests up to this many elements are batched by ``anchor_many``; larger ones take ``anchor_slice``.
_MANY_MAX = 1 << 16


def anchor_many(
    seed: int,
    requests: Sequence[Tuple[str, int, float]],
    *,
    d_spread: float = 0.0,
    device: Union[str, torch.device, None] = None,
    dtype: torch.dtype = torch.float32,
) -> List[Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]:
    """Flat ``(theta0, xi)`` of each ``(name, numel, sigma0)`` request, many tensors per generator call.

    Bitwise equal to ``anchor_slice(seed, name, 0, numel, sigma0=sigma0, d_spread=d_spread, ...)``
    request by request (the same counters, keys and float64 operations, on the concatenation of the
    small requests); a model of many small tensors pays one batched generator pass instead of
    thousands of tiny ones. The small anchors are views into one buffer per output.
    """
    seed = check_seed(seed)
    d_spread = check_d_spread(d_spread)
    device = torch.device(device or "cpu")
    out: List[Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]] = [(None, None)] * len(requests)
    small = []
    for i, (name, n, sigma0) in enumerate(requests):
        sigma0 = check_nonneg_float("sigma0", sigma0)
        if sigma0 == 0.0 and d_spread == 0.0:
            continue
        if n > _MANY_MAX:
            out[i] = anchor_slice(seed, name, 0, n, sigma0=sigma0, d_spread=d_spread, device=device, dtype=dtype)
        elif n > 0:
            small.append((i, stream_key(seed, name), int(n), sigma0))
    if not small:
        return out
    total = sum(n for _, _, n, _ in small)
    any_theta = any(s0 != 0.0 for _, _, _, s0 in small)
    theta_all = torch.empty(total, dtype=dtype, device=device) if any_theta else None
    xi_all = torch.empty(total, dtype=dtype, device=device) if d_spread != 0.0 else None
    pos = lo = 0
    while pos < len(small):
        batch, size = [], 0
        while pos < len(small) and (not batch or size + small[pos][2] <= _CHUNK):
            batch.append(small[pos])
            size += small[pos][2]
            pos += 1
        _fill_batch(batch, lo, theta_all, xi_all, d_spread, device)
        lo += size
    off = 0
    for i, _, n, s0 in small:
        t = theta_all[off : off + n] if (theta_all is not None and s0 != 0.0) else None
        x = xi_all[off : off + n] if xi_all is not None else None
        out[i] = (t, x)
        off += n
    return out


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
