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
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from ._validate import MODES, check_bool, check_d_spread, check_mode, check_nonneg_float, check_seed
from .select import Rule, check_rule
from .sigma0 import DEFAULT_SIGMA0, Sigma0Spec, check_sigma0_spec, describe_sigma0

__all__ = [
    "ATTACH_KWARGS",
    "ROUNDINGS",
    "TARGETS",
    "Config",
    "DEFAULT_D_SPREAD",
    "MODES",
    "check_d_spread",
    "check_mode",
    "check_nonneg_float",
    "check_seed",
]

#: Default spread of D: D_ii ~ Uniform(1 - 0.1, 1 + 0.1). See docs/guide.md, "Choosing gamma, sigma0 and eps".
DEFAULT_D_SPREAD = 0.1


#: ``attach(target=...)`` names (or a mapping name -> tensor); see ``syre.core._targets``.
TARGETS = ("random", "init", "pretrained")
#: ``attach(rounding=...)``: how decayed fp16/bf16 values are stored; see ``syre.core._rounding``.
ROUNDINGS = ("nearest", "stochastic")


@dataclass(frozen=True, eq=False)
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
        target: what the decay pulls toward: ``"random"`` (syre's anchor), ``"init"``,
            ``"pretrained"``, or a mapping name -> tensor (see ``syre.core._targets``).
        rounding: ``"nearest"`` or ``"stochastic"`` (decayed fp16/bf16 values, ``syre.core._rounding``).
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
    target: Any = "random"
    rounding: str = "nearest"

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
        if not (isinstance(self.target, Mapping) or (isinstance(self.target, str) and self.target in TARGETS)):
            raise ValueError(f"Invalid target value: {self.target!r}; expected one of {TARGETS} or a mapping name -> tensor")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"Invalid rounding value: {self.rounding!r}; expected one of {ROUNDINGS}")

    def __eq__(self, other) -> bool:
        """Field by field; a mapping target or a callable compares by identity (tensors have no single truth value)."""
        if not isinstance(other, Config):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, Mapping) or isinstance(b, Mapping) or callable(a) or callable(b):
                if a is not b:
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], *, where: str = "syre.attach") -> "Config":
        """A ``Config`` from keyword arguments; an unknown key is a ``TypeError`` listing the known ones."""
        check_keywords(kwargs, ATTACH_KWARGS, where)
        return cls(**dict(kwargs))

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def as_kwargs(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def describe_sigma0(self) -> str:
        return describe_sigma0(self.sigma0)


#: The keyword arguments of ``syre.attach`` (the fields of ``Config``).
ATTACH_KWARGS = tuple(f.name for f in dataclasses.fields(Config))


def check_keywords(kwargs: Mapping[str, Any], allowed, where: str) -> None:
    """An unknown keyword is a ``TypeError`` naming it, the entry point and the keywords it takes."""
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"Invalid argument(s) {unknown} for {where}; it takes {list(allowed)}")


def refuse_unknown_keywords(where: str):
    """Decorate a function whose keywords are explicit: an unknown one gets ``check_keywords``' message, not
    Python's "unexpected keyword argument" (the signature and ``help`` stay the function's own)."""

    def wrap(fn):
        params = inspect.signature(fn).parameters.values()
        names = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        listed = [p.name for p in params if p.kind is p.KEYWORD_ONLY and not p.name.startswith("_")]

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            if not names.issuperset(kwargs):
                check_keywords({k: v for k, v in kwargs.items() if k not in names}, listed, where)
            return fn(*args, **kwargs)

        return checked

    return wrap
