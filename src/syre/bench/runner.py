"""Running an experiment: the context its trials write through, and the run directory.

A run directory holds

* ``config.json``: the experiment, the configuration, the seeds, quick or full;
* ``command.txt``: the command line;
* ``environment.json``: the git revision, the versions of Python, torch, numpy, syre (and
  scipy, matplotlib, scikit-learn where present), the platform and the thread count;
* ``metrics.jsonl``: one JSON object per trial: ``{"arm", "seed", "point", <metrics>...}``;
* ``summary.json``: ``experiment``, ``title``, ``claim``, ``supported`` (true, false or null),
  ``rule``, ``tests``, ``arms`` (arm -> metric -> ``{mean, std, n}``), ``points``, ``config``,
  ``seeds``, ``wall_time_s``, the gamma convention, the environment;
* ``results.md``: the same, readable, with the plots;
* PNG plots.
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
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from . import stats
from .arms import GAMMA_CONVENTION, sigma0_label
from .registry import Experiment, get_experiment

__all__ = ["Context", "run_experiment", "point_key", "environment"]


def point_key(arm: str, point: Optional[Dict[str, Any]] = None) -> str:
    """The key of an arm at a sweep point in ``summary.json``: ``"syre"`` or ``"syre[gamma=0.1]"``."""
    if not point:
        return arm
    return f"{arm}[{','.join(f'{k}={_fmt(v)}' for k, v in point.items())}]"


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item") and callable(x.item):
        try:
            return _json_safe(x.item())
        except (ValueError, RuntimeError):
            pass
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def environment() -> Dict[str, Any]:
    """The git revision, library versions and machine of this run."""
    import numpy
    import torch

    import syre

    env: Dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "syre": syre.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    for mod in ("scipy", "matplotlib", "sklearn"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=10)
        env["git_revision"] = rev.stdout.strip() or None
        env["git_dirty"] = bool(dirty.stdout.strip()) if rev.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        env["git_revision"] = None
        env["git_dirty"] = None
    return env


class Progress:
    """A one-line-per-update progress report on stderr: done/total, elapsed, remaining."""

    def __init__(self, prefix: str, total: int, stream=None, enabled: bool = True):
        self.prefix = prefix
        self.total = max(int(total), 1)
        self.done = 0
        self.t0 = time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled

    def step(self, what: str = "", n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else 0.0
        print(f"[{self.prefix}] {self.done}/{self.total} {what}  elapsed {el:5.1f}s  eta {eta:5.1f}s",
              file=self.stream, flush=True)


class Context:
    """What an experiment's ``run`` gets: configuration, seeds, records, plots, progress.

    Attributes: ``exp`` (the Experiment), ``config`` (dict), ``seeds`` (list of ints), ``quick``
    (bool), ``out`` (the run directory, a Path), ``records`` (list of dicts written so far).
    """

    def __init__(self, exp: Experiment, config: Dict[str, Any], seeds: List[int], quick: bool, out: Path, verbose: bool = True):
        self.exp = exp
        self.config = config
        self.seeds = seeds
        self.quick = quick
        self.out = out
        self.verbose = verbose
        self.records: List[Dict[str, Any]] = []
        self.plots: List[str] = []
        self._progress: Optional[Progress] = None
        self._metrics_file = open(out / "metrics.jsonl", "w")

    # -- progress
    def progress(self, total: int) -> Progress:
        """Start a progress counter of ``total`` steps (``ctx.step(...)`` advances it)."""
        self._progress = Progress(self.exp.id, total, enabled=self.verbose)
        return self._progress

    def step(self, what: str = "") -> None:
        if self._progress is not None:
            self._progress.step(what)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{self.exp.id}] {msg}", file=sys.stderr, flush=True)

    # -- records
    def record(self, arm: str, seed: int, point: Optional[Dict[str, Any]] = None, **metrics: Any) -> Dict[str, Any]:
        """Write one trial's metrics (numbers; lists are kept but not summarised)."""
        rec = {"arm": arm, "seed": int(seed), "point": dict(point or {}), **metrics}
        rec = _json_safe(rec)
        self.records.append(rec)
        self._metrics_file.write(json.dumps(rec) + "\n")
        self._metrics_file.flush()
        return rec

    def values(self, arm: str, metric: str, point: Optional[Dict[str, Any]] = None) -> List[float]:
        """The per-seed values of ``metric`` for ``arm`` at ``point``, in seed order."""
        want = _json_safe(dict(point or {}))
        rows = [r for r in self.records if r["arm"] == arm and r["point"] == want and r.get(metric) is not None]
        rows.sort(key=lambda r: r["seed"])
        return [float(r[metric]) for r in rows]

    def run_grid(self, arms: Sequence[Any], trial, points: Optional[Sequence[Dict[str, Any]]] = None) -> None:
        """Run ``trial(config, arm, seed, **point)`` for every point, arm and seed; record each.

        ``arms``: ``syre.bench.arms.Arm`` objects. The trial returns a dict of metrics.
        """
        points = list(points) if points else [{}]
        self.progress(len(points) * len(arms) * len(self.seeds))
        for point in points:
            for arm in arms:
                for seed in self.seeds:
                    t0 = time.perf_counter()
                    metrics = trial(self.config, arm, seed, **point)
                    metrics.setdefault("time_s", time.perf_counter() - t0)
                    self.record(arm.name, seed, point, **metrics)
                    self.step(f"{point_key(arm.name, point)} seed {seed}")

    # -- plots
    def subplots(self, *args, **kwargs):
        """``matplotlib.pyplot.subplots(...)``; save the figure with ``ctx.save(fig, name)``."""
        return pyplot().subplots(*args, **kwargs)

    def save(self, fig, name: str) -> str:
        """Save ``fig`` as ``<out>/<name>.png`` and close it."""
        path = self.out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        pyplot().close(fig)
        self.plots.append(path.name)
        return path.name

    def close(self) -> None:
        self._metrics_file.close()


def pyplot():
    """matplotlib.pyplot with the Agg backend (imported lazily)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("the benchmark plots need matplotlib: pip install 'torch-syre[bench]'") from exc
    return plt


def summarise(records: Iterable[Dict[str, Any]]) -> tuple:
    """``(arms, points)``: arm key -> metric -> {mean, std, n}, and the structured list."""
    groups: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
    for r in records:
        key = point_key(r["arm"], r["point"])
        g = groups.setdefault(key, {"arm": r["arm"], "point": r["point"], "values": OrderedDict()})
        for k, v in r.items():
            if k in ("arm", "seed", "point"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v is None:
                continue
            g["values"].setdefault(k, []).append(float(v))
    arms = OrderedDict()
    points = []
    for key, g in groups.items():
        metrics = OrderedDict((k, stats.describe(v)) for k, v in g["values"].items())
        arms[key] = metrics
        points.append({"arm": g["arm"], "point": g["point"], "metrics": metrics})
    return arms, points


def md_cell(text: Any) -> str:
    """``text`` safe inside a markdown table cell (pipes escaped, no newlines)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt_stat(d: Dict[str, Any]) -> str:
    if d.get("mean") is None:
        return "-"
    m, s = d["mean"], d["std"]
    if m != 0 and (abs(m) < 1e-3 or abs(m) >= 1e5):
        return f"{m:.3g} ± {s:.2g}"
    return f"{m:.4g} ± {s:.2g}"


def markdown_table(arms: Dict[str, Dict[str, Any]], metrics: Optional[Sequence[str]] = None, labels: Optional[Dict[str, str]] = None) -> str:
    """A markdown table: one row per arm key, one column per metric (mean ± std)."""
    if not arms:
        return "(no results)\n"
    if metrics is None:
        seen: List[str] = []
        for m in arms.values():
            for k in m:
                if k not in seen:
                    seen.append(k)
        metrics = seen
    n = max((d.get("n", 0) for m in arms.values() for d in m.values()), default=0)
    head = "| arm | " + " | ".join(md_cell(m) for m in metrics) + " |"
    sep = "|---|" + "---|" * len(metrics)
    rows = [head, sep]
    for key, m in arms.items():
        name = (labels or {}).get(key, key)
        rows.append(f"| {md_cell(name)} | " + " | ".join(_fmt_stat(m.get(k, {})) for k in metrics) + " |")
    return "\n".join(rows) + f"\n\nmean ± std over n = {n} seeds per row.\n"


def _verdict(s: Optional[bool]) -> str:
    return {True: "supported", False: "not supported", None: "undecided (quick run or too few seeds)"}[s]


def tests_table(tests: List[Dict[str, Any]]) -> str:
    rows = ["| test | rule | result |", "|---|---|---|"]
    for t in sorted(tests, key=lambda t: not t.get("primary", True)):
        bits = []
        if t.get("mean_a") is not None and t.get("mean_b") is not None:
            bits.append(f"means {t['mean_a']:.4g} vs {t['mean_b']:.4g}")
        if t.get("p") is not None:
            bits.append(f"p = {t['p']:.3g}")
        if t.get("wins") is not None:
            bits.append(f"{t['wins']}/{t['n'][0]} seeds")
        if t.get("min") is not None:
            bits.append(f"range [{t['min']:.3g}, {t['max']:.3g}]")
        res = {True: "pass", False: "FAIL", None: "undecided"}[t.get("passed")]
        name = t["name"] + ("" if t.get("primary", True) else " (reported, not in the verdict)")
        rows.append(f"| {md_cell(name)} | {md_cell(t['rule'])} | {res}{': ' + ', '.join(bits) if bits else ''} |")
    return "\n".join(rows) + "\n"


def run_experiment(
    exp_id: Union[str, Experiment],
    *,
    seeds: Optional[int] = None,
    quick: bool = False,
    out: Union[str, os.PathLike, None] = None,
    overrides: Optional[Dict[str, Any]] = None,
    verbose: bool = True,
    command: Optional[Sequence[str]] = None,
    threads: Optional[int] = 1,
) -> Dict[str, Any]:
    """Run experiment ``exp_id`` and write its run directory; return the summary dict.

    ``seeds``: number of seeds (0, 1, ... N-1); default the experiment's (5 full, fewer quick).
    ``out``: the run directory (default ``runs/<id>-<quick|full>-<time>``). ``overrides``:
    configuration values (``--set key=value``), checked against the experiment's keys.
    ``threads``: torch's intra-op threads during the run (default 1: the models are small, and
    on a shared machine one thread is both faster and steadier); ``None`` leaves torch's setting.
    """
    exp = exp_id if isinstance(exp_id, Experiment) else get_experiment(exp_id)
    if seeds is None:
        seeds = exp.quick_seeds if quick else exp.seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"Invalid seeds: {seeds!r}; expected a positive int (the number of seeds)")
    config = exp.config(quick=quick, overrides=overrides)
    if out is None:
        out = Path("runs") / f"{exp.id}-{'quick' if quick else 'full'}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seeds))
    import torch

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run(exp, config, seed_list, quick, out, verbose, command)
    finally:
        torch.set_num_threads(old_threads)


def _run(exp: Experiment, config: Dict[str, Any], seed_list: List[int], quick: bool, out: Path, verbose: bool,
         command: Optional[Sequence[str]]) -> Dict[str, Any]:
    env = environment()
    cmd = list(command) if command is not None else list(sys.argv)
    (out / "command.txt").write_text(" ".join(shlex.quote(c) for c in cmd) + "\n")
    (out / "environment.json").write_text(json.dumps(env, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(_json_safe(
        {"experiment": exp.id, "quick": quick, "seeds": seed_list, "config": config}), indent=2) + "\n")
    ctx = Context(exp, config, seed_list, quick, out, verbose=verbose)
    t0 = time.perf_counter()
    try:
        result = exp.run(ctx) or {}
    finally:
        ctx.close()
    wall = time.perf_counter() - t0
    arms, points = summarise(ctx.records)
    tests = result.get("tests", [])
    supported = result["supported"] if "supported" in result else stats.all_passed(tests)
    notes = list(result.get("notes", []))
    if quick:
        # a quick run is a smoke test: too small (short training, few seeds) to decide the claim
        notes.insert(0, "quick run: the tests are computed but the verdict is left undecided (supported = null); "
                        f"the verdict of the tests alone would be {_verdict(supported)}")
        supported = None
    summary = OrderedDict(
        experiment=exp.id,
        title=exp.title,
        claim=exp.claim,
        supported=supported,
        rule=result.get("rule", "every test below passes"),
        tests=tests,
        findings=result.get("findings", {}),
        arms=arms,
        points=points,
        notes=notes,
        gamma_convention=result.get("gamma_convention", GAMMA_CONVENTION),
        sigma0=_sigma0_statement(config),
        config=config,
        seeds=seed_list,
        quick=quick,
        wall_time_s=round(wall, 2),
        command=cmd,
        environment=env,
        plots=ctx.plots,
    )
    summary = _json_safe(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(summary, result.get("tables", [])))
    if verbose:
        print(f"[{exp.id}] {_verdict(supported)}; wrote {out} ({wall:.1f}s)", file=sys.stderr, flush=True)
    return summary


def _sigma0_statement(config: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for key in ("sigma0", "sigma0_big"):
        if key in config:
            try:
                out[key] = {"spec": config[key], "meaning": sigma0_label(config[key])}
            except ValueError:
                out[key] = {"spec": config[key]}
    return out


def results_markdown(summary: Dict[str, Any], tables: Sequence[str] = ()) -> str:
    """``results.md`` of a run from its summary (and extra markdown tables of the experiment)."""
    lines = [
        f"# {summary['experiment']}: {summary['title']}",
        "",
        f"**Claim (paper).** {summary['claim']}",
        "",
        f"**Verdict.** {_verdict(summary['supported'])}. Rule: {summary['rule']}.",
        "",
        f"Seeds: {len(summary['seeds'])} ({'quick' if summary['quick'] else 'full'} run), wall time "
        f"{summary['wall_time_s']:.1f} s, syre {summary['environment'].get('syre')}, torch {summary['environment'].get('torch')}, "
        f"git {str(summary['environment'].get('git_revision'))[:10]}.",
        "",
        f"Gamma convention: {summary['gamma_convention']}.",
        "",
    ]
    if summary.get("sigma0"):
        lines += ["sigma0: " + "; ".join(f"`{k}` = {v.get('meaning', v['spec'])}" for k, v in summary["sigma0"].items()) + ".", ""]
    lines += ["## Tests", "", tests_table(summary["tests"]), ""]
    if summary.get("findings"):
        lines += ["## Findings", ""] + [f"- {k}: {v}" for k, v in summary["findings"].items()] + [""]
    for t in tables:
        lines += [t, ""]
    lines += ["## All arms", "", markdown_table(summary["arms"]), ""]
    if summary.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""]
    for p in summary.get("plots", []):
        lines += [f"![{p}]({p})", ""]
    return "\n".join(lines)
