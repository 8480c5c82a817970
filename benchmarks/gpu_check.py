"""The CUDA checks of syre's Triton kernels, as one script for a machine with a GPU.

1. Anchors (format 2): the Triton kernel on CUDA against the CPU generator, bitwise, for several
   seeds, names, offsets past 2**32 blocks, fp32 and fp64, and through ``syre.attach`` on a CUDA
   model (stored and seeded mode) against a CPU attach.
2. Decay: the stored and seeded Triton kernels against the CPU path, bitwise, basic and AR, lr * gamma
   below and above 0.5; the fused AdamW kernel against the CPU equations to float32 rounding.
3. Timings (CUDA events, medians of interleaved repetitions) at 10M and 50M parameters: torch's fused
   AdamW, ``syre.AdamW`` (fused Triton path), torch AdamW + syre's hook (stored), seeded mode, and the
   stored/seeded decay kernels alone.

Writes JSON (``--out``, default ``benchmarks/results/gpu_check.json``) and exits 1 if any bitwise
check fails::

    python benchmarks/gpu_check.py [--out FILE] [--reps 21]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

import syre
from syre.kernels import _triton as T
from syre import anchors as A
from syre import functional as F

HERE = Path(__file__).resolve().parent


def check_anchors() -> dict:
    out = {}
    for seed, name, start, n, s0, ds in [(0, "w", 0, 1 << 20, 0.3, 0.2), (2**64 - 1, "enc.layers.3.weight", 2**34 - 5, 100_003, 1.0, 0.1),
                                         (7, "b", 3, 4099, 0.0, 0.5), (11, "x", 2**40 + 1, 65_537, 0.02, 0.0)]:
        for dtype in (torch.float32, torch.float64):
            cpu = A.anchor_slice(seed, name, start, start + n, sigma0=s0, d_spread=ds, dtype=dtype)
            gpu = A.anchor_slice(seed, name, start, start + n, sigma0=s0, d_spread=ds, dtype=dtype, device="cuda")
            out[f"{name}@{start}+{n} {dtype}"] = all(
                (a is None and b is None) or torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu))
    return out


def check_attach() -> dict:
    out = {}
    for mode in ("stored", "seeded"):
        torch.manual_seed(0)
        m_cpu = nn.Sequential(nn.Linear(300, 257), nn.ReLU(), nn.Linear(257, 10))
        m_gpu = nn.Sequential(nn.Linear(300, 257), nn.ReLU(), nn.Linear(257, 10)).cuda()
        m_gpu.load_state_dict(m_cpu.state_dict())
        runs = []
        for m, dev in ((m_cpu, "cpu"), (m_gpu, "cuda")):
            o = torch.optim.SGD(m.parameters(), lr=0.1)
            s = syre.attach(o, m, gamma=0.5, d_spread=0.1, mode=mode)
            for p in m.parameters():
                p.grad = torch.zeros_like(p)
            o.step()
            runs.append(([p.detach().cpu() for p in m.parameters()], {n: s.anchor(n).theta0.cpu() for n in s.names()}))
        out[f"{mode}: anchors"] = all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
        out[f"{mode}: one SGD step"] = all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    return out


def check_decay() -> dict:
    out = {}
    g = torch.Generator().manual_seed(1)
    n = (1 << 20) + 3
    for kind in ("basic", "ar", "ar0", "origin"):
        for w in (1e-3, 0.7):
            p = torch.randn(n, generator=g)
            t = torch.randn(n, generator=g) * 0.1 if kind in ("basic", "ar") else None
            x = (torch.rand(n, generator=g) - 0.5) * 0.2 if kind in ("ar", "ar0") else None
            want = p.clone()
            F.decay_([want], [t], [x], weight=w, foreach=False)
            got = p.cuda()
            T.decay(got, None if t is None else t.cuda(), None if x is None else x.cuda(), w)
            out[f"stored {kind} w={w}"] = torch.equal(got.cpu(), want)
    for s0, ds in ((0.2, 0.0), (0.2, 0.1)):
        p = torch.randn(n, generator=g)
        t, x = A.anchor_slice(3, "w", 2**33, 2**33 + n, sigma0=s0, d_spread=ds)
        want = p.clone()
        F.decay_([want], [t], [x], weight=0.01, foreach=False)
        got = p.cuda()
        T.seeded_decay(got, A.stream_key(3, "w"), 2**33, s0, ds, 0.01)
        out[f"seeded s0={s0} ds={ds}"] = torch.equal(got.cpu(), want)
    return out


def _time(fns: dict, reps: int) -> dict:
    for f in fns.values():
        f()
    torch.cuda.synchronize()
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(reps):
        for k in names[r % len(names):] + names[: r % len(names)]:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fns[k]()
            b.record()
            b.synchronize()
            times[k].append(a.elapsed_time(b))
    base = times[names[0]]
    return {k: {"median_ms": statistics.median(v), "x_first": statistics.median(x / y for x, y in zip(v, base))}
            for k, v in times.items()}


def timings(reps: int) -> dict:
    out = {}
    for label, width in (("10M", 1600), ("50M", 3584)):
        model = nn.Sequential(*[nn.Linear(width, width) for _ in range(4)]).cuda()
        params = list(model.parameters())
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opts = {"torch fused AdamW(wd)": torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=True)}
        for kind, ds in (("basic", 0.0), ("ar", 0.1)):
            o = syre.AdamW(params, lr=1e-4, weight_decay=0.0)
            syre.attach(o, model, gamma=0.1, d_spread=ds)
            opts[f"syre.AdamW {kind} (fused Triton)"] = o
            o = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=True)
            syre.attach(o, model, gamma=0.1, d_spread=ds)
            opts[f"AdamW + hook {kind}"] = o
            o = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=True)
            syre.attach(o, model, gamma=0.1, d_spread=ds, mode="seeded")
            opts[f"AdamW + seeded {kind}"] = o
        flat = params[0].detach().view(-1)
        t0, xi = A.anchor_slice(0, "w", 0, flat.numel(), sigma0=0.01, d_spread=0.1, device="cuda")
        fns = {k: o.step for k, o in opts.items()}
        fns["stored AR decay kernel, one tensor"] = lambda: T.decay(flat, t0, xi, 1e-5)
        fns["seeded AR decay kernel, one tensor"] = lambda: T.seeded_decay(flat, A.stream_key(0, "w"), 0, 0.01, 0.1, 1e-5)
        out[label] = _time(fns, reps)
        del opts, model
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(HERE / "results" / "gpu_check.json"))
    ap.add_argument("--reps", type=int, default=21)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or not T.available():
        print("gpu_check.py needs a CUDA device and Triton", file=sys.stderr)
        return 2
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "anchors": check_anchors(),
           "attach": check_attach(), "decay": check_decay()}
    res["timings"] = timings(args.reps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    bitwise = [v for k in ("anchors", "attach", "decay") for v in res[k].values()]
    return 0 if all(bitwise) else 1


if __name__ == "__main__":
    raise SystemExit(main())
