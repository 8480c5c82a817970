"""``syre bench pilot ID``: the small run whose effect sizes set an experiment's number of seeds.

It trains only the cells of the primary shared-gamma tests, on the pilot seeds (their own range),
evaluates those tests, and with ``write=True`` records the per-test mean and standard deviation in
``benchmarks/results/pilots.json`` (``syre.bench.pilots``) (see ``syre.bench.power``). The pilot changes the protocol (its power
statement and seed count), so it is run before the protocol is registered, never after.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

from . import power, stats
from .protocol import Design, Protocol, canonical, seeds_for
from .registry import get_experiment
from .runner import Context, Progress, environment, json_safe

__all__ = ["run_pilot", "write_pilots"]

def run_pilot(exp_id: str, *, n: int = power.PILOT_SEEDS, verbose: bool = True, out: Optional[Path] = None,
              write: bool = False, jobs: int = 1) -> Dict[str, Any]:
    """Run the pilot of ``exp_id`` (full configuration); return its record (and write it with ``write``).

    An experiment with its own pilot (``Experiment.pilot``) runs that one (``jobs`` worker processes)."""
    import torch

    exp = get_experiment(exp_id)
    if exp.pilot is not None:
        record = exp.pilot(exp, n=n, verbose=verbose, jobs=jobs, out=out)
        if write:
            write_pilots({exp.id: json_safe(record)})
        return record
    cfg = exp.config()
    full = exp.design(cfg)
    tests = [t for t in full.tests if t.role == "primary" and t.family == "shared"]
    cells = []
    for t in tests:
        for c in (t.a, t.b):
            if c is not None and c not in cells:
                cells.append(c)
    design = Design(arms=full.arms, cells=cells, tests=tests)
    protocol = Protocol(experiment=exp.id, version=exp.version, changes="pilot", claim=exp.claim, design=design,
                        evaluation_seeds=seeds_for("pilot", n), selection_seeds=[], power={}, config=canonical(json_safe(cfg)))
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix=f"pilot-{exp.id}-"))
    out.mkdir(parents=True, exist_ok=True)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    ctx = Context(exp, protocol, False, out, verbose)
    ctx._progress = Progress(f"{exp.id} pilot", len(cells) * n, verbose)
    t0 = time.perf_counter()
    try:
        for c in cells:
            for seed in protocol.evaluation_seeds:
                ctx.run_trial(design.arm(c.arm), seed, c.where)
    finally:
        ctx.close()
        torch.set_num_threads(old)
    results = [stats.evaluate(t, ctx.values(t.a, t.metric), ctx.values(t.b, t.metric_b or t.metric) if t.b else None)
               for t in tests]
    env = environment()
    record = power.pilot_record(results, protocol.evaluation_seeds, time.perf_counter() - t0, env.get("git_revision"),
                                time.strftime("%Y-%m-%d"))
    (out / "pilot.json").write_text(json.dumps(json_safe(record), indent=1) + "\n")
    if write:
        write_pilots({exp.id: json_safe(record)})
    return record


def write_pilots(records: Dict[str, Any], path: Optional[Path] = None) -> Path:
    """Merge ``records`` into the pilots file (``syre.bench.pilots.write``)."""
    from . import pilots

    return pilots.write(records, path)
