"""Pre-registration: each experiment's rules, declared in code before its runs, hashed, and kept.

A ``Protocol`` is everything a run is judged by, fixed before its first trial: the claim, the arms,
the cells (arm x setting) it trains, every test with its metric, direction and threshold and its
role, the tuning grid and rule, the selection seeds and the disjoint evaluation seeds, the number
of seeds with the power it gives (from a recorded pilot, ``syre.bench.power``), and the
configuration. ``declaration()`` is its canonical JSON form and ``hash()`` the SHA-256 of that
text (16 hex digits): a run whose code declares different rules gets a different hash.

Roles of a test:

* ``primary``: enters a verdict; every primary test is one whose outcome the data decide;
* ``secondary``: reported beside the verdict, never part of it;
* ``sanity``: holds by construction (its ``why`` says why); reported as a check that the
  experiment measures what it should; a failed sanity check voids the verdicts (null).

Families (one verdict each): ``shared`` (every arm at the experiment's shared gamma, the paper's
comparison), ``tuned`` (each arm at its own gamma and sigma0, chosen on the selection seeds),
``heldout`` (the library's default sigma0 judged on seeds that played no part in choosing it).

The ledger (``benchmarks/protocols.json``, ``syre.bench.ledger``) keeps each registered version's hash, declaration
and runs (every attempt: revision, anchor format, start, end, outcome).
A full run registers its protocol before training; a version already registered with different
rules is refused: changing a rule after a run means a new version (``VERSION`` and ``CHANGES``
of the experiment's module), reported as such.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .arms import Arm
from .ledger import read_ledger, register  # noqa: F401  (the ledger's names, kept importable from here)

__all__ = ["Cell", "Test", "Tuning", "Design", "Protocol", "SEED_BASE", "cell", "point_key", "seeds_for",
           "register", "read_ledger", "canonical", "Rejudge", "apply"]

ROLES = ("primary", "secondary", "sanity")
FAMILIES = ("shared", "tuned", "heldout")
#: First seed of each use; the ranges never overlap (at most 100 seeds each). ``sweep``: the sigma0
#: sweep, the study the library default was chosen by (seeds 0-99, also used by earlier versions).
SEED_BASE = {"sweep": 0, "evaluation": 100, "selection": 500, "pilot": 900}


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def point_key(arm: str, point: Optional[Dict[str, Any]] = None) -> str:
    """The key of an arm at a setting in ``summary.json``: ``"syre"`` or ``"syre[gamma=0.1]"``."""
    if not point:
        return arm
    return f"{arm}[{','.join(f'{k}={_fmt(v)}' for k, v in point.items())}]"


@dataclass(frozen=True)
class Cell:
    """One arm at one setting (``point``: configuration keys set for this cell, e.g. gamma, dataset)."""

    arm: str
    point: Tuple[Tuple[str, Any], ...] = ()

    @property
    def where(self) -> Dict[str, Any]:
        return dict(self.point)

    @property
    def key(self) -> str:
        return point_key(self.arm, self.where)


def cell(arm: str, **point: Any) -> Cell:
    return Cell(arm, tuple(point.items()))


@dataclass(frozen=True)
class Test:
    """A decision rule on per-seed numbers.

    ``x[s] = a[s] - ratio * b[s]`` (or ``a[s]`` without ``b``), paired by seed, ``a`` and ``b`` the
    values of ``metric`` (``metric_b`` for ``b``) in cells ``a`` and ``b``. ``kind="t"``: one-sided
    one-sample t-test (scipy), H1 ``mean(x) > threshold`` (``direction="greater"``) or
    ``< threshold``, passed when p < alpha. ``kind="bound"``: every seed's ``x`` is at least
    (``greater``) or at most (``less``) the threshold.
    """

    __test__ = False  # not a pytest class

    name: str
    metric: str
    a: Cell
    b: Optional[Cell] = None
    metric_b: Optional[str] = None
    kind: str = "t"
    direction: str = "greater"
    threshold: float = 0.0
    ratio: float = 1.0
    role: str = "primary"
    family: str = "shared"
    why: str = ""
    #: What ``report()`` looks the test up by (``ctx.result(key)``), declared with it so that a renamed test cannot be
    #: missed; not part of the rules (left out of the declaration and the hash).
    key: str = field(default="", compare=False)

    def __post_init__(self):
        if self.kind not in ("t", "bound"):
            raise ValueError(f"Invalid test kind: {self.kind!r}; expected 't' or 'bound'")
        if self.direction not in ("greater", "less"):
            raise ValueError(f"Invalid test direction: {self.direction!r}; expected 'greater' or 'less'")
        if self.role not in ROLES or self.family not in FAMILIES:
            raise ValueError(f"Invalid test role/family: {self.role!r}/{self.family!r}; expected {ROLES} / {FAMILIES}")
        if self.role == "sanity" and not self.why:
            raise ValueError(f"Test {self.name!r}: a sanity check must say why it holds by construction")

    def rule(self, alpha: float) -> str:
        x = f"{self.metric}[{self.a.key}]"
        if self.b is not None:
            r = "" if self.ratio == 1.0 else f"{self.ratio:g} x "
            x += f" - {r}{self.metric_b or self.metric}[{self.b.key}]"
        op = ">" if self.direction == "greater" else "<"
        if self.kind == "bound":
            return f"{x} {'>=' if self.direction == 'greater' else '<='} {self.threshold:g} in every seed"
        return f"one-sided t-test over seeds, H1: mean({x}) {op} {self.threshold:g}, passed when p < {alpha:g}"

    def declaration(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("key")
        d["a"], d["b"] = self.a.key, (self.b.key if self.b else None)
        return d


@dataclass(frozen=True)
class Tuning:
    """Each arm of ``arms`` gets its gamma (and, for syre arms, sigma0) from the same grid and rule.

    On the selection seeds, every grid point of every arm is trained in each context (``contexts``:
    settings tuned apart, e.g. per dataset), scored by ``metric`` on a validation split, and the
    point with the best mean wins (``better``: ``"max"`` or ``"min"``; ties go to the first point
    in grid order). ``also``: ``(arm, source)`` pairs: ``arm`` at the gamma chosen for ``source``
    (cell ``<arm>@<source>-gamma``), its sigma0 unchanged.
    """

    metric: str
    better: str
    arms: Tuple[str, ...]
    gammas: Tuple[float, ...]
    sigma0s: Tuple[Any, ...]
    contexts: Tuple[Tuple[Tuple[str, Any], ...], ...] = ((),)
    also: Tuple[Tuple[str, str], ...] = ()

    RULE = ("every grid point (gamma, and sigma0 for syre arms) of every tuned arm is trained on the selection seeds in each "
            "context and scored on a validation split of the training pool; the point with the best mean score wins (ties: "
            "the first in grid order); the chosen points are then trained on the evaluation seeds")

    def __post_init__(self):
        if self.better not in ("max", "min"):
            raise ValueError(f"Invalid tuning better: {self.better!r}; expected 'max' or 'min'")
        if not self.gammas or any(not (isinstance(g, (int, float)) and g > 0) for g in self.gammas):
            raise ValueError(f"Invalid tuning gammas: {self.gammas!r}; expected numbers > 0")

    def grid(self, arm: Arm) -> List[Tuple[Optional[float], Any]]:
        if arm.decay == "none":
            return [(None, None)]
        sig = list(self.sigma0s) if arm.decay == "syre" else [None]
        return [(float(g), s) for g in self.gammas for s in sig]

    def declaration(self) -> Dict[str, Any]:
        d = asdict(self)
        d["contexts"] = [dict(c) for c in self.contexts]
        d["rule"] = self.RULE
        return d


@dataclass
class Design:
    """What an experiment's ``design(cfg)`` returns: the arms, cells, tests and tuning of a run."""

    arms: List[Arm]
    cells: List[Cell]
    tests: List[Test]
    tuning: Optional[Tuning] = None
    notes: List[str] = field(default_factory=list)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(name)


def seeds_for(use: str, n: int) -> List[int]:
    """``n`` seeds of the range of ``use`` (``"evaluation"``, ``"selection"``, ``"pilot"``, ``"sweep"``)."""
    if not 0 <= n <= 100:
        raise ValueError(f"Invalid number of {use} seeds: {n!r}; expected 0 to 100")
    return list(range(SEED_BASE[use], SEED_BASE[use] + n))


def canonical(obj: Any) -> Any:
    """A JSON-stable copy of ``obj`` (tuples as lists, floats as repr-exact JSON numbers)."""
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


@dataclass
class Protocol:
    """A registered-to-be declaration (see the module docstring)."""

    experiment: str
    version: int
    changes: str
    claim: str
    design: Design
    evaluation_seeds: List[int]
    selection_seeds: List[int]
    power: Dict[str, Any]
    config: Dict[str, Any]
    alpha: float = 0.05

    def __post_init__(self):
        overlap = set(self.evaluation_seeds) & set(self.selection_seeds)
        if overlap:
            raise ValueError(f"Invalid seeds: selection and evaluation seeds overlap in {sorted(overlap)}")
        for what in ("name", "key"):
            vals = [getattr(t, what) for t in self.design.tests if getattr(t, what)]
            dup = sorted({n for n in vals if vals.count(n) > 1})
            if dup:
                raise ValueError(f"Experiment {self.experiment}: test {what}s must be unique, repeated: {dup}")

    def declaration(self) -> Dict[str, Any]:
        d = self.design
        return canonical({
            "experiment": self.experiment,
            "version": self.version,
            "changes": self.changes,
            "claim": self.claim,
            "arms": [a.declaration() for a in d.arms],
            "cells": [c.key for c in d.cells],
            "tests": [t.declaration() for t in d.tests],
            "tuning": d.tuning.declaration() if d.tuning else None,
            "evaluation_seeds": self.evaluation_seeds,
            "selection_seeds": self.selection_seeds,
            "power": self.power,
            "alpha": self.alpha,
            "verdict_rule": "per family (shared, tuned, heldout): supported when every primary test passes, not supported when "
                            "one fails, undecided when one cannot decide; a failed sanity check makes every verdict undecided",
            "config": self.config,
        })

    def hash(self) -> str:
        return digest(self.declaration())


def digest(declaration: Dict[str, Any]) -> str:
    text = json.dumps(canonical(declaration), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_disjoint(selection: Sequence[int], evaluation: Sequence[int]) -> None:
    if set(selection) & set(evaluation):
        raise ValueError(f"Invalid seeds: selection {list(selection)} and evaluation {list(evaluation)} overlap")


# ----------------------------------------------------------------------------- re-judged versions
@dataclass(frozen=True)
class Rejudge:
    """``version`` re-decides the trials of ``source`` (whose claim and changes were ``source_claim`` and
    ``source_changes``); ``role(test, cfg)`` gives ``(role, why)`` for a test whose role changes, else None."""

    version: int
    source: int
    source_claim: str
    source_changes: str
    role: Optional[Callable[[Any, Dict[str, Any]], Optional[Tuple[str, str]]]] = None


def apply(design, r: Rejudge, cfg: Dict[str, Any]):
    """``design`` with the roles ``r`` gives its tests."""
    if r.role is None:
        return design
    tests = []
    for t in design.tests:
        new = r.role(t, cfg)
        tests.append(t if new is None else replace(t, role=new[0], why=new[1] or t.why))
    return replace(design, tests=tests)
