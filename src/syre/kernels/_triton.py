"""Triton kernels: anchor format 2, the stored and seeded decay, and the fused AdamW + syre step.

Every kernel computes exactly what the CPU path computes:

* the anchors (``anchor_kernel``) are format 2 (``syre._gen_v2``): ``tl.philox`` is Philox4x32-10
  word for word (same multipliers, Weyl constants and round order; ``seed = k0 | k1 << 32``),
  then the integer-only normal, one exact conversion and one rounded product;
* the stored decay (``decay_kernel``) reproduces ATen's CPU operations with explicit FMAs:
  ``lerp_`` is ``fma(w, t - p, p)`` for ``w < 0.5`` and ``fma(-(t - p), 1 - w, t)`` otherwise;
  advanced removal is ``d = p - t``, ``d = fma(d, xi, d)``, ``p = fma(-w, d, p)``;
* the seeded decay (``seeded_decay_kernel``) generates each element's anchor in registers and
  applies the same decay: bitwise stored mode.

Every launch passes ``enable_fp_fusion=False``: the GPU compiler would otherwise contract a
product and a following add (``theta0 = z * sigma0`` into ``t - p``, say) into an FMA where the
CPU path rounds twice. The kernels are tested bitwise against the CPU path under Triton's
interpreter (``TRITON_INTERPRET=1``, on CPU tensors; ``tests/test_triton.py``);
``benchmarks/gpu_check.py`` is the check to run on a CUDA machine. Install: ``pip install
'torch-syre[triton]'`` (Triton ships with CUDA builds of torch).
"""
from __future__ import annotations

import torch

from . import _gen_v2 as V2

__all__ = ["anchors", "available", "decay", "fused_kernel", "seeded_decay"]

BLOCK = 1024


try:
    import triton
    import triton.language as tl
except ImportError:  # the kernels below are defined only with Triton
    triton = tl = None


def available() -> bool:
    return triton is not None


def _require() -> None:
    if triton is None:
        raise ImportError("syre's GPU kernels need Triton, which is not installed: pip install 'torch-syre[triton]'")


if triton is not None:
    # The constants of syre._gen_v2 / syre._normal_table, written out (jit code reads no Python globals):
    # 129 table entries per octave, SCALE = 2**-21, XI_SCALE = 2**-24.

    @triton.jit
    def _normal(w, tab_ptr):
        v = w | 1
        t = v
        k = tl.zeros_like(v)
        for s in tl.static_range(5):
            c = (t >> (32 - (16 >> s))) == 0
            t = tl.where(c, t << (16 >> s), t)
            k = tl.where(c, k + (16 >> s), k)
        base = (k * 129 + ((t >> 24) & 127)).to(tl.int32)
        f = ((t >> 8) & 0xFFFF).to(tl.int32)
        a = tl.load(tab_ptr + base)
        b = tl.load(tab_ptr + base + 1)
        z = a - (((a - b) * (2 * f + 1)) >> 17)
        return tl.where((w & 1) == 1, -z, z)

    @triton.jit
    def _lane(idx, seed, stream: tl.constexpr):
        j = idx >> 2
        x0, x1, x2, x3 = tl.philox(seed, (j & 0xFFFFFFFF).to(tl.uint32), (j >> 32).to(tl.uint32),
                                   tl.full(j.shape, stream, tl.uint32), tl.zeros(j.shape, tl.uint32))
        lane = idx & 3
        return tl.where(lane == 0, x0, tl.where(lane == 1, x1, tl.where(lane == 2, x2, x3)))

    @triton.jit
    def _theta(idx, seed, tab_ptr, s0, like):
        n = _normal(_lane(idx, seed, 0), tab_ptr)
        return (n.to(like.dtype) * 4.76837158203125e-07) * s0

    @triton.jit
    def _xi(idx, seed, ds, like):
        w = _lane(idx, seed, 1)
        return ((2 * (w >> 8).to(tl.int32) + (1 - (1 << 24))).to(like.dtype) * 5.9604644775390625e-08) * ds

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
    def anchor_kernel(t_ptr, x_ptr, start, n, seed, tab_ptr, s0, ds, HAS_T: tl.constexpr, HAS_X: tl.constexpr,
                      BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        like = tl.zeros([BLOCK], t_ptr.dtype.element_ty)
        if HAS_T:
            tl.store(t_ptr + offs, _theta(offs + start, seed, tab_ptr, s0, like), mask=mask)
        if HAS_X:
            tl.store(x_ptr + offs, _xi(offs + start, seed, ds, like), mask=mask)

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


def _grid(n: int):
    return (max(1, -(-n // BLOCK)),)


def _seed(key) -> int:
    return key[0] | (key[1] << 32)


def _launch(kernel, n, *args, **kw):
    kernel[_grid(n)](*args, BLOCK=BLOCK, enable_fp_fusion=False, **kw)


def anchors(key, start: int, stop: int, sigma0: float, d_spread: float, dtype, device):
    """``(theta0, xi)`` of elements ``[start, stop)`` (format 2) by the Triton kernel (None where off)."""
    _require()
    n = stop - start
    t = torch.empty(n, dtype=dtype, device=device) if sigma0 != 0.0 else None
    x = torch.empty(n, dtype=dtype, device=device) if d_spread != 0.0 else None
    if n and (t is not None or x is not None):
        tab = V2.table(device, torch.int32)
        _launch(anchor_kernel, n, t if t is not None else x, x if x is not None else t, start, n, _seed(key), tab,
                sigma0, d_spread, HAS_T=t is not None, HAS_X=x is not None)
    return t, x


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
        _launch(seeded_decay_kernel, n, p, start, n, _seed(key), V2.table(p.device, torch.int32), sigma0, d_spread,
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
