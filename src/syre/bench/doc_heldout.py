"""Result blocks of the held-out check and the default study (see ``syre.bench.doc_blocks``)."""
from __future__ import annotations

from typing import Dict, List

from . import fmt
from .doc_helpers import _brief, _collapse_cells, _heldout_kind, _ids, _mean, _on_claimed_side, _ran_at_all, _test
from .heldout import verdict as heldout_verdict

__all__ = ["b_heldout", "b_readme_evidence", "b_scale_arms", "b_default_study"]


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
                   + "; ".join(f"{i} ({st}: {fmt.num(tt['mean_a'])} vs {fmt.num(tt['mean_b'])}, {fmt.pval(tt['p'])})"
                               for (i, st), tt in harmed.items())
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
        out.append("Failed: " + "; ".join(f"{i}: " + "; ".join(_brief(_test(S[i], n)) for n in names)
                                          for i, names in v["failed"].items()) + ".")
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
        lines.append("With every arm at its own tuned gamma (and sigma0), syre is better than every tuned baseline in "
                     f"{', '.join(tuned_yes)}.")
    sw = S.get("sigma-sweep")
    if sw:
        hurt = [t for t in sw["tests"] if "(harm)" in t["name"] and t["passed"]]
        default = [t for t in hurt if " at 1x " in t["name"]]
        if hurt:
            lines.append("**Where syre hurts** (sigma0 sweep, validation split, seeds 0-4): "
                         + ("at the default scale " + "; ".join(_brief(t) for t in default) + "; " if default else "")
                         + "significantly worse than weight decay at: "
                         + ", ".join(t["name"].split(": syre at ")[0] + " " + t["name"].split(": syre at ")[1].split(" ")[0]
                                     for t in hurt) + ".")
        lines.append(f"The sweep's selection rule, re-applied: {sw['findings'].get('rule re-applied', '-')}.")
    state = {True: "survives", False: "does not survive", None: "is undecided in"}[v["survives"]]
    where = ", ".join(v["experiments"]) or "no experiment yet"
    lines.append(f"Judged on seeds that played no part in choosing it (the evaluation seeds of {where}), the default they ran at "
                 f"({_ran_at_all(S, v['experiments'])}) **{state}** the held-out check"
                 + (": it failed " + "; ".join(f"{i}: " + "; ".join(_brief(_test(S[i], n)) for n in names)
                                               for i, names in v["failed"].items())
                    if v["failed"] else "") + "." + _what_should_change(S, v))
    parts, l2 = [], []
    for i in v["experiments"]:
        s = S[i]
        for c in _collapse_cells(s):
            perf = next(t for t in s["tests"] if t["family"] == "heldout" and t["a"] == c["syre"] and t["metric"] != c["rank"])
            parts.append(f"{i} ({c['label']}): {c['rank']} {fmt.num(_mean(s, c['wd'], c['rank']))} -> "
                         f"{fmt.num(_mean(s, c['syre'], c['rank']))}, "
                         f"{perf['metric']} {fmt.num(perf['mean_b'])} -> {fmt.num(perf['mean_a'])}")
            l2key = c["syre"].replace("syre", "l2init", 1)
            if l2key in s["arms"]:
                l2.append(f"{i} ({c['label']}) {perf['metric']} {fmt.num(_mean(s, l2key, perf['metric']))} "
                          f"vs syre's {fmt.num(perf['mean_a'])}")
    if parts:
        lines.append("Where weight decay collapses a model, from weight decay to syre at the default: " + "; ".join(parts) + ".")
    if l2:
        lines.append("L2-Init (decay toward the initial weights) at the same gamma: " + "; ".join(l2) + ".")
    return "".join(f"  - {ln}\n" for ln in lines)


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
