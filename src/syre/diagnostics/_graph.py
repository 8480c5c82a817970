"""The weight layers of a traced forward and the unit-wise chain each one starts (private).

From the ops ``_trace.Tracer`` recorded, every ``Linear``/``Conv``/``Embedding`` call starts a
*chain*: the ops that follow it and act on each of its output units separately (activations,
``BatchNorm``, ``LayerNorm`` over the units, dropout, pooling, flatten). The chain ends where its
tensor reaches weight layers only (a *hidden layer*, whose units pair with those layers'
inputs), the model output, or anything else (a residual sum, a concatenation, attention...),
which ``stop`` names. The chain's ops give the layer's mirror families (``families``) and tell
whether the chain is affine, which bounds the rank of its end by the rank of its input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from . import neurons
from ._trace import Op

#: torch functions of a weight layer, and the module type reported when no module is found.
WEIGHT_OPS = {"linear": "Linear", "conv1d": "Conv1d", "conv2d": "Conv2d", "conv3d": "Conv3d", "embedding": "Embedding"}
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
#: Ops after which the rank of a batch can exceed that of the batch before (not affine per row).
NON_AFFINE_OPS = set(ACTIVATION_OPS) | MAX_POOL_OPS | {"instance_norm"}


@dataclass
class Layout:
    kind: str  # "channel" (units on dim 1, maybe spatial dims after), "last" (units on the last dim), "flat"
    units: int
    spatial: int = 1  # for "flat": columns per unit


@dataclass
class Chain:
    layer: str
    op: Op
    path: List[Op]
    end_key: Tuple[int, int]
    end_op: int  # index of the op that produced end_key
    end_pos: int
    layout: Layout
    consumers: List[Op]
    stop: str
    weight_shape: Tuple[int, ...] = ()

    @property
    def affine(self) -> bool:
        """Whether every op after the weight is affine per row (so rank(end) <= rank(input) + #LayerNorms)."""
        return not any(op.name in NON_AFFINE_OPS for op in self.path)

    @property
    def layer_norms(self) -> int:
        return sum(op.name == "layer_norm" for op in self.path)

    @property
    def taps(self) -> int:
        """Input positions one output reads: the kernel size of a convolution, 1 otherwise."""
        return int(math.prod(self.weight_shape[2:])) if self.op.name.startswith("conv") else 1


def unit_layout(op: Op) -> Layout:
    shape = op.out_shapes[0]
    if op.name == "embedding" or (op.name == "linear" and len(shape) != 2):  # [N, T, H]: units last
        return Layout("last", shape[-1])
    return Layout("channel", shape[1] if len(shape) > 1 else shape[0])


def input_layout(op: Op) -> Optional[Layout]:
    """How the rows of the weight op's input are read: features on dim 1 or on the last dim."""
    if op.name == "embedding" or not op.in_shapes:
        return None
    shape = op.in_shapes[0]
    if op.name == "linear":
        return Layout("last", shape[-1]) if len(shape) != 2 else Layout("channel", shape[1])
    return Layout("channel", shape[1]) if len(shape) > 1 else None


def _step_layout(layout: Layout, op: Op, unit_params: Dict[str, torch.Tensor]) -> Optional[Layout]:
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
                return Layout("flat", layout.units, spatial)
        return None
    return None


def weight_ops(ops: List[Op]) -> List[Op]:
    return [op for op in ops if op.name in WEIGHT_OPS and op.params and op.params[0].endswith("weight")]


def chains(ops: List[Op], output_keys, modules: Dict[str, nn.Module], params: Dict[str, torch.Tensor]) -> List[Chain]:
    """One ``Chain`` per weight layer, in forward order (a layer called several times appears once)."""
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
    wops = weight_ops(ops)
    calls: Dict[str, int] = {}
    for op in wops:
        layer = op.params[0].rsplit(".", 1)[0]
        calls[layer] = calls.get(layer, 0) + 1
    out: List[Chain] = []
    seen = set()
    for op in wops:
        layer = op.params[0].rsplit(".", 1)[0]
        if layer in seen:
            continue
        seen.add(layer)
        layout = unit_layout(op)
        cur, path, stop, cons_out = op.outputs[0], [], "", []
        while True:
            cs = consumers.get(cur, [])
            if cur in outputs:
                stop = "model output"
                break
            if not cs:
                stop = "unused"
                break
            if all(c.name in WEIGHT_OPS and c.name != "embedding" and c.params and c.inputs and c.inputs[0] == cur
                   for c in cs):
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
        if op.name == "embedding" and cons_out:  # its units are the table's columns: not paired
            stop, cons_out = "feeds " + ", ".join(sorted({c.name for c in cons_out})), []
        for c in cons_out:
            mod = modules.get(c.params[0].rsplit(".", 1)[0])
            if getattr(mod, "groups", 1) != 1 or (c.name == "linear" and layout.kind == "channel" and len(c.in_shapes[0]) != 2):
                stop, cons_out = f"feeds grouped {c.name}", []
                break
        pi, pp = producer[cur]
        out.append(Chain(layer, op, path, cur, pi, pp, layout, cons_out, stop, tuple(params[op.params[0]].shape)))
    return out


def families(path: List[Op]) -> Tuple[Tuple[str, ...], str, int]:
    """(families, activation description, index in path of the last per-unit affine norm, or -1)."""
    last_norm = max((i for i, op in enumerate(path) if op.name in NORM_OPS), default=-1)
    after = path[last_norm + 1:]
    acts = [ACTIVATION_OPS[op.name] for op in after if op.name in ACTIVATION_OPS]
    all_acts = [ACTIVATION_OPS[op.name] for op in path if op.name in ACTIVATION_OPS]
    has_max = any(op.name in MAX_POOL_OPS for op in after)
    fam = ["permutation"]
    if all(a in neurons.ODD_ACTIVATIONS for a in acts) and not has_max:
        fam.append("sign")
    if all(a in neurons.HOMOGENEOUS_ACTIVATIONS for a in acts):
        fam.append("rescaling")
    if last_norm < 0 and not all_acts and not any(op.name in MAX_POOL_OPS for op in path):
        fam.append("rotation")
    desc = "+".join([op.name for op in path if op.name in NORM_OPS or op.name in ACTIVATION_OPS]) or "none"
    return tuple(fam), desc, last_norm
