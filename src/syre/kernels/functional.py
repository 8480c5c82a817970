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

The for-loop path (``foreach=False``) is the ground truth. The multi-tensor path groups tensors by
device, dtype and kind and issues one ``torch._foreach_*`` call per group for the single-sweep
updates (``mul_``, ``lerp_``). Advanced removal takes one pass per tensor without temporaries
the size of a parameter: large CPU tensors go through a fused kernel (compiled on first need,
see ``syre._compile``) that reads ``p``, ``theta0`` and ``xi`` once and writes ``p`` once (the
read-read-read-write floor); the rest is walked in blocks of ``_BLOCK`` elements whose ``diff``
lives in one block-sized scratch buffer that stays in cache. Every element goes through the
same floating-point operations as in the for-loop, so all paths agree bitwise.

Arithmetic is done in the anchor's dtype (fp32 or wider): low-precision parameters are
upcast, decayed and rounded back once.

``penalty`` is the coupled (paper) term ``gamma * sum(D * (p - theta0)**2)``; its gradient is
``2 * gamma * D * (p - theta0)`` (the factor-2 convention of ``gamma ||x||^2``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch

from .._compile import LazyKernel, is_compiling
from . import _native

__all__ = ["apply_buckets", "buckets", "decay_", "penalty", "stalled_pull"]

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
        if isinstance(weight, torch.Tensor):
            work.sub_(diff.mul_(weight))
        else:
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
    dtype and kind of anchor; blocked single sweeps for advanced removal) whenever there is more
    than one tensor or a tensor larger than one block; ``False`` loops over the tensors. Both
    paths perform the same elementwise operations and agree bitwise.
    """
    if not (len(params) == len(anchors) == len(spreads)):
        raise ValueError(
            f"params, anchors and spreads must have the same length; got {len(params)}, {len(anchors)}, {len(spreads)}"
        )
    if not params or (not isinstance(weight, torch.Tensor) and weight == 0.0):
        return
    apply_buckets(buckets(params, anchors, spreads, foreach), weight)


def buckets(params, anchors, spreads, foreach: Optional[bool] = None) -> list:
    """The calls ``decay_`` makes, decided once: ``(kind, params, anchors, spreads)`` per bucket.

    ``kind`` is ``"loop"`` (one tensor at a time: the for-loop path, low-precision tensors),
    ``"mul"``, ``"lerp"``, ``"ar"`` or ``"ar0"`` (advanced removal toward the origin; ``_small``
    when every tensor fits one cache block) (one multi-tensor call per device, dtype and kind). A caller that
    decays the same tensors at every step (syre's hook) keeps the buckets and calls
    ``apply_buckets`` only: the per-tensor decisions are not made again.
    """
    if foreach is None:
        foreach = len(params) > 1 or spreads[0] is not None
    if not foreach:
        return [("loop", list(params), list(anchors), list(spreads))]
    out = {}
    loop = ([], [], [])
    for p, t, x in zip(params, anchors, spreads):
        if p.dtype in _LOW_PRECISION:
            dest = loop
        else:
            kind = "mul" if (t is None and x is None) else ("lerp" if x is None else ("ar" if t is not None else "ar0"))
            if kind in ("ar", "ar0") and p.numel() <= _SMALL and p.is_contiguous() and x.is_contiguous() \
                    and (t is None or t.is_contiguous()):
                kind += "_small"  # cache-resident: three multi-tensor calls, no scratch
            dest = out.setdefault((p.device, p.dtype, kind), ([], [], []))
        dest[0].append(p)
        dest[1].append(t)
        dest[2].append(x)
    result = [_native_bucket(k[2], *v) for k, v in out.items()]
    return result + ([("loop",) + loop] if loop[0] else [])


def _native_bucket(kind: str, ps, ts, xs) -> tuple:
    """``(kind, ps, ts, xs)``, or ``("native", ps, ts, xs, (batch, kind))`` where the native kernels take the bucket
    (CPU fp32/fp64, everything contiguous; ``syre.kernels._native``): one call for it, bitwise the same values."""
    if kind == "mul" or not _native.Batch.fits(ps, None if kind.startswith("ar0") else ts, None if kind == "lerp" else xs):
        return (kind, ps, ts, xs)
    batch = _native.Batch(ps, None if kind.startswith("ar0") else ts, None if kind == "lerp" else xs)
    return ("native", ps, ts, xs, (batch, kind))


def apply_buckets(bs: list, weight) -> None:
    """Apply ``p <- p - weight * D * (p - theta0)`` to every bucket of ``buckets``.

    ``weight`` is a float, or a 0-d tensor (``lr * gamma`` kept on the device of a tensor ``lr``:
    no host synchronisation; then advanced removal rounds ``weight * diff`` separately).
    """
    tensor = isinstance(weight, torch.Tensor)
    for kind, ps, ts, xs, *native in bs:
        if kind == "native":
            batch, kind = native[0]
            if not (tensor or is_compiling()) and batch(weight):
                continue
            # a parameter's storage was replaced by one the batch cannot take, or a tensor weight: torch's calls
        if kind == "loop":
            for p, t, x in zip(ps, ts, xs):
                _decay_one(p, t, x, weight)
        elif kind == "mul":
            torch._foreach_mul_(ps, 1.0 - weight)
        elif kind == "lerp":
            torch._foreach_lerp_(ps, ts, [weight] * len(ps)) if tensor else torch._foreach_lerp_(ps, ts, weight)
        elif tensor or kind.endswith("_small"):
            # diff = p - theta0 (or p), diff += diff * xi, p -= weight * diff: _decay_one's operations
            diffs = torch._foreach_sub(ps, ts) if kind in ("ar", "ar_small") else [p.clone() for p in ps]
            torch._foreach_addcmul_(diffs, diffs, xs)
            if tensor:
                torch._foreach_mul_(diffs, weight)
                torch._foreach_sub_(ps, diffs)
            else:
                torch._foreach_add_(ps, diffs, alpha=-weight)
        else:
            _ar_multi(ps, ts if kind == "ar" else None, xs, weight)


# ----------------------------------------------------------------------------- advanced removal
# The for-loop computes, with ATen's CPU kernels, diff = p - theta0 (one rounding), then
# diff.addcmul_(diff, xi) and p.sub_(diff, alpha=weight), each a fused multiply-add in ATen's
# vectorised CPU loops: diff = fma(diff, xi, diff), p = fma(-weight, diff, p). The fused kernel
# computes exactly that in one pass with explicit FMAs; it is compiled, checked bitwise against
# the for-loop on sample data, and used for tensors of at least _FUSED_MIN elements. Everything else
# (and every tensor when the kernel is not available) goes through _ar_blocked.


def _ar_fused(p, theta0, xi, neg_weight) -> None:
    """``p <- fma(-w, fma(d, xi, d), p)`` with ``d = p - theta0`` in one pass (``neg_weight = -w``)."""
    if is_compiling():
        d = p - theta0
        fma = torch.ops.prims.fma
        p.copy_(fma(neg_weight, fma(d, xi, d), p))
    else:  # the same numbers with ATen's kernels (used only if the compiled call runs eagerly)
        d = p - theta0
        d.addcmul_(d, xi)
        p.add_(d, alpha=float(neg_weight))


def _ar0_fused(p, xi, neg_weight) -> None:
    """``p <- fma(-w, fma(p, xi, p), p)``: advanced removal toward the origin, in one pass."""
    if is_compiling():
        fma = torch.ops.prims.fma
        p.copy_(fma(neg_weight, fma(p, xi, p), p))
    else:
        d = p.clone()
        d.addcmul_(d, xi)
        p.add_(d, alpha=float(neg_weight))


def _verifier_ar(with_theta: bool):
    def verify(kernel, dtype) -> bool:
        g = torch.Generator().manual_seed(0)
        n = (1 << 16) + 5  # vector body and ragged tail; the size hint makes the loop parallel
        p = torch.randn(n, generator=g, dtype=dtype)
        t = torch.randn(n, generator=g, dtype=dtype) * 1.5
        x = (torch.rand(n, generator=g, dtype=dtype) - 0.5) * 0.4
        want = p.clone()
        _decay_one(want, t if with_theta else None, x, 0.3)
        got = p.clone()
        w = torch.tensor(-0.3, dtype=dtype)
        kernel(got, t, x, w) if with_theta else kernel(got, x, w)
        return torch.equal(got, want)

    return verify


#: Built once the process has swept 2**30 advanced-removal elements through the blocked path
#: (the build takes seconds; the fused pass saves well under a nanosecond per element).
_AR_FUSED = LazyKernel("advanced-removal decay kernel", _ar_fused, _verifier_ar(True), budget=1 << 30)
_AR0_FUSED = LazyKernel("advanced-removal decay kernel", _ar0_fused, _verifier_ar(False), budget=1 << 30)
#: Tensors below this many elements go through the blocked path: the compiled call costs tens of
#: microseconds, and on cache-cold medium tensors ATen's three passes measured faster here.
_FUSED_MIN = 1 << 20


def _ar_multi(ps: List[torch.Tensor], ts: Optional[List[torch.Tensor]], xs: List[torch.Tensor], weight: float) -> None:
    """Advanced removal on same-device, same-dtype tensors: fused kernel for large, blocked for the rest."""
    rest_p, rest_t, rest_x = [], [], []
    if ps[0].device.type == "cpu":
        lazy = _AR_FUSED if ts is not None else _AR0_FUSED
        big = sum(p.numel() for p in ps if p.numel() >= _FUSED_MIN)
        kernel = lazy.get(big, ps[0].dtype) if big else None
    else:
        kernel = None
    if kernel is None:
        _ar_blocked(ps, ts, xs, weight)
        return
    nw = torch.tensor(-weight, dtype=ps[0].dtype)
    with torch.no_grad():  # one compiled variant: grad mode is part of what torch.compile guards
        _ar_fused_each(kernel, ps, ts, xs, nw, rest_p, rest_t, rest_x)
    if rest_p:
        _ar_blocked(rest_p, rest_t if ts is not None else None, rest_x, weight)


def _ar_fused_each(kernel, ps, ts, xs, nw, rest_p, rest_t, rest_x) -> None:
    for i, p in enumerate(ps):
        t = ts[i] if ts is not None else None
        x = xs[i]
        if p.numel() >= _FUSED_MIN and p.is_contiguous() and x.is_contiguous() and (t is None or t.is_contiguous()):
            if t is not None:
                kernel(p.view(-1), t.view(-1), x.view(-1), nw)
            else:
                kernel(p.view(-1), x.view(-1), nw)
        else:
            rest_p.append(p)
            rest_t.append(t)
            rest_x.append(x)


#: Elements per block of the blocked advanced-removal sweep on CPU: the block's slices of p,
#: theta0, xi and the diff scratch (4 MiB in fp32) stay in the last-level cache between the three
#: elementwise passes, and there are few enough blocks that dispatch costs little.
_BLOCK = 1 << 18
#: Advanced-removal tensors up to this many elements take three plain multi-tensor calls (their
#: temporaries are small); larger ones the fused kernel or the blocked sweep through one scratch.
_SMALL = 1 << 14
#: On accelerators one kernel launch per block costs more than the extra traffic of a larger
#: scratch; the block only bounds the scratch memory there.
_BLOCK_ACCEL = 1 << 24


def _ar_blocked(
    ps: List[torch.Tensor], ts: Optional[List[torch.Tensor]], xs: List[torch.Tensor], weight: float
) -> None:
    """Advanced removal on same-device, same-dtype tensors, block by block, via a scratch buffer.

    Each block holds consecutive flat slices of one or more tensors (at most ``_BLOCK``
    elements): ``diff = p - theta0`` (or ``p``), ``diff += diff * xi``, ``p -= weight * diff``,
    as ``_decay_one`` does. A block of several small tensors takes one ``_foreach_*`` call per op.
    """
    block = _BLOCK if ps[0].device.type == "cpu" else _BLOCK_ACCEL
    pieces: List[tuple] = []  # (p, theta0 | None, xi) flat slices, each at most `block` long
    for i, p in enumerate(ps):
        t = ts[i] if ts is not None else None
        x = xs[i]
        if not (p.is_contiguous() and x.is_contiguous() and (t is None or t.is_contiguous())):
            _decay_one(p, t, x, weight)  # a strided layout the flat slices cannot follow
            continue
        pf, xf = p.view(-1), x.view(-1)
        tf = t.view(-1) if t is not None else None
        n = pf.numel()
        if n <= block:
            pieces.append((pf, tf, xf))
        else:
            for lo in range(0, n, block):
                hi = min(lo + block, n)
                pieces.append((pf[lo:hi], tf[lo:hi] if tf is not None else None, xf[lo:hi]))
    if not pieces:
        return
    scratch = torch.empty(min(block, sum(pc[0].numel() for pc in pieces)), dtype=ps[0].dtype, device=ps[0].device)
    batch: List[tuple] = []
    used = 0
    for pc in pieces:
        n = pc[0].numel()
        if batch and used + n > scratch.numel():
            _ar_batch(batch, scratch, weight)
            batch, used = [], 0
        batch.append(pc)
        used += n
    _ar_batch(batch, scratch, weight)


def _ar_batch(batch: List[tuple], scratch: torch.Tensor, weight: float) -> None:
    if len(batch) == 1:
        p, t, x = batch[0]
        diff = scratch[: p.numel()]
        if t is not None:
            torch.sub(p, t, out=diff)
        else:
            diff.copy_(p)
        diff.addcmul_(diff, x)
        p.sub_(diff, alpha=weight)
        return
    ps = [pc[0] for pc in batch]
    diffs = []
    off = 0
    for p in ps:
        n = p.numel()
        diffs.append(scratch[off : off + n])
        off += n
    torch._foreach_copy_(diffs, ps)
    if batch[0][1] is not None:
        torch._foreach_sub_(diffs, [pc[1] for pc in batch])
    torch._foreach_addcmul_(diffs, diffs, [pc[2] for pc in batch])
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
