"""Which parameters syre decays, derived from the optimizer and the model as they are now.

``build_plan`` reads the optimizer's param groups and the model's parameters (their names,
``requires_grad``, laziness, DTensor placement) and returns a ``Plan``: one ``Entry`` per
parameter the optimizer holds, with whether syre covers it and why not. Nothing in a plan is a
copy that can go stale: ``fingerprint(optimizer)`` changes whenever anything the plan was derived
from changes (a param group added or replaced by ``load_state_dict``, ``requires_grad`` toggled,
a lazy module materialised, the model moved to another dtype or device), and the step rebuilds
the plan then. The one thing a plan keeps is syre's own memory of each parameter's sigma0
(``sigma0s``), resolved the first time the parameter is covered and restored from checkpoints.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from .. import _dist
from ..config import Config
from ..select import ParamInfo, collect, is_selected
from ..sigma0 import resolve_sigma0_of

__all__ = ["Entry", "LAZY", "FROZEN", "EXCLUDED", "UNHELD", "Plan", "build_plan", "fingerprint"]

#: ``coverage()`` reasons a parameter is not covered.
LAZY = "lazy (not yet initialised)"
FROZEN = "frozen"
EXCLUDED = "excluded"
UNHELD = "not in optimizer"


@dataclass
class Entry:
    """One parameter the optimizer holds, and what syre does with it."""

    info: ParamInfo
    group: int
    covered: bool
    reason: str = ""
    sigma0: float = 0.0
    #: Which global elements a DTensor parameter's local shard holds (``syre._dist.Geometry``).
    shard: Optional[_dist.Geometry] = None

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def param(self) -> torch.Tensor:
        return self.info.param

    def local(self) -> torch.Tensor:
        """The tensor the decay writes to: the local shard of a DTensor, else the parameter."""
        return self.param if self.shard is None else self.param.to_local()


@dataclass
class Plan:
    entries: List[Entry]
    by_group: List[List[Entry]]  # the covered entries of each group
    unheld: List[str] = field(default_factory=list)  # trainable model parameters no group holds
    #: ``(group, index, tensor)`` the optimizer holds that the model no longer has (a replaced layer), skipped
    #: while they have no gradient (as torch skips them); ``check_orphans`` refuses one that has.
    orphans: List[tuple] = field(default_factory=list)
    _low: Optional[bool] = None

    def covered(self) -> List[Entry]:
        return [e for e in self.entries if e.covered]

    def low_precision(self) -> bool:
        """Whether a covered parameter is fp16/bf16 (the precision check has something to look at)."""
        if self._low is None:
            self._low = any(e.param.dtype in (torch.float16, torch.bfloat16) for e in self.entries if e.covered)
        return self._low

    def check_orphans(self, model: nn.Module) -> None:
        """Refuse a parameter the model no longer has that has a gradient (its update would be torch's alone)."""
        for gi, pi, p in self.orphans:
            if p.grad is not None:
                raise ValueError(_orphan_error(model, gi, pi, p, " has a gradient but"))

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        known = [e.name for e in self.entries]
        raise KeyError(f"Unknown parameter name {name!r}; syre knows {known[:10]}{' ...' if len(known) > 10 else ''}")


_META = operator.attrgetter("requires_grad", "dtype", "device")


def fingerprint(optimizer: torch.optim.Optimizer) -> tuple:
    """Everything a plan is derived from, cheaply: group identity, params, requires_grad, dtype, device, type.

    Read at every step, so written for speed: C-level ``map``s over each group's parameters, no
    per-parameter Python frame.
    """
    return tuple(
        (id(g), tuple(map(id, ps)), tuple(map(_META, ps)), tuple(map(type, ps)))
        for g in optimizer.param_groups for ps in (g["params"],)
    )


def _check_param(info: ParamInfo) -> None:
    p = info.param
    if p.is_meta:
        raise ValueError(
            f"Parameter {info.name!r} is on the meta device (no values); materialise the model first "
            "(model.to_empty(device=...) and its initialisation), then create the optimizer and attach syre"
        )
    if p.is_sparse or p.layout != torch.strided:
        raise ValueError(f"Parameter {info.name!r} has layout {p.layout}; syre supports dense (strided) parameters only")
    if p.is_complex() or not p.is_floating_point():
        raise ValueError(f"Parameter {info.name!r} has dtype {p.dtype}; syre supports real floating-point parameters only")


def _entry(info: ParamInfo, gi: int, config: Config, sigma0s: Dict[str, float], sigma0) -> Entry:
    p = info.param
    if is_lazy(p):
        # nn.LazyLinear & co.: shape unknown until the first forward; the plan is rebuilt once the
        # module materialises it (its type changes, so the fingerprint does).
        return Entry(info, gi, False, LAZY)
    _check_param(info)
    if not p.requires_grad:
        return Entry(info, gi, False, FROZEN)
    if not is_selected(info, config.include, config.exclude):
        return Entry(info, gi, False, EXCLUDED)
    spec, sigma0 = sigma0, sigma0s.get(info.name)
    if sigma0 is None:
        sigma0 = sigma0s[info.name] = resolve_sigma0_of(config.sigma0 if spec is None else spec, info)
    return Entry(info, gi, True, "", sigma0, _dist.shard_geometry(info.name, p))


def _orphan_error(model, gi, pi, p, what=""):
    return (f"Parameter {pi} of param group {gi} (shape {tuple(p.shape)}, dtype {p.dtype}){what} is held by the optimizer "
            f"but is no longer a parameter of the model {type(model).__name__} (a layer replaced after attach?); nothing "
            "was changed. Remove it from the optimizer (build the optimizer again over model.parameters(), or delete it "
            f"from optimizer.param_groups[{gi}]['params'] and its state), or set its .grad to None")


def build_plan(optimizer: torch.optim.Optimizer, model: nn.Module, config: Config, sigma0s: Dict[str, float],
               at_step: bool = False, sigma0=None) -> Plan:
    """The plan for the optimizer and model as they are now (see the module docstring).

    At attach every parameter the optimizer holds must be the model's (else the wrong model was
    passed); at a step (``at_step``) one the model no longer has is skipped while it has no
    gradient, as torch skips it (``Plan.orphans``).

    ``sigma0s`` (name -> sigma0) is read for parameters seen before and extended, in place, with
    the resolved sigma0 of parameters covered for the first time, from ``sigma0`` when given (a
    target's size: ``syre.optim``) else ``config.sigma0``.
    """
    infos = collect(model)
    entries: List[Entry] = []
    by_group: List[List[Entry]] = []
    held = set()
    orphans: List[tuple] = []
    for gi, group in enumerate(optimizer.param_groups):
        if "lr" not in group:
            raise ValueError(f"Invalid param group {gi} of {type(optimizer).__name__}: it has no 'lr'; syre's decay is lr * gamma")
        row = []
        for pi, p in enumerate(group["params"]):
            info = infos.get(id(p))
            if info is None and at_step:
                if p.grad is not None:
                    raise ValueError(_orphan_error(model, gi, pi, p, " has a gradient but"))
                orphans.append((gi, pi, p))
                continue
            if info is None:
                raise ValueError(
                    f"Parameter {pi} of param group {gi} (shape {tuple(p.shape)}, dtype {p.dtype}) is held by the optimizer "
                    f"but is not a parameter of the model {type(model).__name__}; pass the model that owns it"
                )
            if id(p) in held:
                continue  # torch refuses this itself; never decay one tensor twice
            held.add(id(p))
            e = _entry(info, gi, config, sigma0s, sigma0)
            entries.append(e)
            if e.covered:
                row.append(e)
        by_group.append(row)
    unheld = [i.name for pid, i in infos.items() if pid not in held and i.param.requires_grad]
    return Plan(entries, by_group, unheld, orphans)
