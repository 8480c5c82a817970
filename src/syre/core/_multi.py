"""One syre over several optimizers of one model (Muon for the matrices, AdamW for the rest).

``syre.attach([muon, adamw], model, ...)`` returns a ``MultiSyre``: one ``Syre`` per optimizer,
all with the same seed and configuration, so each parameter is decayed by the optimizer that
holds it, with that optimizer's lr, toward the anchor it would have under any other split
(anchors depend on seed and name only). Before anything changes it checks that the optimizers
cover the model exactly once: a parameter held by two of them is an error naming it, and so is a
trainable parameter held by none (``strict=True``). The first check is made again at the first step
after any optimizer's param groups changed (``add_param_group`` of a parameter another optimizer
holds is refused there, naming it, before anything changes). ``gamma=None`` is refused only when *no*
optimizer has a weight decay to take over (a no-decay AdamW beside a decayed Muon is normal).
Each optimizer's ``state_dict()`` carries its own part of the state, so a checkpoint of the pair
resumes bitwise.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from torch import nn

from ..config import Config
from ..rng.anchors import Anchor
from ..select import collect, unwrap_model
from ._groups import GROUP_KEY
from ._plan import UNHELD
from ._syre import Syre

__all__ = ["MultiSyre"]


class _Held:
    """Which optimizer holds each parameter, checked at attach and again at every step after any optimizer's
    param groups changed (``add_param_group``): a parameter held by two is an error naming it, before anything
    changes."""

    def __init__(self, optimizers, model):
        self.optimizers, self.model, self._key = optimizers, model, None

    def check(self, where: str = " at this step (an optimizer's param groups changed after attach: add_param_group?)"):
        """``{id(param): optimizer index}``; raises if a parameter is held twice."""
        holder: Dict[int, int] = {}
        for oi, o in enumerate(self.optimizers):
            for g in o.param_groups:
                for p in g["params"]:
                    if id(p) in holder and holder[id(p)] != oi:
                        infos = collect(self.model)
                        name = infos[id(p)].name if id(p) in infos else f"a tensor of shape {tuple(p.shape)}"
                        raise ValueError(
                            f"Parameter {name!r} is held by optimizers {holder[id(p)]} and {oi}{where}: it would be updated "
                            "and decayed twice per step; give each parameter to one optimizer"
                            + ("; nothing was changed" if where else "")
                        )
                    holder[id(p)] = oi
        return holder

    def at_step(self) -> None:
        """``check`` when any optimizer's groups changed since the last check (cheap otherwise)."""
        key = tuple((id(g), len(g["params"])) for o in self.optimizers for g in o.param_groups)
        if key != self._key:
            self.check()
            self._key = key


class MultiSyre:
    """The ``Syre`` objects of several optimizers over one model (see the module docstring)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer], model: nn.Module, **kwargs):
        optimizers = list(optimizers)
        config = Config.from_kwargs(kwargs)
        for i, o in enumerate(optimizers):
            if not isinstance(o, torch.optim.Optimizer):
                raise TypeError(f"Invalid optimizer: {type(optimizers).__name__} whose item {i} is a {type(o).__name__}; "
                                "expected a torch.optim.Optimizer or a list of them")
        if len({id(o) for o in optimizers}) != len(optimizers):
            raise ValueError("The same optimizer appears twice in the list; pass each optimizer once")
        if not optimizers:
            raise ValueError("Invalid optimizers: an empty list; pass at least one torch.optim.Optimizer")
        model = unwrap_model(model)
        infos = collect(model)
        holder = _Held(optimizers, model).check(where="")
        unheld = [i.name for pid, i in infos.items() if pid not in holder and i.param.requires_grad]
        if unheld and config.strict:
            shown = ", ".join(repr(n) for n in unheld[:8]) + (" ..." if len(unheld) > 8 else "")
            raise ValueError(
                f"{len(unheld)} trainable parameter(s) are held by none of the {len(optimizers)} optimizers: {shown}; "
                "add them to an optimizer, freeze them, or pass strict=False to leave them alone"
            )
        if config.gamma is None and not any(
            g.get(GROUP_KEY) is not None or float(g.get("weight_decay", 0) or 0) for o in optimizers for g in o.param_groups
        ):
            raise ValueError(
                f"gamma=None takes over the groups' weight_decay, but every param group of the {len(optimizers)} "
                "optimizers has weight_decay=0, so syre would decay nothing. Pass gamma=..., or set a weight_decay"
            )
        each = config.replace(strict=False).as_kwargs()
        self.syres: List[Syre] = []
        held = _Held(optimizers, model)
        try:
            for o in optimizers:
                self.syres.append(Syre(o, model, _check_idle=False, **each))
                self.syres[-1]._held = held
        except Exception:
            for s in self.syres:  # give back what the earlier ones took over: nothing stays half-attached
                s.remove()
            raise
        self.optimizers = optimizers

    def _owner(self, name: str):
        for s in self.syres:
            if any(r["name"] == name and r["reason"] != UNHELD for r in s.coverage()):
                return s
        raise KeyError(f"Unknown parameter name {name!r}; syre knows {self.names()[:10]}")

    def names(self) -> List[str]:
        return [n for s in self.syres for n in s.names()]

    def anchor(self, name: str) -> Anchor:
        return self._owner(name).anchor(name)

    def coverage(self) -> List[Dict[str, Any]]:
        """``Syre.coverage()`` rows of every optimizer, each with ``optimizer`` (its index); a parameter
        that no optimizer holds is listed once."""
        rows, held = [], set()
        for oi, s in enumerate(self.syres):
            for r in s.coverage():
                if r["reason"] != UNHELD:
                    rows.append(dict(r, optimizer=oi))
                    held.add(r["name"])
        unheld = {r["name"]: r for s in self.syres for r in s.coverage() if r["reason"] == UNHELD}
        rows += [dict(r, optimizer=None) for n, r in unheld.items() if n not in held]
        return rows

    def pull_ratios(self) -> Dict[str, float]:
        return {k: v for s in self.syres for k, v in s.pull_ratios().items()}

    def summary(self) -> str:
        parts = []
        for oi, (o, s) in enumerate(zip(self.optimizers, self.syres)):
            parts.append(f"[optimizer {oi}: {type(o).__name__}] " + s.summary())
        return "\n\n".join(parts)

    def state_dict(self) -> List[Dict[str, Any]]:
        return [s.state_dict() for s in self.syres]

    def check_state_dict(self, states) -> None:
        if not isinstance(states, list) or len(states) != len(self.syres):
            got = len(states) if isinstance(states, list) else type(states).__name__
            raise ValueError(f"Invalid syre state: it is for {got} optimizer(s), but this MultiSyre has {len(self.syres)}")
        for s, sd in zip(self.syres, states):
            s.check_state_dict(sd)

    def load_state_dict(self, states) -> None:
        self.check_state_dict(states)  # all checked before any is loaded
        for s, sd in zip(self.syres, states):
            s.load_state_dict(sd)

    def remove(self) -> None:
        for s in self.syres:
            s.remove()

    def __repr__(self) -> str:
        return f"MultiSyre({', '.join(type(o).__name__ for o in self.optimizers)}; {self.syres[0].config})"
