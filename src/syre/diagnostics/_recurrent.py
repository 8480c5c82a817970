"""Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) in the audit (private).

torch runs a whole stack of recurrent layers as one fused call, so the hidden sequence of each
layer never appears in the trace. The audit captures the module's input and replays the
recurrence here, layer by layer and direction by direction, with the module's own weights and
torch's equations (``nn.LSTM``'s documentation; GRU and Elman RNN likewise); the last layer's
output agrees with the module's to float round-off (tested).

Each (layer, direction) is reported as ``<module>.l<k>`` (``_reverse`` for the backward
direction) with ``units`` = hidden size. Its unit ``i`` owns row ``i`` of every gate block of
``W_ih``, ``W_hh`` and the biases (incoming), and column ``i`` of ``W_hh`` and of the next layer's
input weight (outgoing): permuting units permutes all of them, so duplicated units are on a
permutation mirror, and a unit whose parameters are all zero is dead. The weight rank is that of
``[W_ih | W_hh]``; the representation is the layer's hidden sequence, ``[batch x time, hidden]``.
Layers with ``proj_size`` get ranks but no unit scans.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from . import _spectral
from ._measure import inactive_from_std, rep_stats, unit_states, weight_ranks
from ._report import LayerReport
from ._run import RECURRENT_TYPES, subsample

GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _kind(mod: nn.Module) -> str:
    return "LSTM" if isinstance(mod, nn.LSTM) else "GRU" if isinstance(mod, nn.GRU) else mod.mode


def _weights(mod, layer: int, rev: bool):
    sfx = f"_l{layer}" + ("_reverse" if rev else "")
    get = lambda n: getattr(mod, n + sfx, None)  # noqa: E731
    return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"), get("weight_hr")


def _step(kind: str, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr):
    gi = x @ w_ih.T + (b_ih if b_ih is not None else 0)
    gh = h @ w_hh.T + (b_hh if b_hh is not None else 0)
    if kind == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if w_hr is not None:
            h = h @ w_hr.T
        return h, c
    if kind == "GRU":
        ir, iz, inn = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(inn + r * hn)
        return (1 - z) * n + z * h, c
    act = torch.tanh if kind == "RNN_TANH" else torch.relu
    return act(gi + gh), c


@torch.no_grad()
def replay(mod: nn.Module, inputs: tuple) -> Optional[List[List[torch.Tensor]]]:
    """Per layer, per direction, the hidden sequence ``[time, batch, hidden]`` of ``mod`` on ``inputs``.

    ``inputs``: the module's positional arguments (input, and optionally ``hx``). None for a
    ``PackedSequence`` input (its sequences have different lengths).
    """
    x = inputs[0] if inputs else None
    if not isinstance(x, torch.Tensor):
        return None
    kind = _kind(mod)
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
    elif mod.batch_first:
        x = x.transpose(0, 1)
    dirs = 2 if mod.bidirectional else 1
    hsize = mod.proj_size if getattr(mod, "proj_size", 0) else mod.hidden_size
    hx = inputs[1] if len(inputs) > 1 else None
    h0 = c0 = None
    if hx is not None:
        h0, c0 = hx if kind == "LSTM" else (hx, None)
        if unbatched:
            h0 = h0.unsqueeze(1)
            c0 = c0.unsqueeze(1) if c0 is not None else None
    out: List[List[torch.Tensor]] = []
    for layer in range(mod.num_layers):
        per_dir = []
        for d in range(dirs):
            w_ih, w_hh, b_ih, b_hh, w_hr = _weights(mod, layer, d == 1)
            k = layer * dirs + d
            h = h0[k] if h0 is not None else x.new_zeros(x.shape[1], hsize)
            c = (c0[k] if c0 is not None else x.new_zeros(x.shape[1], mod.hidden_size)) if kind == "LSTM" else None
            steps = range(x.shape[0] - 1, -1, -1) if d == 1 else range(x.shape[0])
            hs = [None] * x.shape[0]
            for t in steps:
                h, c = _step(kind, x[t], h, c, w_ih, w_hh, b_ih, b_hh, w_hr)
                hs[t] = h
            per_dir.append(torch.stack(hs))
        out.append(per_dir)
        x = torch.cat(per_dir, dim=-1)
    return out


def _module_consumer(ops, name: str) -> Optional[Tuple[str, Any]]:
    """The weight layer that reads the recurrent module's output directly, as (layer name, op), if any."""
    own = [op for op in ops if op.module == name and op.name.lower() in ("lstm", "gru", "rnn_tanh", "rnn_relu")]
    if len(own) != 1 or not own[0].outputs:
        return None
    key = own[0].outputs[0]
    readers = [op for op in ops if key in op.inputs]
    if len(readers) == 1 and readers[0].name == "linear" and readers[0].inputs[0] == key and readers[0].params:
        return readers[0].params[0].rsplit(".", 1)[0], readers[0]
    return None


def recurrent_layers(model: nn.Module, ops, captured: Dict[str, tuple], params: Dict[str, torch.Tensor],
                     rtol: float, atol: float, threshold: float, max_rows: int, seed: int) -> List[LayerReport]:
    """One ``LayerReport`` per layer and direction of every recurrent module the forward ran."""
    reports: List[LayerReport] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, RECURRENT_TYPES) or name not in captured:
            continue
        kind = _kind(mod)
        gates = GATES[kind]
        dirs = 2 if mod.bidirectional else 1
        hsize = mod.hidden_size
        proj = getattr(mod, "proj_size", 0)
        seqs = replay(mod, captured[name])
        consumer = _module_consumer(ops, name)
        x_in = captured[name][0] if captured[name] and isinstance(captured[name][0], torch.Tensor) else None
        in_rank = None
        if x_in is not None and x_in.is_floating_point():
            rows = x_in.detach().reshape(-1, x_in.shape[-1]).float()
            if rows.shape[0] > rows.shape[1]:
                in_rank = _spectral.matrix_ranks(subsample(rows, max_rows, seed), rtol)
        for layer in range(mod.num_layers):
            for d in range(dirs):
                w_ih, w_hh, b_ih, b_hh, _ = _weights(mod, layer, d == 1)
                lname = f"{name}.l{layer}" + ("_reverse" if d else "")
                if layer + 1 < mod.num_layers:
                    nxt_names = [f"{name}.l{layer + 1}"] + ([f"{name}.l{layer + 1}_reverse"] if dirs == 2 else [])
                    nxt_w = [_weights(mod, layer + 1, r == 1)[0] for r in range(dirs)]
                elif consumer is not None:
                    nxt_names, nxt_w = [consumer[0]], [params[consumer[1].params[0]]]
                else:
                    nxt_names, nxt_w = [], []
                w = torch.cat([w_ih, w_hh], dim=1).detach()
                lr = LayerReport(lname, type(mod).__name__, list(w.shape), proj or hsize, nxt_names, "", "" if nxt_names
                                 else "model output or other use")
                weight_ranks(lr, w, rtol)
                if in_rank is not None:
                    lr.input_rank = in_rank[1]
                    lr.weight_max_rank = min(lr.weight_max_rank, min(in_rank[0], w_ih.shape[1]) + w_hh.shape[1])
                if seqs is not None:
                    hseq = seqs[layer][d]
                    rows = hseq.reshape(-1, hseq.shape[-1]).float()
                    sd = rows.double().std(dim=0)
                    cap = {"rows": subsample(rows, max_rows, seed).cpu(), "std": sd.cpu(), "samples": rows.shape[0]}
                    lr.representation = rep_stats(cap, threshold, rtol)
                    lr.inactive_units = inactive_from_std(cap["std"], rtol, atol)
                if not proj and nxt_w:
                    sl = slice(d * hsize, (d + 1) * hsize)
                    unit = lambda t: t.detach().reshape(gates, hsize, -1).transpose(0, 1)  # noqa: E731
                    w_in = [unit(w_ih), unit(w_hh)]
                    b_in = [t.detach().reshape(gates, hsize).T for t in (b_ih, b_hh) if t is not None] or None
                    w_out = [w_hh.detach()] + [t.detach()[:, sl] for t in nxt_w]
                    lr.activation = {"LSTM": "lstm gates", "GRU": "gru gates"}.get(kind, kind.lower().replace("_", " "))
                    unit_states(lr, w_in, w_out, b_in, w_in, b_in, ("permutation",), rtol, atol)
                lr.dead_units = sorted(set(lr.zero_units) | set(lr.inactive_units))
                reports.append(lr)
            in_rank = None  # the next layer reads this layer's output (both directions)
            if seqs is not None:
                x_all = torch.cat(seqs[layer], dim=-1).reshape(-1, dirs * (proj or hsize)).float()
                if x_all.shape[0] > x_all.shape[1]:
                    in_rank = _spectral.matrix_ranks(subsample(x_all, max_rows, seed), rtol)
    return reports
