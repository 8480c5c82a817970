"""The arms every experiment draws from, defined once, and how each is applied to a model.

An arm is a way of training: what the decay pulls toward, and what else breaks symmetry.
All decays use the **decoupled** convention of ``torch.optim.AdamW`` (and of ``syre.attach``):
before each optimizer step, ``p <- p - lr * gamma * D * (p - target)``, with

=============  ==========================================================  ===============
arm            target, D                                                   also
=============  ==========================================================  ===============
``none``       no decay                                                    -
``wd``         the origin, D = I (AdamW's ``weight_decay``; plain SGD's)   -
``syre``       a fixed random anchor theta0 ~ N(0, sigma0^2), D = I         -
``syre_ar``    theta0, D_ii ~ U(1 - d_spread, 1 + d_spread) (AR)            -
``syre_big``   theta0 with sigma0 = ``sigma0_big`` (default: the init std)  -
``l2init``     the initial weights theta(0), D = I (L2-Init)                -
``wfix``       the origin, D = I                                            W-fix
``dropout``    the origin, D = I                                            dropout
=============  ==========================================================  ===============

W-fix (Lim et al. 2024, "W-asymmetric" networks): in every weight matrix (and convolution
kernel) a fixed random subset of each output unit's incoming weights, a fraction ``wfix_frac``
(at least one), is set to random constants ~ N(0, (wfix_scale * init_std)^2) and never trained
(restored after every step, so neither the gradient nor the decay moves them).

sigma0 is a spec (the configuration key ``sigma0``; see ``sigma0_spec``):

* ``"lecun"`` / ``"kaiming"`` / ``"xavier"``: the library's presets (``"lecun"``, the library
  default, is 0.01 / sqrt(fan_in): 1% of the LeCun init std);
* ``"rel:X"``: X times the LeCun init std 1 / sqrt(fan_in) of each parameter (a bias takes its
  layer's fan-in; a parameter with no fan-in takes X), so ``"rel:0.01"`` equals ``"lecun"``;
* a number or ``"abs:X"``: the absolute value X for every parameter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

import syre
from syre import functional as F
from syre.anchors import DEFAULT_D_SPREAD, init_std
from syre.select import collect

__all__ = [
    "Arm",
    "ARMS",
    "ArmHandle",
    "GAMMA_CONVENTION",
    "apply_arm",
    "arms",
    "sigma0_spec",
    "sigma0_label",
    "sigma0_values",
]

GAMMA_CONVENTION = (
    "decoupled (AdamW convention): every step applies p <- p - lr * gamma * D * (p - target) before the "
    "optimizer's update (target 0 for weight decay, theta0 for syre, theta(0) for L2-Init); equal to the "
    "coupled penalty (gamma/2)||p - target||^2 for plain SGD"
)


@dataclass(frozen=True)
class Arm:
    """A way of training (see the module docstring).

    ``decay``: ``"none" | "wd" | "syre" | "l2init"``. ``sigma0``: ``None`` takes the run's
    ``sigma0`` (config), a string names another config key (``"sigma0_big"``) or is a spec.
    ``d_spread``: ``None`` takes the config's ``d_spread``. ``dropout``/``wfix`` are True when
    the arm uses the config's ``dropout`` rate / ``wfix_frac``.
    """

    name: str
    label: str
    decay: str = "wd"
    sigma0: Any = None
    d_spread: Optional[float] = 0.0
    dropout: bool = False
    wfix: bool = False

    def with_name(self, name: str, label: Optional[str] = None, **changes) -> "Arm":
        return replace(self, name=name, label=label or self.label, **changes)


#: The standard arms, by name.
ARMS: Dict[str, Arm] = {
    a.name: a
    for a in (
        Arm("none", "no decay", decay="none"),
        Arm("wd", "weight decay", decay="wd"),
        Arm("syre", "syre (basic)", decay="syre", d_spread=0.0),
        Arm("syre_ar", "syre AR", decay="syre", d_spread=None),
        Arm("syre_big", "syre (basic, large sigma0)", decay="syre", sigma0="sigma0_big", d_spread=0.0),
        Arm("l2init", "L2-Init", decay="l2init"),
        Arm("wfix", "W-fix + weight decay", decay="wd", wfix=True),
        Arm("dropout", "dropout + weight decay", decay="wd", dropout=True),
    )
}

#: Configuration keys the arms read, with their defaults (experiments merge these in).
ARM_DEFAULTS: Dict[str, Any] = {
    "sigma0": "lecun",
    "sigma0_big": "rel:1.0",
    "d_spread": DEFAULT_D_SPREAD,
    "dropout": 0.2,
    "wfix_frac": 0.25,
    "wfix_scale": 1.0,
}


def arms(names: Sequence[str]) -> List[Arm]:
    """The standard arms ``names`` (a ValueError names an unknown one)."""
    out = []
    for n in names:
        if n not in ARMS:
            raise ValueError(f"Invalid arm: {n!r}; expected one of {sorted(ARMS)}")
        out.append(ARMS[n])
    return out


# ----------------------------------------------------------------------------- sigma0 specs
def _parse(spec) -> tuple:
    """``("preset", name) | ("rel", x) | ("abs", x)`` for a sigma0 spec."""
    if isinstance(spec, bool):
        raise ValueError(f"Invalid sigma0: {spec!r}; expected 'lecun', 'kaiming', 'xavier', 'rel:X', 'abs:X' or a number >= 0")
    if isinstance(spec, (int, float)):
        kind, x = "abs", float(spec)
    elif isinstance(spec, str) and spec in ("lecun", "kaiming", "xavier"):
        return ("preset", spec)
    elif isinstance(spec, str) and spec.split(":", 1)[0] in ("rel", "abs") and ":" in spec:
        kind, raw = spec.split(":", 1)
        try:
            x = float(raw)
        except ValueError:
            raise ValueError(f"Invalid sigma0: {spec!r}; the part after '{kind}:' must be a number") from None
    else:
        raise ValueError(f"Invalid sigma0: {spec!r}; expected 'lecun', 'kaiming', 'xavier', 'rel:X', 'abs:X' or a number >= 0")
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"Invalid sigma0: {spec!r}; the value must be a finite number >= 0")
    return (kind, x)


def sigma0_label(spec) -> str:
    """A short human label: ``"lecun (0.01 init std)"``, ``"1 x init std"``, ``"0.05 (absolute)"``."""
    kind, x = _parse(spec)
    if kind == "preset":
        return f"{x} preset (0.01 x init std)"
    if kind == "rel":
        return f"{x:g} x init std"
    return f"{x:g} (absolute)"


def sigma0_spec(spec, model: nn.Module):
    """What to pass as ``syre.attach(..., sigma0=)`` for the spec ``spec`` on ``model``."""
    kind, x = _parse(spec)
    if kind == "preset":
        return x
    if kind == "abs":
        return x
    table = sigma0_values(f"rel:{x}", model)
    return lambda name, param: table[name]


def sigma0_values(spec, model: nn.Module) -> Dict[str, float]:
    """The sigma0 each parameter of ``model`` gets under ``spec`` (by canonical name)."""
    kind, x = _parse(spec)
    out = {}
    for info in collect(model).values():
        if kind == "abs":
            out[info.name] = x
            continue
        preset = x if kind == "preset" else "lecun"
        std = init_std(preset, info.param, info.module, info.attr)
        scale = 0.01 if kind == "preset" else x
        out[info.name] = scale * (1.0 if std is None else std)
    return out


def resolve_arm_sigma0(arm: Arm, cfg: Dict[str, Any]):
    """The sigma0 spec ``arm`` uses under configuration ``cfg``."""
    if arm.sigma0 is None:
        return cfg.get("sigma0", ARM_DEFAULTS["sigma0"])
    if isinstance(arm.sigma0, str) and arm.sigma0 in ARM_DEFAULTS:
        return cfg.get(arm.sigma0, ARM_DEFAULTS[arm.sigma0])
    return arm.sigma0


# ----------------------------------------------------------------------------- applying
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


def _weight_params(model: nn.Module):
    """Weight matrices and kernels (2-D or more) with their owning modules."""
    for info in collect(model).values():
        if info.param.dim() >= 2 and info.param.requires_grad:
            yield info


def apply_arm(arm: Arm, model: nn.Module, optimizer: torch.optim.Optimizer, *, gamma: float, seed: int,
              cfg: Optional[Dict[str, Any]] = None) -> ArmHandle:
    """Attach ``arm``'s decay (and W-fix) to ``optimizer`` for ``model``; return the handle.

    The optimizer must not carry its own ``weight_decay`` (the arm supplies the decay) and must
    be one for which decoupled decay is the usual convention (SGD without momentum, AdamW, Adam).
    Dropout is part of the model: build it with ``dropout_rate(arm, cfg)``.
    """
    cfg = {**ARM_DEFAULTS, **(cfg or {})}
    for gi, group in enumerate(optimizer.param_groups):
        if group.get("weight_decay", 0):
            raise ValueError(
                f"Invalid optimizer: param group {gi} has weight_decay={group['weight_decay']}; the arm supplies the decay, "
                "build the optimizer with weight_decay=0"
            )
    handle = ArmHandle(arm)
    if arm.wfix:
        _apply_wfix(handle, model, optimizer, cfg, seed)
    if arm.decay == "none" or gamma == 0.0:
        return handle
    if arm.decay == "wd":
        handle.syre = syre.attach(optimizer, model, gamma=gamma, sigma0=0.0, d_spread=0.0, seed=seed)
    elif arm.decay == "syre":
        spec = resolve_arm_sigma0(arm, cfg)
        d_spread = cfg["d_spread"] if arm.d_spread is None else arm.d_spread
        handle.sigma0 = spec
        handle.syre = syre.attach(optimizer, model, gamma=gamma, sigma0=sigma0_spec(spec, model),
                                  d_spread=d_spread, seed=seed)
    elif arm.decay == "l2init":
        _apply_l2init(handle, model, optimizer, gamma)
    else:
        raise ValueError(f"Invalid arm decay: {arm.decay!r}; expected 'none', 'wd', 'syre' or 'l2init'")
    return handle


def dropout_rate(arm: Arm, cfg: Optional[Dict[str, Any]] = None) -> float:
    """The dropout probability the model of ``arm`` should use (0 when the arm has none)."""
    cfg = {**ARM_DEFAULTS, **(cfg or {})}
    return float(cfg["dropout"]) if arm.dropout else 0.0


def _apply_l2init(handle: ArmHandle, model: nn.Module, optimizer: torch.optim.Optimizer, gamma: float) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    inits = [p.detach().clone() for p in params]
    groups = [[(p, t) for p, t in zip(params, inits) if any(p is q for q in g["params"])] for g in optimizer.param_groups]

    @torch.no_grad()
    def pre_step(opt, args, kwargs):
        for group, pairs in zip(opt.param_groups, groups):
            live = [(p, t) for p, t in pairs if p.grad is not None]
            if live:
                F.decay_([p for p, _ in live], [t for _, t in live], [None] * len(live), weight=float(group["lr"]) * gamma)

    handle._hooks.append(optimizer.register_step_pre_hook(pre_step))


def _apply_wfix(handle: ArmHandle, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: Dict[str, Any], seed: int) -> None:
    frac = float(cfg["wfix_frac"])
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"Invalid wfix_frac: {frac!r}; expected 0 < wfix_frac <= 1")
    gen = torch.Generator().manual_seed(10_000 + seed)
    for info in _weight_params(model):
        p = info.param
        rows = p.shape[0]
        fan_in = p[0].numel()
        k = max(1, int(round(frac * fan_in)))
        scores = torch.rand(rows, fan_in, generator=gen)
        idx = scores.argsort(dim=1)[:, :k]
        mask = torch.zeros(rows, fan_in, dtype=torch.bool).scatter_(1, idx, True).view_as(p)
        std = float(cfg["wfix_scale"]) / math.sqrt(fan_in)
        values = (torch.randn(p.shape, generator=gen, dtype=torch.float64) * std).to(p.dtype)
        with torch.no_grad():
            p[mask] = values[mask]
        handle.frozen.append((p, mask, values))

    @torch.no_grad()
    def post_step(opt, args, kwargs):
        for p, mask, values in handle.frozen:
            p[mask] = values[mask]

    handle._hooks.append(optimizer.register_step_post_hook(post_step))
