"""What a run's phases and an experiment's ``report`` see (``Context``): the protocol, the records, the plots, the progress,
and the pool of worker processes trials run in."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from . import fmt
from .protocol import Cell, Protocol, canonical
from .registry import Experiment
from .runenv import json_safe

__all__ = ["Context", "Progress", "pyplot"]


class Progress:
    """One line per update on stderr: done/total, elapsed, remaining."""

    def __init__(self, prefix: str, total: int, enabled: bool = True):
        self.prefix, self.total, self.done, self.t0, self.enabled = prefix, max(int(total), 1), 0, time.perf_counter(), enabled

    def step(self, what: str = "") -> None:
        self.done += 1
        if self.enabled:
            el = time.perf_counter() - self.t0
            eta = el / self.done * (self.total - self.done)
            print(f"[{self.prefix}] {self.done}/{self.total} {what}  elapsed {el:6.1f}s  eta {eta:6.1f}s", file=sys.stderr, flush=True)


class Context:
    """What a run's phases and the experiment's ``report`` see: the protocol, records, plots, progress."""

    def __init__(self, exp: Experiment, protocol: Protocol, quick: bool, out: Path, verbose: bool = True, jobs: int = 1):
        self.exp, self.protocol, self.quick, self.out, self.verbose = exp, protocol, quick, out, verbose
        self.jobs = int(jobs)
        self._pool = None
        self.config = dict(protocol.config)
        self.records: List[Dict[str, Any]] = []
        self.selection_records: List[Dict[str, Any]] = []
        self.plots: List[str] = []
        self.tests: List[Dict[str, Any]] = []
        self.arms: Dict[str, Any] = {}
        self._progress = Progress(exp.id, 1, enabled=verbose)
        self._metrics = open(out / "metrics.jsonl", "w")

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{self.exp.id}] {msg}", file=sys.stderr, flush=True)

    def run_trial(self, arm, seed: int, where: Dict[str, Any], *, phase: str = "evaluate", point=None) -> Dict[str, Any]:
        """Run the experiment's trial for ``arm`` at setting ``where`` and seed; record it."""
        return self.run_many([(arm, seed, where)], phase=phase, point=point)[0]

    def run_many(self, trials: Sequence[tuple], *, phase: str = "evaluate", point=None) -> List[Dict[str, Any]]:
        """Run ``(arm, seed, where)`` trials and record them in the given order; return the records.

        With ``jobs > 1`` they run in a pool of worker processes (one torch thread each); each trial
        seeds its own randomness, so the records are the same as a sequential run's. Trials whose arm
        differs only by its name and label (a chosen arm and the candidate it is) run once.
        """
        keys, unique = [], {}
        for arm, seed, where in trials:
            k = _trial_key(arm, seed, where)
            keys.append(k)
            unique.setdefault(k, (arm, seed, where))
        todo = list(unique.items())
        work = [(self.exp.trial, {**self.config, **where}, arm, seed) for _, (arm, seed, where) in todo]
        if self.jobs > 1 and len(work) > 1:
            if self._pool is None:
                self._pool = _pool(self.jobs)
            results = self._pool.map(_work, work)
        else:
            results = map(_work, work)
        done: Dict[str, Dict[str, Any]] = {}
        out: List[Dict[str, Any]] = []
        for (k, _), metrics in zip(todo, results):  # in order, as they finish
            done[k] = metrics
            while len(out) < len(trials) and keys[len(out)] in done:
                arm, seed, where = trials[len(out)]
                out.append(self._record(arm, seed, where, dict(done[keys[len(out)]]), phase, point))
        return out

    def _record(self, arm, seed, where, metrics, phase, point):
        point = {k: v for k, v in where.items() if k != "eval_split"} if point is None else point
        rec = json_safe({"phase": phase, "arm": arm.name, "seed": int(seed), "point": dict(point), **metrics})
        (self.records if phase == "evaluate" else self.selection_records).append(rec)
        self._metrics.write(json.dumps(rec) + "\n")
        self._metrics.flush()
        self._progress.step(f"{phase} {fmt.md_cell(Cell(arm.name, tuple(point.items())).key)} seed {seed}")
        return rec

    def rows(self, c: Cell) -> List[Dict[str, Any]]:
        want = json_safe(c.where)
        return sorted((r for r in self.records if r["arm"] == c.arm and r["point"] == want), key=lambda r: r["seed"])

    def values(self, c: Union[Cell, str], metric: str, **point) -> List[float]:
        """Per-seed values of ``metric`` in cell ``c`` (a Cell, or an arm name and ``point`` keywords), in seed order."""
        c = c if isinstance(c, Cell) else Cell(c, tuple(point.items()))
        return [float(r[metric]) for r in self.rows(c) if r.get(metric) is not None]

    def declared(self, name: str) -> bool:
        """Whether the run's design declared a test with this key or name (a configuration can leave tests out)."""
        return any(name in (t.get("key"), t["name"]) for t in self.tests)

    def result(self, name: str) -> Dict[str, Any]:
        """The evaluated test whose key (``Test.key``, declared by ``design()``) or name is ``name``."""
        for t in self.tests:
            if t.get("key") == name:
                return t
        for t in self.tests:
            if t["name"] == name:
                return t
        raise KeyError(f"{self.exp.id}: no test {name!r} declared")

    def subplots(self, *args, **kwargs):
        return pyplot().subplots(*args, **kwargs)

    def save(self, fig, name: str) -> str:
        path = self.out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        pyplot().close(fig)
        self.plots.append(path.name)
        return path.name

    def close(self) -> None:
        self._metrics.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _trial_key(arm, seed: int, where: Dict[str, Any]) -> str:
    d = {k: v for k, v in arm.declaration().items() if k not in ("name", "label")}
    return json.dumps(canonical(json_safe({"arm": d, "seed": int(seed), "where": where})), sort_keys=True)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _pool(jobs: int):
    import concurrent.futures
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return concurrent.futures.ProcessPoolExecutor(max_workers=int(jobs), mp_context=multiprocessing.get_context(method),
                                                  initializer=_init_worker)


def _work(job) -> Dict[str, Any]:
    trial, cfg, arm, seed = job
    t0 = time.perf_counter()
    metrics = trial(cfg, arm, seed)
    metrics.setdefault("time_s", time.perf_counter() - t0)
    return metrics


def pyplot():
    """matplotlib.pyplot with the Agg backend (imported lazily)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("the benchmark plots need matplotlib: pip install 'torch-syre[bench]'") from exc
    return plt
