"""The user's request, validated once: ``Config``, and the validators every entry point shares.

``syre.attach(optimizer, model, **kwargs)``, the framework callbacks (Lightning, transformers,
stable-baselines3), ``syre.Penalty``, ``syre.reparametrize`` and the JAX port (``syre.optax``) all
read their arguments through this module, so one bad value gets one error message everywhere,
before anything is changed::

    cfg = syre.config.Config(gamma=0.1, sigma0="lecun:0.3", seed=numpy.int64(7))
    cfg.seed            # 7, a Python int
    cfg.replace(mode="seeded")

A ``Config`` is frozen; ``replace`` returns a new, validated one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from ._validate import MODES, check_bool, check_d_spread, check_mode, check_nonneg_float, check_seed
from .select import Rule, check_rule
from .sigma0 import DEFAULT_SIGMA0, Sigma0Spec, check_sigma0_spec, describe_sigma0

__all__ = [
    "ATTACH_KWARGS",
    "Config",
    "DEFAULT_D_SPREAD",
    "MODES",
    "check_d_spread",
    "check_mode",
    "check_nonneg_float",
    "check_seed",
]

#: Default spread of D: D_ii ~ Uniform(1 - 0.1, 1 + 0.1). See the README, "Choosing eps".
DEFAULT_D_SPREAD = 0.1


@dataclass(frozen=True)
class Config:
    """syre's configuration (the keyword arguments of ``syre.attach``), validated on construction.

    Attributes:
        gamma: decoupled strength (AdamW's convention: the pull per step is ``lr * gamma``), or
            None to take over each param group's ``weight_decay``.
        sigma0: the anchors' scale (see ``syre.sigma0``).
        d_spread: eps of ``D_ii ~ Uniform(1 - eps, 1 + eps)``; 0 is basic syre.
        seed: the anchors' seed, an int in ``[0, 2**64)`` (integer-like values are accepted).
        mode: ``"stored"`` (keep theta0 and xi) or ``"seeded"`` (regenerate them each step).
        include, exclude: parameter selection rules (see ``syre.select``).
        strict: a trainable model parameter the optimizer does not hold is an error.
        foreach: multi-tensor kernels (None: decide per call).
    """

    gamma: Optional[float] = None
    sigma0: Sigma0Spec = DEFAULT_SIGMA0
    d_spread: float = DEFAULT_D_SPREAD
    seed: int = 0
    mode: str = "stored"
    include: Rule = None
    exclude: Rule = None
    strict: bool = True
    foreach: Optional[bool] = None

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen: normalise in place once)
        put("gamma", None if self.gamma is None else check_nonneg_float("gamma", self.gamma))
        check_sigma0_spec(self.sigma0)
        put("d_spread", check_d_spread(self.d_spread))
        put("seed", check_seed(self.seed))
        put("mode", check_mode(self.mode))
        check_rule("include", self.include)
        check_rule("exclude", self.exclude)
        check_bool("strict", self.strict)
        if self.foreach is not None and not isinstance(self.foreach, bool):
            raise TypeError(f"Invalid foreach value: {self.foreach!r}; expected None or a bool")

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], *, where: str = "syre.attach") -> "Config":
        """A ``Config`` from keyword arguments; an unknown key is a ``TypeError`` listing the known ones."""
        unknown = sorted(set(kwargs) - set(ATTACH_KWARGS))
        if unknown:
            raise TypeError(f"Invalid argument(s) {unknown} for {where}; it takes {list(ATTACH_KWARGS)}")
        return cls(**dict(kwargs))

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def as_kwargs(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe_sigma0(self) -> str:
        return describe_sigma0(self.sigma0)


#: The keyword arguments of ``syre.attach`` (the fields of ``Config``).
ATTACH_KWARGS = tuple(f.name for f in dataclasses.fields(Config))
