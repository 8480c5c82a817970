"""Per-layer measurements of the audit: ranks with their structural maxima, units, mirrors (private).

Nothing here judges: it measures one layer of one model (the audited model or its fresh twin).
``audit.judge`` compares the two with the rules of ``_verdict``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from . import _graph, _spectral, _verdict, neurons
from ._report import LayerReport


def rep_stats(cap: Dict[str, Any], threshold: float, rtol: float) -> Dict[str, Any]:
    """Ranks of a captured ``[rows, units]`` representation: one uncentred and one centred spectrum."""
    rows = cap["rows"]
    n, d = rows.shape
    s, sc = _spectral.gram_spectra(rows)
    return {
        "dim": d, "samples": cap["samples"], "rows_used": n,
        "rank": _spectral.centred_rank(s, sc, rtol) if n > 1 else 0,
        "rank_clear": _spectral.centred_rank(s, sc, clear(rtol)) if n > 1 else 0,
        "max_rank": min(d, n - 1), "max_rank_by": "width" if d <= n - 1 else "batch",
        "numerical_rank": _spectral.rank_from_sv(s, (n, d), rows.dtype, None),
        "effective_rank": _spectral.entropy_rank(s, 0.0),
        # a batch of fewer than D + 1 rows cannot show D directions: no low-rank fraction then
        "low_rank_fraction": _spectral.low_rank_from_sv(sc, d, threshold) if n > d else None,
        "embedding_std": normalised_std(rows) * math.sqrt(d) if n > 1 else None,
    }


def normalised_std(rows: torch.Tensor) -> float:
    x = rows.double()
    norms = x.norm(dim=1, keepdim=True)
    z = torch.where(norms > 0, x / norms.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(x))
    return float(z.std(dim=0, unbiased=True).mean())


def clear(rtol: float) -> float:
    """The tolerance a reference's ranks are counted at (``_verdict.REFERENCE_MARGIN`` x ``rtol``)."""
    return min(_verdict.REFERENCE_MARGIN * rtol, 0.5)


def weight_ranks(lr: LayerReport, w: torch.Tensor, rtol: float) -> None:
    """``weight_rank``, ``weight_rank_clear``, ``weight_effective_rank`` and ``weight_max_rank`` of ``w`` as ``[out, in]``."""
    wf = _spectral.weight_matrix(w)
    sw = _spectral.fast_singular_values(wf)
    lr.weight_rank, lr.weight_rank_clear = _spectral.count_above(sw, rtol), _spectral.count_above(sw, clear(rtol))
    lr.weight_effective_rank = _spectral.entropy_rank(sw, 0.0)
    lr.weight_max_rank = min(wf.shape)


def bound_rank(rep: Dict[str, Any], name: str, bound: Optional[int]) -> None:
    """Lower ``rep["max_rank"]`` to ``bound`` (attributed to ``name``) when that is smaller."""
    if bound is not None and bound < rep["max_rank"]:
        rep["max_rank"], rep["max_rank_by"] = max(int(bound), 0), name


def inactive_from_std(sd: torch.Tensor, rtol: float, atol: float) -> List[int]:
    tol = max(rtol * float((sd * sd).mean().sqrt()), atol)
    return [int(i) for i in (sd <= tol).nonzero().flatten()]


def fam(scan: neurons.MirrorScan) -> Dict[str, Any]:
    return {"near": len(scan.near), "count": scan.count, "degree": scan.degree,
            "min_distance": float(scan.distances.min()) / scan.scale if scan.count and scan.scale > 0 else 0.0}


def unit_states(lr: LayerReport, w_in, w_out, b_in, u_in, u_b, fams, rtol: float, atol: float,
                rotation_max: Optional[int] = None) -> None:
    """Mirror scans of a hidden layer: families, duplicates (zero units excluded), zero units, unused directions.

    ``w_in``/``b_in``: every incoming per-unit tensor; ``u_in``/``u_b``: the unit's last affine (the
    norm's scale and shift after a norm); ``w_out``: the next layers' weights, units on dim 1;
    ``rotation_max``: the largest rank the unit matrix can have (directions beyond it are
    structural, not collapse).
    """
    perm = neurons.permutation_mirrors(w_in, w_out, b_in=b_in, rtol=rtol, atol=atol)
    lr.families["permutation"] = fam(perm)
    lr.zero_units = neurons.zero_units(u_in, w_out, b_in=u_b, rtol=rtol, atol=atol)
    zero = set(lr.zero_units)
    lr.duplicate_groups = neurons.groups_from_pairs([p for p in perm.near if p[0] not in zero and p[1] not in zero])
    if "sign" in fams:
        lr.families["sign"] = fam(neurons.sign_flip_mirrors(u_in, w_out, b_in=u_b, activation="identity", rtol=rtol, atol=atol))
    if "rescaling" in fams:
        lr.families["rescaling"] = fam(neurons.rescaling_mirrors(u_in, w_out, b_in=u_b, activation="identity",
                                                           rtol=rtol, atol=atol))
    if "rotation" in fams:
        rot = neurons.rotation_mirrors(w_in, w_out, b_in=b_in, rtol=rtol, atol=atol)
        structural = max(lr.units - rotation_max, 0) if rotation_max is not None else 0
        lr.families["rotation"] = dict(fam(rot), structural=structural)
        lost = sum(len(g) - 1 for g in lr.duplicate_groups) + len(lr.zero_units)
        lr.low_rank_directions = max(len(rot.near) - structural - lost, 0)


def measure_chain(c: _graph.Chain, params: Dict[str, torch.Tensor], modules: Dict[str, nn.Module],
                  cap: Optional[Dict[str, Any]], inp: Optional[Dict[str, Any]], rtol: float, atol: float,
                  threshold: float) -> LayerReport:
    """The ``LayerReport`` of one chain: weight and representation ranks with their maxima, units, mirrors."""
    mod = modules.get(c.layer)
    w = params[c.op.params[0]]
    b = params.get(c.op.params[1]) if len(c.op.params) > 1 else None
    lr = LayerReport(c.layer, type(mod).__name__ if mod is not None else _graph.WEIGHT_OPS[c.op.name], list(w.shape),
                     c.layout.units, [x.params[0].rsplit(".", 1)[0] for x in c.consumers], "", c.stop)
    weight_ranks(lr, w, rtol)
    in_bound, in_used = None, None  # rank bound of the end of an affine chain; of the weight's input side
    if inp and "distinct" in inp:  # an embedding's rows are the table rows of the ids looked up
        lr.input_rank = max(inp["distinct"] - 1, 0)
        in_bound = lr.input_rank
    elif inp and inp.get("rank") is not None:
        lr.input_rank, lr.input_effective_rank = inp["rank"], inp.get("effective_rank")
        in_used = inp["rank_uncentred"] * c.taps
        lr.weight_max_rank = min(lr.weight_max_rank, in_used)
        in_bound = inp["rank"] if c.taps == 1 else in_used
    if cap is not None:
        lr.representation = rep_stats(cap, threshold, rtol)
        if c.affine and in_bound is not None:
            bound_rank(lr.representation, "input", in_bound + c.layer_norms)
        lr.inactive_units = inactive_from_std(cap["std"], rtol, atol)
    if c.consumers:
        fams, desc, last_norm = _graph.families(c.path)
        lr.activation = desc
        interior = [params[p] for op in c.path for p in op.params if params[p].numel() == c.layout.units]
        w_in = [w] + interior
        b_in = [b] if b is not None else None
        w_out = [params[x.params[0]] for x in c.consumers]
        if last_norm >= 0:
            u_in, u_b = [params[p] for p in c.path[last_norm].params], None
        else:
            u_in, u_b = [w], b_in
        h = c.layout.units
        per_in = w[0].numel()
        p_total = per_in + len(interior) + (1 if b is not None else 0) + sum(t.numel() for t in w_out) // h
        used_in = min(per_in, in_used) if in_used is not None else per_in
        unit_states(lr, w_in, w_out, b_in, u_in, u_b, fams, rtol, atol,
                    rotation_max=min(h, p_total - per_in + used_in))
    lr.dead_units = sorted(set(lr.zero_units) | set(lr.inactive_units))
    return lr


def mha_layers(model: nn.Module, caps: Dict[str, Any], rtol: float, atol: float, threshold: float) -> List[LayerReport]:
    """One report per ``nn.MultiheadAttention``: per-head rotation mirrors of ``W_Q, W_K`` and ``W_V, W_O``."""
    out = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.MultiheadAttention):
            continue
        e, h = mod.embed_dim, mod.num_heads
        dh = e // h
        if mod._qkv_same_embed_dim:
            w_all = mod.in_proj_weight.detach()
            wq, wk, wv = w_all.split(e, dim=0)
        else:
            wq, wk, wv = mod.q_proj_weight.detach(), mod.k_proj_weight.detach(), mod.v_proj_weight.detach()
            w_all = torch.cat([wq, wk, wv], dim=1) if wq.shape[1] != wk.shape[1] else torch.cat([wq, wk, wv])
        wo = mod.out_proj.weight.detach()
        qk = {"near": 0, "count": 0}
        vo = {"near": 0, "count": 0}
        for i in range(h):
            sl = slice(i * dh, (i + 1) * dh)
            s1 = neurons.rotation_mirrors([wq[sl], wk[sl]], rtol=rtol, atol=atol)
            s2 = neurons.rotation_mirrors(wv[sl], wo[:, sl], rtol=rtol, atol=atol)
            qk["near"] += len(s1.near)
            qk["count"] += s1.count
            vo["near"] += len(s2.near)
            vo["count"] += s2.count
        lr = LayerReport(name, "MultiheadAttention", list(w_all.shape), e, [f"{h} heads"], "softmax", "")
        for key, d in (("rotation QK", qk), ("rotation VO", vo)):
            d["degree"] = d["near"] / d["count"] if d["count"] else 0.0
            lr.families[key] = d
        lr.low_rank_directions = qk["near"] + vo["near"]
        weight_ranks(lr, w_all, rtol)
        if caps.get(name) is not None:
            lr.representation = rep_stats(caps[name], threshold, rtol)
        out.append(lr)
    return out
