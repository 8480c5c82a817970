"""Anchors: theta0 and D as pure functions of (seed, parameter name, element index).

Every number syre draws comes from a counter-based generator, Philox4x32-10 (``syre.rng._philox``:
Salmon, Moraes, Dror and Shaw, SC 2011; the generator behind cuRAND's, JAX's and Triton's
counter-based streams), written with integer tensor ops so that it runs unchanged on any device:

* the **key** of a parameter is ``blake2b(seed || name)`` cut to two 32-bit words, so the
  anchors of one parameter do not depend on any other parameter of the model, on the global
  RNG, on the rank or on the number of processes;
* the **counter** comes from the element's row-major index in the full (logical) parameter, so
  the anchor of a slice of the flattened parameter (a shard), or at any set of global indices
  (``anchor_at``: a tensor-parallel shard's), is computed from those indices alone, without
  building the full tensor.

How the random words become ``theta0 ~ N(0, sigma0^2)`` and ``xi = D - 1 ~ U(-d_spread,
d_spread)`` is the anchor **format**, recorded in every saved state:

* **format 2** (``FORMAT``, every new attachment; ``syre.rng._format2``): one Philox block serves four
  elements; the normal is made from the bits with integer arithmetic only (a fixed-point
  inverse-CDF table with integer interpolation), then one exact int-to-float conversion, an exact
  power-of-two scaling and one rounded product with sigma0. The values are bitwise the same on
  CPU (eager and compiled), CUDA, Triton and JAX in 32-bit mode by construction.
* **format 1** (``syre.rng._format1``): one block per element, Box-Muller in float64; kept so that
  states saved with it resume with their own anchors.

syre keeps ``xi``, not ``D``: in fp32 ``1 + xi`` rounds many small ``xi`` to exactly 1, while
``diff + xi * diff`` keeps every entry distinct. On CPU, large requests go through compiled
kernels (``torch.compile``, a C++ loop; built once a process has asked for about 4M anchor
elements, or at once with ``SYRE_COMPILE=1``), checked bitwise against the eager generator.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from .._validate import check_d_spread, check_nonneg_float, check_seed, check_shape
from ..config import DEFAULT_D_SPREAD

# The sigma0 presets and fan-in rules live in ``syre.sigma0``; these names stay importable from here.
from ..sigma0 import (  # noqa: F401
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
from . import _format1, _format2

# The format-1 fast path, under the names it had here.
from ._format1 import _CHUNK, _FAST_BLOCK, _FAST_MIN, _UNIFORMS, _fill_eager, _uniforms, _verify_uniforms  # noqa: F401

# Philox and the key live in ``syre.rng._philox``; these names stay importable from here.
from ._philox import MASK32, PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, philox4x32, stream_key  # noqa: F401

__all__ = [
    "Anchor",
    "DEFAULT_D_SPREAD",
    "DEFAULT_SIGMA0",
    "DEFAULT_SIGMA0_SCALE",
    "FORMAT",
    "FORMATS",
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
    "check_format",
    "init_std",
    "parse_sigma0",
    "philox4x32",
    "resolve_sigma0",
    "stream_key",
]

#: The anchor format of new attachments; ``FORMATS`` are those this syre generates.
FORMAT = 2
FORMATS = (1, 2)


class Anchor(NamedTuple):
    """The anchor of one parameter: ``theta0`` and the diagonal ``d`` of D (both full shape)."""

    theta0: torch.Tensor
    d: torch.Tensor


def check_format(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version not in FORMATS:
        raise ValueError(f"Invalid anchor format version: {version!r}; expected one of {FORMATS}")
    return version


def _check_seed(seed) -> int:  # kept for code that imported it; use syre.config.check_seed
    return check_seed(seed)


def _gpu(device):
    """``syre.rng._triton`` where ``device`` is CUDA and Triton is installed (the same bits as the CPU path), else None."""
    if torch.device(device).type != "cuda":
        return None
    from . import _triton

    return _triton if _triton.available() else None


def _fill(seed: int, name: str, start: int, stop: int, sigma0: float, d_spread: float, device, dtype,
          version: int = FORMAT) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(theta0, xi)`` of ``[start, stop)`` as flat tensors (``None`` where off), in ``version``."""
    if version == 1:
        return _format1._fill(seed, name, start, stop, sigma0, d_spread, device, dtype)
    gpu = _gpu(device)
    if gpu is not None:
        return gpu.anchors(stream_key(seed, name), start, stop, sigma0, d_spread, dtype, device)
    return _format2.fill(stream_key(seed, name), start, stop, sigma0, d_spread, torch.device(device), dtype)


def _blocks(seed: int, name: str, start: int, stop: int, sigma0: float, d_spread: float, dtype, device,
            version: int = FORMAT):
    """Yield ``(lo, hi, theta0, xi)`` for consecutive blocks of ``[start, stop)`` (scratch tensors).

    Equal, block by block, to ``anchor_slice``; the next block may overwrite the tensors.
    """
    if version == 1:
        return _format1._blocks(seed, name, start, stop, sigma0, d_spread, dtype, device)
    gpu = _gpu(device)
    if gpu is not None:
        return gpu.blocks(stream_key(seed, name), start, stop, sigma0, d_spread, dtype, device)
    return _format2.blocks(stream_key(seed, name), start, stop, sigma0, d_spread, dtype, torch.device(device))


def _at(seed: int, name: str, indices: torch.Tensor, sigma0: float, d_spread: float, dtype,
        version: int = FORMAT) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(theta0, xi)`` at the global flat element indices ``indices`` (int64, any shape), in ``version``.

    The core of generating a shard of any layout: equal, index by index, to ``anchor_slice``.
    """
    if version == 1:
        return _format1.at(seed, name, indices, sigma0, d_spread, dtype)
    return _format2.at(stream_key(seed, name), indices, sigma0, d_spread, dtype)


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
    version: int = FORMAT,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(theta0, xi)`` for elements ``[start, stop)`` of the flattened parameter ``name``.

    Equal to ``anchor(...)`` flattened and sliced, computed without the full tensor. ``theta0``
    is ``None`` when ``sigma0 == 0`` (the anchor is the origin) and ``xi`` is ``None`` when
    ``d_spread == 0`` (D = I); ``D = 1 + xi``. ``version``: the anchor format (1 or 2).
    """
    seed = check_seed(seed)
    version = check_format(version)
    sigma0 = check_nonneg_float("sigma0", sigma0)
    d_spread = check_d_spread(d_spread)
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop < 2**63):
        raise ValueError(f"Invalid slice: start={start!r}, stop={stop!r}; need 0 <= start <= stop < 2**63")
    return _fill(seed, name, start, stop, sigma0, d_spread, torch.device(device or "cpu"), dtype, version)


def anchor_at(
    seed: int,
    name: str,
    indices: torch.Tensor,
    *,
    sigma0: float,
    d_spread: float = 0.0,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device, None] = None,
    version: int = FORMAT,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(theta0, xi)`` at the global flat indices ``indices`` of parameter ``name``, shaped like ``indices``.

    ``indices`` is an int64 tensor of row-major element indices into the full (flattened)
    parameter, in any order and shape (a tensor-parallel shard's indices are not one range).
    Element ``i`` of the result is bitwise element ``indices[i]`` of ``anchor_slice`` (and of
    ``anchor``) in the same format ``version``. ``None`` where off, as in ``anchor_slice``. On
    ``device`` (default: that of ``indices``).
    """
    seed = check_seed(seed)
    sigma0 = check_nonneg_float("sigma0", sigma0)
    d_spread = check_d_spread(d_spread)
    version = check_format(version)
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
    for lo in range(0, idx.numel(), _CHUNK):
        part = idx[lo : lo + _CHUNK]
        t, x = _at(seed, name, part, sigma0, d_spread, dtype, version)
        if theta0 is not None:
            theta0[lo : lo + part.numel()] = t
        if xi is not None:
            xi[lo : lo + part.numel()] = x
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
    version: int = FORMAT,
) -> Anchor:
    """Full-shape ``Anchor(theta0, d)`` of parameter ``name`` (``d = 1 + xi``, zeros/ones when off)."""
    shape = check_shape(shape)
    theta0, xi = anchor_slice(
        seed, name, 0, shape.numel(), sigma0=sigma0, d_spread=d_spread, device=device, dtype=dtype, version=version
    )
    dev = torch.device(device or "cpu")
    theta0 = torch.zeros(shape, dtype=dtype, device=dev) if theta0 is None else theta0.view(shape)
    d = torch.ones(shape, dtype=dtype, device=dev) if xi is None else (1.0 + xi).view(shape)
    return Anchor(theta0, d)


def anchor_like(
    seed: int, name: str, param: torch.Tensor, *, sigma0: float, d_spread: float, version: int = FORMAT
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """``(theta0, xi)`` shaped, strided and placed like ``param`` (``None`` where off).

    The dtype is float64 for float64 parameters and float32 otherwise (also for fp16/bf16
    parameters: the decay arithmetic stays in fp32).
    """
    dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
    theta0, xi = anchor_slice(
        seed, name, 0, param.numel(), sigma0=sigma0, d_spread=d_spread, device=param.device, dtype=dtype,
        version=version,
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
    version: int = FORMAT,
) -> List[Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]]:
    """Flat ``(theta0, xi)`` of each ``(name, numel, sigma0)`` request, many tensors per generator call.

    Bitwise equal to ``anchor_slice(seed, name, 0, numel, sigma0=sigma0, d_spread=d_spread, ...)``
    request by request (the same counters, keys and operations, on the concatenation of the small
    requests); a model of many small tensors pays one batched generator pass instead of
    thousands of tiny ones. The small anchors are views into one buffer per output.
    """
    seed = check_seed(seed)
    d_spread = check_d_spread(d_spread)
    version = check_format(version)
    device = torch.device(device or "cpu")
    out: List[Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]] = [(None, None)] * len(requests)
    small = []
    for i, (name, n, sigma0) in enumerate(requests):
        sigma0 = check_nonneg_float("sigma0", sigma0)
        if sigma0 == 0.0 and d_spread == 0.0:
            continue
        if n > _MANY_MAX:
            out[i] = anchor_slice(seed, name, 0, n, sigma0=sigma0, d_spread=d_spread, device=device, dtype=dtype,
                                  version=version)
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
        (_format1._fill_batch if version == 1 else _format2.fill_batch)(batch, lo, theta_all, xi_all, d_spread, device)
        lo += size
    off = 0
    for i, _, n, s0 in small:
        t = theta_all[off : off + n] if (theta_all is not None and s0 != 0.0) else None
        x = xi_all[off : off + n] if xi_all is not None else None
        out[i] = (t, x)
        off += n
    return out
