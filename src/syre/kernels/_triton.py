"""Triton kernels: the stored and seeded decay, and the fused AdamW / SGD + syre step.

Every kernel computes exactly what the CPU path computes:

* the anchors are format 2, generated in registers by ``syre.rng._triton``'s ``_theta`` and ``_xi``;
* the stored decay (``decay_kernel``) reproduces ATen's CPU operations with explicit FMAs:
  ``lerp_`` is ``fma(w, t - p, p)`` for ``w < 0.5`` and ``fma(-(t - p), 1 - w, t)`` otherwise;
  advanced removal is ``d = p - t``, ``d = fma(d, xi, d)``, ``p = fma(-w, d, p)``;
* the seeded decay (``seeded_decay_kernel``) generates each element's anchor in registers and
  applies the same decay: bitwise stored mode.

Every launch passes ``enable_fp_fusion=False``: the GPU compiler would otherwise contract a
product and a following add (``theta0 = z * sigma0`` into ``t - p``, say) into an FMA where the
CPU path rounds twice. The kernels are tested bitwise against the CPU path under Triton's
interpreter (``TRITON_INTERPRET=1``, on CPU tensors; ``tests/kernels/test_triton.py``);
``benchmarks/gpu_check.py`` is the check to run on a CUDA machine. Install: ``pip install
'torch-syre[triton]'`` (Triton ships with CUDA builds of torch).
"""
from __future__ import annotations

import torch

from ..rng import _format2
from ..rng._triton import _launch, _require, _seed, available, tl, triton  # Triton (None without it), imported once

__all__ = ["available", "decay", "fused_kernel", "seeded_decay"]


if triton is not None:
    from ..rng._triton import _theta, _xi  # an element's anchor and spread, in registers

    @triton.jit
    def _decayed(p, t, x, w, om, HAS_T: tl.constexpr, HAS_X: tl.constexpr):
        if HAS_X:
            if HAS_T:
                d = p - t
            else:
                d = p
            d = tl.fma(d, x, d)
            out = tl.fma(-w, d, p)
        elif HAS_T:
            d = t - p
            out = tl.where(w < 0.5, tl.fma(w, d, p), tl.fma(-d, 1.0 - w, t))
        else:
            out = p * om
        return out

    @triton.jit
    def decay_kernel(p_ptr, t_ptr, x_ptr, n, w, om, HAS_T: tl.constexpr, HAS_X: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(p_ptr + offs, mask=mask)
        t = p
        x = p
        if HAS_T:
            t = tl.load(t_ptr + offs, mask=mask)
        if HAS_X:
            x = tl.load(x_ptr + offs, mask=mask)
        tl.store(p_ptr + offs, _decayed(p, t, x, w, om, HAS_T, HAS_X), mask=mask)

    @triton.jit
    def seeded_decay_kernel(p_ptr, start, n, seed, tab_ptr, s0, ds, w, om, HAS_T: tl.constexpr, HAS_X: tl.constexpr,
                            BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(p_ptr + offs, mask=mask)
        t = p
        x = p
        if HAS_T:
            t = _theta(offs + start, seed, tab_ptr, s0, p)
        if HAS_X:
            x = _xi(offs + start, seed, ds, p)
        tl.store(p_ptr + offs, _decayed(p, t, x, w, om, HAS_T, HAS_X), mask=mask)

    @triton.jit
    def adamw_kernel(p_ptr, g_ptr, m_ptr, v_ptr, t_ptr, x_ptr, s_ptr, n, HAS_X: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(p_ptr + offs, mask=mask)
        g = tl.load(g_ptr + offs, mask=mask)
        m = tl.load(m_ptr + offs, mask=mask)
        v = tl.load(v_ptr + offs, mask=mask)
        t = tl.load(t_ptr + offs, mask=mask)
        x = p
        if HAS_X:
            x = tl.load(x_ptr + offs, mask=mask)
        w = tl.load(s_ptr)
        q = _decayed(p, t, x, w, w, True, HAS_X) * tl.load(s_ptr + 1)
        m = m + (g - m) * tl.load(s_ptr + 2)
        v = v * tl.load(s_ptr + 3) + (g * g) * tl.load(s_ptr + 4)
        q = q - tl.load(s_ptr + 5) * (m / (tl.sqrt(v) / tl.load(s_ptr + 6) + tl.load(s_ptr + 7)))
        tl.store(p_ptr + offs, q, mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)

    @triton.jit
    def sgd_kernel(p_ptr, g_ptr, b_ptr, t_ptr, x_ptr, s_ptr, n, HAS_X: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        p = tl.load(p_ptr + offs, mask=mask)
        g = tl.load(g_ptr + offs, mask=mask)
        b = tl.load(b_ptr + offs, mask=mask)
        t = tl.load(t_ptr + offs, mask=mask)
        x = p
        if HAS_X:
            x = tl.load(x_ptr + offs, mask=mask)
        w = tl.load(s_ptr)
        b = b * tl.load(s_ptr + 1) + g * tl.load(s_ptr + 2)
        tl.store(p_ptr + offs, _decayed(p, t, x, w, w, True, HAS_X) - tl.load(s_ptr + 3) * b, mask=mask)
        tl.store(b_ptr + offs, b, mask=mask)


def decay(p: torch.Tensor, theta0, xi, weight: float) -> None:
    """Stored decay of one contiguous tensor in place (``p``, ``theta0``, ``xi`` flat, same dtype)."""
    _require()
    n = p.numel()
    if n:
        _launch(decay_kernel, n, p, theta0 if theta0 is not None else p, xi if xi is not None else p, n,
                float(weight), 1.0 - float(weight), HAS_T=theta0 is not None, HAS_X=xi is not None)


def seeded_decay(p: torch.Tensor, key, start: int, sigma0: float, d_spread: float, weight: float) -> None:
    """Seeded decay of flat contiguous ``p`` (elements ``start ..`` of its parameter) in one pass."""
    _require()
    n = p.numel()
    if n:
        _launch(seeded_decay_kernel, n, p, start, n, _seed(key), _format2.table(p.device, torch.int32), sigma0, d_spread,
                float(weight), 1.0 - float(weight), HAS_T=sigma0 != 0.0, HAS_X=d_spread != 0.0)


def fused_kernel(adamw: bool, ar: bool):
    """The fused optimizer kernel as ``syre.fused`` calls its compiled CPU one, or None without Triton."""
    if not available():
        return None
    k = adamw_kernel if adamw else sgd_kernel
    if adamw:
        def run(p, g, m, v, t, x, s):
            _launch(k, p.numel(), p, g, m, v, t, x if x is not None else p, s, p.numel(), HAS_X=ar)
    else:
        def run(p, g, b, t, x, s):
            _launch(k, p.numel(), p, g, b, t, x if x is not None else p, s, p.numel(), HAS_X=ar)
    return run
