"""A monitor's log: writing rows as CSV or JSON lines, reading them back, plotting them (private).

Rows are dicts with ``step``, ``time_s``, ``overhead_s``, ``alarms``, the keyword scalars and
``<layer>/<metric>`` columns; ``None`` is an empty CSV cell and a JSON ``null``.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ._plotting import figure

#: Columns that are bookkeeping, not measurements (not plotted as panels).
BOOKKEEPING = ("step", "time_s", "overhead_s", "alarms")


class LogWriter:
    """Appends rows to an open file as CSV (columns fixed by the first row) or JSON lines."""

    def __init__(self, path: Path, fmt: str):
        self.format = fmt
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "w", newline="")
        self._columns: Optional[List[str]] = None
        self._writer = None

    def write(self, row: Dict[str, Any]) -> None:
        if self._file is None:
            raise ValueError("Invalid state: the monitor's log file is closed")
        if self.format == "jsonl":
            self._file.write(json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                         for k, v in row.items()}) + "\n")
        else:
            if self._columns is None:
                self._columns = list(row)
                self._writer = csv.DictWriter(self._file, fieldnames=self._columns)
                self._writer.writeheader()
            extra = [k for k in row if k not in self._columns]
            if extra:
                raise ValueError(f"Invalid scalars: {extra} were not in the first CSV row (columns are fixed by "
                                 "the first recording); pass the same keywords every time or use a .jsonl path")
            self._writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_log(path) -> List[Dict[str, Any]]:
    """The rows of a monitor's CSV or JSON-lines file, as dicts of floats (``None`` where empty)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No monitor log at {str(path)!r}")
    rows = []
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                rows.append({k: (float(v) if v not in ("", None) else None) for k, v in r.items()})
    else:
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return rows


def plot_log(path, out, metrics: Optional[Sequence[str]] = None) -> str:
    """Plot a monitor's CSV or JSON-lines log to the PNG ``out``. Returns ``out``."""
    return plot_records(read_log(path), out, metrics)


def plot_records(records: List[Dict[str, Any]], out, metrics: Optional[Sequence[str]] = None,
                 order: Sequence[str] = (), alarms: Sequence[Dict[str, Any]] = ()) -> str:
    """One panel per metric (one line per layer) and per keyword scalar, over steps; alarms as marks."""
    if not records:
        raise ValueError("Nothing to plot: the monitor has recorded no rows yet")
    keys = [k for k in records[0] if "/" in k]
    known = list(order)
    found = sorted({k.split("/", 1)[1] for k in keys}, key=lambda m: known.index(m) if m in known else 99)
    scalars = [k for k in records[0] if "/" not in k and k not in BOOKKEEPING]
    panels = list(metrics or found + scalars)
    fig = figure("Monitor.plot", figsize=(4 * len(panels), 3.3))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    steps = [r["step"] for r in records]
    for ax, m in zip(axes, panels):
        if "/" not in m and m in scalars:
            ax.plot(steps, [r.get(m) for r in records], color="k")
        else:
            for k in keys:
                if k.split("/", 1)[1] == m:
                    ys = [r.get(k) for r in records]
                    ax.plot(steps, [float("nan") if y is None else y for y in ys], label=k.split("/", 1)[0])
            hits = [a for a in alarms if a["metric"] == m]
            if hits:
                ax.scatter([a["step"] for a in hits], [a["value"] for a in hits], marker="x", color="r", zorder=3,
                           label="alarm")
            ax.legend(fontsize=6)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return str(out)
