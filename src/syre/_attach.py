"""``syre.attach``: one entry point for every kind of attachment, and the module ``syre.optim``.

``syre.attach(optimizer, model, gamma=...)`` registers hooks on the user's optimizer so that every
``optimizer.step()`` first applies ``p <- p - lr * gamma * D * (p - theta0)`` to each covered
parameter (the decoupled convention of ``torch.optim.AdamW``; the update rule, the closure, AMP
and distributed training are in ``syre.core._syre``). ``attach`` picks the attachment: a ``Syre``
for one torch optimizer, a ``MultiSyre`` for a list of them over one model, a ``ZeroSyre`` for a
DeepSpeed engine (``syre.integrations.deepspeed``). It sits above all three, so none of them
imports it.

``syre.optim`` is this module (``syre._paths``): the names below are those ``syre.optim`` has
always offered (the warnings, ``PRECISION_CHECK_EVERY``, ``GROUP_KEY``, ``FORMAT_VERSION`` ...).
"""
from __future__ import annotations

import inspect
from typing import Optional

import torch
from torch import nn

from ._live import attached, on_model
from ._validate import MODES
from .config import ATTACH_KWARGS, check_keywords
from .core._checks import (
    PRECISION_CHECK_EVERY,
    PROBE_ELEMENTS,
    PROBE_STEPS,
    WEAK_PULL_RATIO,
    WEAK_PULL_SHARE,
    PrecisionWarning,
    WeakPullWarning,
)
from .core._groups import GROUP_KEY, DecaySettingWarning
from .core._multi import MultiSyre
from .core._plan import EXCLUDED, FROZEN, LAZY, UNHELD
from .core._state import FORMAT_VERSION, OPTIMIZER_STATE_KEY
from .core._syre import Syre, attach_syre
from .forms._scale_check import AnchorScaleWarning

__all__ = [
    "ATTACH_KWARGS",
    "EXCLUDED",
    "FORMAT_VERSION",
    "FROZEN",
    "GROUP_KEY",
    "LAZY",
    "MODES",
    "OPTIMIZER_STATE_KEY",
    "PRECISION_CHECK_EVERY",
    "PROBE_ELEMENTS",
    "PROBE_STEPS",
    "UNHELD",
    "WEAK_PULL_RATIO",
    "WEAK_PULL_SHARE",
    "AnchorScaleWarning",
    "DecaySettingWarning",
    "MultiSyre",
    "PrecisionWarning",
    "Syre",
    "WeakPullWarning",
    "attach",
    "attached",
    "on_model",
]


def attach(optimizer, model: Optional[nn.Module] = None, **kwargs):
    """Attach syre to ``optimizer``: one added line. Returns the ``Syre`` object.

    ``syre.attach(opt, model, gamma=0.1)`` makes every ``opt.step()`` first apply
    ``p <- p - lr * gamma * D * (p - theta0)`` (AdamW's decoupled convention). See ``Syre``.
    Attaching again to an optimizer that has syre (a re-run notebook cell) returns the ``Syre``
    already there when the model and every argument are those of its configuration now (``.config``:
    a checkpoint's seed, gamma and d_spread included), and is refused otherwise.

    A list of optimizers over one model (Muon for the matrices, AdamW for the rest) gives one
    ``MultiSyre``: the same anchors, each parameter decayed by the optimizer that holds it, the
    model covered exactly once (see ``syre.core._multi``).

    A ``deepspeed.DeepSpeedEngine`` (``syre.attach(engine, ...)``, no model) goes to
    ``syre.integrations.deepspeed.attach``.

    Keywords (those of ``Syre`` and ``syre.Config``): ``gamma``, ``sigma0``, ``d_spread``, ``seed``,
    ``mode``, ``include``, ``exclude``, ``strict``, ``foreach``, ``target``, ``rounding``; another is a
    ``TypeError`` listing them.
    """
    check_keywords(kwargs, ATTACH_KWARGS, "syre.attach")
    if type(optimizer).__module__.startswith("deepspeed.") and not isinstance(optimizer, torch.optim.Optimizer):
        from .integrations.deepspeed import attach_engine

        return attach_engine(optimizer, model, kwargs)
    if model is None:
        raise TypeError("syre.attach(optimizer, model, ...) needs the model whose parameters the optimizer holds")
    if isinstance(optimizer, (list, tuple)):
        return MultiSyre(optimizer, model, **kwargs)
    return attach_syre(optimizer, model, kwargs)


# help(syre.attach) and inspect.signature show Syre's keywords (attach takes them as **kwargs to check them first).
attach.__signature__ = inspect.Signature(
    [*list(inspect.signature(attach).parameters.values())[:2],
     *[p for p in inspect.signature(Syre.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY and not p.name.startswith("_")]])
