"""A new protocol version that decides an earlier version's trials again, with no retraining.

Some rules can change without new trials: a test that holds (almost) by construction demoted to a sanity
check, a task-metric test promoted to primary, a claim reworded to say what its tests test. Such a version
is declared in the experiment's module as a ``Rejudge`` (``Experiment.rejudge``): the source version's
claim and changes (so its registered declaration is still built by the code, hash for hash), and the
role of each changed test. Its seeds are the source's (the trials it decides).

``rejudge(exp_id, root)`` reads the committed summary of the source version, checks its hash against the
ledger, registers the new version, copies every test result whose declaration is unchanged apart from its
role, decides the verdicts again, keeps the source's summary and results under ``<id>/v<source>/``, writes
the new summary and ``results.md``, and adds a run of kind ``"rejudged"`` to the ledger ("re-judged from
v1's trials, no retraining"). A test that is new in the declaration has no stored per-seed values and is
refused: that needs a run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from . import fmt, ledger, stats
from .protocol import Rejudge, apply
from .registry import get_experiment
from .runner import build_protocol, environment, json_safe

__all__ = ["Rejudge", "apply", "rejudge"]  # Rejudge and apply are declared in protocol.py


def _same_rules(a: Dict[str, Any], b: Dict[str, Any]) -> bool:
    skip = ("role", "why")
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


def rejudge(exp_id: str, root: Union[str, Path] = ".", verbose: bool = True) -> Dict[str, Any]:
    """Write the re-judged summary of ``exp_id``'s newest version from its source version's committed run (see above)."""
    exp = get_experiment(exp_id)
    r: Optional[Rejudge] = exp.rejudge
    if r is None or r.version != exp.version:
        raise ValueError(f"Invalid re-judgement: experiment {exp_id} declares no re-judged version")
    root = Path(root)
    here = root / "benchmarks" / "results" / exp_id
    path = root / "benchmarks" / "protocols.json"
    src = json.loads((here / "summary.json").read_text())
    cfg = exp.config()
    old = build_protocol(exp, cfg, version=r.source)
    led = ledger.read_ledger(path)
    if str(exp.version) in led.get(exp_id, {}):
        raise ValueError(f"Invalid re-judgement: version {exp.version} of {exp_id} is already in the ledger")
    if src["protocol"]["version"] != r.source or src["protocol"]["hash"] != old.hash() or led[exp_id][str(r.source)]["hash"] != old.hash():
        raise ValueError(f"Invalid re-judgement: the committed summary of {exp_id} is not the registered version {r.source} run")
    new = build_protocol(exp, cfg)
    if new.evaluation_seeds != src["seeds"]["evaluation"] or new.selection_seeds != src["seeds"]["selection"]:
        raise ValueError(f"Invalid re-judgement: version {new.version} of {exp_id} declares other seeds than the trials it decides")
    started = ledger.now()
    by_name = {t["name"]: t for t in src["tests"]}
    declared = {t["name"]: t for t in src["protocol"]["declaration"]["tests"]}
    tests = []
    for t in new.design.tests:
        if t.name not in by_name or not _same_rules(declared[t.name], t.declaration()):
            raise ValueError(f"Invalid re-judgement: test {t.name!r} is not one of version {r.source}'s (it needs a run)")
        res = dict(by_name[t.name], role=t.role, family=t.family)
        if t.why:
            res["why"] = t.why
        tests.append(res)
    ledger.register(new, path)  # only once every test it decides is one of the source's
    sane = stats.sanity_ok(tests)
    verdicts = {fam: (stats.verdict(tests, fam) if sane else None) for fam in ("shared", "tuned", "heldout")}
    env = environment()
    note = (f"re-judged from v{r.source}'s trials, no retraining: protocol v{new.version} changes the rules as its changes say "
            f"({new.changes}); every number is v{r.source}'s (run at {str(src['environment'].get('git_revision'))[:7]}), "
            f"v{r.source}'s summary and results are kept in v{r.source}/")
    moved = {"from": r.source, "from_hash": old.hash(), "revision": env["git_revision"], "git_dirty": env["git_dirty"],
             "trials_revision": src["environment"].get("git_revision"), "date": started, "note": note}
    summary = dict(src)
    summary.update(claim=new.claim, tests=tests, supported=verdicts["shared"], sanity_ok=sane,
                   protocol={"version": new.version, "hash": new.hash(), "changes": new.changes, "registered": True,
                             "power": new.power, "declaration": new.declaration()},
                   notes=[note] + [n for n in src.get("notes", [])], rejudged=moved)
    if src.get("supported_tuned") is not None or new.design.tuning:
        summary["supported_tuned"] = verdicts["tuned"]
    if "default_survives" in src:
        summary["default_survives"] = verdicts["heldout"]
    summary = json_safe(summary)
    keep = here / f"v{r.source}"
    keep.mkdir(exist_ok=True)
    (keep / "summary.json").write_text(json.dumps(src, indent=1) + "\n")
    md = (here / "results.md").read_text()
    for p in src.get("plots", []):
        md = md.replace(f"]({p})", f"](../{p})")
    (keep / "results.md").write_text(md)
    (here / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (here / "results.md").write_text(fmt.results_markdown(
        summary, [f"The tables of the trials: [v{r.source}/results.md](v{r.source}/results.md)."]))
    led = ledger.read_ledger(path)
    done = [run for run in led[exp_id][str(r.source)].get("runs", []) if run.get("outcome") == "completed"]
    if done:  # the run the source summary comes from: its summary is now kept under v<source>/
        done[-1]["summary"] = f"benchmarks/results/{exp_id}/v{r.source}/summary.json"
    ledger._write(path, led)
    ledger.add_run(path, exp_id, new.version, {
        "kind": "rejudged", "from": r.source, "revision": env["git_revision"], "git_dirty": env["git_dirty"],
        "trials_revision": moved["trials_revision"], "anchor_format": _format(src, root), "started": started, "ended": ledger.now(),
        "outcome": "completed", "summary": f"benchmarks/results/{exp_id}/summary.json",
        "note": f"re-judged from v{r.source}'s trials, no retraining"})
    if verbose:
        print(f"[{exp_id}] v{new.version} {new.hash()} re-judged from v{r.source}: shared {fmt.verdict_word(summary['supported'])}, "
              f"tuned {fmt.verdict_word(summary.get('supported_tuned'))}")
    return summary


def _format(src: Dict[str, Any], root: Path) -> Optional[int]:
    if src.get("anchor_format") is not None:
        return src["anchor_format"]
    rev = src["environment"].get("git_revision")
    return ledger.anchor_format_at(rev, root) if rev else None
