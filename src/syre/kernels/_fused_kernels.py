"""The compiled kernels of ``syre.AdamW`` / ``syre.SGD``: one pass per tensor that reads the anchor beside the
optimizer's own state (``p, grad, exp_avg, exp_avg_sq, theta0 (, xi)``) and writes each buffer once.

``_ADAMW`` and ``_SGD`` are built lazily by ``torch.compile`` on CPU (every scalar in one tensor ``s``, so an lr
schedule does not recompile), checked against their eager definition on sample data before first use
(``_verifier``); on CUDA ``_kernel`` returns the Triton twin of ``syre.kernels._triton``. ``syre.kernels.fused``
decides which tensors take them.
"""
from __future__ import annotations

import torch

from .._compile import LazyKernel

#: Tensors below this many elements never take the fused kernel (a compiled call costs ~10-30 us).
FUSED_MIN = 1 << 16


def _decayed(p, t0, xi, w):
    if xi is None:
        return p + w * (t0 - p)
    diff = p - t0
    return p - w * (diff + diff * xi)


def _adamw_kernel(p, g, m, v, t0, xi, s) -> None:
    """One AdamW step with syre's decay; ``s = [w, 1 - lr wd, 1 - beta1, beta2, 1 - beta2, step size, sqrt bc2, eps]``."""
    q = _decayed(p, t0, xi, s[0]) * s[1]
    m2 = m + (g - m) * s[2]
    v2 = v * s[3] + (g * g) * s[4]
    p.copy_(q - s[5] * (m2 / (torch.sqrt(v2) / s[6] + s[7])))
    m.copy_(m2)
    v.copy_(v2)


def _sgd_kernel(p, g, b, t0, xi, s) -> None:
    """One SGD-momentum step with syre's decay; ``s = [w, momentum, 1 - dampening, lr]``."""
    q = _decayed(p, t0, xi, s[0])
    b2 = b * s[1] + g * s[2]
    p.copy_(q - s[3] * b2)
    b.copy_(b2)


def _verifier(kind: str):
    def verify(kernel, key) -> bool:
        dtype, ar = key
        gen = torch.Generator().manual_seed(0)
        n = FUSED_MIN + 5
        ts = [torch.randn(n, generator=gen, dtype=dtype) for _ in range(5)]
        ts[3] = ts[3].abs()
        xi = (torch.rand(n, generator=gen, dtype=dtype) - 0.5) * 0.2 if ar else None
        if kind == "adamw":
            s = torch.tensor([0.1, 1.0, 0.1, 0.999, 0.001, 0.01, 0.03, 1e-8], dtype=dtype)
            got, want = [t.clone() for t in ts], [t.clone() for t in ts]
            kernel(got[0], got[1], got[2], got[3], got[4], xi, s)
            _adamw_kernel(want[0], want[1], want[2], want[3], want[4], xi, s)
        else:
            s = torch.tensor([0.1, 0.9, 1.0, 0.01], dtype=dtype)
            got, want = [t.clone() for t in ts], [t.clone() for t in ts]
            kernel(got[0], got[1], got[2], got[4], xi, s)
            _sgd_kernel(want[0], want[1], want[2], want[4], xi, s)
        # compiled and eager contract differently: agreement to a few ulps, not bitwise
        return all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got, want))

    return verify


class _DirectKernel(LazyKernel):
    """A ``LazyKernel`` whose compiled variants are called without dynamo's per-call frame evaluation.

    A compiled function costs ~80 us per call through ``torch.compile``'s wrapper here, against a
    few for the kernel itself; the fused step makes one call per tensor. So the graph inductor
    compiled for each variant is kept (a capturing backend) and called directly with the tensors
    and sizes its placeholders name; the callers hand it only flat contiguous tensors of the
    variant's dtype (what dynamo's guards would check). If the graph's inputs cannot be mapped,
    the variant is called through ``torch.compile`` as usual.
    """

    def __init__(self, name, fn, verify, argnames):
        super().__init__(name, fn, verify, budget=0)
        self.argnames = argnames
        self._direct = {}

    def get(self, n, key=None):
        if key in self._direct:
            return self._direct[key]
        captured = []
        self._capture = captured
        kernel = super().get(n, key)
        if kernel is None:
            return None
        direct = _direct_call(captured[-1], self.argnames) if captured else None
        if direct is not None:
            with torch.no_grad():
                direct = direct if self.verify(direct, key) else None
        self._direct[key] = direct or kernel
        return self._direct[key]

    def _backend(self, gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        compiled = compile_fx(gm, example_inputs)
        self._capture.append((gm, compiled))
        return compiled

    def compile_options(self):
        return {"backend": self._backend}

    def reset(self) -> None:
        super().reset()
        self._direct = {}


def _direct_call(captured, argnames):
    gm, compiled = captured
    phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    names = {n.name: n.name[2:-1] for n in phs if n.name.startswith("l_") and n.name.endswith("_")}
    tensors = {names[n.name]: n.meta.get("example_value") for n in phs if n.name in names}
    picks = []
    for n in phs:
        ev = n.meta.get("example_value")
        if n.name in names and isinstance(ev, torch.Tensor) and names[n.name] in argnames:
            picks.append((argnames.index(names[n.name]), None))
            continue
        dims = [(k, d) for k, t in tensors.items() if isinstance(t, torch.Tensor) for d, sz in enumerate(t.shape)
                if str(sz) == str(ev)]
        if not dims or dims[0][0] not in argnames:
            return None
        picks.append((argnames.index(dims[0][0]), dims[0][1]))

    def call(*args):
        return compiled(*[args[i] if d is None else args[i].shape[d] for i, d in picks])

    return call


_ADAMW = _DirectKernel("fused AdamW + syre kernel", _adamw_kernel, _verifier("adamw"), ("p", "g", "m", "v", "t0", "xi", "s"))
_SGD = _DirectKernel("fused SGD + syre kernel", _sgd_kernel, _verifier("sgd"), ("p", "g", "b", "t0", "xi", "s"))


def _kernel(lazy: LazyKernel, p: torch.Tensor, ar: bool):
    if p.device.type == "cuda":
        from . import _triton

        return _triton.fused_kernel(lazy is _ADAMW, ar)
    if p.device.type != "cpu":
        return None
    return lazy.get(p.numel(), (p.dtype, ar))
