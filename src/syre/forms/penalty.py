"""The coupled (paper) objective in anchor form, as an ``nn.Module``.

``syre.Penalty(model, gamma=g)()`` returns ``g * sum_p sum(D * (p - theta0)**2)`` over the
covered parameters. Add it to the loss::

    loss = criterion(model(x), y) + penalty()

Its gradient is ``2 * g * D * (p - theta0)`` (the factor-2 convention of ``g ||x||^2``), so
with plain SGD (no momentum) it is the same update as ``syre.attach(..., gamma=2 * g)``.
With momentum or adaptive optimizers the decay goes through the optimizer (coupled), as the
paper's ``l(theta + theta0) + gamma ||theta||^2`` does.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..config import DEFAULT_D_SPREAD, Config, check_nonneg_float, refuse_unknown_keywords
from ..kernels import functional
from ..rng.anchors import anchor_like
from ..select import covered
from ..sigma0 import DEFAULT_SIGMA0, resolve_sigma0_of
from ._scale_check import AnchorScaleCheck

__all__ = ["Penalty"]


class Penalty(nn.Module):
    """``gamma * sum(D * (p - theta0)**2)`` over the covered parameters of ``model``.

    Args: as ``syre.attach`` (``gamma`` is required here and uses the coupled convention).
    The anchors are non-persistent buffers: ``.to(device)`` moves them, ``state_dict()`` holds
    none of them (they are regenerated from the seed). The model's parameters are referenced,
    not registered, so ``penalty.parameters()`` is empty.
    """

    @refuse_unknown_keywords("syre.Penalty")
    def __init__(self, model: nn.Module, *, gamma: float, sigma0=DEFAULT_SIGMA0, d_spread: float = DEFAULT_D_SPREAD,
                 seed: int = 0, include=None, exclude=None):
        super().__init__()
        self.gamma = check_nonneg_float("gamma", gamma)
        cfg = Config(sigma0=sigma0, d_spread=d_spread, seed=seed, include=include, exclude=exclude)
        self.d_spread, self.seed = cfg.d_spread, cfg.seed
        self._params: List[torch.Tensor] = []
        self.names: List[str] = []
        self.sigma0s: List[float] = []
        infos = covered(model, include, exclude)
        for i, info in enumerate(infos):
            s0 = resolve_sigma0_of(sigma0, info)
            t, x = anchor_like(self.seed, info.name, info.param.detach(), sigma0=s0, d_spread=self.d_spread)
            self.register_buffer(f"theta0_{i}", t, persistent=False)
            self.register_buffer(f"xi_{i}", x, persistent=False)
            self._params.append(info.param)
            self.names.append(info.name)
            self.sigma0s.append(s0)
        AnchorScaleCheck("syre.Penalty").check(zip(infos, self.sigma0s), sigma0)  # anchors far from their tensors

    def forward(self) -> torch.Tensor:
        n = len(self._params)
        return functional.penalty(self._params, [getattr(self, f"theta0_{i}") for i in range(n)],
                         [getattr(self, f"xi_{i}") for i in range(n)], self.gamma)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, d_spread={self.d_spread}, seed={self.seed}, params={len(self._params)}"
