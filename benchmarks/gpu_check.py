"""The CUDA check of syre's Triton kernels, as one script for a machine with a GPU (one call, < 10 min).

1. Bitwise checks, the Triton kernels against the CPU path: format-2 anchors (several seeds, names,
   offsets past 2**32 blocks, fp32 and fp64), the stored and seeded decay (basic, AR, toward the
   origin; lr * gamma below and above 0.5), ``syre.attach`` on a CUDA model (stored and seeded)
   against a CPU attach; the fused AdamW/SGD kernels against the CPU equations to float32 rounding.
2. Timings (CUDA events; every repetition runs each variant once, in rotating order; medians) at
   10M, 100M and 1B parameters, as the device's memory allows: torch's fused AdamW, ``syre.AdamW``
   basic and AR (the fused Triton path), torch's fused AdamW + syre's hook (basic, AR), seeded mode
   (basic, AR), and the stored / seeded AR decay kernels alone; each as ms, x torch's fused AdamW
   (paired per repetition), GB/s (the bytes the step must move, ``BYTES``) and % of the device's
   peak bandwidth (``PEAK_GBS``; H100 SXM: 3.35 TB/s).

Installs nothing; needs the project and Triton. Writes one JSON (``--out``, default
``benchmarks/results/gpu_check.json``) and prints its table; exits 1 if a bitwise check fails, 2
without a CUDA device (and not ``--dry-run``)::

    python benchmarks/gpu_check.py [--out FILE] [--reps 21] [--sizes 10M,100M,1B] [--peak-gbs 3350]
    python benchmarks/gpu_check.py --dry-run   # no GPU: Triton's interpreter on CPU, tiny sizes

``--dry-run`` runs every part of the script where no GPU is: the Triton kernels under Triton's
interpreter (``TRITON_INTERPRET=1``) on CPU tensors, timings of the CPU variants with a CPU clock at
a tiny size (``tests/test_gpu_check.py`` runs it, so the script is known to run).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

if "--dry-run" in sys.argv:  # before Triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import syre  # noqa: E402
from syre import anchors as A, functional as F  # noqa: E402
from syre.kernels import _triton as T, fused as FU  # noqa: E402
from syre.rng import _triton as RT  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = {"10M": 10_000_000, "100M": 100_000_000, "1B": 1_000_000_000}
TENSORS = 8  # the parameters of a size: this many equal flat tensors
#: Peak memory bandwidth, GB/s, by device name (the H100 SXM's 3.35 TB/s, ...); ``--peak-gbs`` overrides.
PEAK_GBS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0, "L40S": 864.0, "A10": 600.0}
#: Bytes per fp32 parameter each variant must move (reads + writes): AdamW reads p, g, m, v and writes
#: p, m, v (28); syre's decay adds theta0 (and xi) in the fused pass, or a second pass over p in the hook.
BYTES = {"torch fused AdamW(wd)": 28, "syre.AdamW basic": 32, "syre.AdamW AR": 36, "AdamW + hook basic": 40,
         "AdamW + hook AR": 44, "AdamW + seeded basic": 36, "AdamW + seeded AR": 36,
         "stored AR decay kernel": 16, "seeded AR decay kernel": 8}
GAMMA, LR = 0.1, 1e-4


# ----------------------------------------------------------------------------- bitwise checks
def check_anchors(dev: str, dry: bool) -> dict:
    out = {}
    cases = [(0, "w", 0, 1 << 20, 0.3, 0.2), (2**64 - 1, "enc.layers.3.weight", 2**34 - 5, 100_003, 1.0, 0.1),
             (7, "b", 3, 4099, 0.0, 0.5), (11, "x", 2**40 + 1, 65_537, 0.02, 0.0)]
    for seed, name, start, n, s0, ds in cases:
        n = min(n, 2051) if dry else n
        for dtype in (torch.float32, torch.float64):
            cpu = A.anchor_slice(seed, name, start, start + n, sigma0=s0, d_spread=ds, dtype=dtype)
            got = [RT.anchors(A.stream_key(seed, name), start, start + n, s0, ds, dtype, dev)]
            if not dry:  # and through syre's own dispatch (CUDA tensors take the Triton kernel)
                got.append(A.anchor_slice(seed, name, start, start + n, sigma0=s0, d_spread=ds, dtype=dtype, device=dev))
            out[f"{name}@{start}+{n} {str(dtype)[6:]}"] = all(
                (a is None and b is None) or torch.equal(a, b.cpu()) for g in got for a, b in zip(cpu, g))
    return out


def check_decay(dev: str, dry: bool) -> dict:
    out = {}
    g = torch.Generator().manual_seed(1)
    n = 4099 if dry else (1 << 20) + 3
    for kind in ("basic", "ar", "ar0", "origin"):
        for w in (1e-3, 0.7):
            p = torch.randn(n, generator=g)
            t = torch.randn(n, generator=g) * 0.1 if kind in ("basic", "ar") else None
            x = (torch.rand(n, generator=g) - 0.5) * 0.2 if kind in ("ar", "ar0") else None
            want = p.clone()
            F.decay_([want], [t], [x], weight=w, foreach=False)
            got = p.to(dev)
            T.decay(got, None if t is None else t.to(dev), None if x is None else x.to(dev), w)
            out[f"stored {kind} w={w}"] = torch.equal(got.cpu(), want)
    for s0, ds in ((0.2, 0.0), (0.2, 0.1), (0.0, 0.1)):
        p = torch.randn(n, generator=g)
        t, x = A.anchor_slice(3, "w", 2**33, 2**33 + n, sigma0=s0, d_spread=ds)
        want = p.clone()
        F.decay_([want], [t], [x], weight=0.01, foreach=False)
        got = p.to(dev)
        T.seeded_decay(got, A.stream_key(3, "w"), 2**33, s0, ds, 0.01)
        out[f"seeded s0={s0} ds={ds}"] = torch.equal(got.cpu(), want)
    return out


def check_fused(dev: str, dry: bool) -> dict:
    """The fused AdamW / SGD kernels against the CPU equations (``syre.fused``) in float64, to float32 rounding."""
    out = {}
    g = torch.Generator().manual_seed(2)
    n = 4099 if dry else (1 << 20) + 3
    for adamw in (True, False):
        for ar in (False, True):
            ts = [torch.randn(n, generator=g) for _ in range(5)]
            ts[3] = ts[3].abs()
            x = (torch.rand(n, generator=g) - 0.5) * 0.2 if ar else None
            s = torch.tensor([0.01, 0.999, 0.1, 0.999, 0.001, 0.01, 0.03, 1e-8] if adamw else [0.01, 0.9, 1.0, 0.01])
            want = [t.clone() for t in ts]
            exact = [t.double() for t in ts]  # the same equations in float64
            x64 = None if x is None else x.double()
            got = [t.to(dev) for t in ts]
            if adamw:
                FU._adamw_kernel(*want[:5], x, s)
                FU._adamw_kernel(*exact[:5], x64, s.double())
                T.fused_kernel(True, ar)(*got[:5], None if x is None else x.to(dev), s.to(dev))
            else:
                FU._sgd_kernel(want[0], want[1], want[2], want[4], x, s)
                FU._sgd_kernel(exact[0], exact[1], exact[2], exact[4], x64, s.double())
                T.fused_kernel(False, ar)(got[0], got[1], got[2], got[4], None if x is None else x.to(dev), s.to(dev))
            # each element within float32 rounding of the exact value (rtol 1e-6, atol 1e-7), or no farther than
            # twice the eager float32 path is there (torch's float32 sqrt is within an ulp, not correctly rounded,
            # and AdamW's division can amplify that ulp)
            out[f"{'adamw' if adamw else 'sgd'} {'ar' if ar else 'basic'}"] = all(
                bool(((a.cpu().double() - e).abs() <= torch.maximum(2 * (b.double() - e).abs(), 1e-6 * e.abs() + 1e-7)).all())
                for a, b, e in zip(got, want, exact))
    return out


def check_attach(dev: str) -> dict:
    out = {}
    for mode in ("stored", "seeded"):
        torch.manual_seed(0)
        m_cpu = nn.Sequential(nn.Linear(300, 257), nn.ReLU(), nn.Linear(257, 10))
        m_dev = nn.Sequential(nn.Linear(300, 257), nn.ReLU(), nn.Linear(257, 10)).to(dev)
        m_dev.load_state_dict(m_cpu.state_dict())
        runs = []
        for m in (m_cpu, m_dev):
            o = torch.optim.SGD(m.parameters(), lr=0.1)
            s = syre.attach(o, m, gamma=0.5, d_spread=0.1, mode=mode)
            for p in m.parameters():
                p.grad = torch.zeros_like(p)
            o.step()
            runs.append(([p.detach().cpu() for p in m.parameters()], {n: s.anchor(n).theta0.cpu() for n in s.names()}))
        out[f"{mode}: anchors"] = all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
        out[f"{mode}: one SGD step"] = all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    return out


# ----------------------------------------------------------------------------- timings
class _Clock:
    """Milliseconds of one call: CUDA events on a GPU, the CPU clock otherwise."""

    def __init__(self, dev: str):
        self.cuda = dev == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b)
        t0 = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - t0)


def interleaved(fns: dict, reps: int, clock) -> dict:
    """Median ms of each callable and its ratio to the first, paired per repetition (rotating order)."""
    for f in fns.values():
        f()
    names = list(fns)
    times = {k: [] for k in names}
    for r in range(reps):
        for k in names[r % len(names):] + names[: r % len(names)]:
            times[k].append(clock(fns[k]))
    base = times[names[0]]
    return {k: {"median_ms": statistics.median(v), "x_base": statistics.median(x / y for x, y in zip(v, base))}
            for k, v in times.items()}


def _model(n: int, dev: str) -> nn.Module:
    each = -(-n // TENSORS)
    m = nn.ParameterList([nn.Parameter(torch.randn(each, device=dev) * 0.02) for _ in range(TENSORS)])
    for p in m:
        p.grad = torch.randn_like(p) * 1e-3
    return m


def _variants(model, dev: str) -> dict:
    """name -> a factory of (step callable, keep-alive) for each timed variant (built one at a time)."""
    params = list(model.parameters())
    fused = dev == "cuda"

    def opt(cls=torch.optim.AdamW, **attach):
        def make():
            o = cls(params, lr=LR, weight_decay=0.0, **({"fused": True} if fused and cls is torch.optim.AdamW else {}))
            s = syre.attach(o, model, gamma=GAMMA, **attach)
            o.step()
            return o.step, (o, s)
        return make

    def decay(seeded: bool):
        def make():
            flat = params[0].detach()
            key = A.stream_key(0, "w")
            if seeded:
                return (lambda: T.seeded_decay(flat, key, 0, 0.01, 0.1, 1e-5)), None
            t0, xi = RT.anchors(key, 0, flat.numel(), 0.01, 0.1, torch.float32, flat.device)
            return (lambda: T.decay(flat, t0, xi, 1e-5)), (t0, xi)
        return make

    return {"syre.AdamW basic": opt(syre.AdamW, d_spread=0.0), "syre.AdamW AR": opt(syre.AdamW, d_spread=0.1),
            "AdamW + hook basic": opt(d_spread=0.0), "AdamW + hook AR": opt(d_spread=0.1),
            "AdamW + seeded basic": opt(d_spread=0.0, mode="seeded"), "AdamW + seeded AR": opt(d_spread=0.1, mode="seeded"),
            "stored AR decay kernel": decay(False), "seeded AR decay kernel": decay(True)}


def _fits(n: int, dev: str) -> bool:
    """Params, grads, the base AdamW's state and one variant's state and anchors: ~48 bytes/param, with room."""
    if dev != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info()
    return 48 * n < 0.85 * free


def timings(sizes: dict, reps: int, dev: str, peak_gbs, log) -> dict:
    """Each variant timed interleaved with torch's fused AdamW (one variant alive at a time: 1B fits 80 GB)."""
    out = {}
    clock = _Clock(dev)
    for label, n in sizes.items():
        if not _fits(n, dev):
            out[label] = {"skipped": f"{n} parameters need ~{48 * n / 2**30:.0f} GiB; not free on this device"}
            log(f"[{label}] skipped: not enough device memory")
            continue
        model = _model(n, dev)
        n = sum(p.numel() for p in model.parameters())
        base = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=GAMMA, **({"fused": True} if dev == "cuda" else {}))
        base.step()
        rows = {}
        for name, make in _variants(model, dev).items():
            log(f"[{label}] {name}")
            step, keep = make()
            got = interleaved({"torch fused AdamW(wd)": base.step, name: step}, reps, clock)
            rows.setdefault("torch fused AdamW(wd)", []).append(got["torch fused AdamW(wd)"]["median_ms"])
            rows[name] = got[name]
            del step, keep
            if dev == "cuda":
                torch.cuda.empty_cache()
        base_ms = statistics.median(rows["torch fused AdamW(wd)"])
        rows["torch fused AdamW(wd)"] = {"median_ms": base_ms, "x_base": 1.0}
        for name, r in rows.items():
            per = n if "decay kernel" not in name else model[0].numel()
            r["GB_per_s"] = BYTES[name] * per / (r["median_ms"] * 1e-3) / 1e9
            r["pct_peak"] = None if peak_gbs is None else 100.0 * r["GB_per_s"] / peak_gbs
        out[label] = {"params": n, "variants": rows}
        del model, base
        if dev == "cuda":
            torch.cuda.empty_cache()
    return out


def table(res: dict) -> str:
    """Markdown: one row per variant, one column per size (ms, x torch's fused AdamW, GB/s, % of peak)."""
    sizes = [s for s, v in res["timings"].items() if "variants" in v]
    head = f"Device: {res['device']} (peak {res['peak_gbs']} GB/s), torch {res['torch']}" + (" (dry run)" if res["dry_run"] else "")
    lines = [head, "", "| variant: ms (x fused AdamW), GB/s, % of peak | " + " | ".join(sizes) + " |",
             "|" + "---|" * (len(sizes) + 1)]
    names = list(BYTES)
    for name in names:
        cells = []
        for s in sizes:
            r = res["timings"][s]["variants"].get(name)
            pct = "" if r is None or r["pct_peak"] is None else f", {r['pct_peak']:.0f}%"
            cells.append("-" if r is None else f"{r['median_ms']:.3g} ({r['x_base']:.2f}), {r['GB_per_s']:.0f} GB/s{pct}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    skipped = [f"{s}: {v['skipped']}" for s, v in res["timings"].items() if "skipped" in v]
    checks = [v for k in ("anchors", "decay", "fused", "attach") for v in res.get(k, {}).values()]
    lines += ["", f"Bitwise checks: {sum(checks)} of {len(checks)} pass." + (" Skipped: " + "; ".join(skipped) if skipped else "")]
    return "\n".join(lines) + "\n"


def peak_of(name: str, given):
    if given is not None:
        return given
    return next((v for k, v in PEAK_GBS.items() if k in name), None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(HERE / "results" / "gpu_check.json"))
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--sizes", default="10M,100M,1B")
    ap.add_argument("--peak-gbs", type=float, default=None)
    ap.add_argument("--dry-run", action="store_true", help="no GPU: Triton's interpreter on CPU tensors, tiny sizes")
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if not T.available():
        log("gpu_check.py needs Triton (pip install 'torch-syre[triton]')")
        return 2
    if args.dry_run:
        if os.environ.get("TRITON_INTERPRET") != "1":
            log("--dry-run runs Triton's interpreter: set TRITON_INTERPRET=1 before Python starts (or pass --dry-run first)")
            return 2
        dev, sizes, reps = "cpu", {"64k": 1 << 16}, min(args.reps, 3)
        name = "CPU (dry run: Triton interpreter)"
    else:
        if not torch.cuda.is_available():
            log("gpu_check.py needs a CUDA device (or --dry-run)")
            return 2
        unknown = [s for s in args.sizes.split(",") if s not in SIZES]
        if unknown:
            ap.error(f"Invalid --sizes {unknown}; expected some of {list(SIZES)}")
        dev, sizes, reps = "cuda", {s: SIZES[s] for s in args.sizes.split(",")}, args.reps
        name = torch.cuda.get_device_name()
    t0 = time.time()
    res = {"device": name, "dry_run": args.dry_run, "torch": torch.__version__, "triton": T.triton.__version__,
           "peak_gbs": peak_of(name, args.peak_gbs), "reps": reps}
    log("bitwise checks")
    res["anchors"] = check_anchors(dev, args.dry_run)
    res["decay"] = check_decay(dev, args.dry_run)
    res["fused"] = check_fused(dev, args.dry_run)
    res["attach"] = check_attach(dev) if dev == "cuda" else {}
    log("timings")
    res["timings"] = timings(sizes, reps, dev, res["peak_gbs"], log)
    res["seconds"] = time.time() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(table(res))
    checks = [v for k in ("anchors", "decay", "fused", "attach") for v in res[k].values()]
    return 0 if all(checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
