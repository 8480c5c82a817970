"""Symmetry audit of any ``nn.Module``: which mirrors it has, which collapsed states it sits in.

``audit(model, inputs)`` runs the model twice on ``inputs`` in eval mode under ``no_grad``
(training flags are restored afterwards; parameters, buffers and gradients are never written):

1. a trace of every torch call of the forward (see ``_trace``) gives the dataflow between
   ``Linear``/``Conv`` layers: a layer's output that reaches exactly one other weight layer (or
   several, all weight layers) through ops that act on each unit separately (activations,
   ``BatchNorm``, ``LayerNorm`` over the units, dropout, pooling, flatten) makes a *hidden layer*
   whose mirror families follow from those ops (``neurons.activation_families``): permutation
   always; sign flip for odd activations; rescaling for ReLU-type ones; rotation when nothing
   separates the two linear maps. An output that also feeds a residual sum, a concatenation or
   anything else is not paired: its mirrors involve other layers and are not enumerated.
   ``nn.MultiheadAttention`` gets its per-head rotation mirrors (``W_Q, W_K`` and ``W_V, W_O``).
2. a second pass captures, for each layer, its representation where it leaves that chain (the
   post-activation tensor the next layer reads), flattened to ``[samples, units]``.

For each layer the report gives the mirror families, the share of each family's mirrors within
tolerance (the degree of symmetry), duplicated units, dead units (zero weights or no activity on
the batch), low-rank directions, ranks of the weight and of the representation, and with a
``Syre`` object the distance ``||p - theta0||`` of the layer's parameters to their anchors.

Two thresholds, on purpose. ``low%`` in the table is ``metrics.low_rank_fraction`` at
``low_rank_threshold`` (1e-3 on eigenvalues, the convention of the SimCLR-style "share of
near-zero eigenvalues"), a measurement that also counts the tail of a smooth, healthy spectrum.
A layer is *flagged* low rank only on the mirrors' own tolerance: a rotation mirror within
``rtol``, or representation directions whose standard deviation is below ``rtol`` times the top
direction's (eigenvalues below ``rtol**2``) beyond those the duplicated and dead units explain.
Symmetric states put such directions at float round-off, far below either threshold.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..select import canonical_name, unwrap_model
from . import metrics as M
from . import neurons as N
from ._trace import Op, Tracer

__all__ = ["Report", "audit"]

WEIGHT_OPS = {"linear": "Linear", "conv1d": "Conv1d", "conv2d": "Conv2d", "conv3d": "Conv3d"}
ACTIVATION_OPS = {
    "relu": "relu", "relu_": "relu", "leaky_relu": "leaky_relu", "leaky_relu_": "leaky_relu", "prelu": "prelu",
    "tanh": "tanh", "tanh_": "tanh", "hardtanh": "hardtanh", "hardtanh_": "hardtanh", "softsign": "softsign",
    "tanhshrink": "tanhshrink", "hardshrink": "hardshrink", "softshrink": "softshrink",
    "gelu": "gelu", "silu": "silu", "sigmoid": "sigmoid", "sigmoid_": "sigmoid", "elu": "elu", "elu_": "elu",
    "selu": "selu", "selu_": "selu", "celu": "celu", "celu_": "celu", "softplus": "softplus", "mish": "mish",
    "hardswish": "hardswish", "hardsigmoid": "hardsigmoid", "relu6": "relu6", "logsigmoid": "logsigmoid",
    "rrelu": "rrelu", "rrelu_": "rrelu",
}
NORM_OPS = {"batch_norm", "layer_norm", "instance_norm"}
PASS_OPS = {"dropout", "dropout_", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
            "contiguous", "clone", "detach"}
AVG_POOL_OPS = {"avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                "adaptive_avg_pool3d"}
MAX_POOL_OPS = {"max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
                "adaptive_max_pool3d", "_max_pool1d", "_max_pool2d", "_max_pool3d", "_adaptive_max_pool2d"}
RESHAPE_OPS = {"flatten", "view", "reshape"}


def _fmt_count(n: float) -> str:
    return f"{n:,.0f}"


# ----------------------------------------------------------------------------- structure
@dataclass
class _Layout:
    kind: str  # "channel" (units on dim 1, maybe spatial dims after), "last" (units on the last dim), "flat"
    units: int
    spatial: int = 1  # for "flat": columns per unit


@dataclass
class _Chain:
    layer: str
    op: Op
    path: List[Op]
    end_key: Tuple[int, int]
    end_op: int  # index of the op that produced end_key
    end_pos: int
    layout: _Layout
    consumers: List[Op]
    stop: str


def _unit_layout(op: Op) -> _Layout:
    shape = op.out_shapes[0]
    if op.name == "linear" and len(shape) != 2:  # [N, T, H]: units last; [N, H] is also "channel"
        return _Layout("last", shape[-1])
    return _Layout("channel", shape[1] if len(shape) > 1 else shape[0])


def _step_layout(layout: _Layout, op: Op, unit_params: Dict[str, torch.Tensor]) -> Optional[_Layout]:
    """The unit layout after ``op``, or None when ``op`` does not act on each unit separately."""
    name = op.name
    in_shape, out_shape = op.in_shapes[0], op.out_shapes[0]
    if name in ACTIVATION_OPS or name in PASS_OPS:
        if name == "prelu":
            w = unit_params.get(op.params[0]) if op.params else None
            if w is None or w.numel() not in (1, layout.units):
                return None
        return layout if in_shape == out_shape else None
    if name in NORM_OPS:
        if name == "layer_norm":
            ns = op.scalars.get("arg1") or op.scalars.get("normalized_shape")
            units_last = layout.kind == "last" or (layout.kind == "channel" and len(in_shape) == 2)
            if not units_last or tuple(ns or ()) != (layout.units,):
                return None
        elif layout.kind != "channel":
            return None
        for p in op.params:
            if unit_params[p].numel() != layout.units:
                return None
        return layout
    if name in AVG_POOL_OPS or name in MAX_POOL_OPS:
        if layout.kind != "channel" or len(out_shape) < 2 or out_shape[1] != layout.units:
            return None
        return layout
    if name in RESHAPE_OPS:
        if in_shape == out_shape:
            return layout
        if layout.kind == "channel" and len(in_shape) >= 3 and len(out_shape) == 2 and out_shape[0] == in_shape[0]:
            spatial = int(math.prod(in_shape[2:]))
            if out_shape[1] == layout.units * spatial:
                return _Layout("flat", layout.units, spatial)
        if layout.kind == "channel" and len(in_shape) == 2 and in_shape == out_shape:
            return layout
        return None
    return None


def _chains(ops: List[Op], output_keys, modules: Dict[str, nn.Module], params: Dict[str, torch.Tensor]):
    consumers: Dict[Tuple[int, int], List[Op]] = {}
    producer: Dict[Tuple[int, int], Tuple[int, int]] = {}
    for op in ops:
        if op.outputs and op.outputs[0] in op.inputs:
            continue  # returned its input unchanged (dropout in eval, an identity): not a use
        for k in dict.fromkeys(op.inputs):
            consumers.setdefault(k, []).append(op)
        for pos, k in enumerate(op.outputs):
            producer[k] = (op.index, pos)
    outputs = set(output_keys)
    weight_ops = [op for op in ops if op.name in WEIGHT_OPS and op.params and op.params[0].endswith("weight")]
    calls: Dict[str, int] = {}
    for op in weight_ops:
        layer = op.params[0].rsplit(".", 1)[0]
        calls[layer] = calls.get(layer, 0) + 1
    chains: List[_Chain] = []
    seen = set()
    for op in weight_ops:
        layer = op.params[0].rsplit(".", 1)[0]
        if layer in seen:
            continue
        seen.add(layer)
        layout = _unit_layout(op)
        cur, path, stop, cons_out = op.outputs[0], [], "", []
        while True:
            cs = consumers.get(cur, [])
            if cur in outputs:
                stop = "model output"
                break
            if not cs:
                stop = "unused"
                break
            if all(c.name in WEIGHT_OPS and c.params and c.inputs and c.inputs[0] == cur for c in cs):
                cons_out = cs
                break
            if len(cs) > 1:
                stop = "feeds " + ", ".join(sorted({c.name for c in cs}))
                break
            nxt = cs[0]
            # the op must read this tensor as its main input and no other activation (norms also
            # read their running statistics, which are buffers)
            if not nxt.inputs or nxt.inputs[0] != cur or (len(set(nxt.inputs)) != 1 and nxt.name not in NORM_OPS):
                stop = f"feeds {nxt.name}"
                break
            new_layout = _step_layout(layout, nxt, params)
            if new_layout is None:
                stop = f"feeds {nxt.name}"
                break
            path.append(nxt)
            layout = new_layout
            cur = nxt.outputs[0]
        if calls[layer] > 1:
            stop, cons_out = f"called {calls[layer]} times", []
        for c in cons_out:
            mod = modules.get(c.params[0].rsplit(".", 1)[0])
            if getattr(mod, "groups", 1) != 1 or (c.name == "linear" and layout.kind == "channel" and len(c.in_shapes[0]) != 2):
                stop, cons_out = f"feeds grouped {c.name}", []
                break
        pi, pp = producer[cur]
        chains.append(_Chain(layer, op, path, cur, pi, pp, layout, cons_out, stop))
    return chains


def _families(path: List[Op]) -> Tuple[Tuple[str, ...], str, int]:
    """(families, activation description, index in path after the last per-unit affine)."""
    last_norm = max((i for i, op in enumerate(path) if op.name in NORM_OPS), default=-1)
    after = path[last_norm + 1:]
    acts = [ACTIVATION_OPS[op.name] for op in after if op.name in ACTIVATION_OPS]
    all_acts = [ACTIVATION_OPS[op.name] for op in path if op.name in ACTIVATION_OPS]
    has_max = any(op.name in MAX_POOL_OPS for op in after)
    fam = ["permutation"]
    if all(a in N.ODD_ACTIVATIONS for a in acts) and not has_max:
        fam.append("sign")
    if all(a in N.HOMOGENEOUS_ACTIVATIONS for a in acts):
        fam.append("rescaling")
    if last_norm < 0 and not all_acts and not any(op.name in MAX_POOL_OPS for op in path):
        fam.append("rotation")
    desc = "+".join([op.name for op in path if op.name in NORM_OPS or op.name in ACTIVATION_OPS]) or "none"
    return tuple(fam), desc, last_norm


# ----------------------------------------------------------------------------- report
@dataclass
class LayerReport:
    """One weight layer (or attention module) of the audit.

    ``next``: the weight layers its units feed (empty when unpaired; ``stop`` says why);
    ``activation``: the unit-wise ops in between; ``families``: per mirror family, ``near``,
    ``count``, ``degree`` (near / count) and ``min_distance`` (relative to the layer's RMS unit
    norm); ``duplicate_groups``, ``dead_units`` (= ``zero_units`` | ``inactive_units``),
    ``low_rank_directions`` (near rotation mirrors): unit indices and counts;
    ``weight_rank``/``weight_effective_rank`` of the weight flattened to ``[out, in]``;
    ``representation``: ``dim``, ``numerical_rank``, ``effective_rank``, ``low_rank_fraction``,
    ``collapsed_directions``, ``collapsed_beyond_units``, ``embedding_std`` (times sqrt(dim));
    ``anchor_distance``/``param_norm``/``anchor_norm`` with a ``Syre`` object; ``collapse``: the
    flags (``duplicated``, ``dead``, ``low rank``); ``analysis_s``: seconds spent on this layer.
    """

    name: str
    type: str
    shape: List[int]
    units: int
    next: List[str]
    activation: str
    stop: str
    families: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    duplicate_groups: List[List[int]] = field(default_factory=list)
    dead_units: List[int] = field(default_factory=list)
    zero_units: List[int] = field(default_factory=list)
    inactive_units: List[int] = field(default_factory=list)
    low_rank_directions: Optional[int] = None
    weight_rank: Optional[int] = None
    weight_effective_rank: Optional[float] = None
    representation: Dict[str, Any] = field(default_factory=dict)
    anchor_distance: Optional[float] = None
    param_norm: Optional[float] = None
    anchor_norm: Optional[float] = None
    collapse: List[str] = field(default_factory=list)
    analysis_s: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {k: _json_safe(v) for k, v in self.__dict__.items()}


def _json_safe(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _json_safe(v.tolist())
    return v


class Report:
    """The result of ``audit``: ``str(report)`` is a table, ``to_dict()`` is JSON-safe, ``plot(path)`` a PNG.

    ``layers``: a ``LayerReport`` per weight layer in forward order; ``anchors``: with a ``Syre``
    object, one row per parameter (``name``, ``distance`` = ``||p - theta0||``, ``norm`` =
    ``||p||``, ``anchor_norm`` = ``||theta0||``, ``covered``); ``findings``: one sentence per
    collapsed state found; ``meta``: the model, batch and tolerances.
    """

    def __init__(self, layers: List[LayerReport], anchors: List[Dict[str, Any]], meta: Dict[str, Any]):
        self.layers = layers
        self.anchors = anchors
        self.meta = meta
        self.findings = self._findings()

    def __getitem__(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"No layer {name!r} in this report; layers: {[l.name for l in self.layers]}")

    def _findings(self) -> List[str]:
        out = []
        for l in self.layers:
            if l.duplicate_groups:
                n = sum(len(g) for g in l.duplicate_groups)
                g = len(l.duplicate_groups)
                out.append(f"{l.name}: {n} of {l.units} units duplicated in {g} group{'s' if g > 1 else ''} "
                           "(permutation mirrors)")
            if l.dead_units:
                why = []
                if l.zero_units:
                    why.append(f"{len(l.zero_units)} with zero weights")
                if l.inactive_units:
                    why.append(f"{len(l.inactive_units)} never active on the batch")
                out.append(f"{l.name}: {len(l.dead_units)} of {l.units} units dead ({', '.join(why)})")
            if l.low_rank_directions:
                out.append(f"{l.name}: {l.low_rank_directions} of {l.units} hidden directions unused (rotation mirrors)")
            r = l.representation
            if r and r.get("collapsed_beyond_units"):
                out.append(f"{l.name}: representation low rank: {r['collapsed_directions']} of {r['dim']} directions "
                           f"with a std below rtol={self.meta['rtol']:g} of the top one, {r['collapsed_beyond_units']} "
                           f"beyond the duplicated/dead units (effective rank {r['effective_rank']:.1f})")
        return out

    @property
    def collapsed(self) -> bool:
        """True when any layer shows a duplicated, dead or low-rank state."""
        return any(l.collapse for l in self.layers)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-safe dict: ``meta``, ``layers`` (one dict per layer), ``anchors``, ``findings``."""
        return {
            "meta": _json_safe(self.meta),
            "layers": [l.to_dict() for l in self.layers],
            "anchors": _json_safe(self.anchors),
            "findings": list(self.findings),
        }

    def to_json(self, path=None, **kwargs) -> str:
        """``json.dumps(self.to_dict())``; written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=kwargs.pop("indent", 2), **kwargs)
        if path is not None:
            with open(path, "w") as f:
                f.write(text + "\n")
        return text

    def table(self) -> str:
        """The per-layer table of ``str(report)``."""
        has_anchor = any(l.anchor_distance is not None for l in self.layers)
        head = ["layer", "type", "units", "next", "act", "near mirrors (of family)", "dup", "dead", "rank W",
                "rep rank num/eff", "low%", "collapse"]
        if has_anchor:
            head.append("|p-theta0|")
        rows = []
        for l in self.layers:
            fams = []
            for f, d in l.families.items():
                short = {"permutation": "perm", "sign": "sign", "rescaling": "resc", "rotation": "rot"}.get(f, f)
                fams.append(f"{short} {_fmt_count(d['near'])}/{_fmt_count(d['count'])}")
            r = l.representation
            rep = f"{r['numerical_rank']}/{r['effective_rank']:.1f}" if r else "-"
            low = ("n/a" if r.get("low_rank_fraction") is None else f"{100 * r['low_rank_fraction']:.1f}") if r else "-"
            dup = sum(len(g) for g in l.duplicate_groups)
            row = [l.name, l.type, str(l.units), ",".join(l.next) or f"({l.stop})", l.activation if l.next else "-",
                   " ".join(fams) or "-", str(dup), str(len(l.dead_units)),
                   f"{l.weight_rank}/{min(l.shape[0], int(math.prod(l.shape[1:])))}" if l.weight_rank is not None else "-",
                   rep + (f" of {r['dim']}" if r else ""), low, ",".join(l.collapse) or "-"]
            if has_anchor:
                row.append("-" if l.anchor_distance is None else f"{l.anchor_distance:.4g}")
            rows.append(row)
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
        out = [line(head), line(["-" * w for w in widths])]
        out += [line(r) for r in rows]
        return "\n".join(out)

    def __str__(self) -> str:
        m = self.meta
        head = (f"syre audit of {m['model']} ({_fmt_count(m['parameters'])} parameters) on a batch of {m['batch']}; "
                f"mirror tolerance rtol={m['rtol']:g}, low-rank threshold {m['low_rank_threshold']:g}")
        fam = m.get("mirror_families", {})
        fam_line = "mirror families: " + (", ".join(f"{k} {_fmt_count(v)}" for k, v in fam.items()) or "none found")
        lines = [head, fam_line, "", self.table(), ""]
        if self.findings:
            lines.append("collapse found:")
            lines += [f"  - {f}" for f in self.findings]
        else:
            lines.append("no collapse found (no duplicated, dead or low-rank units within tolerance)")
        if m.get("notes"):
            lines.append("notes:")
            lines += [f"  - {n}" for n in m["notes"]]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Report {self.meta['model']}: {len(self.layers)} layers, {len(self.findings)} findings>"

    def plot(self, path) -> str:
        """Save a PNG: per layer, the degree of symmetry of each family, the share of duplicated and
        dead units, and the effective rank of the representation over its width. Returns ``path``."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:  # pragma: no cover - needs matplotlib absent
            raise ImportError("Report.plot needs matplotlib: pip install 'torch-syre[plots]'") from exc
        names = [l.name for l in self.layers]
        x = list(range(len(names)))
        fig, axes = plt.subplots(1, 3, figsize=(max(10.0, min(30.0, 1.6 * len(names))), 3.8))
        fams = ["permutation", "sign", "rescaling", "rotation"]
        wbar = 0.8 / len(fams)
        for k, f in enumerate(fams):
            vals = []
            for l in self.layers:  # attention's "rotation QK"/"rotation VO" count as rotation
                ds = [d for k, d in l.families.items() if k == f or k.startswith(f + " ")]
                near, count = sum(d["near"] for d in ds), sum(d["count"] for d in ds)
                vals.append(100 * near / count if count else 0.0)
            axes[0].bar([i + (k - 1.5) * wbar for i in x], vals, wbar, label=f)
        axes[0].set_title("degree of symmetry\n(% of mirrors within tolerance)", fontsize=9)
        axes[0].legend(fontsize=7)
        dup = [100 * sum(len(g) for g in l.duplicate_groups) / max(l.units, 1) for l in self.layers]
        dead = [100 * len(l.dead_units) / max(l.units, 1) for l in self.layers]
        axes[1].bar([i - 0.2 for i in x], dup, 0.4, label="duplicated")
        axes[1].bar([i + 0.2 for i in x], dead, 0.4, label="dead")
        axes[1].set_title("units in a collapsed state\n(% of the layer)", fontsize=9)
        axes[1].legend(fontsize=7)
        eff = [100 * l.representation["effective_rank"] / l.representation["dim"] if l.representation else 0.0
               for l in self.layers]
        axes[2].bar(x, eff)
        axes[2].set_title("representation effective rank\n(% of width)", fontsize=9)
        for ax in axes:
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
        fig.suptitle(f"syre audit: {self.meta['model']}", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return str(path)


# ----------------------------------------------------------------------------- audit
def _split_inputs(inputs) -> Tuple[tuple, dict, int]:
    if isinstance(inputs, torch.Tensor):
        args, kwargs = (inputs,), {}
    elif isinstance(inputs, dict):
        args, kwargs = (), dict(inputs)
    elif isinstance(inputs, (tuple, list)):
        args, kwargs = tuple(inputs), {}
    else:
        raise TypeError(f"Invalid inputs: {type(inputs).__name__}; expected a tensor, a tuple of positional "
                        "arguments or a dict of keyword arguments for model(...)")
    first = next((t for t in list(args) + list(kwargs.values()) if isinstance(t, torch.Tensor)), None)
    if first is None:
        raise ValueError("Invalid inputs: no tensor among them; the audit needs a batch to run the model on")
    batch = int(first.shape[0]) if first.dim() else 1
    return args, kwargs, batch


def _unit_rows(x: torch.Tensor, layout: _Layout) -> torch.Tensor:
    """Representation ``x`` as a ``[samples, units]`` matrix (float32 copy)."""
    x = x.detach()
    if layout.kind == "last":
        return x.reshape(-1, layout.units).float()
    if layout.kind == "flat":
        return x.reshape(x.shape[0], layout.units, layout.spatial).transpose(1, 2).reshape(-1, layout.units).float()
    if x.dim() == 2:
        return x.float()
    return x.movedim(1, -1).reshape(-1, layout.units).float()


def _capture_fn(layout: _Layout, pos: int, max_rows: int, seed: int):
    def fn(outs):
        rows = _unit_rows(outs[pos], layout)
        sd = rows.double().std(dim=0) if rows.shape[0] > 1 else torch.zeros(rows.shape[1], dtype=torch.float64)
        n = rows.shape[0]
        if n > max_rows:
            idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows].to(rows.device)
            rows = rows[idx]
        return {"rows": rows.cpu(), "std": sd.cpu(), "samples": n}
    return fn


def _module_capture(layout: _Layout, max_rows: int, seed: int):
    fn = _capture_fn(layout, 0, max_rows, seed)
    return lambda out: fn([out[0] if isinstance(out, (tuple, list)) else out])


def _check_num(value, arg, lo, hi, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or \
            (value <= lo if lo_open else value < lo) or value >= hi:
        raise ValueError(f"Invalid {arg}: {value!r}; expected {'>' if lo_open else '>='} {lo} and < {hi}")


def _rep_stats(cap: Dict[str, Any], threshold: float, rtol: float) -> Dict[str, Any]:
    """Ranks of a captured ``[rows, units]`` representation: one uncentred and one centred spectrum."""
    rows = cap["rows"]
    n, d = rows.shape
    out = {"dim": d, "samples": cap["samples"], "rows_used": n}
    s, sc = M._fast_spectra(rows)
    out["numerical_rank"] = M._rank_from_sv(s, (n, d), rows.dtype, None)
    out["effective_rank"] = M._entropy_rank(s, 0.0)
    # a batch of fewer than D + 1 rows cannot show D directions: no low-rank verdict then
    if n > d:
        out["low_rank_fraction"] = M._low_rank_from_sv(sc, d, threshold)
        # collapsed directions: std below rtol of the top direction's (the mirrors' tolerance), i.e.
        # covariance eigenvalues below rtol**2 of the largest; a smooth spectrum's tail is not counted
        out["collapsed_directions"] = round(M._low_rank_from_sv(sc, d, rtol * rtol) * d) if rtol > 0 else None
    else:
        out["low_rank_fraction"] = out["collapsed_directions"] = None
    out["embedding_std"] = M.embedding_std(rows) * math.sqrt(d) if n > 1 else None
    return out


def _mha_layers(model: nn.Module, rtol: float, atol: float) -> List[LayerReport]:
    out = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.MultiheadAttention):
            continue
        e, h = mod.embed_dim, mod.num_heads
        dh = e // h
        if mod._qkv_same_embed_dim:
            wq, wk, wv = mod.in_proj_weight.detach().split(e, dim=0)
        else:
            wq, wk, wv = mod.q_proj_weight.detach(), mod.k_proj_weight.detach(), mod.v_proj_weight.detach()
        wo = mod.out_proj.weight.detach()
        qk = {"near": 0, "count": 0}
        vo = {"near": 0, "count": 0}
        for i in range(h):
            sl = slice(i * dh, (i + 1) * dh)
            s1 = N.rotation_mirrors([wq[sl], wk[sl]], rtol=rtol, atol=atol)
            s2 = N.rotation_mirrors(wv[sl], wo[:, sl], rtol=rtol, atol=atol)
            qk["near"] += len(s1.near)
            qk["count"] += s1.count
            vo["near"] += len(s2.near)
            vo["count"] += s2.count
        fams = {}
        for key, d in (("rotation QK", qk), ("rotation VO", vo)):
            d["degree"] = d["near"] / d["count"] if d["count"] else 0.0
            fams[key] = d
        lr = LayerReport(name, "MultiheadAttention", [3 * e, e], e, [f"{h} heads"], "softmax", "", fams)
        lr.low_rank_directions = qk["near"] + vo["near"]
        if lr.low_rank_directions:
            lr.collapse.append("low rank")
        out.append(lr)
    return out


class _eval_mode:
    """Put every module in eval mode and restore each module's own flag on exit."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = {m: m.training for m in self.model.modules()}
        self.model.eval()
        self.grad = torch.is_grad_enabled()
        torch.set_grad_enabled(False)
        return self.model

    def __exit__(self, *exc):
        torch.set_grad_enabled(self.grad)
        for m, t in self.flags.items():
            m.train(t)
        return False


class TraceMismatch(RuntimeError):
    """The model ran a different sequence of torch calls than when its structure was traced."""


def _trace(model: nn.Module, args: tuple, kwargs: dict):
    tracer = Tracer(model)
    tracer.run(args, kwargs)
    return tracer.ops, tracer.output_keys


def _capture(model: nn.Module, ops: List[Op], chains: List[_Chain], args: tuple, kwargs: dict,
             max_rows: int, seed: int, layers: Optional[set] = None):
    """Run the model once more and capture each chain's end representation (and attention outputs)."""
    fns: Dict[int, list] = {}
    for c in chains:
        if layers is None or c.layer in layers:
            fns.setdefault(c.end_op, []).append((c.layer, _capture_fn(c.layout, c.end_pos, max_rows, seed)))
    modules = dict(model.named_modules())
    mha_fn = {n: _module_capture(_Layout("last", m.embed_dim), max_rows, seed) for n, m in modules.items()
              if isinstance(m, nn.MultiheadAttention) and (layers is None or n in layers)}
    tracer = Tracer(model, capture={i: (lambda outs, fl=fl: {lay: f(outs) for lay, f in fl}) for i, fl in fns.items()},
                    module_capture=mha_fn)
    tracer.run(args, kwargs)
    if [(o.name, o.out_shapes) for o in tracer.ops] != [(o.name, o.out_shapes) for o in ops]:
        raise TraceMismatch("The model ran a different sequence of torch calls on a second pass over the same "
                            "inputs; the audit needs a forward pass that is deterministic in eval mode")
    caps = {}
    for per in tracer.captured.values():
        caps.update(per)
    return caps, tracer.module_captured


def audit(model: nn.Module, inputs, syre=None, *, rtol: float = N.DEFAULT_RTOL, atol: float = 0.0,
          low_rank_threshold: float = M.DEFAULT_LOW_RANK_THRESHOLD, max_rows: int = 4096, seed: int = 0) -> Report:
    """Audit ``model`` on the batch ``inputs`` for symmetry-induced collapse; returns a ``Report``.

    ``inputs``: a tensor, a tuple of positional arguments or a dict of keyword arguments for
    ``model(...)``. ``syre``: a ``Syre`` object (from ``syre.attach``) to report each layer's
    distance to its anchors. ``rtol``/``atol``: a mirror is near when its distance is at most
    ``max(rtol * scale, atol)``, ``scale`` the layer's RMS unit norm (see ``neurons``); the same
    tolerance, relative to the layer's RMS standard deviation, marks units inactive on the batch.
    ``low_rank_threshold``: see ``metrics.low_rank_fraction``. ``max_rows``: representations
    with more rows (samples x positions) are subsampled to this many, with a generator seeded by
    ``seed``, before their SVD (activity uses every row).

    The model runs twice in eval mode under ``torch.no_grad``; its training flags are restored,
    and no parameter, buffer or gradient is written.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: {type(model).__name__}; expected a torch.nn.Module")
    _check_num(rtol, "rtol", 0.0, 1.0)
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not (0.0 <= atol < math.inf):
        raise ValueError(f"Invalid atol: {atol!r}; expected a finite float >= 0")
    _check_num(low_rank_threshold, "low_rank_threshold", 0.0, 1.0, lo_open=True)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 2:
        raise ValueError(f"Invalid max_rows: {max_rows!r}; expected an int >= 2")
    if syre is not None and not callable(getattr(syre, "anchor", None)):
        raise TypeError(f"Invalid syre: {type(syre).__name__}; expected the Syre object returned by syre.attach")
    args, kwargs, batch = _split_inputs(inputs)
    model = unwrap_model(model)
    modules = dict(model.named_modules())
    params = {n: p for n, p in model.named_parameters()}
    notes: List[str] = []
    t0 = time.perf_counter()
    with _eval_mode(model):
        ops, output_keys = _trace(model, args, kwargs)
        chains = _chains(ops, output_keys, modules, params)
        t1 = time.perf_counter()
        caps, mha_caps = _capture(model, ops, chains, args, kwargs, max_rows, seed)
    t2 = time.perf_counter()

    layers: List[LayerReport] = []
    fam_totals: Dict[str, int] = {}
    for c in chains:
        t_layer = time.perf_counter()
        mod = modules.get(c.layer)
        w = params[c.op.params[0]]
        b = params.get(c.op.params[1]) if len(c.op.params) > 1 else None
        lr = LayerReport(c.layer, type(mod).__name__ if mod is not None else WEIGHT_OPS[c.op.name], list(w.shape),
                         c.layout.units, [x.params[0].rsplit(".", 1)[0] for x in c.consumers], "", c.stop)
        wf = w.detach().flatten(1) if w.dim() > 1 else w.detach()[:, None]
        sw = M._fast_singular_values(wf)
        lr.weight_rank = M._rank_from_sv(sw, tuple(wf.shape), wf.dtype, None)
        lr.weight_effective_rank = M._entropy_rank(sw, 0.0)
        cap = caps.get(c.layer)
        if cap is not None:
            lr.representation = _rep_stats(cap, low_rank_threshold, rtol)
            lr.inactive_units = _inactive_from_std(cap["std"], rtol, atol)
        if c.consumers:
            fams, desc, last_norm = _families(c.path)
            lr.activation = desc
            interior = [params[p] for op in c.path for p in op.params if params[p].numel() == c.layout.units]
            w_in = [w] + interior
            b_in = [b] if b is not None else None
            w_out = [params[x.params[0]] for x in c.consumers]
            perm = N.permutation_mirrors(w_in, w_out, b_in=b_in, rtol=rtol, atol=atol)
            lr.families["permutation"] = _fam(perm)
            lr.duplicate_groups = N.groups_from_pairs(perm.near)
            if last_norm >= 0:
                u_in = [params[p] for p in c.path[last_norm].params]
                u_b = None
            else:
                u_in, u_b = [w], b_in
            if "sign" in fams:
                lr.families["sign"] = _fam(N.sign_flip_mirrors(u_in, w_out, b_in=u_b, activation="identity",
                                                               rtol=rtol, atol=atol))
            if "rescaling" in fams:
                lr.families["rescaling"] = _fam(N.rescaling_mirrors(u_in, w_out, b_in=u_b, activation="identity",
                                                                    rtol=rtol, atol=atol))
            if "rotation" in fams:
                rot = N.rotation_mirrors(w_in, w_out, b_in=b_in, rtol=rtol, atol=atol)
                lr.families["rotation"] = _fam(rot)
                lr.low_rank_directions = len(rot.near)
            lr.zero_units = N.zero_units(u_in, w_out, b_in=u_b, rtol=rtol, atol=atol)
            for f, d in lr.families.items():
                fam_totals[f] = fam_totals.get(f, 0) + d["count"]
        lr.dead_units = sorted(set(lr.zero_units) | set(lr.inactive_units))
        if lr.duplicate_groups:
            lr.collapse.append("duplicated")
        if lr.dead_units:
            lr.collapse.append("dead")
        rep = lr.representation
        explained = sum(len(g) - 1 for g in lr.duplicate_groups) + len(lr.dead_units) + (lr.low_rank_directions or 0)
        if rep and rep.get("collapsed_directions") is not None:
            rep["collapsed_beyond_units"] = max(rep["collapsed_directions"] - explained, 0)
        if lr.low_rank_directions or (rep and rep.get("collapsed_beyond_units")):
            lr.collapse.append("low rank")
        lr.analysis_s = time.perf_counter() - t_layer
        layers.append(lr)
    att = _mha_layers(model, rtol, atol)
    for a in att:
        cap = mha_caps.get(a.name)
        if cap is not None:
            a.representation = _rep_stats(cap, low_rank_threshold, rtol)
        for f, d in a.families.items():
            fam_totals[f] = fam_totals.get(f, 0) + d["count"]
    layers += att

    anchors: List[Dict[str, Any]] = []
    if syre is not None:
        anchors = _anchor_rows(model, syre, layers, notes)
    if any(l.representation and l.representation.get("low_rank_fraction") is None for l in layers):
        notes.append("low% is n/a where the batch has no more rows than the layer has units; use a larger batch")
    unpaired = [l.name for l in layers if not l.next and l.stop not in ("model output",)]
    if unpaired:
        notes.append("mirrors not enumerated for " + ", ".join(f"{l.name} ({l.stop})" for l in layers
                                                              if l.name in unpaired))
    t3 = time.perf_counter()
    meta = {
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "rtol": rtol,
        "atol": atol,
        "low_rank_threshold": low_rank_threshold,
        "max_rows": max_rows,
        "mirror_families": fam_totals,
        "syre": syre is not None,
        "notes": notes,
        "timings_s": {"trace": t1 - t0, "capture": t2 - t1, "analysis": t3 - t2, "total": t3 - t0},
    }
    return Report(layers, anchors, meta)


def _inactive_from_std(sd: torch.Tensor, rtol: float, atol: float) -> List[int]:
    tol = max(rtol * float((sd * sd).mean().sqrt()), atol)
    return [int(i) for i in (sd <= tol).nonzero().flatten()]


def _fam(scan: N.MirrorScan) -> Dict[str, Any]:
    return {"near": len(scan.near), "count": scan.count, "degree": scan.degree,
            "min_distance": float(scan.distances.min()) / scan.scale if scan.count and scan.scale > 0 else 0.0}


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
    for l in layers:
        own = [r for n, r in by.items() if n.rsplit(".", 1)[0] == l.name and r["distance"] is not None]
        if own:
            l.anchor_distance = math.sqrt(sum(r["distance"] ** 2 for r in own))
            l.param_norm = math.sqrt(sum(r["norm"] ** 2 for r in own))
            l.anchor_norm = math.sqrt(sum(r["anchor_norm"] ** 2 for r in own))
    uncovered = [r["name"] for r in rows if not r["covered"]]
    if uncovered:
        notes.append(f"{len(uncovered)} parameters not covered by syre (distance is to 0): "
                     + ", ".join(uncovered[:6]) + (" ..." if len(uncovered) > 6 else ""))
    return rows
