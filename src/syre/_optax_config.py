"""``syre.optax.syre_decay``'s keywords: ``syre.attach``'s, through ``Config``, and which of them JAX can honour.

No JAX is imported here. ``include`` / ``exclude`` select leaves by name (fnmatch patterns) or by a
callable ``(name, leaf) -> bool``, as ``syre.select`` selects torch parameters; module classes
have no meaning for a params pytree.
"""
from __future__ import annotations

import fnmatch
from typing import List

from .config import Config
from .select import _is_type_tuple, _items

__all__ = ["NOT_IN_JAX", "ONLY_IN_JAX", "jax_config", "selected"]

#: ``syre.attach`` keywords that have no meaning in JAX, and why (``syre_decay`` refuses them).
NOT_IN_JAX = {
    "strict": "it asks that every trainable parameter of a torch model is held by the optimizer; syre_decay applies "
              "to every leaf of the params it is given (choose them with mask=, include= or exclude=)",
    "foreach": "it picks torch's multi-tensor kernels; XLA compiles syre_decay's update, there is nothing to choose",
}
#: ``syre.attach`` keywords whose other values ``syre_decay`` cannot honour: (the value it honours, why).
ONLY_IN_JAX = {
    "mode": ("seeded", "syre_decay regenerates the anchors from two uint32 words per parameter at every update "
                       "(its state holds only integers), as mode='seeded' does; it stores no anchors"),
    "target": ("random", "syre_decay pulls toward syre's random anchor; another target (the initial or pretrained "
                         "weights, a mapping) would have to be kept in the optimizer state, which holds only integers"),
    "rounding": ("nearest", "syre_decay returns an update, and optax.apply_updates rounds it into the parameter's "
                            "dtype; stochastic rounding of the decay is not available in JAX"),
}


def jax_config(gamma, kwargs) -> Config:
    """The attach keywords of ``syre_decay`` validated by ``Config``; those JAX cannot honour refused with the reason."""
    where = "syre.optax.syre_decay"
    if gamma is None:
        raise ValueError("Invalid gamma value: None; syre_decay has no optimizer weight_decay to take over: pass a "
                         "float >= 0 or a schedule count -> gamma")
    cfg = Config.from_kwargs({**kwargs, "gamma": 0.0 if callable(gamma) else gamma}, where=where)
    for key, why in NOT_IN_JAX.items():
        if key in kwargs:
            raise ValueError(f"Invalid argument {key}={kwargs[key]!r} for {where}: {why}")
    for key, (honoured, why) in ONLY_IN_JAX.items():
        if key in kwargs and not (isinstance(kwargs[key], str) and kwargs[key] == honoured):
            raise ValueError(f"Invalid {key} value: {kwargs[key]!r} for {where} (only {honoured!r}): {why}")
    for arg in ("include", "exclude"):
        for item in _items(getattr(cfg, arg)):
            if isinstance(item, type) or _is_type_tuple(item):
                raise ValueError(f"Invalid {arg} rule: {item!r} for {where}: JAX params have no module classes; "
                                 "use name patterns ('*.bias') or a callable (name, leaf) -> bool")
    return cfg


def _matches(rule, name: str, leaf) -> bool:
    if isinstance(rule, str):
        return fnmatch.fnmatchcase(name, rule)
    if isinstance(rule, (list, tuple)):
        return any(_matches(r, name, leaf) for r in rule)
    return bool(rule(name, leaf))


def selected(cfg: Config, names, leaves) -> List[bool]:
    """Per leaf, whether ``include``/``exclude`` select it (as ``syre.select`` does for torch names)."""
    for arg in ("include", "exclude"):
        for item in _items(getattr(cfg, arg)):
            if (isinstance(item, str) or arg == "include") and not any(_matches(item, n, x) for n, x in zip(names, leaves)):
                shown = ", ".join(repr(n) for n in names[:6]) + (" ..." if len(names) > 6 else "")
                raise ValueError(f"Invalid {arg} rule {item!r}: it matches no parameter of the params; patterns are "
                                 f"fnmatch patterns on names such as {shown}")
    return [(cfg.include is None or _matches(cfg.include, n, x)) and not (cfg.exclude is not None and _matches(cfg.exclude, n, x))
            for n, x in zip(names, leaves)]
