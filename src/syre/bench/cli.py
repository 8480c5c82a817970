"""``syre bench``: list the experiments, run one (or all), and tabulate finished runs."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

__all__ = ["register", "parse_set", "main"]


def parse_set(items: List[str]) -> Dict[str, Any]:
    """``["gamma=0.1", "arms=[\\"wd\\",\\"syre\\"]", "sigma0=rel:1"]`` -> dict (JSON values, else strings)."""
    out: Dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"Invalid --set value: {item!r}; expected key=value, e.g. gamma=0.1")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ValueError(f"Invalid --set value: {item!r}; the key is empty")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    return out


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="paper-reproduction benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="bench_command", metavar="{list,run,table}")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    pl = sub.add_parser("list", help="list the experiments and their claims")
    pl.set_defaults(func=_cmd_list)

    pr = sub.add_parser("run", help="run one experiment (or 'all') and write its run directory")
    pr.add_argument("id", help="experiment id (see `syre bench list`), a comma-separated list, or 'all'")
    pr.add_argument("--seeds", type=int, default=None, help="number of seeds (default 5; fewer with --quick)")
    pr.add_argument("--quick", action="store_true", help="a small run (at most about 60 s), as the tests use")
    pr.add_argument("--out", default=None, help="run directory (for several ids: the parent of one folder per id); "
                    "default runs/<id>-<mode>-<time>")
    pr.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a configuration value (JSON or a string), e.g. --set gamma=0.05 --set sigma0=rel:1.0")
    pr.add_argument("--sigma-scale", type=float, default=None, metavar="X",
                    help="sigma0 = X times the LeCun init std of each parameter (same as --set sigma0=rel:X)")
    pr.add_argument("--quiet", action="store_true", help="no progress lines")
    pr.set_defaults(func=_cmd_run)

    pt = sub.add_parser("table", help="a markdown table of finished runs (summary.json files under DIR)")
    pt.add_argument("dirs", nargs="+", help="run directories or folders holding them")
    pt.set_defaults(func=_cmd_table)


def main(argv=None) -> int:
    """``python -m syre.bench ...``: the ``syre bench`` command on its own (same arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m syre.bench")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench"] + argv)
    args.argv = ["syre", "bench"] + argv
    return int(args.func(args) or 0)


def _cmd_list(args) -> int:
    from .registry import experiment_ids, get_experiment

    for exp_id in experiment_ids():
        exp = get_experiment(exp_id)
        print(f"{exp.id:5s} {exp.title}")
        print(f"      claim: {exp.claim}")
    return 0


def _cmd_run(args) -> int:
    from .registry import experiment_ids, get_experiment
    from .runner import run_experiment

    try:
        overrides = parse_set(args.sets)
        if args.sigma_scale is not None:
            if not args.sigma_scale >= 0:
                raise ValueError(f"Invalid --sigma-scale: {args.sigma_scale!r}; expected a number >= 0")
            overrides["sigma0"] = f"rel:{args.sigma_scale:g}"
        ids = experiment_ids() if args.id == "all" else [s for s in args.id.split(",") if s]
        for exp_id in ids:
            get_experiment(exp_id)  # fail on a bad id before anything runs
            # unknown keys: check against every experiment that will run
            get_experiment(exp_id).config(quick=args.quick, overrides=overrides)
    except ValueError as exc:
        print(f"syre bench run: error: {exc}", file=sys.stderr)
        return 2
    verdicts = []
    for exp_id in ids:
        if args.out is None:
            out = None
        elif len(ids) == 1:
            out = Path(args.out)
        else:
            out = Path(args.out) / exp_id
        command = getattr(args, "argv", None) or (["syre"] + sys.argv[1:])
        summary = run_experiment(exp_id, seeds=args.seeds, quick=args.quick, out=out, overrides=overrides,
                                 verbose=not args.quiet, command=command)
        verdicts.append(summary)
    print(table(verdicts), end="")
    return 0


def _cmd_table(args) -> int:
    summaries = []
    for d in args.dirs:
        path = Path(d)
        files = [path / "summary.json"] if (path / "summary.json").is_file() else sorted(path.glob("*/summary.json"))
        if not files:
            print(f"syre bench table: error: no summary.json in {path} or its subfolders", file=sys.stderr)
            return 2
        for f in files:
            summaries.append(json.loads(f.read_text()))
    print(table(summaries), end="")
    return 0


def table(summaries: List[Dict[str, Any]]) -> str:
    """A markdown table of runs: id, seeds, headline numbers, verdict, wall time."""
    rows = ["| id | claim | seeds | headline (mean ± std) | supported | wall time |", "|---|---|---|---|---|---|"]
    for s in summaries:
        verdict = {True: "yes", False: "no", None: "undecided"}[s.get("supported")]
        head = s.get("findings", {}).get("headline", "")
        rows.append(f"| {s['experiment']} | {s['title']} | {len(s['seeds'])} | {head} | {verdict} | {s['wall_time_s']:.0f} s |")
    return "\n".join(rows) + "\n"
