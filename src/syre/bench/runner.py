"""Running an experiment: build and register its protocol, tune, evaluate, decide, write the run directory.

A run directory holds ``protocol.json`` (the declaration, written before any trial), ``config.json``,
``command.txt``, ``environment.json``, ``metrics.jsonl`` (one JSON object per trial: ``phase``
``select`` or ``evaluate``, ``arm``, ``seed``, ``point`` and the metrics), ``summary.json``,
``results.md`` and the PNG plots.

``summary.json``: ``experiment``, ``title``, ``claim``, ``protocol`` (version, hash, whether it was
registered in a ledger, the power statement, the full declaration), ``seeds`` (``selection``,
``evaluation``), ``supported`` (shared gamma), ``supported_tuned``, ``default_survives`` (held-out
experiments), ``sanity_ok``, ``tests``, ``selection`` (the tuning grid scores and choices),
``sigma0`` (the library default and each arm's spec), ``arms`` (cell key -> metric -> {mean, std,
n}), ``findings``, ``notes``, ``config``, ``wall_time_s``, ``command``, ``environment``, ``plots``.
"""
from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import syre

from . import fmt, stats, tuning
from .arms import GAMMA_CONVENTION, resolve_arm_sigma0, sigma0_label
from .power import plan
from . import ledger as ledger_
from .protocol import Cell, Protocol, canonical, register, seeds_for
from .registry import Experiment, get_experiment

__all__ = ["Context", "run_experiment", "build_protocol", "environment", "json_safe"]


def json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item") and callable(x.item):
        try:
            return json_safe(x.item())
        except (ValueError, RuntimeError):
            pass
    return x if isinstance(x, (str, int, bool)) or x is None else str(x)


def environment() -> Dict[str, Any]:
    """The git revision, library versions and machine of this run."""
    import numpy
    import torch

    env: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                           "syre": syre.__version__, "platform": platform.platform(),
                           "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                           "torch_threads": torch.get_num_threads()}
    for mod in ("scipy", "matplotlib", "sklearn"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        # dirty: uncommitted changes outside benchmarks/ (the results and the ledger are what runs write)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)benchmarks"],
                               cwd=here, capture_output=True, text=True, timeout=10)
        env["git_revision"] = rev.stdout.strip() or None
        env["git_dirty"] = bool(dirty.stdout.strip()) if rev.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        env["git_revision"], env["git_dirty"] = None, None
    return env


def build_protocol(exp: Experiment, cfg: Dict[str, Any], *, quick: bool = False, seeds: Optional[int] = None,
                   pilot: Optional[Dict[str, Any]] = None, version: Optional[int] = None) -> Protocol:
    """The protocol of a run of ``exp`` under ``cfg``: design, seeds (from the power rule), declaration.

    ``version``: an earlier version the code still declares (the source of a re-judged version,
    ``Experiment.rejudge``); default the current one. A re-judged version has its source's seeds.
    """
    r = exp.rejudge
    version = exp.version if version is None else version
    if version != exp.version and (r is None or version != r.source):
        raise ValueError(f"Invalid version for {exp.id}: {version!r}; the code declares {exp.version}"
                         + (f" and {r.source}" if r is not None else ""))
    design = exp.design(cfg)
    claim, changes = exp.claim, exp.changes
    if r is not None:
        if version == exp.version:
            from .rejudge import apply

            design = apply(design, r, cfg)
        else:
            claim, changes = r.source_claim, r.source_changes
    primary = [t for t in design.tests if t.role == "primary" and t.family == "shared"]
    if pilot is None and not quick:
        from . import pilots

        pilot = pilots.load().get(exp.id)
    fixed_n = None
    if r is not None and version == exp.version and seeds is None and not quick:  # the trials it decides: the source's seeds
        fixed_n = len(build_protocol(exp, cfg, pilot=pilot, version=r.source).evaluation_seeds)
    if exp.plan is not None:
        power = exp.plan(None if quick else pilot, design, exp, quick)
    else:
        power = plan(None if quick else pilot, primary, n_min=fixed_n or exp.n_min, n_max=fixed_n or exp.n_max)
    n = exp.quick_seeds if quick else power["n"]
    if fixed_n is not None and n != fixed_n:
        raise ValueError(f"Invalid re-judged version of {exp.id}: its power rule gives n = {n}, its source ran n = {fixed_n}")
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"Invalid seeds: {seeds!r}; expected a positive int (the number of evaluation seeds)")
        n = seeds
        power = {**power, "n": n, "statement": f"n = {n} evaluation seeds set by the command line (the power rule gives "
                 f"{power['n']})"}
    if quick:
        power["statement"] = f"quick run: n = {n}, power not estimated"
    n_sel = (1 if quick else exp.selection) if design.tuning else (exp.selection if exp.select is not None else 0)
    return Protocol(experiment=exp.id, version=version, changes=changes, claim=claim, design=design,
                    evaluation_seeds=seeds_for(exp.seed_range, n), selection_seeds=seeds_for("selection", n_sel),
                    power=canonical(power), config=canonical(json_safe(cfg)))


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
        """Whether the run's design declared a test named ``name`` (a configuration can leave tests out)."""
        return any(t["name"] == name for t in self.tests)

    def result(self, name: str) -> Dict[str, Any]:
        for t in self.tests:
            if t["name"] == name:
                return t
        raise KeyError(name)

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


def _cpu() -> float:
    """CPU time of this process and of its finished worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _anchor_format() -> Optional[int]:
    """The anchor format of new attachments in this syre (``syre.anchors.FORMAT``)."""
    try:
        from syre import anchors

        return int(anchors.FORMAT)
    except (ImportError, AttributeError):
        return None


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


def summarise(records) -> Dict[str, Any]:
    """Cell key -> metric -> {mean, std, n} over the numeric metrics of ``records``."""
    groups: "OrderedDict[str, Dict[str, List[float]]]" = OrderedDict()
    for r in records:
        g = groups.setdefault(Cell(r["arm"], tuple(r["point"].items())).key, OrderedDict())
        for k, v in r.items():
            if k not in ("phase", "arm", "seed", "point") and isinstance(v, (int, float)) and not isinstance(v, bool):
                g.setdefault(k, []).append(float(v))
    return OrderedDict((key, OrderedDict((k, stats.describe(v)) for k, v in g.items())) for key, g in groups.items())


def run_experiment(exp_id: Union[str, Experiment], *, seeds: Optional[int] = None, quick: bool = False,
                   out: Union[str, os.PathLike, None] = None, overrides: Optional[Dict[str, Any]] = None, verbose: bool = True,
                   command: Optional[Sequence[str]] = None, threads: Optional[int] = 1,
                   ledger: Union[str, os.PathLike, None] = None, jobs: int = 1) -> Dict[str, Any]:
    """Run experiment ``exp_id`` and write its run directory; return the summary dict.

    ``seeds``: evaluation seeds (default: the protocol's power rule; fewer with ``quick``).
    ``ledger``: a protocol ledger (``benchmarks/protocols.json``): a full run registers its
    protocol there before training, and stops if that version was registered with other rules.
    ``threads``: torch's intra-op threads during the run (default 1); ``None`` leaves torch's setting.
    ``jobs``: trials run at once in worker processes (one torch thread each; the records are those of a
    sequential run).
    """
    import torch

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"Invalid jobs: {jobs!r}; expected an int >= 1")

    exp = exp_id if isinstance(exp_id, Experiment) else get_experiment(exp_id)
    cfg = exp.config(quick=quick, overrides=overrides)
    protocol = build_protocol(exp, cfg, quick=quick, seeds=seeds)
    registered = False
    if ledger is not None and not quick:
        if overrides or seeds is not None:
            raise ValueError("Invalid run: a run registered in the ledger must use the declared protocol (no --set, no --seeds)")
        register(protocol, ledger)
        registered = True
    out = Path(out) if out is not None else Path("runs") / f"{exp.id}-{'quick' if quick else 'full'}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "protocol.json").write_text(json.dumps({"hash": protocol.hash(), "declaration": protocol.declaration()}, indent=1) + "\n")
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    env = environment()
    index = None
    if registered:  # every attempt is in the ledger, from before its first trial
        index = ledger_.start_run(ledger, exp.id, protocol.version, revision=env["git_revision"], git_dirty=env["git_dirty"],
                                  anchor_format=_anchor_format(), out=str(out))
    try:
        summary = _run(exp, protocol, quick, out, verbose, command, registered, jobs, env)
    except BaseException as exc:
        if index is not None:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"failed: {type(exc).__name__}: {exc}"[:300]
            ledger_.finish_run(ledger, exp.id, protocol.version, index, what)
        raise
    finally:
        torch.set_num_threads(old)
    if index is not None:
        ledger_.finish_run(ledger, exp.id, protocol.version, index, "completed", wall_time_s=summary["wall_time_s"])
    return summary


def _run(exp: Experiment, protocol: Protocol, quick: bool, out: Path, verbose: bool, command, registered: bool,
         jobs: int = 1, env: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    env = environment() if env is None else env
    cmd = list(command) if command is not None else list(sys.argv)
    (out / "command.txt").write_text(" ".join(shlex.quote(c) for c in cmd) + "\n")
    (out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps({"experiment": exp.id, "quick": quick, "config": protocol.config,
                                                 "evaluation_seeds": protocol.evaluation_seeds,
                                                 "selection_seeds": protocol.selection_seeds}, indent=2) + "\n")
    design = protocol.design
    ctx = Context(exp, protocol, quick, out, verbose, jobs)
    n_sel = sum(len(design.tuning.grid(design.arm(a))) for a in design.tuning.arms) * len(design.tuning.contexts) if design.tuning else 0
    ctx._progress = Progress(exp.id, n_sel * len(protocol.selection_seeds) + len(design.cells) * len(protocol.evaluation_seeds), verbose)
    ctx.log(f"protocol v{protocol.version} {protocol.hash()}: {len(design.cells)} cells x {len(protocol.evaluation_seeds)} "
            f"evaluation seeds, {n_sel} tuning points x {len(protocol.selection_seeds)} selection seeds")
    t0, c0 = time.perf_counter(), _cpu()
    try:
        if exp.select is not None:
            selection, resolved = exp.select(ctx)
        else:
            selection, resolved = tuning.select(ctx) if design.tuning else ({}, {})
        ctx.run_many([(resolved.get(c.key) or design.arm(c.arm), seed, c.where) for c in design.cells
                      for seed in protocol.evaluation_seeds])
        ctx.tests = [stats.evaluate(t, ctx.values(t.a, t.metric), ctx.values(t.b, t.metric_b or t.metric) if t.b else None,
                                    alpha=protocol.alpha, seeds_a=[r["seed"] for r in ctx.rows(t.a)],
                                    seeds_b=[r["seed"] for r in ctx.rows(t.b)] if t.b else None) for t in design.tests]
        ctx.arms = summarise(ctx.records)
        extra = exp.report(ctx) if exp.report else {}
        if selection and design.tuning:
            tuning.plot(ctx, selection)
    finally:
        ctx.close()
    if ctx._pool is not None:  # wait for the workers, so that their CPU time is counted
        ctx._pool.shutdown()
        ctx._pool = None
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    sane = stats.sanity_ok(ctx.tests)
    verdicts = {fam: (stats.verdict(ctx.tests, fam) if sane else None) for fam in ("shared", "tuned", "heldout")}
    notes = list(design.notes) + list(extra.get("notes", []))
    if not sane:
        notes.insert(0, "a sanity check failed: the experiment does not measure what it should, every verdict is left undecided")
    if quick:
        notes.insert(0, "quick run: the tests are computed but every verdict is left undecided; the tests alone would give "
                        + ", ".join(f"{k} {fmt.verdict_word(v)}" for k, v in verdicts.items()))
        verdicts = {k: None for k in verdicts}
    used = {a.name: a for a in design.arms}
    used.update({k: a for k, a in resolved.items()})
    sigma0 = {"library_default": syre.DEFAULT_SIGMA0, "default_meaning": sigma0_label(syre.DEFAULT_SIGMA0),
              "arms": {k: {"spec": resolve_arm_sigma0(a, protocol.config), "meaning": sigma0_label(resolve_arm_sigma0(a, protocol.config))}
                       for k, a in used.items() if a.decay == "syre"}}
    summary = OrderedDict(
        experiment=exp.id, title=exp.title, claim=exp.claim,
        protocol={"version": protocol.version, "hash": protocol.hash(), "changes": protocol.changes, "registered": registered,
                  "power": protocol.power, "declaration": protocol.declaration()},
        seeds={"selection": protocol.selection_seeds, "evaluation": protocol.evaluation_seeds},
        supported=verdicts["shared"], supported_tuned=verdicts["tuned"] if design.tuning else None,
        sanity_ok=sane, tests=ctx.tests, selection=selection, sigma0=sigma0, arms=ctx.arms,
        findings=extra.get("findings", {}), notes=notes, gamma_convention=GAMMA_CONVENTION, anchor_format=_anchor_format(),
        config=protocol.config,
        quick=quick, wall_time_s=round(wall, 2), cpu_time_s=round(cpu, 2), cpu_time_includes_workers=True, jobs=ctx.jobs, command=cmd,
        environment=env, plots=ctx.plots,
    )
    if exp.heldout:
        summary["default_survives"] = verdicts["heldout"]
    summary.update(extra.get("summary", {}))
    if not quick:  # the power of every primary test at the seed count it ran with (tuned and held-out included)
        from . import pilots
        from .power import POWER_NOTE, annotate

        annotate(summary, pilots.load().get(exp.id), protocol.alpha)
        summary["power_check"] = {"note": POWER_NOTE, "when": "at the run"}
    summary = json_safe(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "results.md").write_text(fmt.results_markdown(summary, extra.get("tables", [])))
    ctx.log(f"shared gamma: {fmt.verdict_word(summary['supported'])}; tuned: {fmt.verdict_word(summary['supported_tuned'])}; "
            f"wrote {out} ({wall:.1f}s)")
    return summary
