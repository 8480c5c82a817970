"""Running a model for the audit and the monitor: eval mode, the trace, and the captures (private).

``trace`` records the ops of one forward; ``capture`` runs the model once more and keeps, for
each chain, its end representation as a ``[rows, units]`` float32 matrix (subsampled to
``max_rows`` rows with a seeded generator; the per-unit standard deviation uses every row) and
the rank of the input its weight reads, plus the outputs of attention modules and the inputs of
recurrent ones. Nothing is written to the model: flags are restored on exit and every hook is
removed.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from . import _spectral
from ._graph import Chain, Layout, input_layout
from ._trace import Op, Tracer

RECURRENT_TYPES = (nn.LSTM, nn.GRU, nn.RNN)


class TraceMismatch(RuntimeError):
    """The model ran a different sequence of torch calls than when its structure was traced."""


def split_inputs(inputs) -> Tuple[tuple, dict, int]:
    """``(args, kwargs, batch size)`` for ``model(*args, **kwargs)`` from a tensor, a tuple or a dict."""
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


class eval_mode:
    """Put every module in eval mode under ``no_grad``; restore each module's own flag on exit."""

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


def trace(model: nn.Module, args: tuple, kwargs: dict):
    """``(ops, output keys)`` of one forward (call inside ``eval_mode``)."""
    tracer = Tracer(model)
    tracer.run(args, kwargs)
    return tracer.ops, tracer.output_keys


def unit_rows(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Representation ``x`` as a ``[samples, units]`` matrix (float32 copy)."""
    x = x.detach()
    if layout.kind == "last":
        return x.reshape(-1, layout.units).float()
    if layout.kind == "flat":
        return x.reshape(x.shape[0], layout.units, layout.spatial).transpose(1, 2).reshape(-1, layout.units).float()
    if x.dim() == 2:
        return x.float()
    return x.movedim(1, -1).reshape(-1, layout.units).float()


def subsample(rows: torch.Tensor, max_rows: int, seed: int) -> torch.Tensor:
    n = rows.shape[0]
    if n <= max_rows:
        return rows
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_rows].to(rows.device)
    return rows[idx]


def rows_capture(layout: Layout, pos: int, max_rows: int, seed: int):
    """A capture function: ``{"rows", "std", "samples"}`` of output ``pos`` in ``layout``."""
    def fn(outs):
        rows = unit_rows(outs[pos], layout)
        sd = rows.double().std(dim=0) if rows.shape[0] > 1 else torch.zeros(rows.shape[1], dtype=torch.float64)
        n = rows.shape[0]
        return {"rows": subsample(rows, max_rows, seed).cpu(), "std": sd.cpu(), "samples": n}
    return fn


def module_capture(layout: Layout, max_rows: int, seed: int):
    fn = rows_capture(layout, 0, max_rows, seed)
    return lambda out: fn([out[0] if isinstance(out, (tuple, list)) else out])


def input_capture(op: Op, max_rows: int, seed: int, rtol: float):
    """A capture function for the input of a weight op: its ranks (None where the batch limits them).

    ``{"rank": centred rank, "rank_uncentred": ..., "effective_rank": centred, "rows": rows,
    "features": width}``, ranks at ``rtol`` of the top singular value; for an embedding, ``{"distinct": number of distinct ids}``. The
    ranks are None when the batch has no more rows than features (it would measure the batch).
    """
    layout = input_layout(op)

    def fn(ins):
        if not ins:
            return None
        x = ins[0]
        if op.name == "embedding":
            return {"distinct": int(torch.unique(x.detach()).numel())}
        if layout is None or not x.is_floating_point():
            return None
        rows = unit_rows(x, layout)
        n, d = rows.shape
        if n <= d or not bool(torch.isfinite(rows).all()):
            return {"rank": None, "rank_uncentred": None, "rows": n, "features": d}
        s, sc = _spectral.gram_spectra(subsample(rows, max_rows, seed))
        return {"rank": _spectral.centred_rank(s, sc, rtol), "rank_uncentred": _spectral.count_above(s, rtol),
                "effective_rank": _spectral.entropy_rank(sc, 0.0), "rows": n, "features": d}
    return fn


def capture(model: nn.Module, ops: List[Op], chains: List[Chain], args: tuple, kwargs: dict,
            max_rows: int, seed: int, rtol: float = 1e-3, layers: Optional[set] = None, inputs: bool = True):
    """Run the model once more; ``(outputs, inputs, module outputs, module inputs)`` captured by layer name.

    ``outputs[layer]``: see ``rows_capture``; ``inputs[layer]``: see ``input_capture``; module
    outputs for ``nn.MultiheadAttention``, module inputs (the positional arguments) for recurrent
    layers. Raises ``TraceMismatch`` when the forward differs from the traced ``ops``.
    """
    fns: Dict[int, list] = {}
    ins: Dict[int, Tuple[str, Any]] = {}
    for c in chains:
        if layers is None or c.layer in layers:
            fns.setdefault(c.end_op, []).append((c.layer, rows_capture(c.layout, c.end_pos, max_rows, seed)))
            if inputs:
                ins[c.op.index] = (c.op.name, (c.layer, input_capture(c.op, max_rows, seed, rtol)))
    modules = dict(model.named_modules())
    mha = {n: module_capture(Layout("last", m.embed_dim), max_rows, seed) for n, m in modules.items()
           if isinstance(m, nn.MultiheadAttention) and (layers is None or n in layers)}
    rec = {n: (lambda inp: tuple(inp)) for n, m in modules.items() if isinstance(m, RECURRENT_TYPES)}
    tracer = Tracer(model, capture={i: (lambda outs, fl=fl: {lay: f(outs) for lay, f in fl}) for i, fl in fns.items()},
                    module_capture=mha,
                    capture_inputs={i: (name, (lambda xs, lf=lf: {lf[0]: lf[1](xs)})) for i, (name, lf) in ins.items()},
                    module_input_capture=rec)
    tracer.run(args, kwargs)
    if [(o.name, o.out_shapes) for o in tracer.ops] != [(o.name, o.out_shapes) for o in ops]:
        raise TraceMismatch("The model ran a different sequence of torch calls on a second pass over the same "
                            "inputs; the audit needs a forward pass that is deterministic in eval mode")
    outs: Dict[str, Any] = {}
    for per in tracer.captured.values():
        outs.update(per)
    got_in: Dict[str, Any] = {}
    for per in tracer.captured_inputs.values():
        got_in.update(per)
    return outs, got_in, tracer.module_captured, tracer.module_input_captured
