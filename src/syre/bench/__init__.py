"""The paper-reproduction benchmarks: pre-registered experiments, arms, tuning, a runner and reports.

``syre bench list`` lists the experiments; ``syre bench protocol ID`` prints one's pre-registered
rules and their hash; ``syre bench run ID`` runs it and writes a run directory (``protocol.json``,
``config.json``, ``command.txt``, ``environment.json``, ``metrics.jsonl``, ``summary.json``,
``results.md``, PNG plots). From Python::

    from syre.bench import run_experiment
    summary = run_experiment("e1", out="runs/e1")

Needs the ``bench`` extra (``pip install 'torch-syre[bench]'``: matplotlib, scipy, scikit-learn).
"""
from .arms import ARMS, GAMMA_CONVENTION, Arm, apply_arm
from .protocol import Cell, Design, Protocol, Test, Tuning, cell
from .registry import Experiment, experiment_ids, get_experiment, register
from .runner import build_protocol, run_experiment

__all__ = [
    "ARMS",
    "Arm",
    "Cell",
    "Design",
    "Experiment",
    "GAMMA_CONVENTION",
    "Protocol",
    "Test",
    "Tuning",
    "apply_arm",
    "build_protocol",
    "cell",
    "experiment_ids",
    "get_experiment",
    "register",
    "run_experiment",
]
