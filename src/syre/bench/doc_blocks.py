"""The generators of the documentation's result blocks (see ``syre.bench.docs``).

Each ``b_<name>(S, args) -> str`` turns the committed summaries ``S`` (experiment id -> summary)
into markdown; every number and every verdict word in it comes from ``S``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from . import fmt
from .heldout import verdict as heldout_verdict

__all__ = ["BLOCKS"]


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
    if t["kind"] == "bound":
        extreme = ("largest", t.get("max_x")) if t["direction"] == "less" else ("smallest", t.get("min_x"))
        bits = [f"{extreme[0]} {fmt.num(extreme[1])}"]
    else:
        bits = [f"{fmt.num(t.get('mean_a'))}" + (f" vs {fmt.num(t['mean_b'])}" if t.get("mean_b") is not None else "")]
    if t.get("p") is not None:
        bits.append(fmt.pval(t["p"]))
    if t.get("holds_in") is not None:
        bits.append(f"holds in {t['holds_in']}/{t['n']} seeds")
    if fmt.power_words(t):
        bits.append(fmt.power_words(t)[2:])
    if t["kind"] == "t" and t.get("passed") is False and t.get("mean_x") is not None:
        d = t["mean_x"] - t["threshold"]
        if (d > 0) == (t["direction"] == "greater") and d != 0:
            bits.append(f"the mean lies on the claimed side but is not significant with {t['n']} seeds")
    return f"{t['name']} ({', '.join(bits)})"


def _word(v) -> str:
    return fmt.verdict_word(v)


def _ids(args: str, S) -> List[str]:
    return [i for i in args.split(",") if i in S] if args else list(S)


#: The anchor format of the committed runs made before ``summary.json`` recorded it: E9 ran at 887b017 (anchor format 2),
#: every other one before anchor format 2 existed (format 1). Newer summaries carry ``anchor_format`` themselves.
ANCHOR_FORMAT_BEFORE_RECORDED = {"e9": 2}


def anchor_format(s) -> int:
    return int(s.get("anchor_format") or ANCHOR_FORMAT_BEFORE_RECORDED.get(s["experiment"], 1))


def format_note(s) -> str:
    """Which anchor format a run's numbers come from, and, for an older format, why they were not rerun."""
    from .runner import _anchor_format

    n, now = anchor_format(s), _anchor_format()
    rev = str(s["environment"].get("git_revision"))[:7]
    if n == now:
        return f"run at `{rev}`, anchor format {n} (today's)"
    return (f"run at `{rev}`, anchor format {n}: its syre arms drew format-{n} anchors, today's attachments draw format {now}; "
            f"not rerun (too expensive for now), so these are format-{n} numbers (arms without an anchor reproduce at today's code)")


def ran_at(s) -> str:
    """The default a run ran at: ``sigma0="lecun"``, i.e. 1 x lecun init std, anchor format 1."""
    s0 = s["sigma0"]
    meaning = s0.get("default_meaning", "").replace(" (the library default)", "")
    return f'`sigma0="{s0["library_default"]}"`, i.e. {meaning}, anchor format {anchor_format(s)}'


def _ran_at_all(S, ids) -> str:
    """The defaults a set of runs ran at, grouped by default (with the runs of each group when they differ)."""
    groups: Dict[str, List[str]] = {}
    for i in ids:
        groups.setdefault(ran_at(S[i]), []).append(i)
    return "; ".join(f"{k} ({', '.join(v)})" if len(groups) > 1 else k for k, v in groups.items())


def _cpu_known(s) -> bool:
    return fmt.cpu_known(s)


def _has(s, family: str) -> bool:
    """Whether a run has primary tests in ``family`` (the default study has held-out ones only)."""
    return any(t["role"] == "primary" and t["family"] == family for t in s["tests"])


def _failed(s, family: str) -> List[Dict[str, Any]]:
    return [t for t in s["tests"] if t["family"] == family and t["role"] == "primary" and t["passed"] is False]


# ----------------------------------------------------------------------------- blocks
def b_verdicts(S, args: str) -> str:
    """The verdicts, not-supported first."""
    ids = _ids(args, S)
    lines = []
    for fam, key, label in (("shared", "supported", "at the shared gamma"), ("tuned", "supported_tuned", "with every arm at its tuned gamma")):
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
        rows.append([f"[{i}](results/{i}/results.md)", s["title"], f"v{s['protocol']['version']} `{s['protocol']['hash']}`",
                     f"{len(seeds['selection'])} + {len(seeds['evaluation'])}", f"**{_word(s['supported'])}**" if _has(s, "shared") else "-", tuned,
                     held, ran_at(s),
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


def _on_claimed_side(t: Dict[str, Any]) -> bool:
    return (t["kind"] == "t" and t.get("mean_x") is not None
            and ((t["mean_x"] - t["threshold"] > 0) == (t["direction"] == "greater")))


def _heldout_kind(name: str) -> str:
    """A short name for a held-out test: what it compares, without the setting."""
    if "not worse than tuned weight decay" in name:
        return "no harm at weight decay's tuned gamma"
    if "better than weight decay's at the collapsing gamma" in name:
        return "performance at the collapsing gamma"
    if "above weight decay's at the collapsing gamma" in name:
        return "rank at the collapsing gamma"
    return name.split("held-out: ", 1)[-1]


def _what_should_change(S, v) -> str:
    """For a default that does not survive: what the failures ask for, read from them, failure by failure.

    A failed test whose mean lies on the claimed side asks for more seeds (power); one whose mean lies against
    the claim says the default does not fit that setting; a neighbouring scale that beat the default is a
    candidate only as far as it also held where it was tested and did not win."""
    if v["survives"] is not False:
        return ""
    harmed = {(i, tt["name"].split(", held-out")[0]): tt for i in v["experiments"] for tt in S[i]["tests"]
              if tt["family"] == "heldout" and "(harm test, passes when harmed)" in tt["name"] and tt["passed"] is True}
    under, against = [], []
    for i, names in v["failed"].items():
        for n in names:
            t = _test(S[i], n)
            setting = n.split(", held-out")[0]
            where = f"{i} ({setting}: {_heldout_kind(n)})"
            if "not worse than tuned weight decay" in n and (i, setting) in harmed:
                continue  # said below, with the harm measured
            (under if _on_claimed_side(t) else against).append(where)
    out = []
    if against:
        out.append("the default is worse than the claim, with the mean against it, in " + "; ".join(against)
                   + ": there the default does not fit and a better choice is needed")
    if harmed:
        out.append("syre at the default is significantly worse than tuned weight decay at weight decay's own gamma in "
                   + "; ".join(f"{i} ({st}: {fmt.num(tt['mean_a'])} vs {fmt.num(tt['mean_b'])}, {fmt.pval(tt['p'])})" for (i, st), tt in harmed.items())
                   + ", so its failed no-harm test is harm, not a lack of seeds")
    if under:
        out.append("the mean lies on the claimed side but is not significant in " + "; ".join(under)
                   + ": that asks for more seeds (a new protocol version whose power rule covers these tests), not for another default")
    scales: Dict[str, Dict[str, List[str]]] = {}
    for i in v["experiments"]:
        for t in S[i]["tests"]:
            if t["family"] == "heldout" and t["role"] == "secondary" and "better than the default at the collapsing gamma" in t["name"]:
                a = t["name"].split("held-out: ", 1)[1].split(" better than the default")[0]
                where = f"{i} ({t['name'].split(', held-out')[0]})"
                scales.setdefault(a, {"won": [], "not": []})["won" if t["passed"] else "not"].append(where)
    won = {a: d for a, d in scales.items() if d["won"]}
    if won:
        out.append("; ".join(f"{a} beat the default in {', '.join(d['won'])}" + (f" and not in {', '.join(d['not'])}" if d["not"] else "")
                             for a, d in won.items())
                   + ": a candidate where it won, not yet a new default (to be judged on fresh seeds where it was not chosen)")
    else:
        out.append("no neighbouring scale beat the default in any held-out experiment")
    return " What the failures ask for: " + "; ".join(out) + "."


def b_heldout(S, args: str) -> str:
    v = heldout_verdict([S[i] for i in S])
    word = {True: "**survives**", False: "**does not survive**", None: "is undecided in"}[v["survives"]]
    out = [f"The library default sigma0 they ran at ({_ran_at_all(S, v['experiments'])}) {word} the held-out check on the evaluation "
           f"seeds of {', '.join(v['experiments'])}."]
    if v["failed"]:
        out.append("Failed: " + "; ".join(f"{i}: " + "; ".join(_brief(_test(S[i], n)) for n in names) for i, names in v["failed"].items()) + ".")
    if v["better_scales"]:
        out.append("A neighbouring scale did better than the default in: " + "; ".join(
            f"{i}: " + "; ".join(_brief(_test(S[i], n)) for n in names) for i, names in v["better_scales"].items()) + ".")
    else:
        out.append("No neighbouring scale (0.3x, 3x) was significantly better than the default at the collapsing gamma.")
    out.append(_what_should_change(S, v).strip())
    rows = []
    for i in v["experiments"]:
        for t in S[i]["tests"]:
            if t["family"] == "heldout":
                setting, _, rest = t["name"].partition(", held-out")
                rows.append([i, setting, rest.lstrip(": ").strip(), t["role"], fmt.test_result(t)])
    return " ".join(out) + "\n\n" + fmt.md_table(["id", "setting", "test", "role", "result"], rows)


def _collapse_cells(s) -> List[Dict[str, Any]]:
    """(label, cell of the setting at the collapsing gamma for an arm, no-decay cell) per held-out setting."""
    out = []
    for t in s["tests"]:
        if t["family"] == "heldout" and t["role"] == "primary" and "above weight decay's at the collapsing gamma" in t["name"]:
            out.append({"label": t["name"].split(", held-out")[0], "syre": t["a"], "wd": t["b"], "rank": t["metric"]})
    return out


def b_readme_evidence(S, args: str) -> str:
    """The evidence sentences of the README's "Choosing gamma, sigma0 and eps": where syre does not help first."""
    v = heldout_verdict([S[i] for i in S])
    lines = []
    tuned_no = [i for i in S if S[i].get("supported_tuned") is False]
    tuned_yes = [i for i in S if S[i].get("supported_tuned") is True]
    if tuned_no:
        lines.append("With every arm at its own tuned gamma (and sigma0), syre is **not significantly better than every tuned "
                     f"baseline** in {', '.join(tuned_no)}" + (f"; it is in {', '.join(tuned_yes)}" if tuned_yes else "") + ".")
    elif tuned_yes:
        lines.append(f"With every arm at its own tuned gamma (and sigma0), syre is better than every tuned baseline in {', '.join(tuned_yes)}.")
    sw = S.get("sigma-sweep")
    if sw:
        hurt = [t for t in sw["tests"] if "(harm)" in t["name"] and t["passed"]]
        default = [t for t in hurt if " at 1x " in t["name"]]
        if hurt:
            lines.append("**Where syre hurts** (sigma0 sweep, validation split, seeds 0-4): "
                         + ("at the default scale " + "; ".join(_brief(t) for t in default) + "; " if default else "")
                         + "significantly worse than weight decay at: "
                         + ", ".join(t["name"].split(": syre at ")[0] + " " + t["name"].split(": syre at ")[1].split(" ")[0] for t in hurt) + ".")
        lines.append(f"The sweep's selection rule, re-applied: {sw['findings'].get('rule re-applied', '-')}.")
    state = {True: "survives", False: "does not survive", None: "is undecided in"}[v["survives"]]
    where = ", ".join(v["experiments"]) or "no experiment yet"
    lines.append(f"Judged on seeds that played no part in choosing it (the evaluation seeds of {where}), the default they ran at "
                 f"({_ran_at_all(S, v['experiments'])}) **{state}** the held-out check"
                 + (": it failed " + "; ".join(f"{i}: " + "; ".join(_brief(_test(S[i], n)) for n in names) for i, names in v["failed"].items())
                    if v["failed"] else "") + "." + _what_should_change(S, v))
    parts, l2 = [], []
    for i in v["experiments"]:
        s = S[i]
        for c in _collapse_cells(s):
            perf = next(t for t in s["tests"] if t["family"] == "heldout" and t["a"] == c["syre"] and t["metric"] != c["rank"])
            parts.append(f"{i} ({c['label']}): {c['rank']} {fmt.num(_mean(s, c['wd'], c['rank']))} -> {fmt.num(_mean(s, c['syre'], c['rank']))}, "
                         f"{perf['metric']} {fmt.num(perf['mean_b'])} -> {fmt.num(perf['mean_a'])}")
            l2key = c["syre"].replace("syre", "l2init", 1)
            if l2key in s["arms"]:
                l2.append(f"{i} ({c['label']}) {perf['metric']} {fmt.num(_mean(s, l2key, perf['metric']))} vs syre's {fmt.num(perf['mean_a'])}")
    if parts:
        lines.append("Where weight decay collapses a model, from weight decay to syre at the default: " + "; ".join(parts) + ".")
    if l2:
        lines.append("L2-Init (decay toward the initial weights) at the same gamma: " + "; ".join(l2) + ".")
    return "".join(f"  - {ln}\n" for ln in lines)


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
    ids = [i for i in _ids(args, S) if _collapse_cells(S[i])]
    return (fmt.md_table(["id", "setting", "wd", "0.01x", "0.3x", "1x (default)", "3x", "metrics"], rows)
            + (f"\nThe default these runs ran at: {_ran_at_all(S, ids)}; the scales are multiples of its LeCun init std.\n" if ids else ""))


def b_account(S, args: str) -> str:
    """``account ID``: an experiment's verdicts in words, failures first, with the numbers of every primary test."""
    s = S[args.strip()]
    out = []
    tuned = bool(s["protocol"]["declaration"].get("tuning"))
    fams = [("shared", "supported", "At the shared gamma" if tuned else "Verdict")] if _has(s, "shared") or "heldout_verdict" not in s else []
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
        out.append(f"Sanity checks (hold by construction): {'all ' + str(len(san)) + ' hold' if not bad else 'failed: ' + '; '.join(_brief(t) for t in bad)}.")
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
            f"together: {total / 3600:.1f} h of wall time" + (f", {sum(cpu) / 3600:.1f} h of CPU time in the runs that record it" if cpu else "")
            + ".\n")


def b_e7_paper(S, args: str) -> str:
    from .e7 import PAPER

    s = S["e7"]
    rows = [["paper, SimCLR (CIFAR-100, ResNet-18)", f"{PAPER['lowrank_proj'][0]:.0%}", f"{PAPER['probe'][0]:.1%}",
             f"{PAPER['lowrank_backbone'][0]:.1%}", "-"],
            ["paper, SimCLR + syre", f"{PAPER['lowrank_proj'][1]:.0%}", f"{PAPER['probe'][1]:.1%}", f"{PAPER['lowrank_backbone'][1]:.1%}", "-"]]
    for k, m in s["arms"].items():
        rows.append([f"ours, {k}"] + [fmt.ms(m[x], pct=True) for x in ("lowrank_proj", "probe_proj", "lowrank_backbone", "probe_backbone")])
    pct = lambda k: f"{100 * _mean(s, k, 'lowrank_proj'):.0f}%"  # noqa: E731
    note = (f"\nThe verdict at the shared gamma ({_word(s['supported'])}) tests the direction against weight decay only. The paper's "
            f"size is not reproduced: the projector's low-rank share goes from {pct('wd')} under weight decay to {pct('syre')} under "
            f"syre (the paper: {PAPER['lowrank_proj'][0]:.0%} -> {PAPER['lowrank_proj'][1]:.0%}), and no decay has {pct('none')}: "
            "syre undoes weight decay's collapse, it does not remove the near-zero eigenvalues. Anchor format "
            f"{anchor_format(s)}.\n")
    return fmt.md_table(["", "projector low-rank share", "projector probe", "backbone low-rank share", "backbone probe"], rows) + note


def b_averaging(S, args: str) -> str:
    """E13: is the average of two shared-anchor runs a working model? Its accuracy beside its runs', per dataset and gamma."""
    s = S["e13"]
    parts = []
    for d in s["config"]["datasets"]:
        none = f"none[dataset={d}]"
        bits = []
        for g in s["config"]["gammas"]:
            k = f"syre[dataset={d},gamma={fmt.num(float(g))}]"
            bits.append(f"gamma {fmt.num(float(g))}: average {fmt.num(_mean(s, k, 'mid_acc'))}, each run {fmt.num(_mean(s, k, 'end_acc'))}")
        parts.append(f"{d} (standard training: average {fmt.num(_mean(s, none, 'mid_acc'))}, each run {fmt.num(_mean(s, none, 'end_acc'))}): "
                     + "; ".join(bits))
    d = s["config"]["datasets"][0]
    lo, hi = (fmt.num(float(g)) for g in (min(s["config"]["gammas"]), max(s["config"]["gammas"])))
    m = lambda g, x: _mean(s, f"syre[dataset={d},gamma={g}]", x)  # noqa: E731
    end0 = _mean(s, f"none[dataset={d}]", "end_acc")
    return ("Accuracy of the average of two shared-anchor syre runs (no alignment) beside the accuracy of each run: "
            + ". ".join(parts) + f". On {d}, the average keeps {m(lo, 'mid_acc') / m(lo, 'end_acc'):.0%} of its runs' accuracy at gamma "
            f"{lo}, where each run is {100 * (end0 - m(lo, 'end_acc')):.1f} points below standard training, and "
            f"{m(hi, 'mid_acc') / m(hi, 'end_acc'):.0%} at gamma {hi}, where each run is {100 * (end0 - m(hi, 'end_acc')):.1f} points below "
            f"it. Anchor format {anchor_format(s)}.\n")


def b_backbone(S, args: str) -> str:
    """E7's backbone probe against weight decay, every arm, one protocol."""
    s = S["e7"]
    parts = []
    for k in s["arms"]:
        if k in ("wd", "none") or "@" in k:
            continue
        up, down = _test(s, f"{k}: backbone probe accuracy above weight decay's"), _test(s, f"{k}: backbone probe accuracy below weight decay's")
        word = "above" if up["passed"] else "below" if down["passed"] else "not significantly different from"
        p = up["p"] if up["passed"] else down["p"] if down["passed"] else min(up.get("p") or 1, down.get("p") or 1)
        parts.append(f"{k} {fmt.num(up['mean_a'])} ({word} weight decay's {fmt.num(up['mean_b'])}, {fmt.pval(p)})")
    t = [x for x in s["tests"] if x["name"] == "tuned: syre's backbone probe accuracy above wd's"]
    tuned = f"; tuned, syre {fmt.num(t[0]['mean_a'])} vs weight decay {fmt.num(t[0]['mean_b'])} ({fmt.pval(t[0].get('p'))})" if t else ""
    return ("Backbone linear probe at the shared gamma (E7's evaluation seeds, the only protocol it is measured under): "
            + "; ".join(parts) + f"; no decay {fmt.num(_mean(s, 'none', 'probe_backbone'))}{tuned}.\n")


def b_norm_eps(S, args: str) -> str:
    """The sweep's 1-D rule and d_spread studies in two sentences."""
    s = S["sigma-sweep"]

    def m(key, metric):
        return _mean(s, key, metric)

    n = lambda r, x: m(f"norm:{r}[study=norm]", x)  # noqa: E731
    spreads = sorted(float(k.split("=")[1].rstrip("]")) for k in s["arms"] if k.startswith("trap["))
    trap = ", ".join(f"{fmt.num(m(f'trap[d_spread={e:g}]', 'mirror_distance'), 2)} at {e:g}" for e in spreads)
    acc = ", ".join(f"{fmt.num(m(f'spread[d_spread={e:g}]', 'test_acc'))} at {e:g}" for e in spreads)
    return (f"LayerNorm MLP at gamma {fmt.num(s['config']['norm_gamma'])}: anchoring the norm weights as if their fan-in were 1 (`one`) "
            f"left {fmt.num(100 * n('one', 'dead_units'), 2)}% of the hidden units dead (the library's unit rule: "
            f"{fmt.num(100 * n('unit', 'dead_units'), 2)}%, the origin: {fmt.num(100 * n('origin', 'dead_units'), 2)}%); accuracy "
            f"unit rule {fmt.num(n('unit', 'test_acc'))}, origin {fmt.num(n('origin', 'test_acc'))}, no decay on the norms "
            f"(`exclude=syre.NORM_TYPES`) {fmt.num(n('excluded', 'test_acc'))}, weight decay {fmt.num(n('wd', 'test_acc'))}. "
            f"Rotation trap, distance from the mirror by d_spread: {trap}; E5 accuracy with AR by d_spread: {acc}.\n")


def b_pull(S, args: str) -> str:
    """Share of weight decay's rank loss that syre undoes, against the measured pull / update, in the sweep's collapse settings."""
    s = S["sigma-sweep"]
    rows = []
    for e, g in s["config"]["collapse_settings"]:
        wd = f"wd[experiment={e},gamma={fmt.num(float(g))}]"
        rank = next(t["metric"] for t in s["tests"] if t["b"] == wd and "raises" in t["name"])
        none = _mean(s, f"none[experiment={e},gamma=0]", rank)
        r_wd = _mean(s, wd, rank)
        for k in s["arms"]:
            if k.startswith("syre_") and k.endswith(f"[experiment={e},gamma={fmt.num(float(g))}]"):
                share = (_mean(s, k, rank) - r_wd) / (none - r_wd) if none != r_wd else None
                rows.append([f"{e}, gamma {fmt.num(float(g))}", k.split("[")[0], fmt.num(_mean(s, k, "pull_ratio"), 2), fmt.num(share, 2)])
    return fmt.md_table(["setting", "arm", "pull / update", "share of weight decay's rank loss undone"], rows)


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


_SETTING_NAMES = {"mlp": "an MLP", "charlm": "a nanoGPT-style char LM", "gpt2": "a GPT-2 model (Conv1D)",
                  "resnet": "a BatchNorm ResNet (norm layers excluded)", "gcn": "a GCN"}


def b_default_study(S, args: str) -> str:
    """The first paragraph of the README's "Choosing gamma, sigma0 and eps": should I use syre, with what settings, where it does
    not help; from the default study (``default-scale``). ``args``: the folder of its results, relative to the document."""
    import syre

    s = S["default-scale"]
    link = (args.strip() or "benchmarks/results/default-scale") + "/results.md"
    # A page of the built docs cannot link outside its source folder: name the file there instead.
    study = (f"registered study (`{link[3:]}`)" if link.startswith("../") else f"[registered study]({link})")
    spec = s["chosen"]["sigma0"]
    settings = s["config"]["settings"]
    rows = {(r["arm"], r["setting"], r["gamma"]): r for r in s["table"]}

    def test(setting, kind):
        return next((t for t in s["tests"] if t["a"].startswith(f"chosen[setting={setting},") and f"({kind})" in t["name"]), None)

    def nums(k, t):
        return f"{k} ({t['metric'].replace('_', ' ')} {fmt.num(t['mean_a'])} vs {fmt.num(t['mean_b'])})"

    held = [k for k, v in settings.items() if v["role"] == "heldout"]
    sel = [k for k, v in settings.items() if v["role"] == "selection"]
    better, unsure, worse, noharm, harm, l2 = [], [], [], [], [], []
    for k in held + sel:
        c, ty = test(k, "collapsing"), test(k, "typical")
        if c is not None:
            (better if c["passed"] else unsure if _on_claimed_side(c) else worse).append(nums(k, c))
            g = float(settings[k]["gammas"][1])
            a, b = rows.get(("l2init", k, g)), rows.get(("chosen", k, g))
            if a and b and a["mean"] is not None and b["mean"] is not None and (
                    (a["mean"] > b["mean"]) == (settings[k]["better"] == "max")) and a["mean"] != b["mean"]:
                l2.append(f"{k} ({fmt.num(a['mean'])} vs {fmt.num(b['mean'])})")
        if ty is not None:
            (noharm if ty["passed"] else harm).append(k)
    margin = " / ".join(sorted({fmt.num(v["margin"]) for v in settings.values()}))
    verdict = {True: "**held**", False: "**did not hold**", None: "was **undecided**"}[s["heldout_verdict"]]
    text = ("**Should I use syre?** Only where the weight decay you train with is strong enough to collapse a model: at a typical "
            f"decay it changed little in a {study} (within a {margin} margin of weight decay in "
            f"{', '.join(noharm) or 'no setting'}" + (f"; not shown in {', '.join(harm)}" if harm else "") + "). "
            f"At a collapsing decay the study chose `sigma0=\"{spec}\"` among `\"lecun\"`, `\"match\"` and `\"match:0.3\"` on "
            f"{' and '.join(_SETTING_NAMES.get(k, k) for k in sel)}, and judged it on fresh seeds of "
            f"{', '.join(_SETTING_NAMES.get(k, k) for k in held)}, where its claim {verdict}. Against weight decay there it was better in "
            f"{'; '.join(better) or 'no setting'}")
    if unsure:
        text += f"; better on average but not significantly in {'; '.join(unsure)}"
    if worse:
        text += f"; worse in {'; '.join(worse)}"
    text += "."
    if l2:
        text += (f" L2-Init (`target=\"init\"`, decay toward the initial weights), the reference, had a better mean than the chosen "
                 f"anchor at the collapsing decay in {'; '.join(l2)}.")
    default = syre.DEFAULT_SIGMA0
    text += (f" `\"{spec}\"` is `attach`'s default." if spec == default else
             f" `attach`'s default is `\"{default}\"`; the study's choice is `sigma0=\"{spec}\"`.")
    return text + "\n"


BLOCKS: Dict[str, Callable[[Dict[str, Any], str], str]] = {
    "default-study": b_default_study,
    "verdicts": b_verdicts, "results-table": b_results_table, "tests": b_tests, "cells": b_cells, "tuned": b_tuned,
    "power": b_power, "heldout": b_heldout, "readme-evidence": b_readme_evidence, "sweep": b_sweep, "sweep-study": b_sweep_study,
    "scale-arms": b_scale_arms, "account": b_account, "environment": b_environment, "e7-paper": b_e7_paper, "backbone": b_backbone,
    "norm-eps": b_norm_eps, "pull": b_pull, "paper": b_paper, "finding": b_finding, "averaging": b_averaging,
}
