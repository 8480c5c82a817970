"""``syre bench``: list the experiments, show a protocol, run a pilot or a run (or all), tabulate, write the docs."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["register", "parse_set", "main", "default_ledger"]


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
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def default_ledger() -> Optional[Path]:
    """``benchmarks/protocols.json`` of the checkout in the working directory, when there is one."""
    p = Path("benchmarks") / "protocols.json"
    return p if p.parent.is_dir() and (Path("src") / "syre" / "bench").is_dir() else None


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="paper-reproduction benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="bench_command", metavar="{list,protocol,pilot,run,table,docs,rejudge}")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    sub.add_parser("list", help="list the experiments and their claims").set_defaults(func=_cmd_list)

    pp = sub.add_parser("protocol", help="print an experiment's pre-registered protocol (declaration and hash)")
    pp.add_argument("id")
    pp.add_argument("--quick", action="store_true")
    pp.set_defaults(func=_cmd_protocol)

    pi = sub.add_parser("pilot", help="run the pilot that sets an experiment's number of seeds")
    pi.add_argument("id", help="experiment id or a comma-separated list")
    pi.add_argument("--write", action="store_true", help="record the pilot in benchmarks/results/pilots.json")
    pi.add_argument("--quiet", action="store_true")
    pi.add_argument("--jobs", type=int, default=1, metavar="N", help="worker processes (experiments with their own pilot)")
    pi.set_defaults(func=_cmd_pilot)

    pr = sub.add_parser("run", help="run one experiment (or 'all') and write its run directory")
    pr.add_argument("id", help="experiment id (see `syre bench list`), a comma-separated list, or 'all'")
    pr.add_argument("--seeds", type=int, default=None, help="number of evaluation seeds (default: the protocol's power rule)")
    pr.add_argument("--quick", action="store_true", help="a small run (under a minute), as the tests use")
    pr.add_argument("--out", default=None, help="run directory (for several ids: the parent of one folder per id); "
                    "default runs/<id>-<mode>-<time>")
    pr.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a configuration value (JSON or a string), e.g. --set gamma=0.05 (the run is then not registered)")
    pr.add_argument("--sigma-scale", type=float, default=None, metavar="X",
                    help="sigma0 of the `syre` arm = X LeCun init stds (same as --set sigma0=lecun:X)")
    pr.add_argument("--ledger", default="auto", help="protocol ledger a full run registers in before training ('auto': "
                    "benchmarks/protocols.json of this checkout, if any; 'none': do not register)")
    pr.add_argument("--jobs", type=int, default=1, metavar="N", help="trials run at once in N worker processes (one torch "
                    "thread each; the results are those of a sequential run)")
    pr.add_argument("--quiet", action="store_true", help="no progress lines")
    pr.set_defaults(func=_cmd_run)

    pt = sub.add_parser("table", help="a markdown table of finished runs (summary.json files under DIR)")
    pt.add_argument("dirs", nargs="+", help="run directories or folders holding them")
    pt.set_defaults(func=_cmd_table)

    pd = sub.add_parser("docs", help="regenerate (or check) the generated blocks of README.md, benchmarks/README*.md and docs/*.md")
    pd.add_argument("--check", action="store_true", help="only report the blocks that differ from the committed results")
    pd.add_argument("--root", default=".", help="the checkout (default: the working directory)")
    pd.set_defaults(func=_cmd_docs)

    pj = sub.add_parser("rejudge", help="write a re-judged version's summary from its source version's committed trials (no training)")
    pj.add_argument("id")
    pj.add_argument("--root", default=".", help="the checkout (default: the working directory)")
    pj.set_defaults(func=_cmd_rejudge)


def main(argv=None) -> int:
    """``python -m syre.bench ...``: the ``syre bench`` command on its own (same arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m syre.bench")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench"] + argv)
    args.argv = ["syre", "bench"] + argv
    return int(args.func(args) or 0)


def _err(cmd: str, exc: Exception) -> int:
    print(f"syre bench {cmd}: error: {exc}", file=sys.stderr)
    return 2


def _cmd_list(args) -> int:
    from .registry import experiment_ids, get_experiment

    for exp_id in experiment_ids():
        exp = get_experiment(exp_id)
        print(f"{exp.id:11s} {exp.title}")
        print(f"            claim: {exp.claim}")
    return 0


def _cmd_protocol(args) -> int:
    from .registry import get_experiment
    from .runner import build_protocol

    try:
        exp = get_experiment(args.id)
        p = build_protocol(exp, exp.config(quick=args.quick), quick=args.quick)
    except ValueError as exc:
        return _err("protocol", exc)
    print(json.dumps({"hash": p.hash(), "declaration": p.declaration()}, indent=1))
    return 0


def _cmd_pilot(args) -> int:
    from .pilot import run_pilot
    from .registry import get_experiment

    try:
        ids = [s for s in args.id.split(",") if s]
        for i in ids:
            get_experiment(i)
    except ValueError as exc:
        return _err("pilot", exc)
    for i in ids:
        rec = run_pilot(i, verbose=not args.quiet, write=args.write, jobs=args.jobs)
        print(json.dumps({i: rec}, indent=1))
    return 0


def _cmd_run(args) -> int:
    from .registry import experiment_ids, get_experiment
    from .runner import run_experiment

    try:
        overrides = parse_set(args.sets)
        if args.sigma_scale is not None:
            if not args.sigma_scale >= 0:
                raise ValueError(f"Invalid --sigma-scale: {args.sigma_scale!r}; expected a number >= 0")
            overrides["sigma0"] = f"lecun:{args.sigma_scale:g}"
        if args.jobs < 1:
            raise ValueError(f"Invalid --jobs: {args.jobs!r}; expected an int >= 1")
        ids = experiment_ids() if args.id == "all" else [s for s in args.id.split(",") if s]
        for exp_id in ids:
            get_experiment(exp_id).config(quick=args.quick, overrides=overrides)  # bad ids and keys fail before anything runs
        if args.ledger == "auto":
            ledger = default_ledger() if not (overrides or args.seeds) else None
        else:
            ledger = None if args.ledger == "none" else Path(args.ledger)
    except ValueError as exc:
        return _err("run", exc)
    summaries = []
    for exp_id in ids:
        out = None if args.out is None else (Path(args.out) if len(ids) == 1 else Path(args.out) / exp_id)
        command = getattr(args, "argv", None) or (["syre"] + sys.argv[1:])
        try:
            summaries.append(run_experiment(exp_id, seeds=args.seeds, quick=args.quick, out=out, overrides=overrides,
                                            verbose=not args.quiet, command=command, ledger=ledger, jobs=args.jobs))
        except ValueError as exc:
            return _err("run", exc)
    print(table(summaries), end="")
    return 0


def _load(dirs: List[str]) -> List[Dict[str, Any]]:
    out = []
    for d in dirs:
        path = Path(d)
        files = [path / "summary.json"] if (path / "summary.json").is_file() else sorted(path.glob("*/summary.json"))
        if not files:
            raise ValueError(f"no summary.json in {path} or its subfolders")
        out += [json.loads(f.read_text()) for f in files]
    return out


def _cmd_table(args) -> int:
    try:
        summaries = _load(args.dirs)
    except ValueError as exc:
        return _err("table", exc)
    print(table(summaries), end="")
    return 0


def _cmd_rejudge(args) -> int:
    from .rejudge import rejudge

    try:
        rejudge(args.id, args.root)
    except ValueError as exc:
        return _err("rejudge", exc)
    return 0


def _cmd_docs(args) -> int:
    from .docs import check, write

    root = Path(args.root)
    try:
        if args.check:
            bad = check(root)
            for b in bad:
                print(f"differs from the committed results: {b}")
            return 1 if bad else 0
        for f in write(root):
            print(f"wrote {f}")
    except (ValueError, FileNotFoundError) as exc:
        return _err("docs", exc)
    return 0


def table(summaries: List[Dict[str, Any]]) -> str:
    """A markdown table of runs: id, protocol, seeds, verdicts, headline, wall time."""
    from .fmt import md_table, verdict_word

    rows = []
    for s in summaries:
        seeds = s["seeds"]
        rows.append([s["experiment"], s["title"], f"v{s['protocol']['version']} `{s['protocol']['hash']}`",
                     f"{len(seeds['selection'])} + {len(seeds['evaluation'])}", verdict_word(s.get("supported")),
                     verdict_word(s.get("supported_tuned")) if s["protocol"]["declaration"].get("tuning") else "-",
                     s.get("findings", {}).get("headline", ""), f"{s['wall_time_s']:.0f} s"])
    return md_table(["id", "experiment", "protocol", "seeds (selection + evaluation)", "shared gamma", "tuned gamma",
                     "headline", "wall time"], rows)
