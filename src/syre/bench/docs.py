"""The results text of the documentation, generated from the committed ``summary.json`` files.

Every sentence or table in ``README.md``, ``benchmarks/README*.md`` and ``docs/defaults.md`` that
states a result sits in a block::

    <!-- bench:begin NAME ARGS -->
    ... generated ...
    <!-- bench:end NAME -->

``write(root)`` regenerates every block from ``benchmarks/results/*/summary.json`` (``syre bench
docs``); ``check(root)`` lists the blocks whose committed text differs (``syre bench docs --check``,
and a test). Outside the blocks the documents state no result. Block generators: ``BLOCKS``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from . import fmt
from .heldout import verdict as heldout_verdict

__all__ = ["DOCS", "BLOCKS", "load", "render", "write", "check", "blocks_in"]

DOCS = ("README.md", "benchmarks/README.md", "benchmarks/README_e6_e9.md", "docs/defaults.md")
RESULTS = "benchmarks/results"
_BLOCK = re.compile(r"<!-- bench:begin (\S+)([^>]*?) -->\n(.*?)<!-- bench:end \1 -->", re.S)


def load(root: Path) -> Dict[str, Dict[str, Any]]:
    out = {}
    for f in sorted((Path(root) / RESULTS).glob("*/summary.json")):
        s = json.loads(f.read_text())
        out[s["experiment"]] = s
    return out


# ----------------------------------------------------------------------------- helpers
def _mean(s, key: str, metric: str) -> Optional[float]:
    d = s["arms"].get(key, {}).get(metric)
    return None if d is None else d["mean"]


def _test(s, name: str) -> Dict[str, Any]:
    for t in s["tests"]:
        if t["name"] == name:
            return t
    raise KeyError(f"{s['experiment']}: no test {name!r}")


def _brief(t: Dict[str, Any]) -> str:
    bits = [f"{fmt.num(t.get('mean_a'))}" + (f" vs {fmt.num(t['mean_b'])}" if t.get("mean_b") is not None else "")]
    if t.get("p") is not None:
        bits.append(fmt.pval(t["p"]))
    if t.get("holds_in") is not None:
        bits.append(f"holds in {t['holds_in']}/{t['n']} seeds")
    return f"{t['name']} ({', '.join(bits)})"


def _word(v) -> str:
    return fmt.verdict_word(v)


def _ids(args: str, S) -> List[str]:
    return [i for i in args.split(",") if i in S] if args else list(S)


def _failed(s, family: str) -> List[Dict[str, Any]]:
    return [t for t in s["tests"] if t["family"] == family and t["role"] == "primary" and t["passed"] is False]


# ----------------------------------------------------------------------------- blocks
def b_verdicts(S, args: str) -> str:
    """The verdicts, not-supported first."""
    ids = _ids(args, S)
    lines = []
    for fam, key, label in (("shared", "supported", "at the shared gamma"), ("tuned", "supported_tuned", "with every arm at its tuned gamma")):
        rel = [i for i in ids if S[i]["protocol"]["declaration"].get("tuning") or fam == "shared"]
        no = [i for i in rel if S[i].get(key) is False]
        und = [i for i in rel if S[i].get(key) is None]
        yes = [i for i in rel if S[i].get(key) is True]
        if no:
            lines.append(f"* **Not supported {label}: {', '.join(no)}.** Failed primary tests: "
                         + "; ".join(f"{i}: " + "; ".join(_brief(t) for t in _failed(S[i], fam)) for i in no) + ".")
        if und:
            lines.append(f"* Undecided {label}: {', '.join(und)}.")
        if yes:
            lines.append(f"* Supported {label}: {', '.join(yes)}.")
    return "\n".join(lines) + "\n"


def b_results_table(S, args: str) -> str:
    rows = []
    for i in _ids(args, S):
        s = S[i]
        seeds = s["seeds"]
        tuned = _word(s.get("supported_tuned")) if s["protocol"]["declaration"].get("tuning") else "-"
        held = {True: "survives", False: "does not survive", None: "undecided"}[s["default_survives"]] if "default_survives" in s else "-"
        rows.append([f"[{i}](results/{i}/results.md)", s["title"], f"v{s['protocol']['version']} `{s['protocol']['hash']}`",
                     f"{len(seeds['selection'])} + {len(seeds['evaluation'])}", f"**{_word(s['supported'])}**", tuned, held,
                     f"{s['wall_time_s']:.0f} s"])
    return fmt.md_table(["id", "experiment", "protocol", "seeds (selection + evaluation)", "shared gamma", "tuned gamma",
                         "default sigma0, held out", "wall time"], rows)


def b_tests(S, args: str) -> str:
    """Primary and sanity tests of one experiment, with their results."""
    s = S[args]
    rows = [[t["family"], t["role"], t["name"], fmt.test_result(t)] for t in s["tests"] if t["role"] in ("primary", "sanity")]
    return fmt.md_table(["family", "role", "test", "result"], rows)


def b_cells(S, args: str) -> str:
    """``cells ID metric metric ...`` (a ``key~substring`` filter keeps matching cells only)."""
    parts = args.split()
    s, metrics = S[parts[0]], [m for m in parts[1:] if not m.startswith("~")]
    filt = [m[1:] for m in parts[1:] if m.startswith("~")]
    rows = [[k] + [fmt.ms(v.get(m, {})) for m in metrics] for k, v in s["arms"].items() if not filt or any(f in k for f in filt)]
    n = len(s["seeds"]["evaluation"])
    return fmt.md_table(["cell"] + metrics, rows) + f"\nmean ± std over the {n} evaluation seeds.\n"


def b_tuned(S, args: str) -> str:
    rows = []
    for i in _ids(args, S):
        for ck, by_arm in (S[i].get("selection") or {}).items():
            for arm, sel in by_arm.items():
                ch = sel["chosen"]
                rows.append([i, ck, arm, fmt.num(ch["gamma"]), ch["sigma0"] if ch.get("sigma0") is not None else "-", fmt.num(ch["mean"])])
    return fmt.md_table(["id", "context", "arm", "chosen gamma", "chosen sigma0", "validation score"], rows) if rows else "(no tuning)\n"


def b_power(S, args: str) -> str:
    rows = []
    for i in _ids(args, S):
        p = S[i]["protocol"]["power"]
        pw = [v["power"] for v in p.get("tests", {}).values() if v.get("power") is not None]
        against = [k for k, v in p.get("tests", {}).items() if v.get("note", "").startswith("the pilot effect lies against")]
        rows.append([i, len(S[i]["seeds"]["evaluation"]), p.get("statement", ""),
                     f"{fmt.num(min(pw), 2)} to {fmt.num(max(pw), 2)}" if pw else "-", len(against)])
    return fmt.md_table(["id", "evaluation seeds", "seed count", "power of the primary t-tests (pilot effect)",
                         "primary tests whose pilot effect lay against H1"], rows)


def b_heldout(S, args: str) -> str:
    v = heldout_verdict([S[i] for i in S])
    word = {True: "**survives**", False: "**does not survive**", None: "is undecided in"}[v["survives"]]
    out = [f"The library default sigma0 {word} the held-out check on the evaluation seeds of {', '.join(v['experiments'])}."]
    if v["failed"]:
        out.append("Failed: " + "; ".join(f"{i}: " + "; ".join(_brief(_test(S[i], n)) for n in names) for i, names in v["failed"].items()) + ".")
    if v["better_scales"]:
        out.append("A neighbouring scale did better than the default in: " + "; ".join(
            f"{i}: " + "; ".join(_brief(_test(S[i], n)) for n in names) for i, names in v["better_scales"].items()) + ".")
    else:
        out.append("No neighbouring scale (0.3x, 3x) was significantly better than the default at the collapsing gamma.")
    rows = [[i, t["name"].split("held-out: ", 1)[-1], t["role"], fmt.test_result(t)] for i in v["experiments"] for t in S[i]["tests"]
            if t["family"] == "heldout"]
    return " ".join(out) + "\n\n" + fmt.md_table(["id", "test", "role", "result"], rows)


def _collapse_cells(s) -> List[Dict[str, Any]]:
    """(label, cell of the setting at the collapsing gamma for an arm, no-decay cell) per held-out setting."""
    out = []
    for t in s["tests"]:
        if t["family"] == "heldout" and t["role"] == "primary" and "above weight decay's at the collapsing gamma" in t["name"]:
            out.append({"label": t["name"].split(", held-out")[0], "syre": t["a"], "wd": t["b"], "rank": t["metric"]})
    return out


def b_readme_evidence(S, args: str) -> str:
    """The evidence sentences of the README's "Choosing gamma, sigma0 and eps"."""
    v = heldout_verdict([S[i] for i in S])
    lines = []
    state = {True: "survives", False: "does not survive", None: "is undecided in"}[v["survives"]]
    lines.append(f"Judged on seeds that played no part in choosing it (the evaluation seeds of {', '.join(v['experiments'])}), the "
                 f"default **{state}** the held-out check"
                 + (": it failed " + "; ".join(f"{i} ({len(n)} test{'s' if len(n) > 1 else ''})" for i, n in v["failed"].items()) if v["failed"] else "")
                 + ".")
    parts = []
    for i in v["experiments"]:
        s = S[i]
        for c in _collapse_cells(s):
            perf = next(t for t in s["tests"] if t["family"] == "heldout" and t["a"] == c["syre"] and t["metric"] != c["rank"])
            parts.append(f"{i} ({c['label']}): {c['rank']} {fmt.num(_mean(s, c['wd'], c['rank']))} -> {fmt.num(_mean(s, c['syre'], c['rank']))}, "
                         f"{perf['metric']} {fmt.num(perf['mean_b'])} -> {fmt.num(perf['mean_a'])}")
    if parts:
        lines.append("Where weight decay collapses a model, from weight decay to syre at the default: " + "; ".join(parts) + ".")
    tuned_no = [i for i in S if S[i].get("supported_tuned") is False]
    tuned_yes = [i for i in S if S[i].get("supported_tuned") is True]
    lines.append("With every arm at its own tuned gamma (and sigma0), syre is "
                 + (f"**not better** than the best baseline in {', '.join(tuned_no)}" if tuned_no else "never worse")
                 + (f", and better in {', '.join(tuned_yes)}" if tuned_yes else "") + ".")
    sw = S.get("sigma-sweep")
    if sw:
        hurt = [t for t in sw["tests"] if "(harm)" in t["name"] and t["passed"]]
        if hurt:
            lines.append("**Where syre hurts** (sigma0 sweep, validation split): " + "; ".join(_brief(t) for t in hurt) + ".")
        lines.append(f"The sweep's selection rule, re-applied: {sw['findings'].get('rule re-applied', '-')}.")
    return "\n".join(f"{ln}" for ln in lines) + "\n"


def b_sweep(S, args: str) -> str:
    """``sweep EXP``: the sigma0 sweep's table for one experiment."""
    s = S["sigma-sweep"]
    e = args.strip()
    rows = []
    for key, m in s["arms"].items():
        if f"experiment={e}," not in key:
            continue
        arm = key.split("[")[0]
        perf = [t for t in s["tests"] if t["a"] == key and "better than weight decay" in t["name"]]
        harm = [t for t in s["tests"] if t["a"] == key and "(harm)" in t["name"]]
        verdict = "-"
        if perf:
            verdict = "better" if perf[0]["passed"] else "worse" if harm and harm[0]["passed"] else "same"
        rows.append([key.split("gamma=")[1].rstrip("]"), arm] + [fmt.ms(m.get(k, {})) for k in _sweep_metrics(s, e)] + [verdict])
    return fmt.md_table(["gamma", "arm"] + _sweep_metrics(s, e) + ["vs wd"], rows)


def _sweep_metrics(s, e: str) -> List[str]:
    metrics: List[str] = []
    for t in s["tests"]:
        if t["a"].startswith("syre_") and f"experiment={e}," in t["a"] and t["metric"] not in metrics:
            metrics.append(t["metric"])
    return metrics + ["dist_wd", "pull_ratio"]


def b_sweep_study(S, args: str) -> str:
    """``sweep-study norm|trap|spread metric ...``: a side study of the sweep."""
    s = S["sigma-sweep"]
    parts = args.split()
    prefix, metrics = parts[0], parts[1:]
    rows = [[k] + [fmt.ms(m.get(x, {})) for x in metrics] for k, m in s["arms"].items() if k.startswith(prefix)]
    return fmt.md_table(["cell"] + metrics, rows)


def b_scale_arms(S, args: str) -> str:
    """sigma0 scales at the collapsing gamma in the held-out experiments: perf and rank per arm."""
    rows = []
    for i in _ids(args, S):
        s = S[i]
        for c in _collapse_cells(s):
            perf = next(t["metric"] for t in s["tests"] if t["family"] == "heldout" and t["a"] == c["syre"] and t["metric"] != c["rank"])
            base = c["syre"]
            cells = {"wd": c["wd"]}
            for a in ("syre_0.01x", "syre_0.3x", "syre", "syre_3x"):
                cells[a] = base.replace("syre", a, 1) if a != "syre" else base
            row = [i, c["label"]]
            for a, key in cells.items():
                row.append(f"{fmt.num(_mean(s, key, perf))} / {fmt.num(_mean(s, key, c['rank']))}" if key in s["arms"] else "-")
            rows.append(row + [f"{perf} / {c['rank']}"])
    return fmt.md_table(["id", "setting", "wd", "0.01x", "0.3x", "1x (default)", "3x", "metrics"], rows)


BLOCKS: Dict[str, Callable[[Dict[str, Any], str], str]] = {
    "verdicts": b_verdicts, "results-table": b_results_table, "tests": b_tests, "cells": b_cells, "tuned": b_tuned,
    "power": b_power, "heldout": b_heldout, "readme-evidence": b_readme_evidence, "sweep": b_sweep, "sweep-study": b_sweep_study,
    "scale-arms": b_scale_arms,
}


def blocks_in(text: str) -> List[tuple]:
    return [(m.group(1), m.group(2).strip(), m.group(3)) for m in _BLOCK.finditer(text)]


def render(text: str, S: Dict[str, Any]) -> str:
    def sub(m):
        name, args = m.group(1), m.group(2).strip()
        if name not in BLOCKS:
            raise ValueError(f"Invalid block: {name!r}; expected one of {sorted(BLOCKS)}")
        return f"<!-- bench:begin {name}{' ' + args if args else ''} -->\n{BLOCKS[name](S, args)}<!-- bench:end {name} -->"

    return _BLOCK.sub(sub, text)


def write(root: Path) -> List[Path]:
    S = load(root)
    changed = []
    for rel in DOCS:
        path = Path(root) / rel
        text = path.read_text()
        new = render(text, S)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def check(root: Path, summaries: Optional[Dict[str, Any]] = None) -> List[str]:
    """``file: block args`` for every block whose text differs from what the summaries generate."""
    S = load(root) if summaries is None else summaries
    bad = []
    for rel in DOCS:
        text = (Path(root) / rel).read_text()
        for (name, args, body), (_, _, want) in zip(blocks_in(text), blocks_in(render(text, S))):
            if body != want:
                bad.append(f"{rel}: {name} {args}".strip())
    return bad
