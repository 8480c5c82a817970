"""Cost of syre per optimizer step, every path side by side in one interleaved run.

On MLPs of about 1M, 10M and 50M parameters (every repetition runs each variant once, in rotating
order, after a cache flush; medians over the repetitions; ratios are paired, repetition by
repetition, to fused ``torch.optim.AdamW(weight_decay=gamma)``):

* the fused path: ``syre.AdamW`` (and ``syre.SGD``) + ``syre.attach``, basic and AR;
* the hook path: torch's AdamW (fused), SGD with momentum and Adam (fused), + ``syre.attach``,
  basic and AR; seeded mode (anchor format 2) with AdamW, basic and AR;
* the hook's own Python at 8 and 24 small tensors (the hook with its multi-tensor calls made no-ops), and
  what the hook adds to torch's fused AdamW at 24 small tensors (~50k parameters), kernels included,
  timed interleaved with AdamW alone, the hook with its checks in Python, and the floor of any hook
  (a pre-hook running only the native decay kernel);
* attach time: stored anchors of the largest model, and of a model of 20,000 small tensors.

One command (about 5-8 minutes on 2 cores; progress on stderr). Writes JSON (machine, torch version,
configuration, raw times) and regenerates the markdown report ``benchmarks/perf.md`` from it (also
``python benchmarks/perf_table.py``, which adds the GPU table of ``benchmarks/gpu_check.py`` when
its results exist)::

    nice python benchmarks/perf.py [--sizes 1M,10M,50M] [--reps 21] [--threads 1]
        [--out benchmarks/results/perf.json] [--md benchmarks/perf.md]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("SYRE_COMPILE", "1")  # build the compiled kernels up front, time them warm

import torch  # noqa: E402
from torch import nn  # noqa: E402

import syre  # noqa: E402
from syre import functional as F  # noqa: E402
from syre.kernels import _native as NK, _scan as SC, _seeded as SD, fused as FU  # noqa: E402
from syre.rng import _format1 as V1, _format2 as V2  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import perf_table  # noqa: E402

SIZES = {"1M": (512, 4), "10M": (1600, 4), "50M": (3584, 4)}  # depth Linear(w, w) with GELU between
REPS_SCALE = {"1M": 5, "10M": 2, "50M": 1}
GAMMA, LR, D_SPREAD = 0.1, 1e-4, 0.1
BASE = "fused_adamw"
NATIVE = NK.lib() is not None  # the native CPU kernels built and checked here (``syre.kernels._native``)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_model(width: int, depth: int) -> nn.Module:
    layers = []
    for i in range(depth):
        layers.append(nn.Linear(width, width))
        if i < depth - 1:
            layers.append(nn.GELU())
    m = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return m


_FLUSH = None


def flush_caches() -> None:
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(16 << 20, dtype=torch.float32)
    _FLUSH.fill_(1.0)


def bench(variants: dict, reps: int, flush: bool = True, inner: int = 1, label: str = "") -> dict:
    """Milliseconds of each callable, interleaved in rotating order; raw times kept for paired ratios."""
    names = list(variants)
    t_start = time.perf_counter()
    for f in variants.values():
        f()
    times = {k: [] for k in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(reps):
            for k in names[r % len(names):] + names[: r % len(names)]:
                if flush:
                    flush_caches()
                t0 = time.perf_counter()
                for _ in range(inner):
                    variants[k]()
                times[k].append(1e3 * (time.perf_counter() - t0) / inner)
            if label and (r + 1) % max(1, reps // 5) == 0:
                log(f"  {label}: {r + 1}/{reps} repetitions ({time.perf_counter() - t_start:.0f} s)")
    finally:
        gc.enable()
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v), "times_ms": v} for k, v in times.items()}


def paired(table: dict, a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(table[a]["times_ms"], table[b]["times_ms"]))


def run_size(label: str, width: int, depth: int, reps: int) -> dict:
    log(f"[{label}] model width {width}, depth {depth}; {reps} repetitions")
    model = make_model(width, depth)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    opts, syres = {}, {}

    def add(name, opt, **kw):
        opts[name] = opt
        if kw:
            syres[name] = syre.attach(opt, model, gamma=GAMMA, **kw)

    add(BASE, torch.optim.AdamW(params, lr=LR, weight_decay=GAMMA, fused=True))
    for kind, ds in (("basic", 0.0), ("ar", D_SPREAD)):
        add(f"fused path: syre.AdamW {kind}", syre.AdamW(params, lr=LR, weight_decay=0.0), d_spread=ds)
        if NATIVE:  # the same, with the native kernels off: the compiled kernel (and, basic, the folded route)
            add(f"fused path, native off: syre.AdamW {kind}", syre.AdamW(params, lr=LR, weight_decay=0.0), d_spread=ds)
        add(f"hook: AdamW {kind}", torch.optim.AdamW(params, lr=LR, weight_decay=0.0, fused=True), d_spread=ds)
        add(f"hook: SGD momentum {kind}", torch.optim.SGD(params, lr=LR, momentum=0.9, foreach=True), d_spread=ds)
        add(f"hook: Adam {kind}", torch.optim.Adam(params, lr=LR, fused=True), d_spread=ds)
        add(f"seeded v2: AdamW {kind}", torch.optim.AdamW(params, lr=LR, weight_decay=0.0, fused=True), d_spread=ds,
            mode="seeded")
    add("fused path: syre.SGD momentum basic", syre.SGD(params, lr=LR, momentum=0.9), d_spread=0.0)
    add("SGD momentum alone", torch.optim.SGD(params, lr=LR, momentum=0.9, foreach=True))
    add("Adam alone (fused)", torch.optim.Adam(params, lr=LR, fused=True))
    for o in opts.values():  # state exists before timing (the first SGD step has no momentum buffer)
        o.step()
    with torch.no_grad():
        step = bench({k: (native_off(o.step) if "native off" in k else o.step) for k, o in opts.items()}, reps, label=label)
    sizes = [p.numel() for p in params]
    res = {"params": n, "width": width, "depth": depth, "step": step,
           # syre.AdamW: with the native kernels on, every tensor takes them (one call per group); off, basic
           # tensors below FOLD_MAX fold the decay into torch's fused AdamW, the rest take the compiled kernel
           # (as does AR, on tensors of at least FUSED_MIN elements)
           "fused_routes": {"native kernel (basic and AR)": n if NATIVE else 0,
                            "native off: basic folded": sum(s for s in sizes if s < FU.FOLD_MAX),
                            "native off: basic compiled kernel": sum(s for s in sizes if s >= FU.FOLD_MAX),
                            "native off: ar compiled kernel": sum(s for s in sizes if s >= FU.FUSED_MIN)},
           "ratio": {k: paired(step, k, BASE) for k in step},
           "persistent_bytes_per_param": {k: s.anchor_nbytes() / n for k, s in syres.items()}}
    opts.clear()  # drop the optimizers and their state before the next size
    syres.clear()
    gc.collect()
    return res


def native_off(step):
    """``step`` with the native kernels off for its duration (``syre.kernels._native.on`` answering False)."""
    def run():
        real = NK.on
        NK.on = lambda: False
        try:
            step()
        finally:
            NK.on = real

    return run


def hook_overhead(n_tensors: int, d_spread: float, reps: int) -> dict:
    """Microseconds of syre's step hook on a model of small tensors: in all, and its own Python (the
    hook with its kernels made no-ops: the multi-tensor calls and the native batches). Minimum over
    repetitions: the overhead is a floor, and a shared machine only adds to it."""
    import timeit

    model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(n_tensors // 2)])
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=GAMMA)
    s = syre.attach(opt, model, d_spread=d_spread)
    hook = lambda: s._pre_step(opt, (opt,), {})  # noqa: E731
    hook()
    hook()  # the second step runs as every later one (the first builds the one-call check)
    total = min(timeit.repeat(hook, number=100, repeat=reps)) / 100
    real, real_run = F.apply_buckets, NK.Batch.run
    F.apply_buckets, NK.Batch.run = (lambda buckets, weight: None), (lambda self, weight, *a: None)
    try:
        own = min(timeit.repeat(hook, number=100, repeat=reps)) / 100
    finally:
        F.apply_buckets, NK.Batch.run = real, real_run
    return {"hook_us": 1e6 * total, "kernel_us": 1e6 * (total - own), "own_us": 1e6 * own,
            "one_call_check": s._one_call.current is not None}


def hook_vs_adamw(n_tensors: int, d_spread: float, reps: int, inner: int = 20) -> dict:
    """Microseconds syre's hook adds to a step of torch's fused AdamW on a model of small tensors, kernels
    included: AdamW alone and AdamW + syre timed interleaved (``inner`` steps per sample, no cache
    flush: the small model stays in cache, as in training), median of the paired differences. Beside
    them, timed in the same rotation: the hook with its checks in Python (the one-call check of
    ``syre.kernels._scan`` off), and the floor of any hook: a step pre-hook that runs only the native decay
    kernel over the same sizes (no checks, no Python of syre's)."""
    def model():
        torch.manual_seed(0)
        m = nn.Sequential(*[nn.Linear(64, 64) for _ in range(n_tensors // 2)])  # 24 tensors: 49,920 params
        for p in m.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        return m

    alone, hooked, checked, floor = model(), model(), model(), model()
    opts = {"alone": torch.optim.AdamW(alone.parameters(), lr=LR, weight_decay=GAMMA, fused=True),
            "hooked": torch.optim.AdamW(hooked.parameters(), lr=LR, weight_decay=GAMMA, fused=True),
            "python check": torch.optim.AdamW(checked.parameters(), lr=LR, weight_decay=GAMMA, fused=True)}
    syre.attach(opts["hooked"], hooked, d_spread=d_spread)
    python_check = syre.attach(opts["python check"], checked, d_spread=d_spread)
    steps = {k: o.step for k, o in opts.items()}
    steps["python check"] = _python_check(python_check, opts["python check"])
    if NATIVE:
        ps = list(floor.parameters())
        batch = NK.Batch(ps, [torch.randn_like(p) for p in ps], None if not d_spread else [torch.rand_like(p) * 0.2 - 0.1 for p in ps])
        opts["kernel only"] = torch.optim.AdamW(ps, lr=LR, weight_decay=0.0, fused=True)
        opts["kernel only"].register_step_pre_hook(lambda *_: batch.run(LR * GAMMA))
        batch(LR * GAMMA)
        steps["kernel only"] = opts["kernel only"].step
    with torch.no_grad():
        for o in opts.values():
            o.step()
            o.step()
        t = bench(steps, reps, flush=False, inner=inner)

    def added(k):
        return 1e3 * statistics.median(y - x for x, y in zip(t["alone"]["times_ms"], t[k]["times_ms"]))

    return {"params": sum(p.numel() for p in alone.parameters()), "tensors": n_tensors,
            "adamw_us": 1e3 * t["alone"]["median_ms"], "with_syre_us": 1e3 * t["hooked"]["median_ms"],
            "overhead_us": added("hooked"),
            # the floor: a shared machine only adds to either side
            "overhead_min_us": 1e3 * (t["hooked"]["min_ms"] - t["alone"]["min_ms"]),
            "python_check_us": added("python check"),
            "kernel_only_us": added("kernel only") if NATIVE else None}


def _python_check(s, opt):
    """``opt.step`` with syre's one-call check off for its duration (``syre.kernels._scan.lib`` answering None)."""
    def run():
        real = SC.lib
        SC.lib = lambda wait=False: None
        s._one_call.drop()
        try:
            opt.step()
        finally:
            SC.lib = real

    return run


def attach_time(model: nn.Module, reps: int = 3) -> dict:
    out = {"params": sum(p.numel() for p in model.parameters()), "tensors": len(list(model.parameters()))}
    for kind, ds in (("basic", 0.0), ("ar", D_SPREAD)):
        ts = []
        for _ in range(reps):
            o = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
            gc.collect()
            t0 = time.perf_counter()
            s = syre.attach(o, model, gamma=GAMMA, d_spread=ds)
            ts.append(time.perf_counter() - t0)
            s.remove()
        out[f"{kind}_s"] = statistics.median(ts)
    return out


def build_kernels() -> dict:
    out = {}
    for name, build in (("native CPU kernels", lambda: NK.lib()),
                        ("hook's one-call check (C++)", lambda: NK.lib() and SC.lib(wait=True)),
                        ("anchor generator v2", lambda: V2._THETA.get(1 << 30, torch.float32) and V2._XI.get(1 << 30, torch.float32)),
                        ("anchor generator v1", lambda: V1._UNIFORMS.get(1 << 30)),
                        ("fused AdamW basic", lambda: FU._ADAMW.get(1 << 30, (torch.float32, False))),
                        ("fused AdamW AR", lambda: FU._ADAMW.get(1 << 30, (torch.float32, True))),
                        ("fused SGD basic", lambda: FU._SGD.get(1 << 30, (torch.float32, False))),
                        ("AR decay", lambda: F._AR_FUSED.get(1 << 30, torch.float32)),
                        ("seeded decay basic", lambda: SD._KERNELS["basic"].get(1 << 30, torch.float32)),
                        ("seeded decay AR", lambda: SD._KERNELS["ar"].get(1 << 30, torch.float32))):
        t0 = time.perf_counter()
        ok = build() is not None
        out[name] = {"ok": ok, "build_s": time.perf_counter() - t0}
    return out


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "syre": syre.__version__,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1M,10M,50M")
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "perf.json"))
    ap.add_argument("--md", default=str(HERE / "perf.md"))
    args = ap.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            ap.error(f"Invalid size {s!r}; expected some of {sorted(SIZES)}")
    torch.set_num_threads(args.threads)
    res = {"machine": machine(), "config": {"sizes": {s: SIZES[s] for s in sizes}, "reps": args.reps, "threads": args.threads,
                                            "gamma": GAMMA, "lr": LR, "d_spread": D_SPREAD, "base": BASE}}
    log(f"torch {torch.__version__}, {args.threads} thread(s); building the compiled kernels")
    res["build"] = build_kernels()
    t0 = time.perf_counter()
    res["sizes"] = {}
    for s in sizes:
        res["sizes"][s] = run_size(s, *SIZES[s], args.reps * REPS_SCALE.get(s, 1))
        log(f"[{s}] done ({time.perf_counter() - t0:.0f} s so far)")
    log("hook overhead")
    res["hook"] = {f"{kind} {n}": hook_overhead(n, ds, args.reps) for kind, ds in (("basic", 0.0), ("ar", D_SPREAD))
                   for n in (8, 24)}
    res["hook_vs_adamw"] = {kind: hook_vs_adamw(24, ds, 4 * args.reps) for kind, ds in (("basic", 0.0), ("ar", D_SPREAD))}
    log("attach time")
    res["attach"] = {"largest": attach_time(make_model(*SIZES[sizes[-1]])),
                     "20000 small tensors": attach_time(nn.ModuleList([nn.Linear(8, 8) for _ in range(10_000)]))}
    res["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    res["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    md = perf_table.report(json.loads(out.read_text()), perf_table.gpu_results())  # as the JSON reads back
    Path(args.md).write_text(md)
    if Path(args.md).resolve() == perf_table.MD.resolve():  # the committed report: docs/cost.md's block too
        perf_table.COST.write_text(perf_table.with_cost_block(perf_table.COST.read_text(), json.loads(out.read_text())))
    print(md)
    log(f"wrote {out} and {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
