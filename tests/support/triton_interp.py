"""Run syre's Triton kernels under Triton's interpreter on CPU tensors and compare them with the CPU
path; prints one JSON object (``test_triton.py`` runs this with ``TRITON_INTERPRET=1``)."""
import json
import os
import sys

import torch

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from syre import anchors as A, functional as F, fused as FU  # noqa: E402
from syre.kernels import _triton as T  # noqa: E402
from syre.rng import _triton as RT  # noqa: E402


@triton.jit
def _words(out_ptr, c_ptr, n, seed, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    c0 = tl.load(c_ptr + 4 * offs, mask=mask)
    c1 = tl.load(c_ptr + 4 * offs + 1, mask=mask)
    c2 = tl.load(c_ptr + 4 * offs + 2, mask=mask)
    c3 = tl.load(c_ptr + 4 * offs + 3, mask=mask)
    x0, x1, x2, x3 = tl.philox(seed, c0, c1, c2, c3)
    tl.store(out_ptr + 4 * offs, x0, mask=mask)
    tl.store(out_ptr + 4 * offs + 1, x1, mask=mask)
    tl.store(out_ptr + 4 * offs + 2, x2, mask=mask)
    tl.store(out_ptr + 4 * offs + 3, x3, mask=mask)


def philox_words() -> bool:
    g = torch.Generator().manual_seed(0)
    c = torch.randint(0, 2**32, (64, 4), generator=g, dtype=torch.int64)
    c[0] = 0
    c[1] = 2**32 - 1
    ok = True
    for key in [(0, 0), (0xFFFFFFFF, 0xFFFFFFFF), A.stream_key(3, "enc.weight")]:
        out = torch.empty(64, 4, dtype=torch.int64).to(torch.uint32)
        _words[(1,)](out, c.to(torch.uint32), 64, key[0] | (key[1] << 32), BLOCK=64)
        want = A.philox4x32(c[:, 0], c[:, 1], key, c2=c[:, 2], c3=c[:, 3])
        ok &= all(torch.equal(out[:, i].to(torch.int64) & 0xFFFFFFFF, w) for i, w in enumerate(want))
    return ok


def anchors() -> bool:
    ok = True
    for seed, name, start, n, s0, ds in [(0, "w", 0, 3000, 0.3, 0.2), (2**64 - 1, "x.y", 2**34 - 7, 1029, 1.0, 0.0),
                                         (5, "b", 13, 700, 0.0, 0.5)]:
        key = A.stream_key(seed, name)
        for dtype in (torch.float32, torch.float64):
            got = RT.anchors(key, start, start + n, s0, ds, dtype, "cpu")
            want = A.anchor_slice(seed, name, start, start + n, sigma0=s0, d_spread=ds, dtype=dtype)
            ok &= all((a is None and b is None) or torch.equal(a, b) for a, b in zip(got, want))
    return ok


def decay() -> dict:
    g = torch.Generator().manual_seed(1)
    n = 5000
    out = {}
    for kind in ("basic", "ar", "ar0", "origin"):
        for w in (0.003, 0.7):
            p = torch.randn(n, generator=g)
            t = torch.randn(n, generator=g) * 0.1 if kind in ("basic", "ar") else None
            x = (torch.rand(n, generator=g) - 0.5) * 0.2 if kind in ("ar", "ar0") else None
            a, b = p.clone(), p.clone()
            T.decay(a, t, x, w)
            F.decay_([b], [t], [x], weight=w, foreach=False)
            out[f"{kind}@{w}"] = torch.equal(a, b)
    return out


def seeded() -> dict:
    g = torch.Generator().manual_seed(2)
    out = {}
    for s0, ds in ((0.2, 0.0), (0.2, 0.1), (0.0, 0.1)):
        p = torch.randn(4099, generator=g)
        key = A.stream_key(7, "layer.weight")
        start = 2**33 + 3
        t, x = A.anchor_slice(7, "layer.weight", start, start + p.numel(), sigma0=s0, d_spread=ds)
        a, b = p.clone(), p.clone()
        T.seeded_decay(a, key, start, s0, ds, 0.01)
        F.decay_([b], [t], [x], weight=0.01, foreach=False)
        out[f"{s0}/{ds}"] = torch.equal(a, b)
    return out


def _against_exact(got, want, exact, atol) -> dict:
    """The Triton results ``got`` against ``exact`` (the same equations in float64): each element within ``atol``,
    or no farther than twice the eager float32 path ``want`` is there (torch's float32 sqrt is within an ulp, not
    correctly rounded, and AdamW's division can amplify that ulp)."""
    bound = [torch.clamp(2 * (w.double() - e).abs(), min=atol) for w, e in zip(want, exact)]
    return {"triton_err": max(float((g.double() - e).abs().max()) for g, e in zip(got, exact)),
            "eager_err": max(float((w.double() - e).abs().max()) for w, e in zip(want, exact)),
            "ok": all(bool(((g.double() - e).abs() <= b).all()) for g, e, b in zip(got, exact, bound))}


def fused() -> dict:
    g = torch.Generator().manual_seed(3)
    out = {}
    for ar in (False, True):
        n = 3000
        p, gr, m, t = (torch.randn(n, generator=g) for _ in range(4))
        v = torch.rand(n, generator=g)
        x = (torch.rand(n, generator=g) - 0.5) * 0.2 if ar else None
        s = torch.tensor([0.01, 1.0, 0.1, 0.999, 0.001, 0.02, 0.3, 1e-8])
        want = [z.clone() for z in (p, gr, m, v)]
        FU._adamw_kernel(*want, t, x, s)
        exact = [z.double() for z in (p, gr, m, v)]
        FU._adamw_kernel(*exact, t.double(), None if x is None else x.double(), s.double())
        got = [z.clone() for z in (p, gr, m, v)]
        T.fused_kernel(True, ar)(*got, t, x, s)
        out[f"adamw ar={ar}"] = _against_exact(got, want, exact, 4.8e-7)
        b0 = torch.randn(n, generator=g)
        s2 = torch.tensor([0.01, 0.9, 1.0, 0.05])
        want = [z.clone() for z in (p, gr, b0)]
        FU._sgd_kernel(*want, t, x, s2)
        exact = [z.double() for z in (p, gr, b0)]
        FU._sgd_kernel(*exact, t.double(), None if x is None else x.double(), s2.double())
        got = [z.clone() for z in (p, gr, b0)]
        T.fused_kernel(False, ar)(*got, t, x, s2)
        out[f"sgd ar={ar}"] = _against_exact(got, want, exact, 4.8e-7)
    return out


if __name__ == "__main__":
    print(json.dumps({"philox": philox_words(), "anchors": anchors(), "decay": decay(), "seeded": seeded(),
                      "fused": fused(), "triton": triton.__version__}))
    sys.stdout.flush()
