"""Stochastic rounding of syre's decay into fp16/bf16 parameters, from a counter-based stream.

In fp16/bf16 storage the decay's pull per step, ``lr * gamma * D * |p - theta0|``, is often below
half an ulp: rounding to nearest returns ``p`` and the decay does nothing (``PrecisionWarning``).
``attach(..., rounding="stochastic")`` rounds the decayed fp32 value ``v`` to one of its two
neighbours ``lo <= v <= hi`` in the storage dtype, ``hi`` with probability ``(v - lo) / (hi - lo)``,
so the stored value is ``v`` in expectation and a sub-ulp pull moves the weights on average. For bf16
from fp32 this is the integer form: 16 random bits added below bf16's mantissa, then truncation.

The uniform of each element is drawn from the ``round`` stream (``syre.rng._streams``) keyed by
(seed, parameter name) at the element's global index, generation = the step: deterministic on every
rank (a shard reads its global indices), after a restart (the step is in the checkpoint), and the
same in two runs.
"""
from __future__ import annotations

import torch

from ..rng import _streams

__all__ = ["stochastic_round_"]


def _indices(local: torch.Tensor, shard) -> torch.Tensor:
    n = local.numel()
    if shard is None:
        return torch.arange(n, dtype=torch.int64, device=local.device)
    if shard.flat is not None:
        return torch.arange(shard.flat[0], shard.flat[0] + n, dtype=torch.int64, device=local.device)
    return shard.indices(0, n, local.device)


def stochastic_round_(p: torch.Tensor, value: torch.Tensor, seed: int, name: str, step: int, shard=None) -> None:
    """``p <- round(value)`` stochastically into ``p``'s dtype (fp16/bf16), in place (see the module doc)."""
    k, gen = _streams.key(seed, name, "round"), step % 2**32
    if shard is None or shard.flat is not None:  # a contiguous range: compiled on CPU where available
        first = 0 if shard is None else shard.flat[0]
        bits = _streams.range_bits(k, first, first + p.numel(), gen, p.device).view(p.shape)
        w = None
    else:
        w = _streams.words(k, _indices(p, shard).view(p.shape), gen)
        bits = w.to(torch.int32)  # the same bit pattern
    if p.dtype == torch.bfloat16 and value.dtype == torch.float32:
        # bf16 is fp32 without its low 16 bits: adding 16 random bits there and truncating rounds the magnitude
        # up with probability (v - lo) / (hi - lo) exactly (a carry moves to the next binade, as it should;
        # inf stays inf).
        out = ((value.view(torch.int32) + ((bits >> 16) & 0xFFFF)) & -65536).view(torch.float32).to(torch.bfloat16)
        p.copy_(out.masked_fill_(value != value, float("nan")))  # a NaN stays NaN (its low bits could reach inf)
        return
    if w is None:
        w = bits.to(torch.int64) & 0xFFFFFFFF
    near = value.to(p.dtype)
    back = near.to(value.dtype)
    up = back < value
    inf = torch.full_like(near, float("inf"))
    other = torch.where(up, torch.nextafter(near, inf), torch.nextafter(near, -inf))
    lo = torch.where(up, near, other).to(value.dtype)
    hi = torch.where(up, other, near).to(value.dtype)
    width = hi - lo
    prob_hi = torch.where(width > 0, (value - lo) / width, torch.zeros_like(value))
    u = _streams.uniform01(w, value.dtype)
    out = torch.where(back == value, near, torch.where(u < prob_hi, hi.to(p.dtype), lo.to(p.dtype)))
    out = torch.where(torch.isfinite(value), out, near)  # NaN and inf stay what rounding to nearest gives
    p.copy_(out)
