"""sigma0: the anchors' scale per parameter. Presets, fan-in rules and their description.

A sigma0 spec is one of

* ``"match"`` (the default, ``DEFAULT_SIGMA0``) or ``"match:X"``: sigma0 is X (default 1) times the
  tensor's own scale when the parameter is first covered, so the anchor has the scale the model was
  actually initialised at, whatever init it used (nanoGPT's embeddings at std 0.02, say, where
  ``"lecun"`` with an Embedding's fan-in of 1 gives std 1: 50x the weights). See "The tensor's own
  scale" below;
* a relative preset, ``"lecun"`` (the default before 0.1.0), ``"kaiming"`` or ``"xavier"``: sigma0 is
  ``DEFAULT_SIGMA0_SCALE`` times that init std of the parameter; ``"lecun:0.3"`` sets the multiple
  (0.3 init stds);
* an absolute float, the same sigma0 for every parameter;
* a callable ``(name, param) -> float``.

The init stds are ``lecun = 1/sqrt(fan_in)``, ``kaiming = sqrt(2/fan_in)`` and
``xavier = sqrt(2/(fan_in + fan_out))``. fan_in follows torch's convention
(``shape[1] * prod(shape[2:])``) for Linear, Conv and any parameter of 2 or more dimensions, is 1
for Embedding rows, and a bias takes the fan-in of its layer's weight (``bias`` pairs with
``weight``, ``in_proj_bias`` with ``in_proj_weight``, an RNN's ``bias_ih_l0`` with
``weight_ih_l0``). Parameters with no fan-in -- normalisation weights and biases, loose 1-D
parameters, the magnitude ``g`` of a weight-normalised weight (a gain, like a normalisation
weight), and the parameters of a layer with no inputs (``nn.Linear(0, n)``: fan-in 0, torch
initialises its bias at 0) -- get ``scale * UNIT_SIGMA0``. The direction ``v`` of a
weight-normalised weight has its layer's fan-in.

**Layouts.** torch stores a weight ``[out, in, *window]``. Modules that store a 2-D weight
``[in, out]`` are listed in ``IN_OUT_LAYOUTS`` and matched by class name and module path, so
nothing is imported: transformers' ``Conv1D`` (every GPT-2-family model), whose fans are read as
``fans_from_shape(shape, layout="jax")`` reads a flax kernel (``Conv1D(nf=256, nx=64)`` has
fan-in 64). ``nn.Bilinear``'s weight ``(out, in1, in2)`` takes the general rule, fan-in
``in1 * in2``: the number of products summed into each output, the variance-preserving count
(``"lecun"`` is then ``1/sqrt(in1 * in2)``; torch itself draws it from ``U(+-1/sqrt(in1))``, an std
of ``1/sqrt(3 in1)``, which ``"match"`` follows). Any other ``[in, out]`` layout needs a float, a
callable or ``"match"`` (which reads no shapes).

**The tensor's own scale (``"match"``).** The scale ``match_scale`` reads is the RMS of the tensor's
values when the parameter is first covered -- at attach, or, for a parameter covered later (a lazy
module materialised by its first forward, a parameter added to the optimizer, unfrozen or
included later), at the first step that covers it -- and it is resolved once: the weights moving
in training never move the anchor, and a ``Syre`` state stores the resolved floats, so a run
resumed from a checkpoint keeps its saved sigma0s whatever its weights and the defaults are then.
Case by case:

* a weight (2 or more dimensions, an Embedding table): its RMS. For a DTensor (FSDP2, tensor
  parallel) the RMS of the full tensor (one reduction over its mesh, the same value on every
  rank), so sharding never changes an anchor;
* a bias: its layer's weight's RMS (a bias is often zero-initialised, and a bias's anchor at its
  weight's scale is what the presets give it too);
* a zero-initialised weight (a zero-init output projection, say) has no scale of its own: it
  falls back to its fans' LeCun std (``X / sqrt(fan_in)``, what ``"lecun:X"`` gives it), and so does
  the bias of such a layer;
* no fan-in (normalisation parameters, loose 1-D parameters, gains): ``X * UNIT_SIGMA0``, as under
  the presets (a normalisation weight's RMS is 1: an anchor at that scale turns units dead);
* a tied tensor is one parameter with one sigma0, resolved under its first name;
* attach on a pretrained model: the pretrained weights' RMS, so the anchor is at the scale of the
  weights it decays (the init scale, under ``"lecun"``, may be far from it after training).

Why the RMS at attach rather than an init rule: it needs nothing from the user (no record of
which init ran) and follows any init, including ones no rule knows (std 0.02, the residual
projections' ``0.02 / sqrt(2 n_layer)``, ``[in, out]`` layouts); it is what ``"lecun"`` gives a model
initialised at the LeCun std (whose RMS is that std), so the anchor stays "a second random
initialisation" for every model. Under ``target="init"`` or ``"pretrained"`` (``syre.core._targets``) the
anchor is the target itself and no spec applies: the sigma0 reported (``summary()``, the state) is
the target's RMS, the size of what the decay pulls toward.

The rules are shared by every entry point (``attach``, ``Penalty``, ``reparametrize``) and by the
JAX port (``syre.optax`` reads fans from shapes with ``fans_from_shape`` and turns them into
sigma0 with ``sigma0_from_fans``). A ``Syre`` state stores the resolved floats, so a checkpoint
restores its own anchors whatever the defaults are later.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch
from torch import nn

from ._validate import check_nonneg_float
from .select import GAIN, NORM_TYPES, ParamInfo

__all__ = [
    "DEFAULT_SHAPE_SIGMA0",
    "DEFAULT_SIGMA0",
    "DEFAULT_SIGMA0_SCALE",
    "IN_OUT_LAYOUTS",
    "MATCH",
    "PRESETS",
    "SIGMA0_PRESETS",
    "UNIT_SIGMA0",
    "check_sigma0_spec",
    "describe_sigma0",
    "fans",
    "fans_from_shape",
    "init_std",
    "match_scale",
    "parse_sigma0",
    "resolve_sigma0",
    "rms",
    "resolve_sigma0_of",
    "sigma0_from_fans",
    "std_from_fans",
    "weight_layout",
]

#: Default scale of the sigma0 presets: ``"lecun"`` means sigma0 = DEFAULT_SIGMA0_SCALE / sqrt(fan_in),
#: the LeCun init std itself. Chosen by the sigma-sweep benchmark (docs/defaults.md).
DEFAULT_SIGMA0_SCALE = 1.0
#: Default sigma0 spec of every entry point (``attach``, the callbacks, ``Penalty``, ``reparametrize``,
#: ``syre.optax.sigma0s``): each tensor's own RMS when first covered (see the module doc). A checkpoint
#: keeps the sigma0s it resolved, so a run resumed from one keeps its anchors whatever the default.
DEFAULT_SIGMA0 = "match"
#: The default of an entry point that sees only shapes, never the initial values:
#: ``syre.optax.syre_decay`` reads sigma0 at every update, when the params have moved (resolve
#: ``"match"`` once with ``syre.optax.sigma0s(params)`` and pass the table).
DEFAULT_SHAPE_SIGMA0 = "lecun"
#: The reference std of parameters with no fan-in under the relative presets: their sigma0 is
#: ``scale * UNIT_SIGMA0``. Not "fan_in = 1" (``scale * 1``): anchoring LayerNorm weights at
#: N(0, scale^2) turned units dead and cost rank and accuracy in the sigma-sweep benchmark, while
#: 0.01 was indistinguishable from the origin there.
UNIT_SIGMA0 = 0.01
#: The relative presets: sigma0 = scale * the init std of that name.
PRESETS = ("lecun", "kaiming", "xavier")
#: The preset relative to the weights' own RMS (see the module docstring).
MATCH = "match"
#: Preset name -> the scale a bare preset name uses (``"lecun"`` means ``"lecun:<scale>"``).
SIGMA0_PRESETS = {name: DEFAULT_SIGMA0_SCALE for name in PRESETS}
#: Kernel layouts ``fans_from_shape`` reads: torch's ``(out, in, *window)`` or JAX's ``(*window, in, out)``.
LAYOUTS = ("torch", "jax")

Sigma0Spec = Union[str, float, int, Callable[[str, torch.Tensor], float]]

_SPEC_HELP = (
    "expected one of {presets} (sigma0 = {scale:g} x that init std), 'match' (the weights' own RMS), a preset "
    "with a scale such as 'lecun:0.3' (0.3 x the LeCun init std), an absolute float >= 0, or a callable "
    "(name, param) -> float"
)


def _spec_help() -> str:
    return _SPEC_HELP.format(presets=sorted(PRESETS), scale=DEFAULT_SIGMA0_SCALE)


def parse_sigma0(spec) -> Tuple[str, float]:
    """``(preset, scale)`` of a relative sigma0 spec: ``"lecun"`` or ``"lecun:0.3"``."""
    if not isinstance(spec, str):
        raise TypeError(f"Invalid sigma0 value: {spec!r}; a relative spec is a str, " + _spec_help())
    name, sep, raw = spec.partition(":")
    name = name.strip()
    if name not in PRESETS and name != MATCH:
        raise ValueError(f"Invalid sigma0 value: {spec!r}; " + _spec_help())
    if not sep:
        return name, SIGMA0_PRESETS.get(name, 1.0)
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


def describe_sigma0(spec) -> str:
    """``lecun (1 x lecun init std; 1-D without fan-in: 0.01)``, ``0.1 (absolute)``, ``callable``."""
    if callable(spec):
        return "callable"
    if isinstance(spec, str):
        preset, scale = parse_sigma0(spec)
        what = "the weights' RMS at attach" if preset == MATCH else f"{preset} init std"
        return f"{spec} ({scale:g} x {what}; 1-D without fan-in: {scale * UNIT_SIGMA0:g})"
    return f"{spec:g} (absolute)"


# ----------------------------------------------------------------------------- fans
def fans_from_shape(shape, layout: str = "torch") -> Optional[Tuple[int, int]]:
    """``(fan_in, fan_out)`` of a kernel of 2 or more dimensions, or None for fewer.

    ``layout="torch"``: ``(out, in, *window)``, ``fan_in = shape[1] * prod(shape[2:])``;
    ``"jax"``: ``(*window, in, out)``, ``fan_in = shape[-2] * prod(shape[:-2])`` (as
    ``jax.nn.initializers`` reads flax and haiku kernels).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Invalid kernel_layout value: {layout!r}; expected one of {LAYOUTS}")
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        return None
    if layout == "jax":
        receptive = math.prod(shape[:-2])
        return shape[-2] * receptive, shape[-1] * receptive
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _weight_partner(attr: str) -> Optional[str]:
    """The weight whose fan-in a bias takes: ``bias`` -> ``weight``, ``in_proj_bias`` -> ``in_proj_weight``,
    ``bias_ih_l0`` -> ``weight_ih_l0`` (RNN, LSTM, GRU)."""
    if attr.endswith("bias"):
        return attr[: -len("bias")] + "weight"
    if attr.startswith("bias_"):
        return "weight" + attr[len("bias"):]
    return None


#: Modules whose 2-D ``weight`` is stored ``[in, out]`` (the transpose of ``nn.Linear``'s ``[out, in]``), as
#: ``(module path prefix, class name)``: matched on the class or any base class by name, so the library
#: that defines them is never imported. transformers' ``Conv1D`` (``y = x @ W + b``, every GPT-2-family
#: model: ``c_attn``, ``c_proj``, ``c_fc``) is the one known; its fans are read as ``fans_from_shape(...,
#: layout="jax")`` reads a flax ``Dense`` kernel.
IN_OUT_LAYOUTS = (("transformers", "Conv1D"),)


def weight_layout(module: Optional[nn.Module]) -> str:
    """``"jax"`` for a module whose 2-D weight is ``[in, out]`` (``IN_OUT_LAYOUTS``), else ``"torch"``."""
    if module is None:
        return "torch"
    for cls in type(module).__mro__:
        for prefix, name in IN_OUT_LAYOUTS:
            if cls.__name__ == name and (cls.__module__ == prefix or cls.__module__.startswith(prefix + ".")):
                return "jax"
    return "torch"


def _fans_of(t: torch.Tensor, module: Optional[nn.Module], attr: str) -> Tuple[int, int]:
    """(fan_in, fan_out) of the weight ``module.<attr>`` (``t``, 2 or more dims, or an embedding table)."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and attr == "weight":
        # A row is selected by a one-hot input: one active input per output.
        return 1, int(t.shape[1]) if t.dim() > 1 else 1
    layout = weight_layout(module) if attr == "weight" and t.dim() == 2 else "torch"
    return fans_from_shape(t.shape, layout)


def _scaled_tensor(param: torch.Tensor, module: Optional[nn.Module], attr: str, role: str = ""):
    """``(tensor, attr)`` whose fans (and RMS, for ``"match"``) set ``param``'s scale, or None (no fan-in):
    the parameter itself, or for a bias its layer's weight. A layer with no inputs (``nn.Linear(0, n)``,
    fan-in 0) has no fan-in either: torch initialises its bias at 0, a constant like a loose 1-D parameter."""
    if role == GAIN or (module is not None and isinstance(module, NORM_TYPES)):
        return None
    scaled = None
    if param.dim() >= 2 or (isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and attr == "weight"):
        scaled = param, attr
    else:
        partner = _weight_partner(attr) if module is not None else None
        if partner is not None:
            w = getattr(module, partner, None)
            if isinstance(w, torch.Tensor) and w.dim() >= 2:
                scaled = w, partner
    if scaled is None or _fans_of(scaled[0], module, scaled[1])[0] == 0:
        return None
    return scaled


def fans(param: torch.Tensor, module: Optional[nn.Module], attr: str, role: str = "") -> Optional[Tuple[int, int]]:
    """(fan_in, fan_out) of ``module.<attr>``, or None for a parameter with no fan-in (see the module doc)."""
    scaled = _scaled_tensor(param, module, attr, role)
    return None if scaled is None else _fans_of(scaled[0], module, scaled[1])


def rms(t: torch.Tensor) -> float:
    """The RMS of ``t``'s values; of the full tensor for a DTensor (a reduction over its mesh: the same
    value on every rank)."""
    t = t.detach()
    n = t.numel()
    if n == 0:
        return 0.0
    norm = torch.linalg.vector_norm(t, dtype=torch.float64)  # accumulated in float64: one value for any layout
    if hasattr(norm, "full_tensor"):  # DTensor: the norm of the full tensor
        norm = norm.full_tensor()
    return float(norm) / n**0.5


def std_from_fans(preset: str, fan_in: int, fan_out: int) -> float:
    """The init std of ``preset`` for the given fans."""
    if preset in PRESETS and (fan_in <= 0 if preset != "xavier" else fan_in + fan_out <= 0):
        raise ValueError(f"Invalid fans ({fan_in}, {fan_out}) for the {preset} init std: a layer with no inputs has "
                         "no fan-in (syre's rules give it scale * UNIT_SIGMA0)")
    if preset == "lecun":
        return 1.0 / math.sqrt(fan_in)
    if preset == "kaiming":
        return math.sqrt(2.0 / fan_in)
    if preset == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    raise ValueError(f"Invalid sigma0 preset: {preset!r}; expected one of {sorted(PRESETS)}")


def sigma0_from_fans(spec: str, fan: Optional[Tuple[int, int]]) -> float:
    """sigma0 of a relative spec for a parameter with fans ``fan`` (None: no fan-in, ``scale * UNIT_SIGMA0``)."""
    preset, scale = parse_sigma0(spec)
    if preset == MATCH:
        raise ValueError("Invalid sigma0 value: 'match' reads the weights' values, not their shapes; resolve it "
                         "with syre.sigma0.resolve_sigma0 on the parameter")
    if fan is None or fan[0] <= 0:
        return scale * UNIT_SIGMA0
    return scale * std_from_fans(preset, *fan)


def init_std(preset: str, param: torch.Tensor, module: Optional[nn.Module] = None, attr: str = "", role: str = "") -> Optional[float]:
    """The usual initialisation std of ``module.<attr>`` under ``preset``, or None (no fan-in)."""
    if preset not in PRESETS:
        raise ValueError(f"Invalid sigma0 preset: {preset!r}; expected one of {sorted(PRESETS)}")
    fan = fans(param, module, attr, role)
    return None if fan is None else std_from_fans(preset, *fan)


def match_scale(param: torch.Tensor, module: Optional[nn.Module] = None, attr: str = "", role: str = "") -> float:
    """The scale ``"match"`` multiplies (see the module doc): the RMS of the parameter (a bias: of its layer's
    weight) as it is now; the LeCun std of its fans where that is 0 (a zero-initialised weight); UNIT_SIGMA0
    without a fan-in."""
    scaled = _scaled_tensor(param, module, attr, role)
    if scaled is None:
        return UNIT_SIGMA0
    t, weight_attr = scaled
    value = rms(t)
    if value > 0.0:
        return value
    return std_from_fans("lecun", *_fans_of(t, module, weight_attr))


def resolve_sigma0(spec: Sigma0Spec, name: str, param: torch.Tensor, module: Optional[nn.Module] = None,
                   attr: str = "", role: str = "") -> float:
    """The sigma0 of one parameter under ``spec``: relative to its init std, absolute, or a callable's."""
    if isinstance(spec, str):
        preset, scale = parse_sigma0(spec)
        if preset == MATCH:
            return scale * match_scale(param, module, attr, role)
        return sigma0_from_fans(spec, fans(param, module, attr, role))
    if callable(spec):
        value = spec(name, param)
        try:
            return check_nonneg_float("sigma0", value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Invalid sigma0 value {value!r} returned by the sigma0 callable for parameter {name!r}; "
                             "expected a finite float >= 0") from exc
    return _check_sigma0_number(spec)


def resolve_sigma0_of(spec: Sigma0Spec, info: ParamInfo) -> float:
    """``resolve_sigma0`` for a ``syre.select.ParamInfo``."""
    return resolve_sigma0(spec, info.name, info.param, info.module, info.attr, info.role)
