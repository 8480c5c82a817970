"""One quick run per experiment and test session (``syre bench run ID --quick``), shared by the parametrized
quick-run tests (tests/bench/test_quick_runs.py) and the study files that read their records."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from syre.data import DataNotFoundError, fashion_mnist_dirs

#: Experiments whose data is Fashion-MNIST: skipped at once where its files are not installed (another experiment
#: whose data is missing is skipped when its loader says so).
NEEDS_FASHION = {"e2", "e6", "e7", "e8", "e11", "e13"}

_RUNS: Dict[str, Tuple[str, Path, Dict[str, Any]]] = {}


def have_fashion() -> bool:
    return any((d / "train-images-idx3-ubyte.gz").is_file() or (d / "train-images-idx3-ubyte").is_file()
               for d in fashion_mnist_dirs())


def overrides(exp_id: str) -> Dict[str, Any]:
    """The quick run's overrides where its quick configuration is still too large for a test (the studies)."""
    if exp_id == "sigma-sweep":
        return {
            "settings": {"e1": {"steps": 100, "n_train": 64, "n_test": 128},
                         "e5": {"dataset": "digits", "epochs": {"fashion": 1, "digits": 1}, "width": 32, "n_rank": 100}},
            "n_train": 300, "n_test": 200, "n_rank": 100, "trap_steps": 100,
        }
    if exp_id == "default-scale":
        return {"settings": default_scale_settings()}
    return {}


def default_scale_settings(*names: str) -> Dict[str, Any]:
    """The default study's quick settings (those named, or all), without GPT-2 where transformers is missing."""
    from syre.bench import get_experiment
    from syre.bench.gpt2lm import available

    s = get_experiment("default-scale").config(quick=True)["settings"]
    keep = [n for n in (names or s) if n != "gpt2" or available()]
    return {n: s[n] for n in keep}


def quick_run(exp_id: str, tmp_path_factory) -> Tuple[str, Path, Dict[str, Any]]:
    """``(exp_id, run directory, summary)`` of the experiment's quick run, run on first use."""
    if exp_id in NEEDS_FASHION and not have_fashion():
        pytest.skip("Fashion-MNIST files not installed")
    if exp_id not in _RUNS:
        from syre.bench import run_experiment

        out = tmp_path_factory.mktemp(exp_id)
        try:
            summary = run_experiment(exp_id, quick=True, out=out, verbose=False, overrides=overrides(exp_id) or None)
        except DataNotFoundError as exc:
            pytest.skip(f"{exp_id}: {exc}")
        _RUNS[exp_id] = (exp_id, out, summary)
    return _RUNS[exp_id]


def records(out: Path) -> List[Dict[str, Any]]:
    """The run's ``metrics.jsonl``, one dict a line."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
