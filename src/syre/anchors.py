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
  is computed from that slice's indices alone, without building the full tensor.

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
from typing import Callable, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from ._compile import LazyKernel

__all__ = [
    "Anchor",
    "DEFAULT_D_SPREAD",
    "DEFAULT_SIGMA0",
    "DEFAULT_SIGMA0_SCALE",
    "PRESETS",
    "SIGMA0_PRESETS",
    "anchor",
    "anchor_like",
    "anchor_slice",
    "init_std",
    "parse_sigma0",
    "philox4x32",
    "resolve_sigma0",
    "stream_key",
]

MASK32 = 0xFFFFFFFF
_M0 = 0xD2511F53
_M1 = 0xCD9E8D57
_W0 = 0x9E3779B9
_W1 = 0xBB67AE85
_TWO_NEG32 = 2.0**-32
_CHUNK = 1 << 20  # elements per generator chunk: bounds the int64 temporaries to ~40 MB

#: Default spread of D: D_ii ~ Uniform(1 - 0.1, 1 + 0.1). See ``docs``/README "Choosing eps".
DEFAULT_D_SPREAD = 0.1
#: Default scale of the sigma0 presets: ``"lecun"`` means sigma0 = DEFAULT_SIGMA0_SCALE / sqrt(fan_in),
#: the LeCun init std itself. Chosen by the sigma-sweep benchmark (docs/defaults.md).
DEFAULT_SIGMA0_SCALE = 1.0
#: Default sigma0 spec (a preset relative to the LeCun init std; see ``resolve_sigma0``).
DEFAULT_SIGMA0 = "lecun"

Sigma0Spec = Union[str, float, int, Callable[[str, torch.Tensor], float]]


class Anchor(NamedTuple):
    """The anchor of one parameter: ``theta0`` and the diagonal ``d`` of D (both full shape)."""

    theta0: torch.Tensor
    d: torch.Tensor


def stream_key(seed: int, name: str) -> Tuple[int, int]:
    """The Philox key (two 32-bit words) of parameter ``name`` under ``seed``.

    ``blake2b(seed as 8 little-endian bytes || utf-8 name)``; stable across processes, Python
    versions and platforms (unlike ``hash``).
    """
    _check_seed(seed)
    if not isinstance(name, str):
        raise TypeError(f"Invalid name: {name!r}; expected a str (a parameter name)")
    digest = hashlib.blake2b(
        seed.to_bytes(8, "little") + name.encode("utf-8"), digest_size=8, person=b"syre-anchor-v1"
    ).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"Invalid seed: {seed!r}; expected an int in [0, 2**64)")


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
    _check_seed(seed)
    sigma0 = check_nonneg_float("sigma0", sigma0)
    d_spread = check_d_spread(d_spread)
    if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop < 2**63):
        raise ValueError(f"Invalid slice: start={start!r}, stop={stop!r}; need 0 <= start <= stop < 2**63")
    return _fill(seed, name, start, stop, sigma0, d_spread, torch.device(device or "cpu"), dtype)


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


# ----------------------------------------------------------------------------- validation
def check_nonneg_float(arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Invalid {arg} value: {value!r}; expected a finite float >= 0")
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"Invalid {arg} value: {value!r}; expected a finite float >= 0")
    return value


def check_d_spread(value) -> float:
    value = check_nonneg_float("d_spread", value)
    if value >= 1.0:
        raise ValueError(f"Invalid d_spread value: {value!r}; expected 0 <= d_spread < 1 (D must stay positive)")
    return value


# ----------------------------------------------------------------------------- sigma0
_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

#: The reference std of parameters with no fan-in (normalisation weights and biases, loose 1-D
#: parameters) under the relative presets: their sigma0 is ``scale * UNIT_SIGMA0``. Not "fan_in = 1"
#: (``scale * 1``): anchoring LayerNorm weights at N(0, scale^2) turned units dead and cost rank and
#: accuracy in the sigma-sweep benchmark, while 0.01 was indistinguishable from the origin there.
UNIT_SIGMA0 = 0.01


def _fans(param: torch.Tensor, module: Optional[nn.Module], attr: str) -> Optional[Tuple[int, int]]:
    """(fan_in, fan_out) of ``module.<attr>``, or None for a parameter with no fan-in."""
    if module is not None and isinstance(module, _NORM_TYPES):
        return None
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and attr == "weight":
        # A row is selected by a one-hot input: one active input per output.
        return 1, int(param.shape[1]) if param.dim() > 1 else 1
    if param.dim() >= 2:
        receptive = int(math.prod(param.shape[2:])) if param.dim() > 2 else 1
        return int(param.shape[1]) * receptive, int(param.shape[0]) * receptive
    if module is not None:
        # A bias takes its module's fan-in: `bias` pairs with `weight`, `in_proj_bias` with
        # `in_proj_weight` (nn.MultiheadAttention), and so on.
        partner = attr[: -len("bias")] + "weight" if attr.endswith("bias") else None
        w = getattr(module, partner, None) if partner else None
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            return _fans(w, module, partner)
    return None


def init_std(preset: str, param: torch.Tensor, module: Optional[nn.Module] = None, attr: str = "") -> Optional[float]:
    """The usual initialisation std of ``module.<attr>`` under ``preset``, or None (no fan-in).

    ``lecun`` = 1/sqrt(fan_in), ``kaiming`` = sqrt(2/fan_in), ``xavier`` = sqrt(2/(fan_in+fan_out)).
    fan_in follows torch's convention (``shape[1] * prod(shape[2:])``) for Linear, Conv and any
    parameter of 2 or more dimensions, is 1 for Embedding rows, and a bias takes the fan-in of
    its module's weight. Normalisation layers and loose 1-D parameters have none (``None``).
    """
    if preset not in PRESETS:
        raise ValueError(f"Invalid sigma0 preset: {preset!r}; expected one of {sorted(PRESETS)}")
    fans = _fans(param, module, attr)
    if fans is None:
        return None
    fan_in, fan_out = fans
    if preset == "lecun":
        return 1.0 / math.sqrt(fan_in)
    if preset == "kaiming":
        return math.sqrt(2.0 / fan_in)
    return math.sqrt(2.0 / (fan_in + fan_out))


#: The relative presets: sigma0 = scale * the init std of that name (see ``init_std``).
PRESETS = ("lecun", "kaiming", "xavier")
#: Preset name -> the scale a bare preset name uses (``"lecun"`` means ``"lecun:<scale>"``).
SIGMA0_PRESETS = {name: DEFAULT_SIGMA0_SCALE for name in PRESETS}

_SPEC_HELP = (
    "expected one of {presets} (sigma0 = {scale:g} x that init std), a preset with a scale such as 'lecun:0.3' "
    "(0.3 x the LeCun init std), an absolute float >= 0, or a callable (name, param) -> float"
)


def _spec_help() -> str:
    return _SPEC_HELP.format(presets=sorted(PRESETS), scale=DEFAULT_SIGMA0_SCALE)


def parse_sigma0(spec) -> Tuple[str, float]:
    """``(preset, scale)`` of a relative sigma0 spec: ``"lecun"`` or ``"lecun:0.3"``.

    A bare preset name takes ``SIGMA0_PRESETS[name]`` (the default scale). A ``ValueError``
    names the bad value and the forms allowed.
    """
    if not isinstance(spec, str):
        raise TypeError(f"Invalid sigma0 value: {spec!r}; a relative spec is a str, " + _spec_help())
    name, sep, raw = spec.partition(":")
    name = name.strip()
    if name not in PRESETS:
        raise ValueError(f"Invalid sigma0 value: {spec!r}; " + _spec_help())
    if not sep:
        return name, SIGMA0_PRESETS[name]
    try:
        scale = float(raw)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale < 0.0:
        raise ValueError(
            f"Invalid sigma0 value: {spec!r}; the scale after '{name}:' must be a finite number >= 0 "
            f"(e.g. '{name}:0.3' is 0.3 x the {name} init std)"
        )
    return name, scale


def resolve_sigma0(spec: Sigma0Spec, name: str, param: torch.Tensor, module: Optional[nn.Module] = None, attr: str = "") -> float:
    """The sigma0 of one parameter under ``spec``: relative to its init std, absolute, or a callable's.

    * ``"lecun" | "kaiming" | "xavier"``: ``DEFAULT_SIGMA0_SCALE * init_std(preset)``;
      ``"lecun:0.3"``: ``0.3 * init_std("lecun")`` (any preset, any scale >= 0). A bias takes its
      module's fan-in; parameters without a fan-in (normalisation weights and biases, loose 1-D
      parameters) get ``scale * UNIT_SIGMA0``;
    * a float: that absolute value for every parameter;
    * a callable ``(name, param) -> float``: its value, validated.
    """
    if isinstance(spec, str):
        preset, scale = parse_sigma0(spec)
        std = init_std(preset, param, module, attr)
        return scale * (UNIT_SIGMA0 if std is None else std)
    if callable(spec):
        value = spec(name, param)
        try:
            return check_nonneg_float("sigma0", value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Invalid sigma0 value {value!r} returned by the sigma0 callable for parameter {name!r}; expected a finite float >= 0") from exc
    return _check_sigma0_number(spec)


def _check_sigma0_number(spec) -> float:
    if isinstance(spec, bool) or not isinstance(spec, (int, float)):
        raise TypeError(f"Invalid sigma0 value: {spec!r}; " + _spec_help())
    return check_nonneg_float("sigma0", spec)


def check_sigma0_spec(spec) -> None:
    """Validate a sigma0 spec without a parameter (so errors come before anything is applied)."""
    if isinstance(spec, str):
        parse_sigma0(spec)
    elif not callable(spec):
        _check_sigma0_number(spec)
