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
import os
import shlex
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import syre

from . import fmt, ledger as ledger_, stats, tuning
from .arms import GAMMA_CONVENTION, resolve_arm_sigma0, sigma0_label
from .context import Context, Progress, pyplot  # noqa: F401  (kept importable from here)
from .power import plan
from .protocol import Cell, Protocol, apply, canonical, register, seeds_for
from .registry import Experiment, get_experiment
from .runenv import _anchor_format, environment, json_safe  # noqa: F401  (kept importable from here)

__all__ = ["Context", "run_experiment", "build_protocol", "environment", "json_safe"]


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


def _cpu() -> float:
    """CPU time of this process and of its finished worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


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
