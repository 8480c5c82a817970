"""Record collapse metrics during training: one line in the loop, CSV or JSON lines out, a plot.

::

    mon = Monitor(model, every=100, path="collapse.jsonl", syre=s)   # before the loop
    for step, (x, y) in enumerate(loader):
        ...
        mon.step(step, batch=x, loss=loss)                           # the added line
    mon.close(); mon.plot("collapse.png")

Every ``every`` steps ``step`` runs the model once more on ``batch`` (or on the fixed ``probe``
given at construction), in eval mode under ``torch.no_grad``, restoring the training flags, and
measures each weight layer's representation where it leaves its unit-wise chain (the
post-activation tensor, found once by the same trace as ``audit``). Between recordings it does
nothing but a modulo. Scalars passed as keywords (a loss tensor, a learning rate) are recorded
too; tensors are read with ``.item()`` only at recording steps.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from ..select import canonical_name, unwrap_model
from . import metrics as M
from . import neurons as N
from .audit import TraceMismatch, _capture, _chains, _eval_mode, _inactive_from_std, _split_inputs, _trace

__all__ = ["METRICS", "Monitor", "plot_log", "read_log"]

#: Metrics a monitor can record, per layer. Representation metrics need a batch.
METRICS = {
    "effective_rank": "effective rank of the layer's representation (metrics.effective_rank)",
    "numerical_rank": "numerical rank of the representation (metrics.numerical_rank)",
    "rankme": "RankMe of the representation (metrics.rankme)",
    "low_rank_fraction": "share of near-zero covariance eigenvalues of the representation",
    "embedding_std": "std of the l2-normalised representation, times sqrt(width) (1 = isotropic, 0 = collapsed)",
    "dead_fraction": "share of units whose representation does not vary over the batch",
    "weight_effective_rank": "effective rank of the layer's weight, flattened to [out, in]",
    "duplicate_fraction": "share of units in a group of duplicates with the next layer (permutation mirrors)",
    "anchor_distance": "||p - theta0|| over the layer's parameters (needs syre=)",
}
DEFAULT_METRICS = ("effective_rank", "low_rank_fraction", "dead_fraction")
_REP = {"effective_rank", "numerical_rank", "rankme", "low_rank_fraction", "embedding_std", "dead_fraction"}


def _scalar(v) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"Invalid scalar: a tensor of shape {tuple(v.shape)}; expected one element")
        return float(v.detach().item())
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"Invalid scalar: {type(v).__name__}; expected a number or a one-element tensor")
    return float(v)


class Monitor:
    """Records per-layer collapse metrics every ``every`` steps; writes CSV or JSON lines.

    ``model``: the model being trained. ``every``: record when ``step % every == 0``.
    ``path``: a ``.csv`` or ``.jsonl`` file (``format`` overrides the suffix), appended to one
    row per recording with columns ``step``, ``time_s`` (seconds since the monitor started),
    ``overhead_s`` (seconds this recording took), the keyword scalars, and ``<layer>/<metric>``;
    ``None`` keeps the records in memory only (``records``). ``metrics``: names from ``METRICS``.
    ``layers``: restrict to these weight-layer names (default: every ``Linear``/``Conv`` layer
    of the forward). ``probe``: a fixed batch to use when ``step`` is given none. ``syre``: a
    ``Syre`` object, for ``anchor_distance``. ``max_rows``: rows per representation kept for
    the SVD (subsampled with a generator seeded by ``seed``).
    """

    def __init__(self, model: nn.Module, *, every: int = 100, path: Union[str, os.PathLike, None] = None,
                 format: Optional[str] = None, metrics: Sequence[str] = DEFAULT_METRICS,
                 layers: Optional[Iterable[str]] = None, probe=None, syre=None, max_rows: int = 2048,
                 rtol: float = N.DEFAULT_RTOL, seed: int = 0):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Invalid model: {type(model).__name__}; expected a torch.nn.Module")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Invalid every: {every!r}; expected an int >= 1")
        if isinstance(metrics, str):
            metrics = (metrics,)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise ValueError(f"Invalid metrics: {list(metrics)!r}; choose from {sorted(METRICS)}")
        if "anchor_distance" in metrics and syre is None:
            raise ValueError("Invalid metrics: 'anchor_distance' needs syre= (the object syre.attach returned)")
        if syre is not None and not callable(getattr(syre, "anchor", None)):
            raise TypeError(f"Invalid syre: {type(syre).__name__}; expected the Syre object returned by syre.attach")
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 2:
            raise ValueError(f"Invalid max_rows: {max_rows!r}; expected an int >= 2")
        self.path = Path(path) if path is not None else None
        fmt = format
        if fmt is None and self.path is not None:
            fmt = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}.get(self.path.suffix.lower())
            if fmt is None:
                raise ValueError(f"Invalid path: {str(path)!r}; use a .csv or .jsonl suffix, or pass format='csv'|'jsonl'")
        if fmt is not None and fmt not in ("csv", "jsonl"):
            raise ValueError(f"Invalid format: {format!r}; expected 'csv' or 'jsonl'")
        self.format = fmt
        self.model = unwrap_model(model)
        self.every = every
        self.metrics = tuple(metrics)
        self.layers = None if layers is None else [str(l) for l in layers]
        self.probe = probe
        self.syre = syre
        self.max_rows = max_rows
        self.rtol = rtol
        self.seed = seed
        self.records: List[Dict[str, Any]] = []
        self._plan = None
        self._columns: Optional[List[str]] = None
        self._file = None
        self._writer = None
        self._t0 = time.perf_counter()
        self.overhead_s = 0.0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", newline="")

    # ------------------------------------------------------------------ structure
    def _structure(self, args, kwargs):
        modules = dict(self.model.named_modules())
        params = dict(self.model.named_parameters())
        ops, out_keys = _trace(self.model, args, kwargs)
        chains = _chains(ops, out_keys, modules, params)
        if self.layers is not None:
            names = {c.layer for c in chains}
            missing = [l for l in self.layers if l not in names]
            if missing:
                raise ValueError(f"Invalid layers: {missing}; weight layers of this model: {sorted(names)}")
            chains = [c for c in chains if c.layer in set(self.layers)]
        self._plan = (ops, chains, params)

    # ------------------------------------------------------------------ recording
    def step(self, step: int, batch=None, **scalars) -> Optional[Dict[str, Any]]:
        """Record the metrics if ``step % every == 0`` and return the row; otherwise return None.

        ``batch``: the model's input for this step (a tensor, a tuple of positional arguments or a
        dict of keyword arguments); defaults to ``probe``. ``scalars``: extra numbers to record
        (``loss=loss`` is fine: it is read only at recording steps).
        """
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"Invalid step: {step!r}; expected an int")
        if step % self.every:
            return None
        return self.record(step, batch, **scalars)

    def record(self, step: int, batch=None, **scalars) -> Dict[str, Any]:
        """Record the metrics now, whatever the step (``step`` calls this every ``every`` steps)."""
        t_start = time.perf_counter()
        row: Dict[str, Any] = {"step": int(step)}
        for k, v in scalars.items():
            row[k] = _scalar(v)
        inputs = batch if batch is not None else self.probe
        needs_rep = any(m in _REP for m in self.metrics)
        if needs_rep and inputs is None:
            raise ValueError("Invalid batch: None, and the monitor has no probe; representation metrics "
                             f"{[m for m in self.metrics if m in _REP]} need inputs: step(step, batch=x)")
        caps = {}
        if inputs is not None:
            args, kwargs, _ = _split_inputs(inputs)
            with _eval_mode(self.model):
                if self._plan is None:
                    self._structure(args, kwargs)
                ops, chains, _ = self._plan
                if needs_rep:
                    try:
                        caps, _ = _capture(self.model, ops, chains, args, kwargs, self.max_rows, self.seed)
                    except TraceMismatch:  # the forward changed (another input shape): trace again
                        self._structure(args, kwargs)
                        ops, chains, _ = self._plan
                        caps, _ = _capture(self.model, ops, chains, args, kwargs, self.max_rows, self.seed)
        elif self._plan is None:
            raise ValueError("Invalid batch: None; the first recording needs inputs to find the layers")
        ops, chains, params = self._plan
        for c in chains:
            self._layer_metrics(row, c, params, caps.get(c.layer))
        row["time_s"] = time.perf_counter() - self._t0
        row["overhead_s"] = time.perf_counter() - t_start
        self.overhead_s += row["overhead_s"]
        self.records.append(row)
        self._write(row)
        return row

    @torch.no_grad()
    def _layer_metrics(self, row, chain, params, cap):
        name = chain.layer
        rows = cap["rows"] if cap is not None else None
        spectra = {}

        def spectrum(center):  # one Gram matrix per layer, shared by the metrics
            if not spectra:
                spectra[False], spectra[True] = M._fast_spectra(rows)
            return spectra[center]

        for m in self.metrics:
            key = f"{name}/{m}"
            if m in _REP:
                if rows is None:
                    row[key] = None
                elif m == "effective_rank":
                    row[key] = M._entropy_rank(spectrum(False), 0.0)
                elif m == "numerical_rank":
                    row[key] = M._rank_from_sv(spectrum(False), tuple(rows.shape), rows.dtype, None)
                elif m == "rankme":
                    row[key] = M._entropy_rank(spectrum(False), M.RANKME_EPS)
                elif m == "low_rank_fraction":
                    row[key] = (M._low_rank_from_sv(spectrum(True), rows.shape[1], M.DEFAULT_LOW_RANK_THRESHOLD)
                                if rows.shape[0] > rows.shape[1] else None)
                elif m == "embedding_std":
                    row[key] = M.embedding_std(rows) * math.sqrt(rows.shape[1])
                elif m == "dead_fraction":
                    row[key] = len(_inactive_from_std(cap["std"], self.rtol, 0.0)) / rows.shape[1]
            elif m == "weight_effective_rank":
                w = params[chain.op.params[0]].detach()
                row[key] = M._entropy_rank(M._fast_singular_values(w.flatten(1) if w.dim() > 1 else w[:, None]), 0.0)
            elif m == "duplicate_fraction":
                if not chain.consumers:
                    row[key] = None
                    continue
                interior = [params[p] for op in chain.path for p in op.params
                            if params[p].numel() == chain.layout.units]
                b = params.get(chain.op.params[1]) if len(chain.op.params) > 1 else None
                groups = N.duplicate_units([params[chain.op.params[0]]] + interior,
                                           [params[x.params[0]] for x in chain.consumers],
                                           b_in=[b] if b is not None else None, rtol=self.rtol)
                row[key] = sum(len(g) for g in groups) / chain.layout.units
            elif m == "anchor_distance":
                total = 0.0
                for pname in chain.op.params:
                    p = params[pname].detach().double()
                    try:
                        theta0 = self.syre.anchor(canonical_name(pname)).theta0.to(p.device, torch.float64)
                    except KeyError:
                        theta0 = torch.zeros_like(p)
                    total += float((p - theta0).norm()) ** 2
                row[key] = math.sqrt(total)

    def _write(self, row: Dict[str, Any]) -> None:
        if self._file is None:
            return
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
        """Close the log file (the records stay in ``records``)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def plot(self, path, metrics: Optional[Sequence[str]] = None) -> str:
        """Save a PNG with one panel per metric, one line per layer, over steps. Returns ``path``."""
        return _plot_records(self.records, path, metrics)


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
    return _plot_records(read_log(path), out, metrics)


def _plot_records(records: List[Dict[str, Any]], out, metrics=None) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - needs matplotlib absent
        raise ImportError("Monitor.plot needs matplotlib: pip install 'torch-syre[plots]'") from exc
    if not records:
        raise ValueError("Nothing to plot: the monitor has recorded no rows yet")
    keys = [k for k in records[0] if "/" in k]
    found = sorted({k.split("/", 1)[1] for k in keys}, key=lambda m: list(METRICS).index(m) if m in METRICS else 99)
    scalars = [k for k in records[0] if "/" not in k and k not in ("step", "time_s", "overhead_s")]
    panels = [m for m in (metrics or found + scalars)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.3), squeeze=False)
    steps = [r["step"] for r in records]
    for ax, m in zip(axes[0], panels):
        if "/" not in m and m in scalars:
            ax.plot(steps, [r.get(m) for r in records], color="k")
        else:
            for k in keys:
                if k.split("/", 1)[1] == m:
                    ys = [r.get(k) for r in records]
                    ax.plot(steps, [float("nan") if y is None else y for y in ys], label=k.split("/", 1)[0])
            ax.legend(fontsize=6)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return str(out)
