"""``syre.AdamW`` and ``syre.SGD``: torch's optimizers, with syre's decay read inside their own pass.

::

    opt = syre.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)   # in place of torch.optim.AdamW
    s = syre.attach(opt, model)                                        # as with any optimizer

Each is a subclass of the torch class (``isinstance(opt, torch.optim.AdamW)`` holds), with the same
arguments, ``param_groups``, per-parameter ``state`` and ``state_dict``, so Lightning, transformers,
DDP/FSDP2, schedulers and checkpoints handle it exactly as torch's. Without syre attached its
``step`` is torch's. With syre attached (stored anchors), syre's step pre-hook validates and hands
each group's ``lr * gamma`` and anchors to ``step``, which applies, per parameter, in one pass that
reads ``p, grad, exp_avg, exp_avg_sq, theta0 (, xi)`` once and writes ``p, exp_avg, exp_avg_sq`` once::

    p <- p - w * D * (p - theta0)          (w = lr * gamma; syre's decay, first, as in the hook path)
    p <- p * (1 - lr * weight_decay)       (AdamW's own decay; 0 when syre took it over)
    m <- lerp(m, g, 1 - beta1);  v <- beta2 v + (1 - beta2) g^2
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

(``syre.SGD`` with momentum: the decay, then ``b <- momentum b + (1 - dampening) g``, ``p <- p - lr b``).

``syre.AdamW`` takes one of three routes per tensor. On CPU, fp32/fp64 contiguous tensors take the
**native kernel** (``syre.kernels._native``: a C loop built with the system compiler on first use, one
call for all such tensors of a group, every size, basic and AR) -- about torch's fused AdamW's own speed
per byte, so the step costs the anchor's extra read and little else. Where the native kernels are off
(``SYRE_NATIVE=0``, no C compiler), basic syre (``d_spread = 0``, a float lr) on tensors below
``FOLD_MAX`` elements is **folded** into torch's fused AdamW: Adam's update does not depend on ``p``, so
the decay, then AdamW, is torch's fused AdamW with the weight decay that scales ``p`` by
``(1 - w)(1 - lr wd)``, then ``p += w (1 - lr wd) theta0`` in one ``_foreach_add_``; larger tensors, and
AR, take the **compiled kernel**: ``torch.compile``d on CPU (one build per dtype and kind, cached on disk
by torch; ``lr`` and every other scalar enter as one tensor, so a learning-rate schedule does not
recompile) and the Triton kernel of ``syre.kernels._triton`` on CUDA. Everything else -- AR tensors
below ``FUSED_MIN`` elements without the native kernels, fp16/bf16, amsgrad, maximize, capturable or
differentiable groups, Nesterov, a coupled ``weight_decay`` on SGD, the first SGD step (no momentum
buffer yet), or no compiler at all -- takes the separate pass: syre's decay, then torch's own step on
those tensors (with syre attached, torch's fused implementation where the group leaves ``fused`` and
``foreach`` unset). In seeded mode each fused tensor's anchor is generated right before its kernel
(scratch the size of that one parameter), so stored and seeded give identical parameters.

The step asks the attached ``Syre`` for its work (``Syre._take_work``, made by syre's step
pre-hook); nothing is written onto the optimizer. Under AMP (``fused=True``: ``GradScaler`` calls
``step`` with ``grad_scale`` and ``found_inf``) the fused tensors' gradients are unscaled in place
before the kernel, as torch's fused kernels do, and a step with inf/NaN gradients is skipped
whole: no decay, no update, no step counted.

Agreement: no route is bitwise "decay, then torch's AdamW" (torch's kernels contract some products
into FMAs, the native and compiled ones others; the folded route rounds ``(1 - w) p`` and ``w theta0``
separately); ``tests/kernels/test_fused.py`` bounds the difference of each route against the equations
(``syre.reference.adamw_step``) over many steps, with the same tolerance.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from .._compile import no_grad
from . import _native
from ._fused_kernels import _ADAMW, _SGD, FUSED_MIN, _adamw_kernel, _kernel, _sgd_kernel  # noqa: F401 (the eager definitions, read here by the tests)

__all__ = ["AdamW", "FOLD_MAX", "FUSABLE", "FUSED_MIN", "SGD", "Work"]

#: Basic syre on tensors below this many elements is folded into torch's fused AdamW (``_folded``): one
#: multi-tensor call for all of them and one ``_foreach_add_``, against a compiled call per tensor.
FOLD_MAX = 1 << 20


# ----------------------------------------------------------------------------- kernels
def _fusable(p, others, least: int = FUSED_MIN) -> bool:
    return (p.dtype in (torch.float32, torch.float64) and p.numel() >= least and type(p.data) is torch.Tensor
            and all(t is None or (t.is_contiguous() and t.dtype == p.dtype) for t in (p,) + tuple(others)))


class Work:
    """The decay one step hands the optimizer's pass: per group ``(w, {id(param): entry})``, and the store.

    Made by syre's step pre-hook (``Syre._decay``) and taken by the step (``Syre._take_work``); never
    kept on the optimizer. The anchors of a fused tensor are read (stored mode) or generated (seeded
    mode) right before its kernel, one tensor at a time, so both modes run the same kernel on the
    same numbers and give identical parameters.
    """

    def __init__(self, groups: Dict[int, tuple], store, foreach):
        self.groups = groups
        self.store = store
        self.foreach = foreach

    def take(self, gi: int, params: List[torch.Tensor], fused_ok) -> List[Optional[tuple]]:
        """For each param: ``(w, entry)`` if it is fused, else None (its decay applied now, separately)."""
        got = self.groups.get(gi)
        if got is None:
            return [None] * len(params)
        w, by_id = got
        out, rest = [], []
        for p in params:
            e = by_id.get(id(p))
            if e is not None and self.store.has_theta0(e) and fused_ok(p):
                out.append((w, e))
            else:
                out.append(None)
                if e is not None:
                    rest.append(e)
        if rest:
            self.store.decay(rest, w, self.foreach)
        return out

    def theta0s(self, entries, params: List[torch.Tensor]) -> List[torch.Tensor]:
        """The theta0 of each entry, shaped and typed like its parameter (generated now in seeded mode)."""
        out = []
        for e, p in zip(entries, params):
            t = self.store.pair(e)[0]
            out.append(t if t.dtype == p.dtype else t.to(p.dtype))
        return out

    def native_pair(self, e, p: torch.Tensor):
        """``(theta0, xi)`` of ``e`` contiguous in ``p``'s dtype, as stored where they are (no copy)."""
        t, x = self.store.pair(e)
        if t is not None and (t.dtype is not p.dtype or not t.is_contiguous()):
            t = t.to(p.dtype).contiguous()
        if x is not None and (x.dtype is not p.dtype or not x.is_contiguous()):
            x = x.to(p.dtype).contiguous()
        return t, x

    def pair(self, e, p: torch.Tensor):
        """``(theta0, xi)`` of ``e`` flat, in ``p``'s dtype (generated now in seeded mode)."""
        t, x = self.store.pair(e)
        return t.to(p.dtype).reshape(-1), (None if x is None else x.to(p.dtype).reshape(-1))


def _take_work(opt) -> Optional[Work]:
    from .._live import attached

    s = attached(opt)
    return None if s is None else s._take_work()


def _amp(opt, grads: List[torch.Tensor]) -> None:
    """Under ``GradScaler`` (``fused=True``: it passes ``grad_scale``): unscale the fused tensors' gradients in
    place, as torch's fused kernels do (a step with ``found_inf`` set never gets here: syre made no work)."""
    grad_scale = getattr(opt, "grad_scale", None)
    if grad_scale is not None and grads:
        torch._foreach_div_(grads, grad_scale.to(grads[0].device))


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` that applies an attached syre's decay inside its own pass (module doc)."""

    @no_grad
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()  # under syre, the decay's plan is made here (after the gradients)
        work = _take_work(self)
        for gi, group in enumerate(self.param_groups):
            params, grads, m, v, vmax, steps = [], [], [], [], [], []
            has_complex = self._init_group(group, params, grads, m, v, vmax, steps)
            simple = not (group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]
                          or has_complex or torch.is_tensor(group["betas"][0]))
            # torch's fused AdamW for syre's tensors, unless the group asks for another implementation
            may_fuse = simple and group["fused"] is not False and not group["foreach"]
            native, kernel, folded, rest = _routes(work, gi, params, grads, m, v, simple, may_fuse, float(group["lr"])
                                                   if not torch.is_tensor(group["lr"]) else None)
            if rest:
                fuse = (work is not None and gi in work.groups and may_fuse
                        and _torch_fusable([(params[i], grads[i], m[i], v[i]) for i in rest]))
                self._torch_adamw(group, rest, params, grads, m, v, vmax, steps, has_complex, fuse)
            if folded:
                _folded(self, work, group, folded, params, grads, m, v, steps)
            if kernel:
                _kernels(self, work, group, kernel, params, grads, m, v, steps)
            if native:
                _natives(self, work, group, native, params, grads, m, v, steps)
        return loss

    def _torch_adamw(self, group, idx, params, grads, m, v, vmax, steps, has_complex, fuse=False) -> None:
        """torch's own AdamW step on the tensors ``idx`` (syre's decay, if any, already applied); ``fuse``:
        torch's fused implementation (one multi-tensor call) where the group leaves the choice to torch."""
        pick = (lambda xs: xs) if len(idx) == len(params) else (lambda xs: [xs[i] for i in idx])  # noqa: E731
        adam(pick(params), pick(grads), pick(m), pick(v), pick(vmax) if group["amsgrad"] else [], pick(steps),
             amsgrad=group["amsgrad"], has_complex=has_complex, beta1=group["betas"][0], beta2=group["betas"][1],
             lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
             foreach=group["foreach"], capturable=group["capturable"], differentiable=group["differentiable"],
             fused=group["fused"] or fuse, grad_scale=getattr(self, "grad_scale", None),
             found_inf=getattr(self, "found_inf", None), decoupled_weight_decay=True)


def _torch_fusable(tensors) -> bool:
    """Whether torch's fused AdamW takes these ``(param, grad, exp_avg, exp_avg_sq)``: real floating point, CPU or
    CUDA, plain tensors, all four contiguous. Its kernels pair the four by position in memory, so a parameter whose
    storage was replaced by a transposed one (beside a contiguous state) would be updated with another element's
    moments: such tensors take torch's multi-tensor or for-loop AdamW, which index them logically."""
    return all(p.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) and p.device.type in ("cpu", "cuda")
               and type(p.data) is torch.Tensor and p.is_contiguous() and g.is_contiguous() and a.is_contiguous()
               and b.is_contiguous() for p, g, a, b in tensors)


def _routes(work, gi, params, grads, m, v, simple, may_fuse, lr):
    """``(native, kernel, folded, rest)``: ``(i, w, entry)`` of the tensors the native kernel takes
    (``syre.kernels._native``, CPU), of those the compiled or Triton kernel takes, ``(i, w, entry)`` of
    those whose decay is folded into torch's fused AdamW, and the indices torch's AdamW takes as they are
    (their syre decay, if any, applied now, separately)."""
    got = work.groups.get(gi) if work is not None else None
    if got is None:
        return [], [], [], list(range(len(params)))
    w, by_id = got
    store = work.store
    ar = store.d_spread != 0.0
    # Folding needs a float lr * gamma and lr (a tensor lr keeps everything on the device, unread).
    fold = may_fuse and not ar and lr and not isinstance(w, torch.Tensor)
    native, kernel, folded, rest, separate = [], [], [], [], []
    kernels = {}
    on = simple and _native.on()
    for i, p in enumerate(params):
        e = by_id.get(id(p))
        if e is None:
            rest.append(i)
            continue
        if on and store.has_theta0(e) and _native.fits(p, grads[i], m[i], v[i]):
            native.append((i, w, e))  # the native kernel: every size, one call for the group
            continue
        if simple and store.has_theta0(e) and _fusable(p, (grads[i], m[i], v[i]), 1):
            if fold and p.numel() < FOLD_MAX:
                folded.append((i, w, e))
                continue
            key = (p.device.type, p.dtype)
            if key not in kernels:
                kernels[key] = _kernel(_ADAMW, p, ar)
            if kernels[key] is not None and p.numel() >= FUSED_MIN:
                kernel.append((i, w, e))
                continue
            if fold:
                folded.append((i, w, e))
                continue
        rest.append(i)
        separate.append(e)
    if separate:
        store.decay(separate, w, work.foreach)
    return native, kernel, folded, rest


def _folded(opt, work, group, todo, params, grads, m, v, steps) -> None:
    """Basic syre folded into torch's fused AdamW: Adam's update does not depend on ``p``, so
    ``p <- lerp(p, theta0, w)`` then AdamW equals torch's fused AdamW with the weight decay that scales
    ``p`` by ``(1 - w)(1 - lr wd)``, then ``p += w (1 - lr wd) theta0`` (one multi-tensor call)."""
    lr, wd = float(group["lr"]), float(group["weight_decay"])
    w = float(todo[0][1])
    keep = 1.0 - lr * wd
    idx = [i for i, _, _ in todo]
    ps = [params[i] for i in idx]
    adam(ps, [grads[i] for i in idx], [m[i] for i in idx], [v[i] for i in idx], [], [steps[i] for i in idx],
         amsgrad=False, has_complex=False, beta1=group["betas"][0], beta2=group["betas"][1], lr=lr,
         weight_decay=(1.0 - (1.0 - w) * keep) / lr, eps=group["eps"], maximize=False, foreach=None, capturable=False,
         differentiable=False, fused=True, grad_scale=getattr(opt, "grad_scale", None),
         found_inf=getattr(opt, "found_inf", None), decoupled_weight_decay=True)
    torch._foreach_add_(ps, work.theta0s([e for _, _, e in todo], ps), alpha=w * keep)


def _kernels(opt, work, group, todo, params, grads, m, v, steps) -> None:
    """The fused AdamW + syre kernel, one call per tensor (``s`` shared by the tensors at one step count)."""
    work_steps = [steps[i] for i, _, _ in todo]
    _amp(opt, [grads[i] for i, _, _ in todo])
    torch._foreach_add_(work_steps, 1)
    beta1, beta2 = (float(b) for b in group["betas"])
    lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
    scalars = {}
    for i, w, e in todo:
        p = params[i]
        theta0, xi = work.pair(e, p)
        step = float(steps[i])
        key = (step, p.dtype, p.device)
        s = scalars.get(key)
        if s is None:
            bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
            s = scalars[key] = torch.tensor([float(w), 1.0 - lr * wd, 1.0 - beta1, beta2, 1.0 - beta2, lr / bc1,
                                             bc2**0.5, eps], dtype=p.dtype, device=p.device)
        _kernel(_ADAMW, p, xi is not None)(p.view(-1), grads[i].view(-1), m[i].view(-1), v[i].view(-1), theta0, xi, s)


def _natives(opt, work, group, todo, params, grads, m, v, steps) -> None:
    """The native AdamW + syre kernel: one call per step count and dtype (stored anchors), or one per tensor in
    seeded mode (each anchor generated right before its call)."""
    idx = [i for i, _, _ in todo]
    work_steps = [steps[i] for i in idx]
    _amp(opt, [grads[i] for i in idx])
    torch._foreach_add_(work_steps, 1)
    beta1, beta2 = (float(b) for b in group["betas"])
    lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
    w = float(todo[0][1])
    by_step = {}
    for (i, _, e), step in zip(todo, map(float, work_steps)):
        by_step.setdefault(step, []).append((i, e))
    for step, items in by_step.items():
        bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
        s = [w, 1.0 - lr * wd, 1.0 - beta1, beta2, 1.0 - beta2, lr / bc1, bc2**0.5, eps]
        for ids, ts, xs in _native_calls(work, items, params):
            _native.adamw([params[i] for i in ids], [grads[i] for i in ids], [m[i] for i in ids], [v[i] for i in ids],
                          ts, xs, s)


def _native_calls(work, items, params):
    """The native kernel's calls for ``items`` (``(index, entry)``): ``(indices, theta0s, xis or None)``, one per dtype
    (a call's tensors share one), or one per tensor in seeded mode (each anchor generated right before its call)."""
    by_dtype = {}
    for i, e in items:
        by_dtype.setdefault(params[i].dtype, []).append((i, e))
    seeded = work.store.mode == "seeded"
    for group in by_dtype.values():
        for part in ([[it] for it in group] if seeded else [group]):
            pairs = [work.native_pair(e, params[i]) for i, e in part]
            yield [i for i, _ in part], [t for t, _ in pairs], None if pairs[0][1] is None else [x for _, x in pairs]


class SGD(torch.optim.SGD):
    """``torch.optim.SGD`` that applies an attached syre's decay inside its own pass (module doc)."""

    @no_grad
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = _take_work(self)
        for gi, group in enumerate(self.param_groups):
            params, grads, bufs = [], [], []
            sparse = self._init_group(group, params, grads, bufs)
            simple = (group["momentum"] != 0 and not (group["nesterov"] or group["maximize"] or sparse)
                      and group["weight_decay"] == 0 and not torch.is_tensor(group["lr"]))
            index = {id(p): i for i, p in enumerate(params)}

            def ok(p, _i=index):
                i = _i[id(p)]
                if not (simple and bufs[i] is not None and _fusable(p, (grads[i], bufs[i]), 1)):
                    return False
                return _native.available(p) or (p.numel() >= FUSED_MIN
                                                and _kernel(_SGD, p, work.store.d_spread != 0.0) is not None)

            todo = work.take(gi, params, ok) if work is not None else [None] * len(params)
            rest = [i for i, t in enumerate(todo) if t is None]
            if rest:
                rb = [bufs[i] for i in rest] if group["momentum"] != 0 else []
                sgd([params[i] for i in rest], [grads[i] for i in rest], rb, weight_decay=group["weight_decay"],
                    momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"], nesterov=group["nesterov"],
                    maximize=group["maximize"], has_sparse_grad=sparse, foreach=group["foreach"], fused=group["fused"],
                    grad_scale=getattr(self, "grad_scale", None), found_inf=getattr(self, "found_inf", None))
                if group["momentum"] != 0:
                    for i, b in zip(rest, rb):
                        self.state[params[i]]["momentum_buffer"] = b
            fused = [i for i, t in enumerate(todo) if t is not None]
            _amp(self, [grads[i] for i in fused])
            native = []
            for i in fused:
                w, e = todo[i]
                if _native.available(params[i]):
                    native.append((i, e))  # one call per dtype (per tensor in seeded mode)
                    continue
                theta0, xi = work.pair(e, params[i])
                s = torch.tensor([float(w), float(group["momentum"]), 1.0 - float(group["dampening"]), float(group["lr"])],
                                 dtype=params[i].dtype, device=params[i].device)
                _kernel(_SGD, params[i], xi is not None)(params[i].view(-1), grads[i].view(-1), bufs[i].view(-1), theta0, xi, s)
            if native:
                vals = [float(todo[native[0][0]][0]), float(group["momentum"]), 1.0 - float(group["dampening"]),
                        float(group["lr"])]
                for ids, ts, xs in _native_calls(work, native, params):
                    _native.sgd([params[i] for i in ids], [grads[i] for i in ids], [bufs[i] for i in ids], ts, xs, vals)
        return loss


#: The optimizer classes whose step takes syre's decay into its own pass.
FUSABLE = (AdamW, SGD)
