"""Cost of syre per optimizer step against the memory-bandwidth floor, and of a whole training step.

On MLPs of about 1M, 10M and 50M parameters, measured side by side in one process (every
repetition runs each variant once, in rotating order; medians over the repetitions):

* the optimizer step of fused ``AdamW(weight_decay=gamma)`` alone; fused AdamW (no decay) plus syre
  basic / advanced removal (AR), in stored and seeded modes; SGD with momentum alone and plus syre;
* syre's own pass alone (its step pre-hook), against the floors: ``p.lerp_(theta0, w)`` (one
  read-read-write sweep, basic) and ``p.addcmul_(theta0, xi, value=w)`` (read-read-read-write, AR);
* a whole training step (forward, backward, step) with and without syre;
* persistent memory syre adds per mode, and the time to create the anchors of the largest model.

Prints a table, writes JSON and a markdown table (machine and torch version included):

    python benchmarks/perf.py [--sizes 1M,10M,50M] [--reps 21] [--threads 1] [--batch 256]
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
from syre import anchors as A  # noqa: E402
from syre import functional as F  # noqa: E402

HERE = Path(__file__).resolve().parent
#: name -> (width, depth): depth Linear(width, width) layers with GELU between them.
SIZES = {"1M": (512, 4), "10M": (1600, 4), "50M": (3584, 4)}
#: Repetitions are multiplied by this for the smaller models.
REPS_SCALE = {"1M": 5, "10M": 2, "50M": 1}
GAMMA = 0.1
LR = 1e-4
D_SPREAD = 0.1

# Targets on this machine (ratios): see the module docstring of the report below.
TARGETS = {
    "basic_extra_over_rrw": 1.2,
    "ar_extra_over_rrrw": 1.2,
    "basic_vs_fused_adamw": 1.4,
    "ar_vs_fused_adamw": 1.6,
    "whole_step_slowdown": 1.03,
    "seeded_basic_vs_fused_adamw": 5.0,
    "seeded_ar_vs_fused_adamw": 7.0,
    "anchor_creation_50M_s": 2.0,
}


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
    return m


def fill_grads(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g) * 1e-3


def sgd(params, **kw):
    try:
        return torch.optim.SGD(params, lr=LR, momentum=0.9, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(params, lr=LR, momentum=0.9, foreach=True, **kw)


def anchor_bytes(s: syre.Syre) -> int:
    """Bytes of the tensors syre keeps between steps (its anchors)."""
    seen, total = set(), 0
    for e in s._entries:
        for t in (e.theta0, e.xi):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


_FLUSH = None


def flush_caches() -> None:
    """Evict the caches (write 64 MiB), so every variant starts from DRAM as after a backward pass."""
    global _FLUSH
    if _FLUSH is None:
        _FLUSH = torch.empty(16 << 20, dtype=torch.float32)
    _FLUSH.fill_(1.0)


def bench(variants: dict, reps: int, flush: bool = True) -> dict:
    """Seconds of each callable, interleaved: each repetition runs every variant once, in rotating
    order, each after a cache flush. Returns median, min and the raw times (ms)."""
    names = list(variants)
    for f in variants.values():  # warm-up (allocations, first-call paths)
        f()
    times = {k: [] for k in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(reps):
            order = names[r % len(names):] + names[: r % len(names)]
            for k in order:
                if flush:
                    flush_caches()
                t0 = time.perf_counter()
                variants[k]()
                times[k].append(time.perf_counter() - t0)
    finally:
        gc.enable()
    return {
        k: {"median_ms": 1e3 * statistics.median(v), "min_ms": 1e3 * min(v), "reps": len(v), "times_ms": [1e3 * t for t in v]}
        for k, v in times.items()
    }


def paired_ratio(table: dict, a: str, b: str) -> float:
    """Median over repetitions of time(a) / time(b) measured in the same repetition (drift cancels)."""
    return statistics.median(x / y for x, y in zip(table[a]["times_ms"], table[b]["times_ms"]))


def build_kernels() -> dict:
    """Build the compiled kernels once (cached on disk by torch) and report how long it took."""
    out = {}
    t0 = time.perf_counter()
    ok = A._UNIFORMS.get(1 << 30) is not None
    out["anchor_generator_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ok_ar = F._AR_FUSED.get(1 << 30, torch.float32) is not None
    out["ar_kernel_build_s"] = time.perf_counter() - t0
    out["compiled_anchor_generator"] = ok
    out["compiled_ar_kernel"] = ok_ar
    return out


def run_size(label: str, width: int, depth: int, reps: int, batch: int, step_reps: int) -> dict:
    log(f"[{label}] building the model (width {width}, depth {depth})")
    model = make_model(width, depth)
    n = sum(p.numel() for p in model.parameters())
    fill_grads(model)
    params = list(model.parameters())
    res = {"params": n, "width": width, "depth": depth}

    # Optimizers (all over the same parameters and gradients; each keeps its own state).
    adamw_fused = torch.optim.AdamW(params, lr=LR, weight_decay=GAMMA, fused=True)
    adamw_plain = torch.optim.AdamW(params, lr=LR, weight_decay=0.0, fused=True)
    opts, syres = {}, {}
    t_create = {}
    for mode in ("stored", "seeded"):
        for kind, ds in (("basic", 0.0), ("ar", D_SPREAD)):
            o = torch.optim.AdamW(params, lr=LR, weight_decay=0.0, fused=True)
            t0 = time.perf_counter()
            s = syre.attach(o, model, gamma=GAMMA, d_spread=ds, mode=mode)
            t_create[f"{kind}_{mode}"] = time.perf_counter() - t0
            opts[f"adamw+syre_{kind}_{mode}"] = o
            syres[f"{kind}_{mode}"] = s
    sgd_alone = sgd(params)
    sgd_syre = sgd(params)
    syres["sgd_basic_stored"] = syre.attach(sgd_syre, model, gamma=GAMMA, d_spread=0.0)
    res["attach_s"] = t_create
    res["persistent_bytes"] = {k: anchor_bytes(s) for k, s in syres.items() if k != "sgd_basic_stored"}
    res["persistent_bytes_per_param"] = {k: v / n for k, v in res["persistent_bytes"].items()}

    # Floors on the same tensors: theta0 / xi of the stored AR anchors.
    ar = syres["ar_stored"]
    ps = [e.param.detach() for e in ar._entries]
    ts = [e.theta0 for e in ar._entries]
    xs = [e.xi for e in ar._entries]
    w = LR * GAMMA

    def hook(s):
        return lambda: s._pre_step(s.optimizer, (), {})

    log(f"[{label}] optimizer steps and sweeps, {reps} repetitions")
    variants = {
        "fused_adamw(wd)": adamw_fused.step,
        "fused_adamw(no wd)": adamw_plain.step,
        **{k: o.step for k, o in opts.items()},
        "sgd_momentum": sgd_alone.step,
        "sgd_momentum+syre_basic_stored": sgd_syre.step,
        "floor_rrw (lerp_)": lambda: torch._foreach_lerp_(ps, ts, w),
        "floor_rrrw (addcmul_)": lambda: torch._foreach_addcmul_(ps, ts, xs, value=w),
        **{f"syre_pass_{k}": hook(s) for k, s in syres.items() if k != "sgd_basic_stored"},
    }
    with torch.no_grad():
        res["step"] = bench(variants, reps)

    log(f"[{label}] whole training steps (batch {batch}), {step_reps} repetitions")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, width, generator=g)
    y = torch.randn(batch, width, generator=g)

    def train_step(opt):
        def f():
            opt.zero_grad(set_to_none=False)
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        return f

    res["train_step"] = bench(
        {
            "fused_adamw(wd)": train_step(adamw_fused),
            "adamw+syre_basic_stored": train_step(opts["adamw+syre_basic_stored"]),
            "adamw+syre_ar_stored": train_step(opts["adamw+syre_ar_stored"]),
            "adamw+syre_basic_seeded": train_step(opts["adamw+syre_basic_seeded"]),
        },
        step_reps,
    )
    del adamw_fused, adamw_plain, opts, syres, sgd_alone, sgd_syre
    gc.collect()
    return res


def anchor_creation(width: int, depth: int, reps: int = 3) -> dict:
    """Seconds to attach syre in stored mode (anchors of every parameter) on the model."""
    model = make_model(width, depth)
    n = sum(p.numel() for p in model.parameters())
    out = {"params": n}
    for kind, ds in (("basic", 0.0), ("ar", D_SPREAD)):
        ts = []
        for _ in range(reps):
            o = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
            gc.collect()
            t0 = time.perf_counter()
            s = syre.attach(o, model, gamma=GAMMA, d_spread=ds)
            ts.append(time.perf_counter() - t0)
            s.remove()
            del s, o
        out[f"{kind}_s"] = statistics.median(ts)
    # The eager generator, per element (the fallback without a C++ compiler), on one 1M slice.
    m = 1 << 20
    t0 = time.perf_counter()
    A._fill_eager(0, "probe", 0, m, 0.01, D_SPREAD, torch.device("cpu"), torch.float32)
    out["eager_ns_per_element"] = 1e9 * (time.perf_counter() - t0) / m
    out["eager_estimate_s"] = out["eager_ns_per_element"] * n * 1e-9
    return out


def evaluate(results: dict) -> list:
    """Each target: met or not, with the numbers (worst model counts)."""
    rows = []

    def add(name, limit, values, fmt="{:.2f}x"):
        worst = max(values.values())
        rows.append({
            "target": name, "limit": limit, "worst": worst, "met": worst <= limit,
            "values": values, "text": ", ".join(f"{k}: {fmt.format(v)}" for k, v in values.items()),
        })

    sizes = results["sizes"]

    def ratio(size, a, b, table="step"):
        return paired_ratio(sizes[size][table], a, b)

    add("stored basic: syre's pass / read-read-write floor", TARGETS["basic_extra_over_rrw"],
        {s: ratio(s, "syre_pass_basic_stored", "floor_rrw (lerp_)") for s in sizes})
    add("stored basic: AdamW + syre / fused AdamW", TARGETS["basic_vs_fused_adamw"],
        {s: ratio(s, "adamw+syre_basic_stored", "fused_adamw(wd)") for s in sizes})
    add("stored AR: syre's pass / read-read-read-write floor", TARGETS["ar_extra_over_rrrw"],
        {s: ratio(s, "syre_pass_ar_stored", "floor_rrrw (addcmul_)") for s in sizes})
    add("stored AR: AdamW + syre / fused AdamW", TARGETS["ar_vs_fused_adamw"],
        {s: ratio(s, "adamw+syre_ar_stored", "fused_adamw(wd)") for s in sizes})
    add("whole step, basic stored: with / without syre", TARGETS["whole_step_slowdown"],
        {s: ratio(s, "adamw+syre_basic_stored", "fused_adamw(wd)", "train_step") for s in sizes}, "{:.3f}x")
    add("whole step, AR stored: with / without syre", TARGETS["whole_step_slowdown"],
        {s: ratio(s, "adamw+syre_ar_stored", "fused_adamw(wd)", "train_step") for s in sizes}, "{:.3f}x")
    for kind in ("basic", "ar"):
        # The same slowdown estimated from quieter numbers: syre's pass (ms) over the whole step.
        add(f"whole step, {'AR' if kind == 'ar' else kind} stored, estimate 1 + pass / step", TARGETS["whole_step_slowdown"],
            {s: 1 + sizes[s]["step"][f"syre_pass_{kind}_stored"]["median_ms"] / sizes[s]["train_step"]["fused_adamw(wd)"]["median_ms"]
             for s in sizes}, "{:.3f}x")
    add("seeded basic: AdamW + syre / fused AdamW", TARGETS["seeded_basic_vs_fused_adamw"],
        {s: ratio(s, "adamw+syre_basic_seeded", "fused_adamw(wd)") for s in sizes})
    add("seeded AR: AdamW + syre / fused AdamW", TARGETS["seeded_ar_vs_fused_adamw"],
        {s: ratio(s, "adamw+syre_ar_seeded", "fused_adamw(wd)") for s in sizes})
    add("seeded: persistent bytes per parameter", 0.0,
        {s: max(sizes[s]["persistent_bytes_per_param"][k] for k in ("basic_seeded", "ar_seeded")) for s in sizes}, "{:g} B")
    if "anchor_creation" in results:
        ac = results["anchor_creation"]
        add(f"anchor creation, stored, {ac['params'] / 1e6:.0f}M parameters (s)", TARGETS["anchor_creation_50M_s"],
            {"basic": ac["basic_s"], "ar": ac["ar_s"]}, "{:.2f} s")
    return rows


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "syre": syre.__version__,
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def table(results: dict) -> str:
    """Markdown tables: medians in ms, and in brackets the paired ratio to fused AdamW (or to no syre)."""
    sizes = results["sizes"]
    labels = list(sizes)
    first = next(iter(sizes.values()))
    lines = [
        "| optimizer step: median ms (x fused AdamW) | " + " | ".join(f"{s} ({sizes[s]['params'] / 1e6:.1f}M)" for s in labels) + " |",
        "|" + "---|" * (len(labels) + 1),
    ]
    for r in first["step"]:
        cells = [f"{sizes[s]['step'][r]['median_ms']:.2f} ({paired_ratio(sizes[s]['step'], r, 'fused_adamw(wd)'):.2f})" for s in labels]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| syre's own pass / its floor (paired median) | " + " | ".join(labels) + " |",
        "|" + "---|" * (len(labels) + 1),
    ]
    for r, floor in (("syre_pass_basic_stored", "floor_rrw (lerp_)"), ("syre_pass_ar_stored", "floor_rrrw (addcmul_)"),
                     ("syre_pass_basic_seeded", "floor_rrw (lerp_)"), ("syre_pass_ar_seeded", "floor_rrrw (addcmul_)")):
        lines.append(f"| {r} / {floor} | " + " | ".join(f"{paired_ratio(sizes[s]['step'], r, floor):.2f}" for s in labels) + " |")
    lines += [
        "",
        "| whole training step: median ms (x without syre) | " + " | ".join(labels) + " |",
        "|" + "---|" * (len(labels) + 1),
    ]
    for r in first["train_step"]:
        cells = [f"{sizes[s]['train_step'][r]['median_ms']:.1f} ({paired_ratio(sizes[s]['train_step'], r, 'fused_adamw(wd)'):.3f})" for s in labels]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| persistent memory added by syre (bytes per parameter) | " + " | ".join(labels) + " |",
        "|" + "---|" * (len(labels) + 1),
    ]
    for k in first["persistent_bytes_per_param"]:
        lines.append(f"| {k} | " + " | ".join(f"{sizes[s]['persistent_bytes_per_param'][k]:g}" for s in labels) + " |")
    return "\n".join(lines)


def targets_table(rows: list) -> str:
    lines = ["| target | limit | measured | met |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['limit']:g} | {r['text']} | {'yes' if r['met'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1M,10M,50M", help="comma-separated subset of " + ",".join(SIZES))
    ap.add_argument("--reps", type=int, default=21, help="repetitions of each optimizer-step variant (>= 20)")
    ap.add_argument("--step-reps", type=int, default=20, help="repetitions of each whole training step")
    ap.add_argument("--batch", type=int, default=256, help="rows per training step")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every measurement")
    ap.add_argument("--no-anchor-creation", action="store_true", help="skip timing anchor creation on the largest model")
    ap.add_argument("--out", default=str(HERE / "results" / "perf.json"))
    ap.add_argument("--md", default=str(HERE / "perf.md"))
    args = ap.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            ap.error(f"Invalid size {s!r}; expected some of {sorted(SIZES)}")
    if args.reps < 1 or args.step_reps < 1 or args.batch < 1 or args.threads < 1:
        ap.error("--reps, --step-reps, --batch and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    results = {"machine": machine(), "config": {
        "sizes": {s: SIZES[s] for s in sizes}, "reps": args.reps, "step_reps": args.step_reps, "batch": args.batch,
        "threads": args.threads, "gamma": GAMMA, "lr": LR, "d_spread": D_SPREAD,
        "syre_compile": os.environ.get("SYRE_COMPILE"), "targets": TARGETS,
    }}
    log(f"torch {torch.__version__}, {args.threads} thread(s); building the compiled kernels")
    results["build"] = build_kernels()
    results["sizes"] = {}
    for s in sizes:
        width, depth = SIZES[s]
        scale = REPS_SCALE.get(s, 1)  # small models: more repetitions (cheap, and noisier)
        results["sizes"][s] = run_size(s, width, depth, args.reps * scale, args.batch, args.step_reps * scale)
    if not args.no_anchor_creation:
        big = sizes[-1]
        results["anchor_creation_by_threads"] = {}
        for threads in sorted({args.threads, os.cpu_count() or 1}):
            log(f"anchor creation on the {big} model, {threads} thread(s)")
            torch.set_num_threads(threads)
            results["anchor_creation_by_threads"][threads] = anchor_creation(*SIZES[big])
        torch.set_num_threads(args.threads)
        results["anchor_creation"] = min(results["anchor_creation_by_threads"].values(), key=lambda r: r["ar_s"])
    results["targets"] = evaluate(results)
    results["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None

    t = table(results)
    tt = targets_table(results["targets"])
    print(t)
    print()
    print(tt)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    m = results["machine"]
    b = results["build"]
    md = [
        "# syre: cost per step (benchmarks/perf.py)",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['cpu_capability']}), {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}, syre {m['syre']}; torch.set_num_threads({args.threads}); "
        f"load average at start {m['load_average']}.",
        f"MLPs of depth {SIZES[sizes[0]][1]} (Linear(w, w) + GELU); gamma={GAMMA}, lr={LR}, d_spread={D_SPREAD} for AR; "
        f"medians over {args.reps} interleaved repetitions (whole steps: {args.step_reps}, batch {args.batch}).",
        f"Compiled kernels: anchor generator {'yes' if b['compiled_anchor_generator'] else 'no'} "
        f"(built in {b['anchor_generator_build_s']:.1f} s), fused AR decay {'yes' if b['compiled_ar_kernel'] else 'no'} "
        f"(built in {b['ar_kernel_build_s']:.1f} s); one-off per process, cached on disk by torch.",
        "",
        t,
        "",
    ]
    for threads, ac in results.get("anchor_creation_by_threads", {}).items():
        md += [
            f"Anchor creation, stored mode, {ac['params']:,} parameters, {threads} thread(s): basic {ac['basic_s']:.2f} s, "
            f"AR {ac['ar_s']:.2f} s (the eager generator: {ac['eager_ns_per_element']:.0f} ns per element, "
            f"about {ac['eager_estimate_s']:.0f} s).",
            "",
        ]
    md += ["## Targets", "", tt, ""]
    Path(args.md).write_text("\n".join(md))
    log(f"wrote {out} and {args.md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
