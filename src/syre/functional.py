"""The syre decay kernels and the coupled penalty, as functions on lists of tensors.

Decoupled decay toward the anchor, in place, for every tensor ``p`` with anchor ``theta0``
(``None``: the origin) and spread ``xi`` (``None``: D = I, basic syre)::

    p <- p - weight * D * (p - theta0),   D = 1 + xi,   weight = lr * gamma

computed as

* ``p.mul_(1 - weight)`` when ``theta0`` and ``xi`` are both ``None`` (bitwise AdamW's decay);
* ``p.lerp_(theta0, weight)`` for basic syre (one read-read-write sweep; ``weight == 1`` lands
  exactly on ``theta0``);
* ``p - weight * (diff + xi * diff)`` with ``diff = p - theta0`` for advanced removal (keeps
  the entries of D distinct in fp32).

Arithmetic is done in the anchor's dtype (fp32 or wider): low-precision parameters are
upcast, decayed and rounded back once.

``penalty`` is the coupled (paper) term ``gamma * sum(D * (p - theta0)**2)``; its gradient is
``2 * gamma * D * (p - theta0)`` (the factor-2 convention of ``gamma ||x||^2``).
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import List, Optional, Sequence

import torch

__all__ = ["decay_", "penalty", "stalled_pull"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _decay_one(p: torch.Tensor, theta0: Optional[torch.Tensor], xi: Optional[torch.Tensor], weight: float) -> None:
    work = p
    if p.dtype in _LOW_PRECISION:
        ref = theta0 if theta0 is not None else xi
        work = p.to(ref.dtype if ref is not None else torch.float32)
    if theta0 is None and xi is None:
        work.mul_(1.0 - weight)
    elif xi is None:
        work.lerp_(theta0, weight)
    else:
        diff = work - theta0 if theta0 is not None else work.clone()
        diff.addcmul_(diff, xi)
        work.sub_(diff, alpha=weight)
    if work is not p:
        p.copy_(work)


def stalled_pull(p: torch.Tensor, theta0: Optional[torch.Tensor], xi: Optional[torch.Tensor], weight: float):
    """``(stalled, pulled)``: how many elements of ``p`` the decay pull cannot move, of how many.

    ``pulled`` counts the elements whose pull ``weight * D * |p - theta0|`` (computed in fp32 or
    wider) is nonzero, ``stalled`` those of them where it is below half the spacing of ``p``'s
    storage dtype next to ``p``, in the direction of the pull, so that rounding the decayed value
    back to that dtype returns ``p``. The spacing is ``eps * 2**floor(log2 |p|)`` (that of the
    smallest normal number for subnormals and zero), halved below an exact power of two.
    """
    ref = theta0 if theta0 is not None else xi
    work = p.detach().to(ref.dtype if ref is not None else torch.float32)
    diff = work - theta0 if theta0 is not None else work.clone()
    if xi is not None:
        diff.addcmul_(diff, xi)
    info = torch.finfo(p.dtype)
    mant, exp = torch.frexp(work)  # |p| = |m| * 2**exp with |m| in [0.5, 1): floor(log2 |p|) = exp - 1
    # Moving toward zero from an exact power of two, the spacing below is half the one above.
    exp = exp - 1 - ((mant.abs() == 0.5) & (torch.sign(diff) == torch.sign(work))).to(exp.dtype)
    min_exp = int(math.log2(info.smallest_normal))
    exp = torch.where(work == 0, min_exp, exp).clamp_(min=min_exp)
    half_spacing = torch.ldexp(torch.full_like(work, 0.5 * info.eps), exp)
    pull = diff.abs_().mul_(weight)
    moving = pull > 0
    return int((moving & (pull < half_spacing)).sum()), int(moving.sum())


def decay_(
    params: Sequence[torch.Tensor],
    anchors: Sequence[Optional[torch.Tensor]],
    spreads: Sequence[Optional[torch.Tensor]],
    *,
    weight: float,
    foreach: Optional[bool] = None,
) -> None:
    """``p <- p - weight * (1 + xi) * (p - theta0)`` in place for each ``p`` (see module doc).

    ``foreach=None`` uses the multi-tensor path (one ``torch._foreach_*`` call per device,
    dtype and kind of anchor) whenever there is more than one tensor; ``False`` loops.
    Both paths perform the same elementwise operations and agree bitwise.
    """
    if not (len(params) == len(anchors) == len(spreads)):
        raise ValueError(
            f"params, anchors and spreads must have the same length; got {len(params)}, {len(anchors)}, {len(spreads)}"
        )
    if weight == 0.0 or not params:
        return
    if foreach is None:
        foreach = len(params) > 1
    if not foreach:
        for p, t, x in zip(params, anchors, spreads):
            _decay_one(p, t, x, weight)
        return
    buckets = defaultdict(lambda: ([], [], []))
    for p, t, x in zip(params, anchors, spreads):
        if p.dtype in _LOW_PRECISION or (x is not None and t is None):
            _decay_one(p, t, x, weight)
            continue
        kind = (t is not None, x is not None)
        b = buckets[(p.device, p.dtype, kind)]
        b[0].append(p)
        b[1].append(t)
        b[2].append(x)
    for (_, _, kind), (ps, ts, xs) in buckets.items():
        if kind == (False, False):
            torch._foreach_mul_(ps, 1.0 - weight)
        elif kind == (True, False):
            torch._foreach_lerp_(ps, ts, weight)
        else:
            diffs = torch._foreach_sub(ps, ts)
            torch._foreach_addcmul_(diffs, diffs, xs)
            torch._foreach_add_(ps, diffs, alpha=-weight)


def penalty(
    params: Sequence[torch.Tensor],
    anchors: Sequence[Optional[torch.Tensor]],
    spreads: Sequence[Optional[torch.Tensor]],
    gamma: float,
) -> torch.Tensor:
    """``gamma * sum_p sum(D * (p - theta0)**2)``, differentiable in ``params``; fp32 or wider."""
    terms: List[torch.Tensor] = []
    for p, t, x in zip(params, anchors, spreads):
        ref = t if t is not None else x
        q = p.to(ref.dtype) if (ref is not None and p.dtype in _LOW_PRECISION) else (p.float() if p.dtype in _LOW_PRECISION else p)
        diff = q - t if t is not None else q
        sq = diff * diff
        terms.append(sq.sum() if x is None else (sq + sq * x).sum())
    if not terms:
        return torch.zeros(())
    return gamma * torch.stack([t.to(terms[0].dtype) for t in terms]).sum()
