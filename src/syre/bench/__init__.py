"""The paper-reproduction benchmarks: a registry of experiments, arms, a runner and reports.

``syre bench list`` lists the experiments; ``syre bench run ID`` runs one and writes a run
directory (``config.json``, ``command.txt``, ``environment.json``, ``metrics.jsonl``,
``summary.json``, ``results.md``, PNG plots). From Python::

    from syre.bench import run_experiment
    summary = run_experiment("e1", seeds=5, out="runs/e1")

Needs the ``bench`` extra (``pip install 'torch-syre[bench]'``: matplotlib, scipy, scikit-learn).
"""
from .arms import ARMS, GAMMA_CONVENTION, Arm, apply_arm
from .registry import Experiment, experiment_ids, get_experiment, register
from .runner import run_experiment

__all__ = [
    "ARMS",
    "Arm",
    "Experiment",
    "GAMMA_CONVENTION",
    "apply_arm",
    "experiment_ids",
    "get_experiment",
    "register",
    "run_experiment",
]
