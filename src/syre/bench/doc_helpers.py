"""Helpers of the documentation's result blocks (``syre.bench.doc_blocks``): a summary's tests, means, labels."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from . import fmt

__all__ = ["anchor_format", "format_note", "ran_at", "ANCHOR_FORMAT_BEFORE_RECORDED"]


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
    from .runenv import _anchor_format

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


def _collapse_cells(s) -> List[Dict[str, Any]]:
    """(label, cell of the setting at the collapsing gamma for an arm, no-decay cell) per held-out setting."""
    out = []
    for t in s["tests"]:
        # (the rank test is a sanity check where it holds by construction, E10 v2: the setting is still one)
        if t["family"] == "heldout" and t["role"] in ("primary", "sanity") and "above weight decay's at the collapsing gamma" in t["name"]:
            out.append({"label": t["name"].split(", held-out")[0], "syre": t["a"], "wd": t["b"], "rank": t["metric"]})
    return out
