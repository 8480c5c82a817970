"""Record the dataflow of one forward pass at the level of torch functions, without changing the model.

A ``TorchFunctionMode`` sees every torch call the model makes (``F.linear``, ``F.conv2d``,
``F.relu``, ``x + y``, ``torch.flatten``...), including calls written inline in a ``forward``
that no module hook could see. Module forward hooks keep a stack of the module being run, so
each call is labelled with the innermost module. Tensors are identified by a tag (weakly
referenced, so ids of freed tensors are never confused) and their version counter (so in-place
ops such as ``nn.ReLU(inplace=True)`` make a new node). Nothing is stored on the model or on
its tensors, and every hook is removed when the trace ends.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

Key = Tuple[int, int]


@dataclass
class Op:
    index: int
    name: str
    module: str
    inputs: List[Key]  # non-parameter tensor inputs, in argument order
    in_shapes: List[Tuple[int, ...]]
    params: List[str]  # parameter names among the arguments, in argument order
    outputs: List[Key]
    out_shapes: List[Tuple[int, ...]]
    scalars: Dict[str, Any] = field(default_factory=dict)


def _leaves(obj, out: list) -> list:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _leaves(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _leaves(o, out)
    return out


def _func_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    if name == "fn":  # torch's boolean_dispatch wrappers (max_pool2d and friends)
        name = getattr(func, "__qualname__", name)
    return name


class _Mode(TorchFunctionMode):
    def __init__(self, tracer: "Tracer"):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t = self.tracer
        if t.busy:  # the tracer's own work (captures) is not part of the model
            return func(*args, **kwargs)
        ins = _leaves(args, []) + _leaves(kwargs, [])
        in_keys, in_shapes, params = [], [], []
        for x in ins:
            pname = t.param_names.get(id(x))
            if pname is not None and x is t.param_objs[id(x)]:
                params.append(pname)
            else:
                in_keys.append(t.key(x))
                in_shapes.append(tuple(x.shape))
        pending = t.capture_inputs.get(len(t.ops)) if t.capture_inputs else None
        if pending is not None and pending[0] == _func_name(func):
            t.busy = True
            try:
                t.captured_inputs[len(t.ops)] = pending[1]([x for x in ins if id(x) not in t.param_objs])
            finally:
                t.busy = False
        out = func(*args, **kwargs)
        outs = _leaves(out, [])
        if outs:
            name = _func_name(func)
            scalars = {}
            for i, a in enumerate(args):
                if isinstance(a, (int, float, bool)) or (isinstance(a, (tuple, list)) and all(isinstance(b, int) for b in a)):
                    scalars[f"arg{i}"] = a
            for k, v in kwargs.items():
                if isinstance(v, (int, float, bool)) or (isinstance(v, (tuple, list)) and all(isinstance(b, int) for b in v)):
                    scalars[k] = v
            op = Op(len(t.ops), name, t.stack[-1] if t.stack else "", in_keys, in_shapes, params,
                    [t.key(o) for o in outs], [tuple(o.shape) for o in outs], scalars)
            t.ops.append(op)
            if t.capture is not None and op.index in t.capture:
                t.busy = True
                try:
                    t.captured[op.index] = t.capture[op.index](outs)
                finally:
                    t.busy = False
        return out


class Tracer:
    """Runs ``model(*args, **kwargs)`` once and records its ops; optionally captures op outputs.

    ``capture``: ``{op_index: fn(outputs) -> value}``; ``fn`` runs on the outputs of that op
    right after it is computed (so a later in-place op cannot change what it sees).
    ``capture_inputs``: ``{op_index: (op_name, fn(inputs) -> value)}``; ``fn`` runs on the op's
    non-parameter tensor inputs just before it is computed (skipped when the op at that index
    has another name, i.e. the forward changed). ``module_capture``: ``{module_name: fn(output)}``,
    run on the first output of that module; ``module_input_capture``: the same on its inputs.
    """

    def __init__(self, model: nn.Module, capture: Optional[Dict[int, Callable]] = None,
                 module_capture: Optional[Dict[str, Callable]] = None,
                 capture_inputs: Optional[Dict[int, Tuple[str, Callable]]] = None,
                 module_input_capture: Optional[Dict[str, Callable]] = None):
        self.model = model
        self.param_names: Dict[int, str] = {}
        self.param_objs: Dict[int, torch.Tensor] = {}
        for name, p in model.named_parameters():
            self.param_names.setdefault(id(p), name)
            self.param_objs.setdefault(id(p), p)
        self.ops: List[Op] = []
        self.stack: List[str] = []
        self.capture = capture
        self.captured: Dict[int, Any] = {}
        self.module_capture = module_capture or {}
        self.module_captured: Dict[str, Any] = {}
        self.module_calls: Dict[str, int] = {}
        self.capture_inputs = capture_inputs or {}
        self.captured_inputs: Dict[int, Any] = {}
        self.module_input_capture = module_input_capture or {}
        self.module_input_captured: Dict[str, Any] = {}
        self._tags: Dict[int, Tuple[weakref.ref, int]] = {}
        self._next = 0
        self.output_keys: List[Key] = []
        self.busy = False

    def key(self, x: torch.Tensor) -> Key:
        entry = self._tags.get(id(x))
        if entry is None or entry[0]() is not x:
            tag = self._next
            self._next += 1
            self._tags[id(x)] = (weakref.ref(x), tag)
        else:
            tag = entry[1]
        return (tag, int(x._version))

    def run(self, args: tuple, kwargs: dict):
        handles = []
        names = {m: n for n, m in self.model.named_modules()}

        def pre(mod, inp):
            n = names.get(mod, "")
            if n in self.module_input_capture and n not in self.module_input_captured:
                self.busy = True
                try:
                    self.module_input_captured[n] = self.module_input_capture[n](inp)
                finally:
                    self.busy = False
            self.stack.append(n)
            self.module_calls[n] = self.module_calls.get(n, 0) + 1

        def post(mod, _inp, out):
            n = names.get(mod, "")
            if n in self.module_capture and n not in self.module_captured:
                self.busy = True
                try:
                    self.module_captured[n] = self.module_capture[n](out)
                finally:
                    self.busy = False
            if self.stack:
                self.stack.pop()

        try:
            for m in names:
                handles.append(m.register_forward_pre_hook(pre))
                handles.append(m.register_forward_hook(post))
            with _Mode(self):
                out = self.model(*args, **kwargs)
            self.output_keys = [self.key(o) for o in _leaves(out, [])]
        finally:
            for h in handles:
                h.remove()
            self.stack.clear()
        return out
