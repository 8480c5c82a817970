"""The arms every experiment draws from, defined once, and how each is applied to a model.

An arm is a way of training: what the decay pulls toward, and what else breaks symmetry. All
decays use the **decoupled** convention of ``torch.optim.AdamW`` (and of ``syre.attach``): before
each optimizer step, ``p <- p - lr * gamma * D * (p - target)``, with

=================  =========================================================  ==================
arm                target, D                                                  also
=================  =========================================================  ==================
``none``           no decay                                                   -
``wd``             the origin, D = I (AdamW's ``weight_decay``)               -
``syre``           theta0 at **the declared default** ``DECLARED_SIGMA0``       -
``syre_ar``        theta0 at the declared default, D_ii ~ U(1 - eps, 1 + eps)   -
``syre_<X>x``      theta0 at X LeCun init stds (``"lecun:X"``), D = I            -
``syre_abs<X>``    theta0 at the absolute sigma0 X, D = I                      -
``syre_match``     theta0 at the weights' own RMS at attach (``"match"``)       -
``l2init``         the initial weights theta(0), D = I (L2-Init)              -
``perturb``        the origin, D = I                                          a small random perturbation of the start
``wfix``           the origin, D = I                                          W-fix
``dropout``        the origin, D = I                                          dropout
=================  =========================================================  ==================

Each name means one sigma0 (``syre_arm(spec)`` builds the name from the spec). A tuned arm
(``Arm.tuned``) is called ``<name>@tuned`` and carries the gamma and sigma0 chosen for it.

W-fix (Lim et al. 2024): in every weight matrix (and convolution kernel) a fixed random subset of
each output unit's incoming weights, a share ``wfix_frac`` (at least one), is set to random
constants ~ N(0, (wfix_scale * init_std)^2) and restored after every step.

sigma0 specs: the library's forms (``"lecun"``, ``"kaiming"``, ``"xavier"``, ``"lecun:X"``, ``"match"``,
``"match:X"``), ``"rel:X"`` (= ``"lecun:X"``), an absolute number or ``"abs:X"``. Only syre's public API is used.
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

import syre

__all__ = ["Arm", "ARMS", "ARM_DEFAULTS", "GAMMA_CONVENTION", "apply_arm", "arms", "arm_gamma", "capture", "dropout_rate",
           "default_scale", "DECLARED_SIGMA0", "init_stds", "library_scale", "perturb_", "sigma0_label", "sigma0_spec", "syre_arm"]

GAMMA_CONVENTION = (
    "decoupled (AdamW convention): every step applies p <- p - lr * gamma * D * (p - target) before the "
    "optimizer's update (target 0 for weight decay, theta0 for syre, theta(0) for L2-Init); equal to the "
    "coupled penalty (gamma/2)||p - target||^2 for plain SGD"
)
DECAYS = ("none", "wd", "syre", "l2init")
#: The pull / update ratio below which ``syre.WeakPullWarning`` fires (read from the library where it says so).
WEAK_PULL = float(getattr(getattr(syre, "optim", None), "WEAK_PULL_RATIO", 1e-4))


@dataclass(frozen=True)
class Arm:
    """A way of training (see the module docstring).

    ``decay``: one of ``DECAYS``. ``sigma0``: a spec, or ``None`` for the run's ``sigma0`` key (the
    library default unless overridden). ``d_spread``: ``None`` takes the config's. ``gamma``:
    ``None`` takes the config's ``gamma``. ``dropout``/``wfix``/``perturb``: use the config's
    rate / share / scale. ``tag``: an experiment-specific variant (e.g. ``"sp"``, Shrink and Perturb).
    """

    name: str
    label: str
    decay: str = "wd"
    sigma0: Any = None
    d_spread: Optional[float] = 0.0
    gamma: Optional[float] = None
    dropout: bool = False
    wfix: bool = False
    perturb: bool = False
    tag: str = ""

    def __post_init__(self):
        if self.decay not in DECAYS:
            raise ValueError(f"Invalid arm decay: {self.decay!r}; expected one of {DECAYS}")

    @property
    def tunable(self) -> List[str]:
        """The knobs tuning may choose for this arm: ``gamma`` (any decay) and ``sigma0`` (syre)."""
        return [] if self.decay == "none" else (["gamma", "sigma0"] if self.decay == "syre" else ["gamma"])

    def with_name(self, name: str, label: Optional[str] = None, **changes) -> "Arm":
        return replace(self, name=name, label=label or self.label, **changes)

    def tuned(self, gamma: Optional[float], sigma0: Any = None, suffix: str = "@tuned") -> "Arm":
        """This arm at a chosen ``gamma`` (and ``sigma0``, for syre arms), named ``<name><suffix>``."""
        ch: Dict[str, Any] = {"gamma": gamma}
        if self.decay == "syre" and sigma0 is not None:
            ch["sigma0"] = sigma0
        return replace(self, name=self.name + suffix, label=self.label + " (tuned)", **ch)

    def declaration(self) -> Dict[str, Any]:
        return asdict(self)


#: The sigma0 of the arm named ``syre`` in the registered experiments (E0-E13): the library default when they
#: were declared, the LeCun init std. Their protocols hash it (in the configs and the arms' labels), so it stays
#: what they ran at when the library's default (``syre.DEFAULT_SIGMA0``) moves.
DECLARED_SIGMA0 = "lecun"


def _syre_name(spec) -> str:
    if spec == DECLARED_SIGMA0:
        return "syre"
    kind, preset, x = _parse(spec)
    if kind == "abs":
        return f"syre_abs{x:g}"
    if preset == "match" and x is None:
        return "syre_match"
    return f"syre_{x:g}x" if preset == "lecun" else f"syre_{preset}{x:g}x"


def syre_arm(spec, *, d_spread: Optional[float] = 0.0, name: Optional[str] = None) -> Arm:
    """Basic syre (or AR with ``d_spread=None``) at the sigma0 ``spec``, named after it."""
    _parse(spec)
    nm = name or (_syre_name(spec) if d_spread == 0.0 else _syre_name(spec).replace("syre", "syre_ar", 1))
    return Arm(nm, f"syre{' AR' if d_spread != 0.0 else ''}, sigma0 {sigma0_label(spec)}", decay="syre", sigma0=spec,
               d_spread=d_spread)


#: The standard arms, by name.
ARMS: Dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("none", "no decay", decay="none"),
        Arm("wd", "weight decay", decay="wd"),
        Arm("syre", "syre (library default sigma0)", decay="syre", d_spread=0.0),
        Arm("syre_ar", "syre AR (library default sigma0)", decay="syre", d_spread=None),
        Arm("l2init", "L2-Init", decay="l2init"),
        Arm("perturb", "perturbed start + weight decay", decay="wd", perturb=True),
        Arm("wfix", "W-fix + weight decay", decay="wd", wfix=True),
        Arm("dropout", "dropout + weight decay", decay="wd", dropout=True),
    )
}

#: Configuration keys the arms read, with their defaults (experiments merge these in).
ARM_DEFAULTS: Dict[str, Any] = {
    "sigma0": DECLARED_SIGMA0,
    "d_spread": syre.DEFAULT_D_SPREAD,
    "dropout": 0.2,
    "wfix_frac": 0.25,
    "wfix_scale": 1.0,
    "perturb_scale": 0.01,
}


def arms(names: Sequence[str]) -> List[Arm]:
    """The arms ``names``: standard ones, or ``syre_<X>x`` / ``syre_abs<X>`` (a ValueError names an unknown one)."""
    out = []
    for n in names:
        if n in ARMS:
            out.append(ARMS[n])
        elif n.startswith("syre_abs"):
            out.append(syre_arm(f"abs:{n[len('syre_abs'):]}"))
        elif n.startswith("syre_") and n.endswith("x") and _is_number(n[5:-1]):
            out.append(syre_arm(f"lecun:{n[5:-1]}"))
        elif n == "syre_match":
            out.append(syre_arm("match"))
        elif n.startswith("syre_match") and n.endswith("x") and _is_number(n[10:-1]):
            out.append(syre_arm(f"match:{n[10:-1]}"))
        else:
            raise ValueError(f"Invalid arm: {n!r}; expected one of {sorted(ARMS)}, 'syre_<X>x', 'syre_abs<X>', 'syre_match' or "
                             "'syre_match<X>x'")
    return out


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def arm_gamma(arm: Arm, cfg: Dict[str, Any]) -> float:
    """The gamma ``arm`` trains with under ``cfg`` (0 for no decay)."""
    if arm.decay == "none":
        return 0.0
    return float(cfg["gamma"] if arm.gamma is None else arm.gamma)


# ----------------------------------------------------------------------------- sigma0 specs
_SPEC_FORMS = "'lecun', 'kaiming', 'xavier', 'lecun:X' (any preset), 'match', 'match:X', 'rel:X', 'abs:X' or a number >= 0"
_PRESETS = ("lecun", "kaiming", "xavier")


def _number(spec, raw) -> float:
    try:
        x = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid sigma0: {spec!r}; expected {_SPEC_FORMS}") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"Invalid sigma0: {spec!r}; the value must be a finite number >= 0")
    return x


def _parse(spec) -> tuple:
    """``("rel", preset, scale)`` (scale ``None``: the library's default scale) or ``("abs", None, x)``."""
    if isinstance(spec, bool) or not isinstance(spec, (int, float, str)):
        raise ValueError(f"Invalid sigma0: {spec!r}; expected {_SPEC_FORMS}")
    if isinstance(spec, (int, float)):
        return ("abs", None, _number(spec, spec))
    head, sep, raw = spec.partition(":")
    if head == "abs" and sep:
        return ("abs", None, _number(spec, raw))
    if head == "rel" and sep:
        return ("rel", "lecun", _number(spec, raw))
    if head in _PRESETS or head == "match":
        return ("rel", head, _number(spec, raw) if sep else None)
    raise ValueError(f"Invalid sigma0: {spec!r}; expected {_SPEC_FORMS}")


@functools.lru_cache(maxsize=None)
def library_scale(preset: str = "lecun") -> float:
    """The multiple of the ``preset`` init std that the bare preset name means in the library (measured)."""
    lin = nn.Linear(100, 1, bias=False)
    s = syre.attach(torch.optim.SGD(lin.parameters(), lr=0.1), lin, gamma=0.1, sigma0=preset, seed=0)
    measured = float(s.coverage()[0]["sigma0"])
    s.remove()
    std = {"lecun": 0.1, "kaiming": math.sqrt(2.0 / 100), "xavier": math.sqrt(2.0 / 101)}[preset]
    return measured / std


def default_scale() -> Optional[float]:
    """The multiple of the LeCun init std that the library default sigma0 means (None if it is not LeCun-relative)."""
    kind, preset, x = _parse(DECLARED_SIGMA0)
    if kind != "rel" or preset != "lecun":
        return None
    return library_scale("lecun") if x is None else x


def sigma0_label(spec) -> str:
    """A short label: ``"0.3 x lecun init std"``, ``"0.05 (absolute)"``; the library default says so."""
    kind, preset, x = _parse(spec)
    if kind == "abs":
        return f"{x:g} (absolute)"
    if preset == "match":
        return f"{1.0 if x is None else x:g} x the weights' RMS at attach"
    text = f"{library_scale(preset) if x is None else x:g} x {preset} init std"
    return text + (" (the library default)" if spec == DECLARED_SIGMA0 else "")  # (when E0-E13 were declared)


def sigma0_spec(spec):
    """What to pass as ``syre.attach(..., sigma0=)``: the library default as is, ``"lecun:X"``, or a float."""
    kind, preset, x = _parse(spec)
    if kind == "abs":
        return x
    return preset if x is None else f"{preset}:{x!r}"


def resolve_arm_sigma0(arm: Arm, cfg: Dict[str, Any]):
    """The sigma0 spec ``arm`` uses under configuration ``cfg``."""
    return cfg.get("sigma0", ARM_DEFAULTS["sigma0"]) if arm.sigma0 is None else arm.sigma0


def init_stds(model: nn.Module) -> Dict[str, float]:
    """The LeCun init std ``1 / sqrt(fan_in)`` of every parameter of Linear/Conv layers (a bias takes its layer's)."""
    out = {}
    for mname, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            std = 1.0 / math.sqrt(w[0].numel())
            for pname, p in m.named_parameters(recurse=False):
                out[f"{mname}.{pname}" if mname else pname] = std
    return out


# ----------------------------------------------------------------------------- applying
_CAPTURES: List[list] = []


@contextlib.contextmanager
def capture():
    """Collect ``(model, handle)`` of every ``apply_arm`` call inside the block, in call order."""
    seen: list = []
    _CAPTURES.append(seen)
    try:
        yield seen
    finally:
        _CAPTURES.remove(seen)


class ArmHandle:
    """What ``apply_arm`` attached: the ``Syre`` object (or None), and hooks to remove."""

    def __init__(self, arm: Arm):
        self.arm = arm
        self.syre: Optional[syre.Syre] = None
        self.sigma0: Any = None
        self.frozen: List[tuple] = []  # (param, mask, values) of W-fix
        self._hooks: list = []

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self.syre is not None:
            self.syre.remove()


def apply_arm(arm: Arm, model: nn.Module, optimizer: torch.optim.Optimizer, *, seed: int,
              cfg: Optional[Dict[str, Any]] = None, gamma: Optional[float] = None) -> ArmHandle:
    """Attach ``arm``'s decay (and W-fix) to ``optimizer`` for ``model``; return the handle.

    ``gamma``: the decay strength (default ``arm_gamma(arm, cfg)``). The optimizer must not carry
    its own ``weight_decay``. Dropout is part of the model (``dropout_rate``); the perturbed start
    is applied by the experiment (``perturb_``), which owns its start.
    """
    cfg = {**ARM_DEFAULTS, **(cfg or {})}
    g = arm_gamma(arm, cfg) if gamma is None else float(gamma)
    for gi, group in enumerate(optimizer.param_groups):
        if group.get("weight_decay", 0):
            raise ValueError(f"Invalid optimizer: param group {gi} has weight_decay={group['weight_decay']}; the arm supplies "
                             "the decay, build the optimizer with weight_decay=0")
    handle = ArmHandle(arm)
    for seen in _CAPTURES:
        seen.append((model, handle))
    if arm.wfix:
        _apply_wfix(handle, model, optimizer, cfg, seed)
    if arm.decay == "none" or g == 0.0:
        return handle
    if arm.decay == "wd":
        handle.syre = syre.attach(optimizer, model, gamma=g, sigma0=0.0, d_spread=0.0, seed=seed)
    elif arm.decay == "syre":
        spec = resolve_arm_sigma0(arm, cfg)
        handle.sigma0 = spec
        with warnings.catch_warnings():  # the arm's sigma0 is the setting under study, far from the weights or not
            warnings.simplefilter("ignore", syre.AnchorScaleWarning)
            handle.syre = syre.attach(optimizer, model, gamma=g, sigma0=sigma0_spec(spec),
                                      d_spread=cfg["d_spread"] if arm.d_spread is None else arm.d_spread, seed=seed)
    else:
        _apply_l2init(handle, model, optimizer, g, seed)
    return handle


def dropout_rate(arm: Arm, cfg: Optional[Dict[str, Any]] = None) -> float:
    """The dropout probability the model of ``arm`` should use (0 when the arm has none)."""
    cfg = {**ARM_DEFAULTS, **(cfg or {})}
    return float(cfg["dropout"]) if arm.dropout else 0.0


@torch.no_grad()
def perturb_(params: Sequence[torch.Tensor], stds: Sequence[float], scale: float, seed: int) -> None:
    """Add N(0, (scale * std)^2) noise to each of ``params`` (the perturbed-start control), seeded."""
    if not scale >= 0:
        raise ValueError(f"Invalid perturb_scale: {scale!r}; expected a number >= 0")
    gen = torch.Generator().manual_seed(70_000 + seed)
    for p, s in zip(params, stds):
        p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype), alpha=scale * s)


def _apply_l2init(handle: ArmHandle, model: nn.Module, optimizer: torch.optim.Optimizer, gamma: float, seed: int) -> None:
    """L2-Init through the library: ``syre.attach(..., target="init")`` (decay toward the weights at attach, D = I;
    a group's ``syre_gamma`` is honoured as syre reads it)."""
    handle.syre = syre.attach(optimizer, model, gamma=gamma, target="init", d_spread=0.0, seed=seed)


def _apply_wfix(handle: ArmHandle, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: Dict[str, Any], seed: int) -> None:
    frac = float(cfg["wfix_frac"])
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"Invalid wfix_frac: {frac!r}; expected 0 < wfix_frac <= 1")
    gen = torch.Generator().manual_seed(10_000 + seed)
    for p in (p for p in model.parameters() if p.dim() >= 2 and p.requires_grad):
        rows, fan_in = p.shape[0], p[0].numel()
        k = max(1, int(round(frac * fan_in)))
        idx = torch.rand(rows, fan_in, generator=gen).argsort(dim=1)[:, :k]
        mask = torch.zeros(rows, fan_in, dtype=torch.bool).scatter_(1, idx, True).view_as(p)
        values = (torch.randn(p.shape, generator=gen, dtype=torch.float64) * (float(cfg["wfix_scale"]) / math.sqrt(fan_in))).to(p.dtype)
        with torch.no_grad():
            p[mask] = values[mask]
        handle.frozen.append((p, mask, values))

    @torch.no_grad()
    def post_step(opt, args, kwargs):
        for p, mask, values in handle.frozen:
            p[mask] = values[mask]

    handle._hooks.append(optimizer.register_step_post_hook(post_step))
