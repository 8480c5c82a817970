"""The paper's literal form: the forward pass uses ``theta + theta0``, ``theta`` is trained.

``h = syre.reparametrize(model, sigma0=..., seed=...)`` registers a
``torch.nn.utils.parametrize`` parametrization on every covered parameter, so that reading
``module.weight`` gives the effective weight ``theta + theta0`` while the trained tensor is
``module.parametrizations.weight.original`` (``theta``), started at ``w - theta0`` so the
effective weights are unchanged. Decay ``theta`` toward 0 with the optimizer's own weight decay
(decoupled, AdamW convention) or with ``h.penalty(gamma)`` (coupled, ``gamma * theta^T D theta``):
that is ``l(theta + theta0) + gamma * ||theta||_D^2``, the paper's objective.

``h.remove()`` undoes it and leaves plain parameters holding the effective weights.
The anchors are the same as ``syre.attach`` and ``syre.Penalty`` give for the same seed, sigma0
and parameter name (names are read through the parametrization).
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import DEFAULT_D_SPREAD, Config, check_nonneg_float, refuse_unknown_keywords
from ..kernels import functional
from ..rng.anchors import anchor_like
from ..select import covered, unwrap_model
from ..sigma0 import DEFAULT_SIGMA0, resolve_sigma0_of
from ._scale_check import AnchorScaleCheck

__all__ = ["Reparametrization", "reparametrize", "AnchorShift"]


class AnchorShift(nn.Module):
    """Parametrization ``theta -> theta + theta0`` (``theta0`` a non-persistent buffer)."""

    def __init__(self, theta0: torch.Tensor):
        super().__init__()
        self.register_buffer("theta0", theta0, persistent=False)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        return theta + self.theta0.to(theta.dtype)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight - self.theta0.to(weight.dtype)


class Reparametrization:
    """Handle returned by ``reparametrize``: the trained ``theta`` tensors, the penalty, undo."""

    def __init__(self, entries: List[Tuple[nn.Module, str, str, float, torch.Tensor]], seed: int, d_spread: float):
        self._entries = entries  # (module, attr, name, sigma0, xi)
        self.seed = seed
        self.d_spread = d_spread
        self._removed = False

    @property
    def names(self) -> List[str]:
        return [e[2] for e in self._entries]

    def parameters(self) -> List[torch.Tensor]:
        """The trained tensors ``theta`` (the parametrizations' ``original``)."""
        return [getattr(m.parametrizations, attr).original for m, attr, _, _, _ in self._entries]

    def penalty(self, gamma: float) -> torch.Tensor:
        """``gamma * sum(D * theta**2)``: the coupled decay of ``theta`` toward 0."""
        gamma = check_nonneg_float("gamma", gamma)
        if self._removed:
            raise RuntimeError("this reparametrization was removed")
        thetas = self.parameters()
        return functional.penalty(thetas, [None] * len(thetas), [e[4] for e in self._entries], gamma)

    def remove(self) -> None:
        """Undo: plain parameters holding the effective weights ``theta + theta0``."""
        if self._removed:
            return
        for module, attr, _, _, _ in self._entries:
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
        self._removed = True


@refuse_unknown_keywords("syre.reparametrize")
def reparametrize(model: nn.Module, *, sigma0=DEFAULT_SIGMA0, seed: int = 0, d_spread: float = DEFAULT_D_SPREAD,
                  include=None, exclude=None) -> Reparametrization:
    """Make the forward pass of ``model`` use ``theta + theta0`` for every covered parameter.

    Refused, before anything changes, for a parameter that is already parametrized, for a tied
    parameter (held under several names, such as an embedding tied to the output head: the
    parametrization would shift one of its aliases only), and for a model an attached ``Syre``
    decays (two anchors for one weight).
    """
    cfg = Config(sigma0=sigma0, d_spread=d_spread, seed=seed, include=include, exclude=exclude)
    from .._live import on_model

    live = on_model(model)
    if live:
        raise ValueError(
            f"The model has syre attached to its optimizer ({live[0]!r}); reparametrizing it too would decay the "
            "trained theta toward a second anchor. Use one form: syre.attach (decay toward theta0), or remove() it "
            "and reparametrize"
        )
    infos = covered(unwrap_model(model), cfg.include, cfg.exclude)
    for info in infos:
        if parametrize.is_parametrized(info.module, info.attr):
            raise ValueError(f"Parameter {info.name!r} is already parametrized; remove that parametrization first")
        if info.aliases:
            raise ValueError(
                f"Parameter {info.name!r} is tied: the model also holds it as {list(info.aliases)}. reparametrize would "
                "shift one alias only, and the others would compute with theta instead of theta + theta0. Exclude it "
                f"(exclude=[{info.name!r}]), or use syre.attach / syre.Penalty, which decay a tied parameter once"
            )
    shifts = []
    for info in infos:
        s0 = resolve_sigma0_of(cfg.sigma0, info)
        t, x = anchor_like(cfg.seed, info.name, info.param.detach(), sigma0=s0, d_spread=cfg.d_spread)
        if t is None:
            t = torch.zeros_like(info.param.detach(), dtype=torch.float64 if info.param.dtype == torch.float64 else torch.float32)
        shifts.append((info, s0, t, x))
    AnchorScaleCheck("syre.reparametrize").check(((info, s0) for info, s0, _, _ in shifts), cfg.sigma0)
    entries = []
    with torch.no_grad():
        for info, s0, t, x in shifts:
            parametrize.register_parametrization(info.module, info.attr, AnchorShift(t))
            entries.append((info.module, info.attr, info.name, s0, x))
    return Reparametrization(entries, cfg.seed, cfg.d_spread)
