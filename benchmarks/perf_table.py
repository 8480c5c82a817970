"""Tables from ``benchmarks/results/perf.json`` (written by ``benchmarks/perf.py``).

``python benchmarks/perf_table.py`` regenerates ``benchmarks/perf.md`` (the cost tables docs/cost.md
links to) and the summary block of ``docs/cost.md`` from the committed JSON, with the GPU table of
``benchmarks/results/gpu_check.json`` when a GPU run exists; ``--check`` exits 1 when either differs
(``tests/artifacts/test_perf_table.py`` runs that check).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JSON = ROOT / "benchmarks" / "results" / "perf.json"
GPU_JSON = ROOT / "benchmarks" / "results" / "gpu_check.json"
MD = ROOT / "benchmarks" / "perf.md"
#: docs/cost.md carries the summary table and the targets between these markers (``cost_block``).
COST = ROOT / "docs" / "cost.md"
BEGIN, END = "<!-- perf:begin benchmarks/results/perf.json -->", "<!-- perf:end -->"

#: The last line of the report: where the cost of the other anchor targets is measured.
TARGETS_NOTE = (
    "Anchor targets other than syre's random one (`target=\"init\"` via `syre.init_` or as a copy, `\"pretrained\"`, "
    "a mapping; basic and AR) and bf16 parameters with `rounding=\"nearest\"` vs `\"stochastic\"`: bytes per parameter "
    "and step ratio in `benchmarks/results/targets-cost/results.md` (`benchmarks/targets_cost.py`).")

#: Rows of the cost table: (label, variant in the JSON).
ROWS = [
    ("fused AdamW(weight_decay), torch", "fused_adamw"),
    ("**syre.AdamW** + syre basic (fused path)", "fused path: syre.AdamW basic"),
    ("**syre.AdamW** + syre AR (fused path)", "fused path: syre.AdamW ar"),
    ("AdamW + syre basic (hook)", "hook: AdamW basic"),
    ("AdamW + syre AR (hook)", "hook: AdamW ar"),
    ("Adam + syre basic (hook)", "hook: Adam basic"),
    ("SGD momentum + syre basic (hook)", "hook: SGD momentum basic"),
    ("syre.SGD momentum + syre basic (fused path)", "fused path: syre.SGD momentum basic"),
    ("AdamW + syre basic, seeded (format 2)", "seeded v2: AdamW basic"),
    ("AdamW + syre AR, seeded (format 2)", "seeded v2: AdamW ar"),
]


def _ms(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def readme_table(res: dict) -> str:
    sizes = res["sizes"]
    head = "| optimizer step, ms (x fused AdamW) | " + " | ".join(f"{s} params" for s in sizes) + " |"
    lines = [head, "|" + "---|" * (len(sizes) + 1)]
    for label, key in ROWS:
        cells = [f"{_ms(sizes[s]['step'][key]['median_ms'])} ({sizes[s]['ratio'][key]:.2f})" for s in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    h = res["hook"]
    a = res["attach"]
    lines += [
        "",
        f"The hook's own Python per step: {h['basic 8']['own_us']:.0f} us at 8 tensors, {h['basic 24']['own_us']:.0f} us at 24 "
        f"(AR: {h['ar 8']['own_us']:.0f} and {h['ar 24']['own_us']:.0f} us). Attach (stored anchors): "
        f"{a['largest']['basic_s']:.2f} s basic, {a['largest']['ar_s']:.2f} s AR for {a['largest']['params'] / 1e6:.0f}M "
        f"parameters; {a['20000 small tensors']['ar_s']:.2f} s for {a['20000 small tensors']['tensors']:,} small tensors.",
    ]
    return "\n".join(lines)


def gpu_results():
    """The committed GPU run of ``benchmarks/gpu_check.py`` (None: none, or only a dry run)."""
    if not GPU_JSON.exists():
        return None
    res = json.loads(GPU_JSON.read_text())
    return None if res.get("dry_run") else res


def targets(res: dict) -> list:
    """``(target, measured, met)`` of the performance targets, from a run."""
    sizes, out = res["sizes"], []
    for s in ("1M", "10M"):
        if s not in sizes:
            continue
        r = sizes[s]["ratio"]
        for kind, bound in (("basic", 1.25), ("ar", 1.4)):
            fused = r[f"fused path: syre.AdamW {kind}"]
            out.append((f"syre.AdamW {kind} <= {bound}x fused AdamW at {s}", f"{fused:.2f}x", fused <= bound))
            hook = r[f"hook: AdamW {kind}"]
            out.append((f"syre.AdamW {kind} no slower than the hook at {s}", f"{fused:.2f}x vs {hook:.2f}x", fused <= hook))
    if "10M" in sizes:
        seeded = sizes["10M"]["ratio"]["seeded v2: AdamW basic"]
        out.append(("seeded mode (basic) <= 8x fused AdamW at 10M", f"{seeded:.2f}x", seeded <= 8.0))
    for kind, h in res.get("hook_vs_adamw", {}).items():
        out.append((f"the hook ({kind}) adds <= 30 us to fused AdamW at {h['tensors']} small tensors",
                    f"{h['overhead_us']:.0f} us", h["overhead_us"] <= 30.0))
    return out


def _us(x) -> str:
    return "n/a" if x is None else f"{x:.0f}"


HOOK_NOTE = (
    "The hook checks at every step that nothing it was derived from changed (groups, parameters, their type, "
    "requires_grad, dtype and device, every decayed gradient present, no storage replaced): with the one-call check "
    "(`syre.kernels._scan`, C++ built on first use) that is one call; without it, five torch attribute reads per "
    "parameter in Python. The last column is the floor of any hook on this machine: a step pre-hook that runs only the "
    "native decay kernel over the same tensors, checking nothing (the anchors' bytes, read while the optimizer's "
    "state is in cache).")


def gpu_table(gpu: dict) -> str:
    from gpu_check import table  # noqa: PLC0415  (benchmarks/ is on the path: perf.py and main put it there)

    return table(gpu)


def report(res: dict, gpu=None) -> str:
    """The markdown report of a run (``benchmarks/perf.md``); ``gpu`` a GPU run of ``gpu_check.py``."""
    m, c = res["machine"], res["config"]
    sizes = res["sizes"]
    lines = [
        "# syre: cost per step (benchmarks/perf.py)", "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['platform']}; Python {m['python']}, torch {m['torch']}, "
        f"syre {m['syre']}; torch.set_num_threads({c['threads']}); load average {m['load_average']} at the start, "
        f"{m.get('load_average_end')} at the end (a shared machine: read the ratios, measured side by side).",
        f"MLPs of depth 4 (Linear(w, w) + GELU); gamma={c['gamma']}, lr={c['lr']}, d_spread={c['d_spread']} for AR; "
        f"medians over {c['reps']} (x5 at 1M, x2 at 10M) interleaved repetitions; ratios paired per repetition.",
        "", "Compiled kernels (one-off per process, cached on disk: the native ones by syre, the rest by torch): " + ", ".join(
            f"{k} {'yes' if v['ok'] else 'NO'} ({v['build_s']:.1f} s)" for k, v in res["build"].items()) + ".",
        "", readme_table(res), "",
        "| every variant: median ms (x fused AdamW) | " + " | ".join(sizes) + " |", "|" + "---|" * (len(sizes) + 1),
    ]
    for k in next(iter(sizes.values()))["step"]:
        lines.append(f"| {k} | " + " | ".join(f"{_ms(sizes[s]['step'][k]['median_ms'])} ({sizes[s]['ratio'][k]:.2f})"
                                              for s in sizes) + " |")
    lines += ["", "| hook at small models (minimum over repetitions) | hook us | its kernels us | hook's own Python us "
              "| one-call check |", "|---|---|---|---|---|"]
    for k, v in res["hook"].items():
        check = {True: "yes", False: "no"}.get(v.get("one_call_check"), "n/a")
        lines.append(f"| {k} tensors | {v['hook_us']:.1f} | {v['kernel_us']:.1f} | {v['own_us']:.1f} | {check} |")
    lines += ["", "| attach (stored anchors) | params | tensors | basic s | AR s |", "|---|---|---|---|---|"]
    for k, v in res["attach"].items():
        lines.append(f"| {k} | {v['params']:,} | {v['tensors']:,} | {v['basic_s']:.2f} | {v['ar_s']:.2f} |")
    lines += ["", "| persistent anchor bytes per parameter | " + " | ".join(sizes) + " |", "|" + "---|" * (len(sizes) + 1)]
    for k in next(iter(sizes.values()))["persistent_bytes_per_param"]:
        lines.append(f"| {k} | " + " | ".join(f"{sizes[s]['persistent_bytes_per_param'][k]:g}" for s in sizes) + " |")
    if "hook_vs_adamw" in res:
        lines += ["", "| what syre's hook adds to torch's fused AdamW (interleaved, median of paired differences) "
                  "| params | tensors | AdamW us | AdamW + syre us | added us | added, minima us "
                  "| added, checks in Python us | added by the kernel alone (floor) us |", "|---|---|---|---|---|---|---|---|---|"]
        for k, v in res["hook_vs_adamw"].items():
            lines.append(f"| {k} | {v['params']:,} | {v['tensors']} | {v['adamw_us']:.0f} | {v['with_syre_us']:.0f} | "
                         f"{v['overhead_us']:.0f} | {v.get('overhead_min_us', float('nan')):.0f} | "
                         f"{_us(v.get('python_check_us'))} | {_us(v.get('kernel_only_us'))} |")
        lines += ["", HOOK_NOTE]
    if "fused_routes" in next(iter(sizes.values())):
        lines += ["", "Routes of `syre.AdamW` (parameters per route): with the native CPU kernels on (`syre.kernels._native`, "
                  "built with the system C compiler), every tensor takes them, one call per group. With them off, basic syre "
                  "on tensors below `FOLD_MAX` folds the decay into torch's fused AdamW (`weight_decay` chosen so p is scaled "
                  "by (1 - lr gamma)(1 - lr wd), then one `_foreach_add_` of lr gamma (1 - lr wd) theta0); larger tensors, and "
                  "AR, take the compiled kernel (the rows \"native off\" above).", "",
                  "| route | " + " | ".join(sizes) + " |", "|" + "---|" * (len(sizes) + 1)]
        for k in next(iter(sizes.values()))["fused_routes"]:
            lines.append(f"| {k} | " + " | ".join(f"{sizes[s]['fused_routes'][k]:,}" for s in sizes) + " |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {got} | {'yes' if ok else 'no'} |" for name, got, ok in targets(res)]
    lines += ["", "## GPU (benchmarks/gpu_check.py)", ""]
    lines += [gpu_table(gpu)] if gpu is not None else [
        "No GPU run committed yet: `python benchmarks/gpu_check.py` on a CUDA machine writes "
        "`benchmarks/results/gpu_check.json` (one call, < 10 min); `python benchmarks/perf_table.py` then renders it here."]
    lines += ["", TARGETS_NOTE]
    return "\n".join(lines) + "\n"


def cost_block(res: dict) -> str:
    """The block of docs/cost.md: the summary table, what the hook adds at small models, and the targets."""
    lines = [readme_table(res), ""]
    for kind, h in res.get("hook_vs_adamw", {}).items():
        lines.append(f"- The hook ({kind}) adds {h['overhead_us']:.0f} us to a {h['adamw_us']:.0f} us step of torch's "
                     f"fused AdamW at {h['tensors']} small tensors ({h['params']:,} parameters), kernels included"
                     + (f" ({_us(h.get('python_check_us'))} us with its checks in Python; a hook that runs only the decay "
                        f"kernel, checking nothing, adds {_us(h.get('kernel_only_us'))} us)." if "python_check_us" in h else "."))
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {got} | {'yes' if ok else 'no'} |" for name, got, ok in targets(res)]
    return "\n".join(lines) + "\n"


def with_cost_block(text: str, res: dict) -> str:
    """``text`` (docs/cost.md) with its perf block regenerated from ``res``."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{cost_block(res)}{END}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if benchmarks/perf.md is not what the JSON gives")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    res = json.loads(JSON.read_text())
    md = report(res, gpu_results())
    cost = with_cost_block(COST.read_text(), res)
    if args.check:
        if MD.read_text() != md or COST.read_text() != cost:
            print("benchmarks/perf.md or docs/cost.md differs from benchmarks/results/perf.json; run python "
                  "benchmarks/perf_table.py", file=sys.stderr)
            return 1
        return 0
    MD.write_text(md)
    COST.write_text(cost)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
