"""The design the gamma sweeps share (E10, E11, E12): arms at every gamma of a grid, the extra arms at the collapsing gamma
and at the typical one, each arm tuned on the selection seeds, and the tuned and held-out tests.

``Sweep(cfg, ...)`` reads the configuration keys these experiments have in common (``gamma``, ``gamma_typical``,
``gammas``, ``arms``, ``arms_gmax``, ``arms_typical``, ``tune_arms``, ``tune_gammas``, ``tune_sigma0s``) and gives the
cells (``at(arm)``: at the collapsing gamma, ``ty(arm)``: at the typical one, ``tc(arm)``: tuned), the tuning and the
tests every sweep declares; the experiment adds its own tests and notes and calls ``design()``. Tests carry keys
(``Test.key``) that the experiment's ``report()`` reads.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from . import heldout
from .arms import Arm, arms as get_arms
from .common import tuned_cells
from .protocol import Cell, Design, Test, Tuning, cell

__all__ = ["Sweep"]


class Sweep:
    """One gamma sweep's arms, cells and tuning (see the module docstring).

    ``metric``/``better``: the tuning's metric and direction; ``arm_list``: the arms (default: ``none``, ``arms``, then
    the extra arms); ``required``: further gammas the grid must hold (named for the error message).
    """

    def __init__(self, cfg: Dict[str, Any], *, metric: str, better: str, arm_list: Optional[List[Arm]] = None,
                 required: Optional[Dict[str, Sequence[float]]] = None):
        self.cfg = cfg
        self.gammas = [float(x) for x in cfg["gammas"]]
        self.g, self.gt = float(cfg["gamma"]), float(cfg["gamma_typical"])
        need = {"gamma": [self.g], "gamma_typical": [self.gt], **{k: [float(x) for x in v] for k, v in (required or {}).items()}}
        if not self.gammas or any(x <= 0 for x in self.gammas) or any(x not in self.gammas for v in need.values() for x in v):
            said = " and ".join(f"{k} = {v[0]:g}" if len(v) == 1 else f"{k} = {v!r}" for k, v in need.items())
            raise ValueError(f"Invalid gammas: {self.gammas!r}; expected values > 0 that include {said}")
        self.typical = list(cfg.get("arms_typical", []))
        extra = [a for a in list(cfg["arms_gmax"]) + self.typical if a not in cfg["arms"]]
        self.arms = arm_list if arm_list is not None else get_arms(["none"] + list(cfg["arms"]) + extra)
        self.names = [a.name for a in self.arms]
        tune = list(cfg["tune_arms"])
        self.tuning = Tuning(metric=metric, better=better, arms=tuple(a for a in tune if a in self.names),
                             gammas=tuple(cfg["tune_gammas"]), sigma0s=tuple(cfg["tune_sigma0s"]),
                             also=(("syre", "wd"),) if {"syre", "wd"} <= set(tune) else ())
        self.none = cell("none")
        self.at: Callable[[str], Cell] = lambda a: cell(a, gamma=self.g)
        self.ty: Callable[[str], Cell] = lambda a: cell(a, gamma=self.gt)
        self.tc: Callable[[str], Cell] = lambda a: cell(f"{a}@tuned")

    def cells(self) -> List[Cell]:
        """No decay, every arm of ``arms`` at every gamma, the extra arms at the collapsing and at the typical gamma."""
        out = [self.none] + [cell(a, gamma=x) for x in self.gammas for a in self.cfg["arms"]]
        out += [self.at(a) for a in self.cfg["arms_gmax"] if self.at(a) not in out]
        return out + [self.ty(a) for a in self.typical if self.ty(a) not in out]

    def tuned_tests(self, what: str, metric: str, direction: str = "greater") -> List[Test]:
        """Tuned syre against every other tuned arm (primary against weight decay) and against no decay."""
        if "syre" not in self.tuning.arms:
            return []
        word = "above" if direction == "greater" else "below"
        out = [Test(f"tuned: syre's {what} {word} {ref}'s", metric, self.tc("syre"), self.tc(ref), direction=direction, family="tuned",
                    role="primary" if ref == "wd" else "secondary", key=f"tuned.{ref}")
               for ref in self.tuning.arms if ref != "syre"]
        return out + [Test(f"tuned: syre's {what} {word} no decay's", metric, self.tc("syre"), self.none, direction=direction,
                           family="tuned", key="tuned.none")]

    def heldout_tests(self, label: str, *, perf: str, rank: str, better: str, scale_arms: Sequence[str]) -> List[Test]:
        return heldout.tests(label, self.at, lambda n: cell(n), perf=perf, rank=rank, better=better,
                             margin=self.cfg["noninferior_margin"], tuned_arms=self.tuning.arms, scale_arms=scale_arms)

    def design(self, tests: List[Test], notes: List[str]) -> Design:
        return Design(arms=self.arms, cells=self.cells() + tuned_cells(self.tuning), tests=tests, tuning=self.tuning, notes=notes)
