"""Symmetry audit of any ``nn.Module``: which mirrors it has, which collapsed states it sits in,
judged against what each layer could have.

``audit(model, inputs)`` runs the model in eval mode under ``no_grad`` (training flags are
restored afterwards; parameters, buffers and gradients are never written):

1. a trace of every torch call of the forward (``_trace``) gives the dataflow between
   ``Linear``/``Conv``/``Embedding`` layers. A layer's output that reaches only weight layers
   through ops acting on each unit separately (activations, ``BatchNorm``, ``LayerNorm`` over the
   units, dropout, pooling, flatten) makes a *hidden layer*, whose mirror families follow from
   those ops (``neurons.activation_families``): permutation always; sign flip for odd activations;
   rescaling for ReLU-type ones; rotation when nothing separates the two linear maps. An output
   that also feeds a residual sum, a concatenation or attention is not paired (its mirrors span
   other layers). ``nn.MultiheadAttention`` gets its per-head rotation mirrors; ``nn.LSTM``,
   ``nn.GRU`` and ``nn.RNN`` one report per layer and direction (``_recurrent``).
2. a second pass captures each layer's representation where it leaves that chain, flattened to
   ``[samples, units]``, and the rank of the input its weight reads.
3. the same two passes on a *fresh-init twin* (``reference="init"``: a copy whose layers are
   re-initialised by their own ``reset_parameters``, seeded; see ``_twin``), or on a model you
   pass, give each layer the values a fresh layer of the same architecture has on the same batch.

**When is a layer collapsed?** Never because of its width alone: a fresh ``Linear(4, 8)`` has a
representation of rank 4 of 8 and is healthy. Ranks are counted at ``rtol`` (directions whose
standard deviation, or singular value, is at least ``rtol`` of the top one) and compared with what
the layer could have: the smaller of its *structural maximum* (width; batch rows - 1; for a chain
without nonlinearity, the rank of its input, times the kernel size for a convolution, plus one per
``LayerNorm``; for the weight, ``min(out, in)`` and the rank of its input) and its *fresh-init*
value. The rules and thresholds are module constants of ``_verdict``, exported here:

* ``low rank``: the weight's or the representation's rank, plus the directions its duplicated and
  dead units account for, is below ``RANK_SHARE`` (0.9) of what it could have (the fresh layer's
  rank counted at ``REFERENCE_MARGIN`` (10) x ``rtol``: the directions it clearly has); or unused rotation
  directions beyond the structural ones exceed ``EXACT_SHARE`` (1%) of the units;
* ``duplicated``: units in duplicate groups beyond the fresh reference exceed ``EXACT_SHARE``;
* ``dead``: units with all weights at zero beyond the reference exceed ``EXACT_SHARE``, or units
  never active on the batch exceed the reference's by more than ``INACTIVE_SHARE`` (5%) of the
  units and ``INACTIVE_Z`` (3) standard deviations of the draw-to-draw difference.

States that do not pass a rule are still reported (``Report.observations``), and every rule keeps
its numbers (``LayerReport.evidence``). With ``reference=None`` the structural maxima alone are
the reference, and states are compared with none.
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..select import canonical_name, unwrap_model
from . import _graph, _run, _twin, _verdict, metrics, neurons
from ._measure import measure_chain, mha_layers
from ._recurrent import recurrent_layers
from ._report import LayerReport, Report

__all__ = ["EXACT_SHARE", "INACTIVE_SHARE", "INACTIVE_Z", "LayerReport", "RANK_SHARE", "REFERENCE_MARGIN", "Report",
           "audit"]

RANK_SHARE = _verdict.RANK_SHARE
REFERENCE_MARGIN = _verdict.REFERENCE_MARGIN
EXACT_SHARE = _verdict.EXACT_SHARE
INACTIVE_SHARE = _verdict.INACTIVE_SHARE
INACTIVE_Z = _verdict.INACTIVE_Z


def _check_num(value, arg, lo, hi, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or \
            (value <= lo if lo_open else value < lo) or value >= hi:
        raise ValueError(f"Invalid {arg}: {value!r}; expected {'>' if lo_open else '>='} {lo} and < {hi}")


def analyse(model: nn.Module, args: tuple, kwargs: dict, *, rtol: float, atol: float, threshold: float,
            max_rows: int, seed: int) -> Tuple[List[LayerReport], Dict[str, int], Dict[str, float]]:
    """Measure every layer of ``model`` on one batch: ``(layers, mirror family totals, timings)``."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    t0 = time.perf_counter()
    with _run.eval_mode(model):
        ops, output_keys = _run.trace(model, args, kwargs)
        chains = _graph.chains(ops, output_keys, modules, params)
        t1 = time.perf_counter()
        caps, ins, mha_caps, rec_ins = _run.capture(model, ops, chains, args, kwargs, max_rows, seed, rtol)
        t2 = time.perf_counter()
        layers = []
        for c in chains:
            t_layer = time.perf_counter()
            lr = measure_chain(c, params, modules, caps.get(c.layer), ins.get(c.layer), rtol, atol, threshold)
            lr.analysis_s = time.perf_counter() - t_layer
            layers.append(lr)
        layers += mha_layers(model, mha_caps, rtol, atol, threshold)
        layers += recurrent_layers(model, ops, rec_ins, params, rtol, atol, threshold, max_rows, seed)
    first: Dict[str, int] = {}
    for op in ops:  # forward order: a weight layer's own op; the first op of an attention or recurrent module
        first.setdefault(op.module, op.index)
    first.update({c.layer: c.op.index for c in chains})
    order = lambda layer: first.get(layer.name, first.get(layer.name.rsplit(".", 1)[0], len(ops)))  # noqa: E731
    layers.sort(key=order)
    totals: Dict[str, int] = {}
    for lr in layers:
        for f, d in lr.families.items():
            totals[f] = totals.get(f, 0) + d["count"]
    return layers, totals, {"trace": t1 - t0, "capture": t2 - t1, "analysis": time.perf_counter() - t2}


def judge(lr: LayerReport, ref: Optional[LayerReport]) -> None:
    """Fill ``lr.reference``, ``lr.evidence`` and ``lr.collapse`` by the rules of ``_verdict``."""
    rs = ref.summary() if ref is not None else None
    lr.reference = rs
    get = (lambda key: rs.get(key)) if rs is not None else (lambda key: None)  # noqa: E731
    n_inactive = len(set(lr.inactive_units) - set(lr.zero_units))
    lost_dup = sum(len(g) - 1 for g in lr.duplicate_groups)
    ref_lost_dup = sum(len(g) - 1 for g in ref.duplicate_groups) if ref is not None else 0
    ev: Dict[str, Any] = {
        "duplicated": _verdict.exact_check(lr.duplicated, lr.units, get("duplicated")),
        "zero": _verdict.exact_check(len(lr.zero_units), lr.units, get("zero")),
        "inactive": _verdict.inactive_check(n_inactive, lr.units, get("inactive")),
    }
    if lr.low_rank_directions is not None:
        ev["rotation"] = _verdict.exact_check(lr.low_rank_directions, lr.units, get("unused_directions"))
    excess = lambda a, b: max(a - (b or 0), 0)  # noqa: E731
    explained_w = excess(lost_dup, ref_lost_dup) + excess(len(lr.zero_units), get("zero"))
    explained_rep = explained_w + excess(n_inactive, get("inactive"))
    rank_w = _verdict.rank_check(lr.weight_rank, lr.weight_max_rank, get("weight_rank"), explained_w)
    if rank_w is not None:
        ev["weight rank"] = rank_w
    rep = lr.representation
    if rep.get("rank") is not None:
        ev["representation rank"] = _verdict.rank_check(rep["rank"], rep.get("max_rank"), get("rank"), explained_rep)
    lr.evidence = ev
    flags = []
    if ev["duplicated"]["flagged"]:
        flags.append("duplicated")
    if ev["zero"]["flagged"] or ev["inactive"]["flagged"]:
        flags.append("dead")
    if any(ev.get(k) and ev[k]["flagged"] for k in ("rotation", "weight rank", "representation rank")):
        flags.append("low rank")
    lr.collapse = flags


def _reference_model(model: nn.Module, reference, seed: int, args: tuple, kwargs: dict) -> Tuple[nn.Module, List[str], str]:
    if isinstance(reference, str):
        if reference != "init":
            raise ValueError(f"Invalid reference: {reference!r}; expected 'init' (a re-initialised copy of the model), "
                             "an nn.Module of the same architecture freshly built, or None")
        twin, notes = _twin.fresh_twin(model, seed)
        what = f"fresh init (each layer's reset_parameters, seed {seed})"
    elif isinstance(reference, nn.Module):
        reference = unwrap_model(reference)
        if reference is model:
            raise ValueError("Invalid reference: the model itself; pass a freshly built model of the same "
                             "architecture, 'init' or None")
        _twin.check_same_architecture(model, reference)
        twin, notes = _twin.copy_model(reference), []
        what = f"the given {type(reference).__name__}"
    else:
        raise TypeError(f"Invalid reference: {type(reference).__name__}; expected 'init', an nn.Module or None")
    notes += _twin.calibrate(twin, args, kwargs)
    return twin, notes, what


def audit(model: nn.Module, inputs, syre=None, *, reference="init", rtol: float = neurons.DEFAULT_RTOL,
          atol: float = 0.0, low_rank_threshold: float = metrics.DEFAULT_LOW_RANK_THRESHOLD, max_rows: int = 4096,
          seed: int = 0) -> Report:
    """Audit ``model`` on the batch ``inputs`` for symmetry-induced collapse; returns a ``Report``.

    ``inputs``: a tensor, a tuple of positional arguments or a dict of keyword arguments for
    ``model(...)`` (integer token ids are fine). ``syre``: a ``Syre`` object (from ``syre.attach``)
    to report each layer's distance to its anchors. ``reference``: ``"init"`` (default: a copy of
    the model re-initialised by each layer's ``reset_parameters``, seeded by ``seed``; it doubles
    the cost and holds a second copy of the model while it runs), a freshly built ``nn.Module`` of
    the same architecture (your own initialisation: the model at step 0, or what its factory
    returns), or ``None`` (structural maxima only). A reference's batch-norm statistics are set
    to the batch's. ``rtol``/``atol``: a mirror is near when its distance is at most
    ``max(rtol * scale, atol)``, ``scale`` the layer's RMS unit norm (see ``neurons``); a unit is
    inactive when its standard deviation on the batch is at most ``rtol`` of the layer's RMS one;
    ranks count directions above ``rtol`` of the top one. ``low_rank_threshold``: for the
    ``low_rank_fraction`` measurement (``metrics.low_rank_fraction``). ``max_rows``: larger
    representations (samples x positions) are subsampled to this many rows with a generator
    seeded by ``seed`` before their spectrum (activity uses every row).

    When a layer counts as collapsed: see the module docstring. The model runs in eval mode under
    ``torch.no_grad``; its training flags are restored, and no parameter, buffer or gradient is
    written.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: {type(model).__name__}; expected a torch.nn.Module")
    _check_num(rtol, "rtol", 0.0, 1.0)
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not (0.0 <= atol < math.inf):
        raise ValueError(f"Invalid atol: {atol!r}; expected a finite float >= 0")
    _check_num(low_rank_threshold, "low_rank_threshold", 0.0, 1.0, lo_open=True)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 2:
        raise ValueError(f"Invalid max_rows: {max_rows!r}; expected an int >= 2")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid seed: {seed!r}; expected an int >= 0")
    if syre is not None and not callable(getattr(syre, "anchor", None)):
        raise TypeError(f"Invalid syre: {type(syre).__name__}; expected the Syre object returned by syre.attach")
    args, kwargs, batch = _run.split_inputs(inputs)
    model = unwrap_model(model)
    opts = dict(rtol=rtol, atol=atol, threshold=low_rank_threshold, max_rows=max_rows, seed=seed)
    t0 = time.perf_counter()
    layers, fam_totals, timings = analyse(model, args, kwargs, **opts)
    notes: List[str] = []
    what = None
    t_ref = time.perf_counter()
    if reference is not None:
        twin, ref_notes, what = _reference_model(model, reference, seed, args, kwargs)
        notes += ref_notes
        ref_layers, _, _ = analyse(twin, args, kwargs, **opts)
        del twin
        by_name = {layer.name: layer for layer in ref_layers}
    else:
        by_name = {}
    timings["reference"] = time.perf_counter() - t_ref
    for lr in layers:
        judge(lr, by_name.get(lr.name) if reference is not None else None)

    anchors: List[Dict[str, Any]] = []
    if syre is not None:
        anchors = _anchor_rows(model, syre, layers, notes)
    unpaired = [layer for layer in layers if not layer.next and layer.stop not in ("model output",)]
    if unpaired:
        notes.append("mirrors not enumerated for " + ", ".join(f"{layer.name} ({layer.stop})" for layer in unpaired))
    timings["total"] = time.perf_counter() - t0
    meta = {
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "reference": what,
        "rtol": rtol,
        "atol": atol,
        "low_rank_threshold": low_rank_threshold,
        "max_rows": max_rows,
        "thresholds": {"RANK_SHARE": _verdict.RANK_SHARE, "REFERENCE_MARGIN": _verdict.REFERENCE_MARGIN,
                       "EXACT_SHARE": _verdict.EXACT_SHARE, "INACTIVE_SHARE": _verdict.INACTIVE_SHARE,
                       "INACTIVE_Z": _verdict.INACTIVE_Z},
        "mirror_families": fam_totals,
        "syre": syre is not None,
        "notes": notes,
        "timings_s": timings,
    }
    return Report(layers, anchors, meta)


def _anchor_rows(model: nn.Module, syre, layers: List[LayerReport], notes: List[str]) -> List[Dict[str, Any]]:
    names = set(syre.names()) if callable(getattr(syre, "names", None)) else None
    rows = []
    known = 0
    for name, p in model.named_parameters():
        cname = canonical_name(name)
        try:
            a = syre.anchor(cname)
        except KeyError:
            rows.append({"name": cname, "distance": None, "norm": float(p.detach().double().norm()),
                         "anchor_norm": None, "covered": False})
            continue
        known += 1
        theta0 = a.theta0.to(device=p.device, dtype=torch.float64)
        pd = p.detach().double()
        rows.append({"name": cname, "distance": float((pd - theta0).norm()), "norm": float(pd.norm()),
                     "anchor_norm": float(theta0.norm()), "covered": cname in names if names is not None else True})
    if known == 0:
        raise ValueError("Invalid syre: none of the model's parameters is known to this Syre object; "
                         "was it attached to a different model?")
    by = {r["name"]: r for r in rows}
    for layer in layers:
        own = [r for n, r in by.items() if n.rsplit(".", 1)[0] == layer.name and r["distance"] is not None]
        if own:
            layer.anchor_distance = math.sqrt(sum(r["distance"] ** 2 for r in own))
            layer.param_norm = math.sqrt(sum(r["norm"] ** 2 for r in own))
            layer.anchor_norm = math.sqrt(sum(r["anchor_norm"] ** 2 for r in own))
    uncovered = [r["name"] for r in rows if not r["covered"]]
    if uncovered:
        notes.append(f"{len(uncovered)} parameters not covered by syre (distance is to 0): "
                     + ", ".join(uncovered[:6]) + (" ..." if len(uncovered) > 6 else ""))
    return rows
