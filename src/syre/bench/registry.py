"""The experiment registry: ids, claims, configurations, trial functions and pre-registered designs.

An experiment is a module ``syre.bench.<id>`` holding ``EXPERIMENT = Experiment(...)``. Every
experiment has the same trial contract::

    trial(cfg: dict, arm: syre.bench.arms.Arm, seed: int) -> dict of metrics

where ``cfg`` is the run's configuration with the cell's setting merged in (``gamma``,
``dataset``, ...; ``eval_split`` is ``"val"`` during tuning) and the arm carries its own gamma
and sigma0 when it was tuned. So tuning, the sigma0 sweep and the held-out check call any
experiment's trial the same way. ``design(cfg) -> protocol.Design`` declares the arms, the cells,
the tests and the tuning before anything runs. The registry imports a module on first use, so
``syre bench list`` stays fast.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

__all__ = ["Experiment", "EXPERIMENT_MODULES", "register", "get_experiment", "experiment_ids", "coerce"]

#: id -> module holding ``EXPERIMENT``; the order is the order of ``syre bench list``.
EXPERIMENT_MODULES: Dict[str, str] = {
    "e0": "syre.bench.e0",
    "e1": "syre.bench.e1",
    "e2": "syre.bench.e2",
    "e3": "syre.bench.e3",
    "e4": "syre.bench.e4",
    "e5": "syre.bench.e5",
    "e6": "syre.bench.e6",
    "e7": "syre.bench.e7",
    "e8": "syre.bench.e8",
    "e9": "syre.bench.e9",
    "e10": "syre.bench.e10",
    "e11": "syre.bench.e11",
    "e12": "syre.bench.e12",
    "e12-power": "syre.bench.e12_power",
    "e13": "syre.bench.e13",
    "e14": "syre.bench.e14",
    "sigma-sweep": "syre.bench.sigma_sweep",
    "default-scale": "syre.bench.default_scale_report",
}

_LOADED: Dict[str, "Experiment"] = {}


@dataclass
class Experiment:
    """One reproduction: what the paper claims, how one trial runs, and the pre-registered design.

    Attributes:
        id, title, claim: the name (``syre bench run ID``), one line, and the claim tested.
        trial: ``trial(cfg, arm, seed) -> metrics`` (the contract above).
        design: ``design(cfg) -> Design``: arms, cells, tests (with roles and families), tuning.
        report: ``report(ctx) -> {"tables": [...], "findings": {...}, "notes": [...]}`` after the
            tests (plots through ``ctx.save``); optional.
        defaults / quick: the full configuration and the overrides of ``--quick`` (under a minute).
        version / changes: the protocol version and what changed from the previous one.
        perf / better / rank: the experiment's performance metric, ``"max"`` or ``"min"``, and its
            rank metric (read by the sigma0 sweep and the held-out check).
        n_min / n_max: the range the power rule chooses the evaluation seeds from; ``selection``:
            the number of selection seeds (when the design tunes); ``quick_seeds``.
        heldout: True when the library default sigma0 is judged on this experiment's evaluation
            seeds (its design then declares ``heldout`` tests).
        seed_range: the range its evaluation seeds come from (``protocol.SEED_BASE``).
        select: ``select(ctx) -> (selection, resolved)``: the experiment's own selection phase on its
            selection seeds (instead of ``protocol.Tuning``); ``resolved`` maps cell keys to the arms
            chosen for them. Its rule is part of the declared configuration.
        plan: ``plan(pilot, design, exp, quick) -> power statement`` (with ``"n"``): the experiment's own
            power rule (instead of ``power.plan`` over the primary shared tests).
        pilot: ``pilot(exp, n, verbose, jobs) -> record``: the experiment's own pilot (``syre bench pilot``).
        rejudge: a ``syre.bench.rejudge.Rejudge``: ``version`` decides the trials of an earlier version again (new
            roles or claim, no retraining); the earlier version's declaration stays buildable (``build_protocol``).
    """

    id: str
    title: str
    claim: str
    trial: Callable[..., Dict[str, Any]]
    design: Callable[[Dict[str, Any]], Any]
    defaults: Dict[str, Any] = field(default_factory=dict)
    quick: Dict[str, Any] = field(default_factory=dict)
    report: Optional[Callable[[Any], Dict[str, Any]]] = None
    version: int = 1
    changes: str = "first pre-registered version"
    perf: Optional[str] = None
    better: str = "max"
    rank: Optional[str] = None
    n_min: int = 5
    n_max: int = 10
    selection: int = 2
    quick_seeds: int = 2
    heldout: bool = False
    seed_range: str = "evaluation"
    select: Optional[Callable[[Any], Any]] = None
    plan: Optional[Callable[..., Dict[str, Any]]] = None
    pilot: Optional[Callable[..., Dict[str, Any]]] = None
    rejudge: Optional[Any] = None

    def config(self, *, quick: bool = False, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The configuration of a run: defaults, then the quick overrides, then ``overrides``."""
        cfg = dict(self.defaults)
        cfg.setdefault("eval_split", "test")
        if quick:
            unknown = sorted(set(self.quick) - set(cfg))
            if unknown:  # a defect of the experiment's definition, not of the user's input
                raise ValueError(f"Experiment {self.id}: quick overrides {unknown} are not configuration keys")
            cfg.update(self.quick)
        for key, value in (overrides or {}).items():
            if key not in cfg:
                raise ValueError(f"Invalid configuration key for {self.id}: {key!r}; valid keys are {sorted(cfg)}")
            cfg[key] = coerce(key, value, cfg[key])
        return cfg


def coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default`` where that is lossless; else a ValueError."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ValueError(f"Invalid value for {key}: {value!r}; expected true or false")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"Invalid value for {key}: {value!r}; expected an int")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"Invalid value for {key}: {value!r}; expected a number")
    if isinstance(default, (list, tuple)):
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ValueError(f"Invalid value for {key}: {value!r}; expected a list, e.g. {key}=[1,2,3]")
    if isinstance(default, str):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return value  # string knobs such as sigma0 also take numbers (absolute values)
        raise ValueError(f"Invalid value for {key}: {value!r}; expected a string or a number")
    return value


def experiment_ids() -> List[str]:
    """The registered ids, in listing order."""
    return list(EXPERIMENT_MODULES) + [k for k in _LOADED if k not in EXPERIMENT_MODULES]


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry (an id already taken is an error)."""
    if not isinstance(experiment, Experiment):
        raise TypeError(f"Invalid experiment: {type(experiment).__name__}; expected a syre.bench.Experiment")
    if experiment.id in _LOADED or experiment.id in EXPERIMENT_MODULES:
        raise ValueError(f"Invalid experiment id: {experiment.id!r} is already registered")
    _LOADED[experiment.id] = experiment
    return experiment


def get_experiment(exp_id: str) -> Experiment:
    """The experiment ``exp_id``; a ValueError lists the valid ids."""
    if exp_id in _LOADED:
        return _LOADED[exp_id]
    if exp_id not in EXPERIMENT_MODULES:
        raise ValueError(f"Invalid experiment id: {exp_id!r}; expected one of {experiment_ids()}")
    mod = importlib.import_module(EXPERIMENT_MODULES[exp_id])
    exp = getattr(mod, "EXPERIMENT")
    if exp.id != exp_id:
        raise ValueError(f"Module {EXPERIMENT_MODULES[exp_id]} defines experiment {exp.id!r}, expected {exp_id!r}")
    _LOADED[exp_id] = exp
    return exp
