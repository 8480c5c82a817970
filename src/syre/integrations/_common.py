"""Helpers shared by the framework integrations (no framework imported here; public syre names only)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ..config import ATTACH_KWARGS, Config
from ._optional import require  # noqa: F401  (the frameworks import it from here)


def unwrap_optimizer(optimizer: Any) -> Any:
    """The torch optimizer inside framework wrappers.

    Hooks must sit on the optimizer whose ``step()`` runs the update: accelerate's
    ``AcceleratedOptimizer`` (``.optimizer``) and Lightning's ``LightningOptimizer``
    (``._optimizer``) delegate their ``step()`` to it.
    """
    seen = set()
    while id(optimizer) not in seen:
        seen.add(id(optimizer))
        inner = getattr(optimizer, "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            optimizer = inner
            continue
        inner = getattr(optimizer, "_optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            optimizer = inner
            continue
        break
    return optimizer


def attach_all(optimizers: List[torch.optim.Optimizer], model: torch.nn.Module, config: Config):
    """``syre.attach`` to ``model`` with the framework's optimizers and ``config``.

    Returns ``(attached, syres)``: what ``syre.attach`` returned (a ``Syre`` for one optimizer, a
    ``MultiSyre`` for several) and the ``Syre`` of each optimizer, in order. One optimizer:
    ``syre.attach(optimizer, model, ...)``. Several (a module that configures Muon and AdamW, a
    GAN's two optimizers): ``syre.attach([...], model, ...)``, which checks that they cover the
    model exactly once; the anchors are a function of (seed, parameter name) only, so a parameter
    gets the same anchor whichever optimizer holds it.
    """
    from .._attach import attach
    from ._deepspeed_checks import engine_of

    engines = [engine_of(o) for o in optimizers]  # DeepSpeed ZeRO (the Trainer with deepspeed=...): attach to the engine
    kwargs = config.as_kwargs()
    if len(engines) == 1 and engines[0] is not None:
        attached = attach(engines[0], model, **kwargs)
        return attached, [attached]
    optimizers = [unwrap_optimizer(o) for o in optimizers]
    for i, o in enumerate(optimizers):
        if not isinstance(o, torch.optim.Optimizer):
            raise TypeError(f"Invalid optimizer {i}: {type(o).__name__}; syre attaches to torch.optim.Optimizer instances")
    if len(optimizers) == 1:
        attached = attach(optimizers[0], model, **kwargs)
        return attached, [attached]
    attached = attach(optimizers, model, **kwargs)
    return attached, list(attached.syres)


def check_state_list(states: Optional[list], n: int, where: str) -> None:
    if states is not None and (not isinstance(states, list) or len(states) != n):
        got = len(states) if isinstance(states, list) else type(states).__name__
        raise ValueError(
            f"The syre state saved in {where} is for {got} optimizer(s), but this run has {n}; "
            "resume with the same optimizer setup"
        )


def attach_config(kwargs: Dict[str, Any], where: str, own: tuple = ()) -> Config:
    """``syre.attach``'s keyword arguments validated by ``Config`` at construction, before anything is attached.

    Every keyword ``attach`` takes is taken (``target=`` and ``rounding=`` included); an unknown one is a
    ``TypeError`` listing them, and the entry point's ``own`` arguments.
    """
    unknown = sorted(set(kwargs) - set(ATTACH_KWARGS))
    if unknown:
        raise TypeError(f"Invalid argument(s) {unknown} for {where}; it takes {list(ATTACH_KWARGS) + list(own)}")
    return Config.from_kwargs(kwargs, where=where)
