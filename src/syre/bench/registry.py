"""The experiment registry: ids, claims, default configurations and the trial functions.

An experiment is a module ``syre.bench.<id>`` holding ``EXPERIMENT = Experiment(...)``. The
registry imports it on first use, so ``syre bench list`` stays fast and an experiment's heavy
imports (datasets, scipy) happen only when it runs. ``register`` adds one defined elsewhere.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

__all__ = ["Experiment", "EXPERIMENT_MODULES", "register", "get_experiment", "experiment_ids"]

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
    "sigma-sweep": "syre.bench.sigma_sweep",
}

_LOADED: Dict[str, "Experiment"] = {}


@dataclass
class Experiment:
    """One reproduction: what the paper claims, how to run it, and its configuration.

    Attributes:
        id: short name (``"e1"``), the argument of ``syre bench run``.
        title: one line.
        claim: the paper's claim in one sentence (copied into ``summary.json``).
        run: ``run(ctx) -> dict`` trains every arm and seed through ``ctx`` (see
            ``syre.bench.runner.Context``) and returns the verdict: ``{"tests": [...],
            "supported": ..., "rule": "...", "notes": [...], "tables": [...]}``.
        defaults: the full-mode configuration; every key can be overridden with
            ``--set key=value``, and only these keys exist.
        quick: overrides applied by ``--quick`` (a smaller run for tests, at most about 60 s).
        seeds: default number of seeds (full mode); ``quick_seeds`` for ``--quick``.
    """

    id: str
    title: str
    claim: str
    run: Callable[[Any], Dict[str, Any]]
    defaults: Dict[str, Any] = field(default_factory=dict)
    quick: Dict[str, Any] = field(default_factory=dict)
    seeds: int = 5
    quick_seeds: int = 2

    def config(self, *, quick: bool = False, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """The configuration of a run: defaults, then the quick overrides, then ``overrides``."""
        cfg = dict(self.defaults)
        if quick:
            unknown = sorted(set(self.quick) - set(cfg))
            if unknown:  # a defect of the experiment's definition, not of the user's input
                raise ValueError(f"Experiment {self.id}: quick overrides {unknown} are not configuration keys")
            cfg.update(self.quick)
        for key, value in (overrides or {}).items():
            if key not in cfg:
                raise ValueError(
                    f"Invalid configuration key for {self.id}: {key!r}; valid keys are {sorted(cfg)}"
                )
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
    if isinstance(default, int) and not isinstance(default, bool):
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
