"""Record collapse metrics during training: one line in the loop; CSV, JSON lines, TensorBoard; alarms.

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

Alarms (``_alarms``): a metric that drops below a share of the lower of the run's best so far and
the layer's fresh-init value (measured once, at the first recording, on a re-initialised copy as
``audit`` does), or a share that rises above the higher of its lowest so far and the fresh-init
value, warns once with ``CollapseWarning``, is kept in ``alarms`` and is passed to ``on_alarm``.
Metrics go to a ``torch.utils.tensorboard.SummaryWriter`` (``writer=``; anything with
``add_scalar(tag, value, step)``) and to ``logger(metrics, step)``, which is how the Lightning and
transformers callbacks of ``syre.integrations`` forward them to their loggers.
"""
from __future__ import annotations

import inspect
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from ..select import canonical_name, unwrap_model
from . import _graph, _run, _spectral, _twin, neurons
from ._alarms import ALARMS, AlarmTracker, describe
from ._logs import LogWriter, plot_log, plot_records, read_log
from ._measure import inactive_from_std, normalised_std
from .metrics import DEFAULT_LOW_RANK_THRESHOLD, RANKME_EPS

__all__ = ["ALARMS", "CollapseWarning", "METRICS", "Monitor", "plot_log", "read_log"]

#: Metrics a monitor can record, per layer. Representation metrics need a batch.
METRICS = {
    "rank": "rank of the representation: centred directions with a std above rtol of the top one (as the audit's)",
    "effective_rank": "effective rank of the layer's representation (metrics.effective_rank)",
    "numerical_rank": "numerical rank of the representation (metrics.numerical_rank)",
    "rankme": "RankMe of the representation (metrics.rankme)",
    "low_rank_fraction": "share of near-zero covariance eigenvalues of the representation",
    "embedding_std": "std of the l2-normalised representation, times sqrt(width) (1 = isotropic, 0 = collapsed)",
    "dead_fraction": "share of units whose representation does not vary over the batch",
    "weight_rank": "rank of the layer's weight flattened to [out, in], at rtol of the top singular value",
    "weight_effective_rank": "effective rank of the layer's weight, flattened to [out, in]",
    "duplicate_fraction": "share of units in a group of duplicates with the next layer (permutation mirrors)",
    "anchor_distance": "||p - theta0|| over the layer's parameters (needs syre=)",
}
DEFAULT_METRICS = ("rank", "effective_rank", "low_rank_fraction", "dead_fraction")
_REP = {"rank", "effective_rank", "numerical_rank", "rankme", "low_rank_fraction", "embedding_std", "dead_fraction"}


def check_callback_kwargs(kwargs: Dict[str, Any], what: str) -> None:
    """Refuse keyword arguments ``Monitor`` does not take, and ``logger`` (which the callback ``what`` sets)."""
    allowed = set(inspect.signature(Monitor).parameters) - {"model", "logger"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"Invalid argument(s) {unknown} for {what}; Monitor takes {sorted(allowed)} "
                        f"(the logger is set by {what})")


class CollapseWarning(UserWarning):
    """A monitored metric dropped (or a dead/duplicated share rose) past its alarm limit."""


def _scalar(v) -> float:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"Invalid scalar: a tensor of shape {tuple(v.shape)}; expected one element")
        return float(v.detach().item())
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"Invalid scalar: {type(v).__name__}; expected a number or a one-element tensor")
    return float(v)


class Monitor:
    """Records per-layer collapse metrics every ``every`` steps; CSV/JSON lines, TensorBoard, alarms.

    ``model``: the model being trained. ``every``: record when ``step % every == 0``.
    ``path``: a ``.csv`` or ``.jsonl`` file (``format`` overrides the suffix), one row per recording
    with ``step``, ``time_s`` (seconds since the monitor started), ``overhead_s`` (seconds this
    recording took), ``alarms`` (how many metrics are past their alarm limit), the keyword scalars
    and ``<layer>/<metric>``; ``None`` keeps the rows in memory only (``records``).
    ``metrics``: names from ``METRICS``. ``layers``: restrict to these weight-layer names (default:
    every ``Linear``/``Conv``/``Embedding`` layer of the forward). ``probe``: a fixed batch for steps
    given none. ``syre``: a ``Syre`` object, for ``anchor_distance``. ``max_rows``: rows per
    representation kept for its spectrum (subsampled with a generator seeded by ``seed``).

    ``alarms``: judge each metric with an alarm rule (``ALARMS``) after ``patience`` consecutive
    recordings past its limit; ``reference``: ``"init"`` (a re-initialised copy measured at the first
    recording, see ``audit``), a freshly built model of the same architecture, or None (the run's
    history only). ``on_alarm``: called with each alarm dict when it fires. ``writer``: a
    TensorBoard ``SummaryWriter`` (or anything with ``add_scalar(tag, value, global_step)``);
    ``logger``: a callable ``logger(metrics, step)``; both receive ``{tag}/<layer>/<metric>`` and
    ``{tag}/alarms`` at every recording.
    """

    def __init__(self, model: nn.Module, *, every: int = 100, path: Union[str, os.PathLike, None] = None,
                 format: Optional[str] = None, metrics: Sequence[str] = DEFAULT_METRICS,
                 layers: Optional[Iterable[str]] = None, probe=None, syre=None, max_rows: int = 2048,
                 rtol: float = neurons.DEFAULT_RTOL, seed: int = 0, alarms: bool = True, patience: int = 2,
                 reference="init", on_alarm: Optional[Callable[[Dict[str, Any]], None]] = None,
                 writer=None, logger: Optional[Callable[[Dict[str, float], int], None]] = None,
                 tag: str = "collapse"):
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
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"Invalid patience: {patience!r}; expected an int >= 1")
        if not isinstance(alarms, bool):
            raise TypeError(f"Invalid alarms: {alarms!r}; expected True or False")
        if not (reference is None or reference == "init" or isinstance(reference, nn.Module)):
            raise ValueError(f"Invalid reference: {reference!r}; expected 'init', an nn.Module or None")
        for name, fn in (("on_alarm", on_alarm), ("logger", logger)):
            if fn is not None and not callable(fn):
                raise TypeError(f"Invalid {name}: {type(fn).__name__}; expected a callable")
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(f"Invalid writer: {type(writer).__name__}; expected a torch.utils.tensorboard.SummaryWriter "
                            "or an object with add_scalar(tag, value, global_step)")
        if not isinstance(tag, str):
            raise TypeError(f"Invalid tag: {tag!r}; expected a str")
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
        if isinstance(reference, nn.Module):
            _twin.check_same_architecture(self.model, unwrap_model(reference))
        self.every, self.metrics, self.probe, self.syre = every, tuple(metrics), probe, syre
        self.layers = None if layers is None else [str(layer) for layer in layers]
        self.max_rows, self.rtol, self.seed, self.tag = max_rows, rtol, seed, tag
        self.reference_model, self.on_alarm, self.writer, self.logger = reference, on_alarm, writer, logger
        self.records: List[Dict[str, Any]] = []
        self.alarms: List[Dict[str, Any]] = []
        self.reference: Optional[Dict[str, float]] = None  # the fresh-init values, after the first recording
        self._tracker = AlarmTracker(patience) if alarms else None
        self._traced = None
        self._t0 = time.perf_counter()
        self.overhead_s = 0.0
        self._log = LogWriter(self.path, fmt) if self.path is not None else None

    # ------------------------------------------------------------------ structure
    def _structure(self, model, args, kwargs):
        modules, params = dict(model.named_modules()), dict(model.named_parameters())
        ops, out_keys = _run.trace(model, args, kwargs)
        chains = _graph.chains(ops, out_keys, modules, params)
        if self.layers is not None:
            names = {c.layer for c in chains}
            missing = [layer for layer in self.layers if layer not in names]
            if missing:
                raise ValueError(f"Invalid layers: {missing}; weight layers of this model: {sorted(names)}")
            chains = [c for c in chains if c.layer in set(self.layers)]
        return ops, chains, params

    def _measure(self, model, traced, args, kwargs, row, metrics):
        """Trace (if needed), capture and measure ``model``; fill ``row``; return the structure traced."""
        needs_rep = any(m in _REP for m in metrics)
        with _run.eval_mode(model):
            if traced is None:
                traced = self._structure(model, args, kwargs)
            caps = {}
            if needs_rep:
                try:
                    caps = _run.capture(model, traced[0], traced[1], args, kwargs, self.max_rows, self.seed, inputs=False)[0]
                except _run.TraceMismatch:  # the forward changed (another input shape): trace again
                    traced = self._structure(model, args, kwargs)
                    caps = _run.capture(model, traced[0], traced[1], args, kwargs, self.max_rows, self.seed, inputs=False)[0]
        for c in traced[1]:
            self._layer_metrics(row, c, traced[2], caps.get(c.layer), metrics)
        return traced

    def _fresh_values(self, args, kwargs) -> Dict[str, float]:
        ref = self.reference_model
        if ref == "init":
            twin, _ = _twin.fresh_twin(self.model, self.seed)
        else:
            twin = _twin.copy_model(unwrap_model(ref))
        _twin.calibrate(twin, args, kwargs)
        row: Dict[str, Any] = {}
        self._measure(twin, None, args, kwargs, row, [m for m in self.metrics if m in ALARMS])
        return {k: v for k, v in row.items() if v is not None}

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
        if inputs is None and self._traced is None:
            raise ValueError("Invalid batch: None; the first recording needs inputs to find the layers")
        if inputs is not None:
            args, kwargs, _ = _run.split_inputs(inputs)
            self._traced = self._measure(self.model, self._traced, args, kwargs, row, self.metrics)
            if self._tracker is not None and self.reference is None and self.reference_model is not None:
                self.reference = self._fresh_values(args, kwargs)
                self._tracker.reference = self.reference
        else:
            for c in self._traced[1]:
                self._layer_metrics(row, c, self._traced[2], None, self.metrics)
        fired = self._tracker.update(step, row) if self._tracker is not None else []
        row["alarms"] = len(self._tracker.active) if self._tracker is not None else 0
        row["time_s"] = time.perf_counter() - self._t0
        row["overhead_s"] = time.perf_counter() - t_start
        self.overhead_s += row["overhead_s"]
        self.records.append(row)
        if self._log is not None:
            self._log.write(row)
        self._send(row, step)
        for a in fired:
            self.alarms.append(a)
            warnings.warn(CollapseWarning("collapse alarm at " + describe(a)), stacklevel=3)
            if self.on_alarm is not None:
                self.on_alarm(a)
        return row

    def metrics_for_logger(self, row: Dict[str, Any]) -> Dict[str, float]:
        """``{tag}/<layer>/<metric>`` and ``{tag}/alarms`` of a recorded row (finite numbers only)."""
        out = {f"{self.tag}/{k}": float(v) for k, v in row.items()
               if "/" in k and isinstance(v, (int, float)) and math.isfinite(v)}
        out[f"{self.tag}/alarms"] = float(row.get("alarms", 0))
        return out

    def _send(self, row: Dict[str, Any], step: int) -> None:
        if self.writer is None and self.logger is None:
            return
        metrics = self.metrics_for_logger(row)
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)
        if self.logger is not None:
            self.logger(metrics, step)

    @torch.no_grad()
    def _layer_metrics(self, row, chain, params, cap, metrics):
        name = chain.layer
        rows = cap["rows"] if cap is not None else None
        spectra = {}

        def spectrum(center):  # one Gram matrix per layer, shared by the metrics
            if not spectra:
                spectra[False], spectra[True] = _spectral.gram_spectra(rows)
            return spectra[center]

        for m in metrics:
            key = f"{name}/{m}"
            if m in _REP:
                if rows is None:
                    row[key] = None
                elif m == "rank":
                    row[key] = _spectral.centred_rank(spectrum(False), spectrum(True), self.rtol)
                elif m == "effective_rank":
                    row[key] = _spectral.entropy_rank(spectrum(False), 0.0)
                elif m == "numerical_rank":
                    row[key] = _spectral.rank_from_sv(spectrum(False), tuple(rows.shape), rows.dtype, None)
                elif m == "rankme":
                    row[key] = _spectral.entropy_rank(spectrum(False), RANKME_EPS)
                elif m == "low_rank_fraction":
                    row[key] = (_spectral.low_rank_from_sv(spectrum(True), rows.shape[1], DEFAULT_LOW_RANK_THRESHOLD)
                                if rows.shape[0] > rows.shape[1] else None)
                elif m == "embedding_std":
                    row[key] = normalised_std(rows) * math.sqrt(rows.shape[1])
                elif m == "dead_fraction":
                    row[key] = len(inactive_from_std(cap["std"], self.rtol, 0.0)) / rows.shape[1]
            elif m in ("weight_rank", "weight_effective_rank"):
                sw = _spectral.fast_singular_values(_spectral.weight_matrix(params[chain.op.params[0]]))
                row[key] = _spectral.count_above(sw, self.rtol) if m == "weight_rank" else _spectral.entropy_rank(sw, 0.0)
            elif m == "duplicate_fraction":
                if not chain.consumers:
                    row[key] = None
                    continue
                interior = [params[p] for op in chain.path for p in op.params
                            if params[p].numel() == chain.layout.units]
                b = params.get(chain.op.params[1]) if len(chain.op.params) > 1 else None
                w_in, w_out = [params[chain.op.params[0]]] + interior, [params[x.params[0]] for x in chain.consumers]
                b_in = [b] if b is not None else None
                zero = set(neurons.zero_units(w_in, w_out, b_in=b_in, rtol=self.rtol))  # dead, not duplicates
                near = neurons.permutation_mirrors(w_in, w_out, b_in=b_in, rtol=self.rtol).near
                groups = neurons.groups_from_pairs([p for p in near if p[0] not in zero and p[1] not in zero])
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

    def close(self) -> None:
        """Close the log file (the records stay in ``records``)."""
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def plot(self, path, metrics: Optional[Sequence[str]] = None) -> str:
        """Save a PNG with one panel per metric, one line per layer, over steps (alarms marked). Returns ``path``."""
        return plot_records(self.records, path, metrics, order=list(METRICS), alarms=self.alarms)
