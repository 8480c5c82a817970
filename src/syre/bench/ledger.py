"""The protocol ledger (``benchmarks/protocols.json``): each experiment's registered versions and the runs of each.

Layout: ``{experiment: {version: entry}}``; an entry holds ``hash``, ``registered`` (date), ``git_revision``
(the commit it was registered at), ``changes``, ``declaration`` and ``runs``. A version is registered once
(``register``): a later declaration of the same version with other rules is refused.

``runs`` lists every attempt, oldest first. A run::

    {"kind": "run" | "rejudged", "revision": commit, "git_dirty": bool, "anchor_format": int,
     "started": date, "ended": date, "outcome": "running" | "completed" | "interrupted" | "failed: ...", ...}

A full ``syre bench run`` appends its run before the first trial (``outcome`` ``"running"``: an attempt that
died stays so) and closes it at the end. ``kind="rejudged"``: a version whose tests were decided again from an
earlier version's trials, with no training (``from``, ``note`` say which). Runs committed before the ledger
kept them were added from their summaries (``backfill``; ``backfilled: true``, their start and end were not
recorded).
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

__all__ = ["read_ledger", "register", "start_run", "finish_run", "add_run", "runs", "last_completed", "anchor_format_at",
           "backfill", "now"]

PathLike = Union[str, Path]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_ledger(path: PathLike) -> Dict[str, Any]:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else {}


def _write(path: PathLike, ledger: Dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")


def register(protocol, path: PathLike) -> Dict[str, Any]:
    """Record ``protocol`` in the ledger at ``path`` before its run; refuse a changed registered version.

    Returns the ledger entry. A version registered with the same hash is left as it is (a rerun).
    """
    path = Path(path)
    ledger = read_ledger(path)
    versions = ledger.setdefault(protocol.experiment, {})
    key = str(protocol.version)
    h = protocol.hash()
    if key in versions:
        if versions[key]["hash"] != h:
            raise ValueError(
                f"Protocol of {protocol.experiment} version {protocol.version} is registered with hash {versions[key]['hash']}, "
                f"but the code now declares {h}: a rule changed after a run. Declare a new version (VERSION = "
                f"{protocol.version + 1} and CHANGES in the experiment's module) or restore the registered rules")
        return versions[key]
    later = [int(v) for v in versions if int(v) > protocol.version]
    if later:
        raise ValueError(f"Protocol of {protocol.experiment}: version {max(later)} is registered; version {protocol.version} "
                         "cannot be added after it")
    entry = {"hash": h, "registered": now(), "git_revision": git_revision(), "changes": protocol.changes,
             "declaration": protocol.declaration(), "runs": []}
    versions[key] = entry
    _write(path, ledger)
    return entry


def _entry(ledger: Dict[str, Any], experiment: str, version: int) -> Dict[str, Any]:
    try:
        return ledger[experiment][str(version)]
    except KeyError:
        raise ValueError(f"Invalid ledger entry: {experiment} version {version} is not registered") from None


def runs(ledger: Dict[str, Any], experiment: str, version: int) -> List[Dict[str, Any]]:
    return list(_entry(ledger, experiment, version).get("runs", []))


def last_completed(ledger: Dict[str, Any], experiment: str, version: int) -> Optional[Dict[str, Any]]:
    """The latest run of a version that completed (a run or a re-judgement): the one its committed summary comes from."""
    done = [r for r in runs(ledger, experiment, version) if r.get("outcome") == "completed"]
    return done[-1] if done else None


def add_run(path: PathLike, experiment: str, version: int, run: Dict[str, Any]) -> int:
    """Append ``run`` to the runs of a registered version; returns its index."""
    ledger = read_ledger(path)
    lst = _entry(ledger, experiment, version).setdefault("runs", [])
    lst.append(dict(run))
    _write(path, ledger)
    return len(lst) - 1


def start_run(path: PathLike, experiment: str, version: int, *, revision: Optional[str], git_dirty: Optional[bool],
              anchor_format: Optional[int], **extra: Any) -> int:
    """Record an attempt before its first trial (``outcome`` ``"running"``); returns its index for ``finish_run``."""
    return add_run(path, experiment, version, {"kind": "run", "revision": revision, "git_dirty": git_dirty,
                                               "anchor_format": anchor_format, "started": now(), "ended": None,
                                               "outcome": "running", **extra})


def finish_run(path: PathLike, experiment: str, version: int, index: int, outcome: str, **extra: Any) -> None:
    """Close the attempt ``index``: its end, its ``outcome`` (``"completed"``, ``"interrupted"``, ``"failed: ..."``)."""
    ledger = read_ledger(path)
    run = _entry(ledger, experiment, version)["runs"][index]
    run.update(ended=now(), outcome=outcome, **extra)
    _write(path, ledger)


def git_revision(cwd: Optional[PathLike] = None) -> Optional[str]:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).resolve().parent, capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


_FORMAT = re.compile(r"^(?:[^:]*:)?FORMAT = (\d+)\s*$", re.M)


def anchor_format_at(revision: str, root: PathLike) -> Optional[int]:
    """The anchor format of new attachments in syre at ``revision`` (``FORMAT`` of its anchors module; 1 before the
    module declared one); None when git or the commit is not available here (a shallow clone)."""
    try:
        ok = subprocess.run(["git", "cat-file", "-e", f"{revision}^{{commit}}"], cwd=root, capture_output=True, timeout=10)
        if ok.returncode != 0:
            return None
        r = subprocess.run(["git", "grep", "-h", "-E", r"^FORMAT = [0-9]+\s*$", revision, "--", "src/syre"], cwd=root,
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    found = {int(m) for m in _FORMAT.findall(r.stdout)}
    if len(found) > 1:
        raise ValueError(f"Revision {revision}: several anchor formats declared in src/syre: {sorted(found)}")
    return found.pop() if found else 1


def _committed(root: Path, rel: str) -> Optional[str]:
    try:
        r = subprocess.run(["git", "log", "-1", "--format=%cI", "--", rel], cwd=root, capture_output=True, text=True, timeout=20)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def backfill(path: PathLike, root: PathLike, results: str = "benchmarks/results") -> List[str]:
    """Add, for every committed summary under ``root/results`` (and the kept ``<id>/v<N>/`` ones) whose run the ledger does
    not list, a ``backfilled`` run read from the summary (``environment.git_revision``, ``anchor_format`` or the format at
    that revision). Returns the experiments it added a run to."""
    root = Path(root)
    ledger = read_ledger(path)
    added = []
    for f in sorted([*(root / results).glob("*/summary.json"), *(root / results).glob("*/v*/summary.json")]):
        s = json.loads(f.read_text())
        if "protocol" not in s or s.get("quick") or s.get("rejudged"):
            continue
        entry = _entry(ledger, s["experiment"], s["protocol"]["version"])
        env = s.get("environment", {})
        rev = env.get("git_revision")
        lst = entry.setdefault("runs", [])
        if any(r.get("revision") == rev and r.get("outcome") == "completed" for r in lst):
            continue
        fmt_, source = s.get("anchor_format"), "the summary"
        if fmt_ is None:
            fmt_, source = anchor_format_at(rev, root), "syre's FORMAT at that revision (the summary predates the field)"
        rel = f.relative_to(root).as_posix()
        lst.append({"kind": "run", "revision": rev, "git_dirty": env.get("git_dirty"), "anchor_format": fmt_,
                    "anchor_format_source": source, "started": None, "ended": None, "outcome": "completed",
                    "wall_time_s": s.get("wall_time_s"), "summary": rel, "backfilled": True, "committed": _committed(root, rel),
                    "note": "added from the committed summary: runs before the ledger kept runs recorded no start or end "
                            "(committed: the date of the commit that last wrote the summary)"})
        added.append(s["experiment"])
    _write(path, ledger)
    return added
