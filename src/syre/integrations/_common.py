"""Helpers shared by the framework integrations (no framework imported here)."""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Dict, List, Optional

import torch

#: Keyword arguments of ``syre.attach`` that the integrations pass through unchanged.
ATTACH_KWARGS = ("gamma", "sigma0", "d_spread", "seed", "mode", "include", "exclude", "strict", "foreach")


def require(module: str, extra: str, what: str):
    """Import ``module`` or raise an ``ImportError`` that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the '{module.split('.')[0]}' package, which is not installed: "
            f"pip install 'torch-syre[{extra}]'"
        ) from exc


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


def attach_all(optimizers: List[torch.optim.Optimizer], model: torch.nn.Module, kwargs: Dict[str, Any]):
    """``syre.attach`` each optimizer to ``model`` with the same seed and configuration.

    The anchors are a function of (seed, parameter name) only, so a parameter gets the same
    anchor whichever optimizer holds it. With more than one optimizer each holds part of the
    model: they are attached with ``strict=False`` and, when ``strict`` is on, the trainable
    parameters none of them holds are reported together.
    """
    from ..optim import attach
    from ..select import collect

    optimizers = [unwrap_optimizer(o) for o in optimizers]
    for i, o in enumerate(optimizers):
        if not isinstance(o, torch.optim.Optimizer):
            raise TypeError(f"Invalid optimizer {i}: {type(o).__name__}; syre attaches to torch.optim.Optimizer instances")
    if len(optimizers) == 1:
        syres = [attach(optimizers[0], model, **kwargs)]
        _warn_if_idle(syres)
        return syres
    strict = kwargs.get("strict", True)
    each = dict(kwargs, strict=False)
    syres = [attach(o, model, **each) for o in optimizers]
    if strict:
        held = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
        unheld = [i.name for i in collect(model).values() if i.param.requires_grad and id(i.param) not in held]
        if unheld:
            for s in syres:
                s.remove()
            shown = ", ".join(repr(n) for n in unheld[:8]) + (" ..." if len(unheld) > 8 else "")
            raise ValueError(
                f"{len(unheld)} trainable parameter(s) are held by none of the {len(optimizers)} optimizers: {shown}; "
                "add them to an optimizer, freeze them, or pass strict=False to leave them alone"
            )
    _warn_if_idle(syres)
    return syres


def _warn_if_idle(syres) -> None:
    rows = [r for s in syres for r in s.coverage() if r["covered"]]
    if rows and all(r["gamma"] == 0.0 for r in rows):
        warnings.warn(
            "syre is attached with gamma = 0 on every parameter, so it does nothing: gamma=None took over a "
            "weight_decay of 0. Set the optimizer's weight_decay (TrainingArguments(weight_decay=...) for the "
            "transformers Trainer) or pass gamma=... explicitly",
            stacklevel=3,
        )


def check_state_list(states: Optional[list], n: int, where: str) -> None:
    if states is not None and (not isinstance(states, list) or len(states) != n):
        got = len(states) if isinstance(states, list) else type(states).__name__
        raise ValueError(
            f"The syre state saved in {where} is for {got} optimizer(s), but this run has {n}; "
            "resume with the same optimizer setup"
        )


def check_attach_kwargs(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Validate ``syre.attach`` keyword arguments early (at callback construction), unchanged."""
    from ..anchors import _check_seed, check_d_spread, check_nonneg_float, check_sigma0_spec
    from ..optim import MODES
    from ..select import check_rule

    unknown = sorted(set(kwargs) - set(ATTACH_KWARGS))
    if unknown:
        raise TypeError(f"Invalid argument(s) {unknown}; syre.attach takes {list(ATTACH_KWARGS)}")
    if kwargs.get("gamma") is not None:
        check_nonneg_float("gamma", kwargs["gamma"])
    if "sigma0" in kwargs:
        check_sigma0_spec(kwargs["sigma0"])
    if "d_spread" in kwargs:
        check_d_spread(kwargs["d_spread"])
    if "seed" in kwargs:
        _check_seed(kwargs["seed"])
    if "mode" in kwargs and kwargs["mode"] not in MODES:
        raise ValueError(f"Invalid mode value: {kwargs['mode']!r}; expected one of {MODES}")
    check_rule("include", kwargs.get("include"))
    check_rule("exclude", kwargs.get("exclude"))
    if "strict" in kwargs and not isinstance(kwargs["strict"], bool):
        raise TypeError(f"Invalid strict value: {kwargs['strict']!r}; expected a bool")
    return kwargs
