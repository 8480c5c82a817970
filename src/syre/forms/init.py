"""Regenerable initialisation, shrink-and-perturb and unit resets, from syre's counter-based streams.

``syre.init_(model, seed=0, scheme="lecun")`` sets every parameter of ``model`` from a stream keyed
by (seed, parameter name) and indexed by the element's global index (``syre.rng._streams``), never the
global RNG: the initial weights are a pure function of (seed, name, index), the same on every rank
and world size (a DTensor shard is filled from its global indices), and recomputable at any step
from the seed alone -- which is what lets ``syre.attach(..., target="init", mode="seeded")`` decay
toward the initial weights while storing nothing.

The rule per parameter (the fan-in rules of ``syre.sigma0``):

* weights (2 or more dimensions, and Embedding tables): ``N(0, std^2)`` with ``std`` the scheme's:
  ``"lecun"`` ``1/sqrt(fan_in)``, ``"kaiming"`` ``sqrt(2/fan_in)``, ``"xavier"``
  ``sqrt(2/(fan_in + fan_out))``, ``"<scheme>:X"`` X times that, ``"normal:S"`` the absolute std S
  (GPT-2 and nanoGPT use ``"normal:0.02"``); an Embedding's fan-in is 1;
* biases (a 1-D parameter whose layer has a weight: ``bias``, an RNN's ``bias_ih_l0``):
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` as torch initialises Linear and Conv biases; an RNN's
  (``RNN``, ``LSTM``, ``GRU`` and their cells) ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``
  for ``bias_ih`` and ``bias_hh`` alike, as torch; zeros under ``"normal:S"`` (as GPT-2 does);
* ``MultiheadAttention``: ``in_proj_bias`` and ``out_proj.bias`` 0 (as torch); ``bias_k`` and
  ``bias_v`` (``add_bias_kv=True``) are drawn as weights of fan-in ``embed_dim``;
* ``PReLU``: its ``init`` (0.25 by default), as torch;
* normalisation layers: weights 1, biases 0 (as torch); the magnitude ``g`` of a weight-normalised
  weight: the norm of its direction's rows (as ``weight_norm`` sets it);
* every other parameter of fewer than 2 dimensions (a 0-d learnable scale or temperature, a
  LayerScale vector, a free 1-D parameter): 0. torch has no rule for these (the module that
  creates them does); set one that must not start at 0 after ``init_`` (``target="init"`` then
  refuses the model: its weights are no longer ``init_``'s).

Where this differs from torch's own ``reset_parameters``: the weights (2 or more dimensions)
follow ``scheme`` (torch draws Linear and Conv weights from ``kaiming_uniform_(a=sqrt(5))``, RNN
weights from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))`` and ``in_proj_weight`` from
``xavier_uniform_``), and a parameter torch leaves to its module (the last rule) is 0.

``shrink_perturb_(model, shrink=..., perturb=..., seed=..., step=...)`` is Ash and Adams' (2020)
``p <- shrink * p + perturb * p_fresh`` with ``p_fresh`` a fresh initialisation: the same rule, the
stream's generation ``step + 1`` (generation 0 is ``init_`` itself). ``reset_units_`` puts chosen
units of a layer back to their initial weights (generation 0), and optionally zeroes their
outgoing weights in the next layer (as ReDo resets dormant units).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

from .. import _dist
from .._validate import check_nonneg_float, check_seed
from ..rng import _streams
from ..select import GAIN, NORM_TYPES, ParamInfo, collect, unwrap_model
from ..sigma0 import PRESETS, _scaled_tensor, fans, parse_sigma0, std_from_fans
from ._units import TRANSPOSED, check_units, held, n_outputs, outgoing_writes, output_mask, rows

__all__ = ["InitRecord", "init_", "init_record", "init_values", "reset_units_", "shrink_perturb_"]

_BLOCK = 1 << 18
_RNN_TYPES = (nn.RNNBase, nn.RNNCellBase)
_MHA_OUT = nn.modules.linear.NonDynamicallyQuantizableLinear  # only MultiheadAttention.out_proj is one
_RECORD = "_syre_init"


@dataclass(frozen=True)
class InitRecord:
    """What ``init_`` did: the stream's seed and the scheme (enough to recompute every initial value)."""

    seed: int
    scheme: str


def _check_scheme(scheme) -> str:
    if isinstance(scheme, str):
        name, _, raw = scheme.partition(":")
        if name == "normal":
            try:
                std = float(raw)
            except ValueError:
                std = math.nan
            if math.isfinite(std) and std >= 0.0:
                return scheme
        elif name in PRESETS:
            parse_sigma0(scheme)
            return scheme
    raise ValueError(
        f"Invalid scheme value: {scheme!r}; expected one of {sorted(PRESETS)} (optionally with a multiple, e.g. "
        "'lecun:0.5'), or 'normal:S' for an absolute std S (e.g. 'normal:0.02')"
    )


def _kind(info: ParamInfo) -> str:
    """``weight`` | ``bias`` | ``one`` | ``zero`` | ``const`` | ``gain``: how ``info``'s initial values are made."""
    if info.role == GAIN:
        return "gain"
    if isinstance(info.module, NORM_TYPES):
        return "one" if info.attr == "weight" else "zero"
    if isinstance(info.module, nn.PReLU) and info.attr == "weight":
        return "const"
    if (isinstance(info.module, nn.MultiheadAttention) and info.attr == "in_proj_bias") or (
            isinstance(info.module, _MHA_OUT) and info.attr == "bias"):
        return "zero"  # torch's MultiheadAttention._reset_parameters
    scaled = _scaled_tensor(info.param, info.module, info.attr, info.role)
    if scaled is None:
        return "zero"
    return "weight" if scaled[0] is info.param else "bias"


def _scale(info: ParamInfo, kind: str, scheme: str) -> float:
    """The std of a weight, or the half-width of a bias's uniform."""
    fan = fans(info.param, info.module, info.attr, info.role)
    name, _, raw = scheme.partition(":")
    if kind == "weight":
        return float(raw) if name == "normal" else parse_sigma0(scheme)[1] * std_from_fans(name, *fan)
    if name == "normal":
        return 0.0
    if isinstance(info.module, _RNN_TYPES):
        return 1.0 / math.sqrt(info.module.hidden_size)  # torch: every RNN bias, whatever its layer's fan-in
    return 1.0 / math.sqrt(fan[0])


def init_values(info: ParamInfo, idx: torch.Tensor, *, seed: int, scheme: str, generation: int = 0,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The initial values of ``info``'s parameter at the global flat indices ``idx`` (int64), in ``dtype``.

    Not for weight-normalised magnitudes (``g`` is a function of its direction's rows: see ``init_``).
    """
    kind = _kind(info)
    if kind == "one":
        return torch.ones(idx.shape, dtype=dtype, device=idx.device)
    if kind == "zero":
        return torch.zeros(idx.shape, dtype=dtype, device=idx.device)
    if kind == "const":
        return torch.full(idx.shape, float(getattr(info.module, "init", 0.25)), dtype=dtype, device=idx.device)
    if kind == "gain":
        raise ValueError(f"Parameter {info.name!r} is a weight-normalised magnitude; its initial value is the norm "
                         "of its direction's rows, not an elementwise draw")
    scale = _scale(info, kind, scheme)
    w = _streams.words(_streams.key(seed, info.name, "init"), idx, generation)
    unit = _streams.normal(w, torch.float64) if kind == "weight" else _streams.uniform_pm1(w, torch.float64)
    return (unit * scale).to(dtype)


def _range_values(info: ParamInfo, start: int, stop: int, *, seed: int, scheme: str, generation: int,
                  dtype: torch.dtype, device) -> torch.Tensor:
    """``init_values`` at the contiguous flat indices ``[start, stop)`` (compiled on CPU where available)."""
    kind = _kind(info)
    if kind in ("one", "zero", "const", "gain"):
        return init_values(info, torch.arange(start, stop, dtype=torch.int64, device=device), seed=seed, scheme=scheme,
                           generation=generation, dtype=dtype)
    k = _streams.key(seed, info.name, "init")
    if kind == "weight":
        unit = _streams.range_normal(k, start, stop, generation, device, torch.float64)
    else:
        unit = _streams.uniform_pm1(_streams.range_words(k, start, stop, generation, device), torch.float64)
    return (unit * _scale(info, kind, scheme)).to(dtype)


def _local_values(info: ParamInfo, seed: int, scheme: str, generation: int) -> torch.Tensor:
    """Initial values shaped like the local tensor of ``info.param`` (a DTensor's shard from its indices)."""
    p = info.param
    local = _dist.local_tensor(p)
    geom = _dist.shard_geometry(info.name, p)
    n = local.numel()
    out = torch.empty(n, dtype=torch.float64 if p.dtype == torch.float64 else torch.float32, device=local.device)
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        if geom is None or geom.flat is not None:
            first = 0 if geom is None else geom.flat[0]
            out[lo:hi] = _range_values(info, first + lo, first + hi, seed=seed, scheme=scheme, generation=generation,
                                       dtype=out.dtype, device=local.device)
        else:
            idx = geom.indices(lo, hi, local.device)
            out[lo:hi] = init_values(info, idx, seed=seed, scheme=scheme, generation=generation, dtype=out.dtype)
    return out.view(local.shape)


def _gain_values(info: ParamInfo, infos, seed: int, scheme: str, generation: int) -> torch.Tensor:
    """A weight-normalised magnitude: the norm of each row of its direction's initial values."""
    direction = info.name[: -len("_g")] + "_v"
    v = next((i for i in infos if i.name == direction), None)
    if v is None or _dist.is_dtensor(v.param):
        raise ValueError(f"Parameter {info.name!r}: its direction {direction!r} is not a plain parameter of the model; "
                         "syre.init_ cannot compute the weight-normalised magnitude")
    values = _local_values(v, seed, scheme, generation).double()
    norm = values.reshape(values.shape[0], -1).norm(dim=1)
    return norm.view(info.param.shape).to(torch.float64 if info.param.dtype == torch.float64 else torch.float32)


def _values_for(info: ParamInfo, infos, seed: int, scheme: str, generation: int) -> torch.Tensor:
    if _kind(info) == "gain":
        return _gain_values(info, infos, seed, scheme, generation)
    return _local_values(info, seed, scheme, generation)


def init_record(model: nn.Module) -> Optional[InitRecord]:
    """The ``InitRecord`` of the last ``syre.init_`` on ``model``, or None."""
    return unwrap_model(model).__dict__.get(_RECORD)


@torch.no_grad()
def init_(model: nn.Module, *, seed: int = 0, scheme: str = "lecun") -> InitRecord:
    """Initialise every parameter of ``model`` in place from syre's stream (see the module docstring).

    Returns the ``InitRecord`` (also kept on the model for ``syre.attach(..., target="init")``).
    """
    seed, scheme = check_seed(seed), _check_scheme(scheme)
    model = unwrap_model(model)
    infos = list(collect(model).values())
    for info in infos:
        if not info.param.is_floating_point():
            raise ValueError(f"Parameter {info.name!r} has dtype {info.param.dtype}; syre.init_ sets floating-point parameters")
    # Directions before magnitudes: g is the norm of its direction's rows.
    for info in sorted(infos, key=lambda i: _kind(i) == "gain"):
        _dist.local_tensor(info.param).copy_(_values_for(info, infos, seed, scheme, 0))
    record = InitRecord(seed, scheme)
    model.__dict__[_RECORD] = record
    return record


def _resolve(model, seed, scheme):
    record = init_record(model)
    if seed is None:
        if record is None:
            raise ValueError("The model was not initialised by syre.init_: pass seed= (and scheme=) of the stream to use")
        seed = record.seed
    if scheme is None:
        scheme = record.scheme if record is not None else "lecun"
    return check_seed(seed), _check_scheme(scheme)


@torch.no_grad()
def shrink_perturb_(model: nn.Module, *, shrink: float, perturb: float, step: int, seed: Optional[int] = None,
                    scheme: Optional[str] = None, include: Optional[Iterable[str]] = None) -> None:
    """``p <- shrink * p + perturb * p_fresh`` for every parameter (or those named in ``include``).

    ``p_fresh`` is a fresh initialisation under ``scheme``: generation ``step + 1`` of the init stream
    of ``seed`` (by default the model's ``init_`` seed and scheme), so the perturbation of a step is
    the same on every rank and after a restart.
    """
    shrink, perturb = check_nonneg_float("shrink", shrink), check_nonneg_float("perturb", perturb)
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**32 - 1:
        raise ValueError(f"Invalid step value: {step!r}; expected an int in [0, 2**32 - 1)")
    seed, scheme = _resolve(model, seed, scheme)
    infos = list(collect(unwrap_model(model)).values())
    if isinstance(include, str) or (include is not None and not isinstance(include, Iterable)):
        raise TypeError(f"Invalid include value: {include!r}; expected None or a list of parameter names "
                        f"(e.g. [{include!r}])" if isinstance(include, str) else
                        f"Invalid include value: {include!r}; expected None or a list of parameter names")
    chosen = None if include is None else set(include)
    if chosen is not None:
        unknown = sorted(chosen - {n for i in infos for n in i.names})
        if unknown:
            raise ValueError(f"Invalid include value: {unknown} are not parameters of the model")
    for info in infos:
        if chosen is not None and chosen.isdisjoint(info.names):  # a tied parameter under any of its names
            continue
        local = _dist.local_tensor(info.param)
        fresh = _values_for(info, infos, seed, scheme, step + 1)
        local.copy_((local.to(fresh.dtype) * shrink + fresh * perturb).to(local.dtype))


@torch.no_grad()
def reset_units_(model: nn.Module, layer: Union[str, nn.Module], units: Union[Sequence[int], torch.Tensor], *,
                 seed: Optional[int] = None, scheme: Optional[str] = None, outgoing: Union[str, nn.Module, None] = None) -> None:
    """Put ``units`` (output units of ``layer``) back to their initial weights and biases.

    ``units``: integer indices, or a bool mask with one entry per unit. A unit is a row of the
    weight (``Linear``, ``Conv``: dim 0), an output channel of a ``ConvTranspose`` (dim 1 of its
    ``(in, out / groups, ...)`` weight, per group). The initial values are ``init_``'s (generation
    0, by default the model's seed and scheme), written into the parameters the layer holds: its
    own, those under a parametrization (``weight_norm``'s magnitude and direction: the direction's
    rows and their norms; another parametrization's ``original``), or a weight tied to another
    layer (a head tied to an embedding: the shared table's rows, recomputed under its first name).
    ``outgoing``: the next layer, whose weights reading these units (its input units) are zeroed,
    so the reset units start without effect on the output (as ReDo resets dormant units); under
    ``weight_norm`` its direction's columns are zeroed and its magnitudes rescaled so that the
    other weights stay as they are. Everything is checked before anything is written.
    """
    seed, scheme = _resolve(model, seed, scheme)
    model = unwrap_model(model)
    by_id = collect(model)
    infos = list(by_id.values())
    layer_name, mod = _module(model, layer, "layer")
    w = getattr(mod, "weight", None)
    if not isinstance(w, torch.Tensor) or w.dim() < 2 or _dist.is_dtensor(w):
        raise ValueError(f"Invalid layer value: {layer_name!r} has no plain weight of 2 or more dimensions whose rows are units")
    n = n_outputs(mod, w.shape)
    idx = check_units(units, n, layer_name)
    writes = []
    for p in held(mod):
        info = by_id[id(p)]
        if _dist.is_dtensor(p):
            raise ValueError(f"Invalid layer value: {layer_name!r} holds {info.name!r} as a DTensor; reset_units_ "
                             "writes plain tensors")
        if info.role == GAIN:
            if isinstance(mod, TRANSPOSED) or p.dim() == 0 or p.shape[0] != n or p[0].numel() != 1:
                raise ValueError(f"Invalid layer value: {layer_name!r} is weight-normalised with a magnitude "
                                 f"{info.name!r} of shape {tuple(p.shape)}, not one per output unit ({n}); "
                                 "reset_units_ cannot reset its units alone")
            mask = rows(p.shape, idx)
        elif p.shape == w.shape:
            mask = output_mask(mod, p.shape, idx)
        elif p.dim() == 1 and p.shape[0] == n:
            mask = rows(p.shape, idx)
        else:
            raise ValueError(f"Invalid layer value: {layer_name!r} holds {info.name!r} of shape {tuple(p.shape)}, "
                             f"which has no row per unit of its weight {tuple(w.shape)}")
        writes.append((p, mask, _values_for(info, infos, seed, scheme, 0)))
    if outgoing is not None:
        out_name, nxt = _module(model, outgoing, "outgoing")
        writes += outgoing_writes(out_name, nxt, by_id, n, idx, layer_name)
    for p, mask, values in writes:
        p.copy_(torch.where(mask.to(p.device), values.to(p.device, p.dtype), p))


def _module(model: nn.Module, which, arg: str):
    if isinstance(which, str):
        try:
            return which, model.get_submodule(which)
        except AttributeError:
            raise ValueError(f"Invalid {arg} value: {which!r} is not a submodule of the model") from None
    for name, m in model.named_modules():
        if m is which:
            return name, m
    raise ValueError(f"Invalid {arg} value: the module {type(which).__name__} is not part of the model")
