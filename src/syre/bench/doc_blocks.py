"""The generators of the documentation's result blocks (see ``syre.bench.docs``).

Each ``b_<name>(S, args) -> str`` turns the committed summaries ``S`` (experiment id -> summary)
into markdown; every number and every verdict word in it comes from ``S``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

from . import fmt
from .doc_heldout import b_default_study, b_heldout, b_readme_evidence, b_scale_arms
from .doc_helpers import (  # noqa: F401
    ANCHOR_FORMAT_BEFORE_RECORDED,
    _brief,
    _cpu_known,
    _failed,
    _has,
    _ids,
    _word,
    anchor_format,
    format_note,
    ran_at,
)
from .doc_studies import b_averaging, b_backbone, b_e7_paper, b_norm_eps, b_pull, b_sweep, b_sweep_study

__all__ = ["BLOCKS"]


def b_verdicts(S, args: str) -> str:
    """The verdicts, not-supported first."""
    ids = _ids(args, S)
    lines = []
    for fam, key, label in (("shared", "supported", "at the shared gamma"),
                            ("tuned", "supported_tuned", "with every arm at its tuned gamma")):
        rel = [i for i in ids if (S[i]["protocol"]["declaration"].get("tuning") or fam == "shared") and _has(S[i], fam)]
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
        if "heldout_verdict" in s:  # the default study: its chosen candidate on held-out settings and seeds
            held = f"{s['chosen']['candidate']}: " + {True: "holds", False: "does not hold", None: "undecided"}[s["heldout_verdict"]]
        rej = f" (re-judged from v{s['rejudged']['from']}'s trials)" if s.get("rejudged") else ""
        rows.append([f"[{i}](results/{i}/results.md)", s["title"], f"v{s['protocol']['version']} `{s['protocol']['hash']}`{rej}",
                     f"{len(seeds['selection'])} + {len(seeds['evaluation'])}",
                     f"**{_word(s['supported'])}**" if _has(s, "shared") else "-", tuned, held, ran_at(s),
                     f"{s['wall_time_s']:.0f} s" + (f" / {s['cpu_time_s']:.0f} s" if _cpu_known(s) else "")])
    return fmt.md_table(["id", "experiment", "protocol", "seeds (selection + evaluation)", "shared gamma", "tuned gamma",
                         "default sigma0, held out", "ran at (the default then)", "wall / CPU time"], rows)


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
    return fmt.md_table(["cell"] + metrics, rows) + f"\nmean ± std over the {n} evaluation seeds; {format_note(s)}.\n"


def b_tuned(S, args: str) -> str:
    rows = []
    for i in _ids(args, S):
        if not S[i]["protocol"]["declaration"].get("tuning"):
            continue  # (the default study's selection is not a tuning grid: its own block says it)
        for ck, by_arm in (S[i].get("selection") or {}).items():
            for arm, sel in by_arm.items():
                ch = sel["chosen"]
                rows.append([i, ck, arm, fmt.num(ch["gamma"]), ch["sigma0"] if ch.get("sigma0") is not None else "-", fmt.num(ch["mean"])])
    return fmt.md_table(["id", "context", "arm", "chosen gamma", "chosen sigma0", "validation score"], rows) if rows else "(no tuning)\n"


def b_power(S, args: str) -> str:
    """Every primary t-test: its power at the seed count it ran with, and the seed count the target needs; underpowered first."""
    rows = []
    for i in _ids(args, S):
        for t in S[i]["tests"]:
            if t["role"] != "primary" or t["kind"] != "t" or "power" not in t:
                continue
            low = t["power"] is not None and t["power"] < 0.8
            rows.append((not low, i, [i, t["family"], t["name"], t["n"], fmt.num(t["power"], 2) + (" **underpowered**" if low else ""),
                                      t.get("n_needed") or "-", t.get("power_source", "")]))
    rows.sort(key=lambda r: r[0])
    return fmt.md_table(["id", "family", "test", "seeds", "power", "seeds needed for 0.8", "effect size from"], [r[2] for r in rows])


def b_account(S, args: str) -> str:
    """``account ID``: an experiment's verdicts in words, failures first, with the numbers of every primary test."""
    s = S[args.strip()]
    out = []
    tuned = bool(s["protocol"]["declaration"].get("tuning"))
    fams = ([("shared", "supported", "At the shared gamma" if tuned else "Verdict")]
            if _has(s, "shared") or "heldout_verdict" not in s else [])
    if "heldout_verdict" in s:  # the default study
        fams.append(("heldout", "heldout_verdict", f"The candidate chosen on the selection settings ({s['chosen']['candidate']}, "
                                                    "chosen by the declared rule) on the held-out settings and fresh seeds"))
    if tuned:
        fams.append(("tuned", "supported_tuned", "With every arm at its tuned gamma"))
    if "default_survives" in s:
        fams.append(("heldout", "default_survives", f"The library default sigma0 this run ran at ({ran_at(s)}) on these held-out seeds"))
    for fam, key, label in fams:
        prim = [t for t in s["tests"] if t["family"] == fam and t["role"] == "primary"]
        word = _word(s[key]) if fam != "heldout" or key == "heldout_verdict" else {True: "survives", False: "does not survive",
                                                                                  None: "undecided"}[s[key]]
        fail = [t for t in prim if t["passed"] is False]
        und = [t for t in prim if t["passed"] is None]
        ok = [t for t in prim if t["passed"] is True]
        text = f"**{label}: {word}.**"
        if fail:
            text += " Fails: " + "; ".join(_brief(t) for t in fail) + "."
        if und:
            text += " Undecided: " + "; ".join(_brief(t) for t in und) + "."
        if ok:
            text += " Holds: " + "; ".join(_brief(t) for t in ok) + "."
        out.append(text)
    san = [t for t in s["tests"] if t["role"] == "sanity"]
    if san:
        bad = [t for t in san if t["passed"] is False]
        out.append("Sanity checks (hold by construction): "
                   f"{'all ' + str(len(san)) + ' hold' if not bad else 'failed: ' + '; '.join(_brief(t) for t in bad)}.")
    if s.get("rejudged"):
        r = s["rejudged"]
        out.append(f"Protocol v{s['protocol']['version']}: re-judged from v{r['from']}'s trials, no retraining "
                   f"({s['protocol']['changes'].split(': ', 1)[-1]}); v{r['from']}'s summary is kept in "
                   f"`results/{s['experiment']}/v{r['from']}/`.")
    out.append(f"Numbers: {format_note(s)}.")
    return "\n\n".join(out) + "\n"


def b_environment(S, args: str) -> str:
    envs = [s["environment"] for s in S.values()]

    def one(key):
        vals = sorted({str(e.get(key)) for e in envs})
        return ", ".join(vals)

    revs = sorted({str(e.get("git_revision"))[:7] for e in envs})
    dirty = any(e.get("git_dirty") for e in envs)
    total = sum(s["wall_time_s"] for s in S.values())
    cpu = [s["cpu_time_s"] for s in S.values() if _cpu_known(s)]
    return (f"Machine: {one('cpu_count')} CPU cores ({one('processor')}, {one('platform')}), {one('torch_threads')} torch thread per run; "
            f"Python {one('python')}, torch {one('torch')}, numpy {one('numpy')}, scipy {one('scipy')}; syre {one('syre')} at git "
            f"revision {', '.join(f'`{r}`' for r in revs)} ({'dirty' if dirty else 'clean'} tree). The runs ran one after another on a "
            f"machine shared with other work, so wall times are upper bounds and CPU times (where recorded) the better guide; all runs "
            f"together: {total / 3600:.1f} h of wall time"
            + (f", {sum(cpu) / 3600:.1f} h of CPU time in the runs that record it" if cpu else "")
            + ".\n")


def b_paper(S, args: str) -> str:
    """The paper's claims against this reproduction's verdicts, not-supported first."""
    ids = _ids(args, S)
    order = sorted(ids, key=lambda i: (S[i].get("supported") is not False and S[i].get("supported_tuned") is not False, ids.index(i)))
    rows = []
    for i in order:
        s = S[i]
        fails = _failed(s, "shared") + _failed(s, "tuned")
        tuned = _word(s.get("supported_tuned")) if s["protocol"]["declaration"].get("tuning") else "-"
        rows.append([i, s["claim"], f"**{_word(s['supported'])}**", tuned, "; ".join(_brief(t) for t in fails) or "-", anchor_format(s)])
    return fmt.md_table(["id", "the paper's claim", "shared gamma", "tuned gamma", "failed primary tests", "anchor format"], rows)


def b_finding(S, args: str) -> str:
    """``finding ID key words``: one finding of a run, as it recorded it."""
    i, key = args.split(" ", 1)
    text = S[i]["findings"][key]
    if "the default" in text:
        text += f" (The default of this run: {ran_at(S[i])}.)"
    else:
        text += f" (Anchor format {anchor_format(S[i])}.)"
    return f"{text}\n"


BLOCKS: Dict[str, Callable[[Dict[str, Any], str], str]] = {
    "default-study": b_default_study,
    "verdicts": b_verdicts, "results-table": b_results_table, "tests": b_tests, "cells": b_cells, "tuned": b_tuned,
    "power": b_power, "heldout": b_heldout, "readme-evidence": b_readme_evidence, "sweep": b_sweep, "sweep-study": b_sweep_study,
    "scale-arms": b_scale_arms, "account": b_account, "environment": b_environment, "e7-paper": b_e7_paper, "backbone": b_backbone,
    "norm-eps": b_norm_eps, "pull": b_pull, "paper": b_paper, "finding": b_finding, "averaging": b_averaging,
}
