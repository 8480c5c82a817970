"""The live attachments: which ``Syre`` objects are attached (and not removed), held once.

``Syre`` adds itself when it attaches; ``attached(optimizer)`` and ``on_model(model)`` look it up.
This registry sits at the bottom of the package so that whoever needs to ask -- the fused
optimizers (for their work), ``syre.reparametrize`` (to refuse an attached model), the DeepSpeed
integration -- asks without importing the step machinery above it.
"""
from __future__ import annotations

import weakref
from typing import Any, List, Optional

import torch
from torch import nn

from .select import unwrap_model

__all__ = ["attached", "on_model", "register"]

#: Every ``Syre`` ever attached, weakly (a ``Syre`` lives as long as its optimizer's hooks). Looked up
#: by identity, so optimizers and models need not be hashable.
_ALL: "weakref.WeakSet" = weakref.WeakSet()


def register(syre: Any) -> None:
    """Record a new attachment (it leaves the registry with its optimizer, or is skipped once removed)."""
    _ALL.add(syre)


def attached(optimizer: torch.optim.Optimizer) -> Optional[Any]:
    """The ``Syre`` attached to ``optimizer`` (not removed), or None."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"Invalid optimizer: {optimizer!r} ({type(optimizer).__name__}); expected a torch.optim.Optimizer")
    return next((s for s in list(_ALL) if s._optimizer is optimizer and not s._removed), None)


def on_model(model: nn.Module) -> List[Any]:
    """The live ``Syre`` objects attached to optimizers of ``model``."""
    model = unwrap_model(model)
    return [s for s in list(_ALL) if s._model is model and not s._removed]
