"""Recorded pilot runs, kept as data: ``benchmarks/results/pilots.json`` beside the results.

Per experiment, the per-seed statistics of its primary shared-gamma tests (``syre.bench.power``), written
by ``syre bench pilot ID --write`` and read when a protocol is built, to choose the number of evaluation
seeds and state the power. ``load()`` reads the file of the checkout this package runs from (or the path in
``SYRE_BENCH_PILOTS``); without one there is no pilot and a protocol takes ``n_min`` seeds (so a registered
run happens in a checkout). ``PILOTS`` is ``load()``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["load", "write", "path"]

REL = Path("benchmarks") / "results" / "pilots.json"
_CACHE: Dict[Path, Dict[str, Any]] = {}


def path() -> Optional[Path]:
    """The pilots file: ``$SYRE_BENCH_PILOTS``, else the one of the checkout holding this package, else of the working directory."""
    env = os.environ.get("SYRE_BENCH_PILOTS")
    if env:
        return Path(env)
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (root / REL).is_file():
            return root / REL
    return None


def load() -> Dict[str, Any]:
    """experiment id -> pilot record (``{}`` without a pilots file)."""
    p = path()
    if p is None or not p.is_file():
        return {}
    key = p.resolve()
    if key not in _CACHE:
        _CACHE[key] = json.loads(p.read_text())
    return _CACHE[key]


def write(records: Dict[str, Any], where: Optional[Path] = None) -> Path:
    """Merge ``records`` into the pilots file (``where``, default ``path()`` or the checkout's)."""
    p = Path(where) if where is not None else (path() or Path(__file__).resolve().parents[3] / REL)
    data = json.loads(p.read_text()) if p.is_file() else {}
    data.update(records)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    _CACHE.pop(p.resolve(), None)
    return p


def __getattr__(name: str) -> Any:
    if name == "PILOTS":
        return load()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
