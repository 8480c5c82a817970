"""Memory and step time of each anchor target (issue 18): random, init, pretrained, a mapping; bf16 rounding.

On one MLP of depth 4 (``Linear(512, 512)`` + GELU, 1,050,624 parameters; ``--quick``: width 32,
depth 2), every variant is torch's fused AdamW (``weight_decay=0``) with ``syre.attach`` and one
target, basic (``d_spread=0``) and AR (``d_spread=0.1``):

* ``random``: syre's own anchor, ``mode="stored"`` and ``mode="seeded"``;
* ``init`` after ``syre.init_``, ``mode="seeded"`` (recomputed from the init stream: nothing stored);
* ``init`` as a copy (a model that ``syre.init_`` did not initialise), ``mode="stored"``;
* ``pretrained`` (the weights at attach, copied) and a mapping ``name -> tensor``, ``mode="stored"``;
* bf16 parameters (no fp32 master weights), ``rounding="nearest"`` and ``rounding="stochastic"``, basic, stored.

Columns: the anchor bytes per parameter (``Syre.anchor_nbytes() / numel`` after a step) and the step
time, as a ratio to the same optimizer without syre (fused ``AdamW(weight_decay=gamma)``, in fp32
or bf16 as the row's parameters): ``benchmarks/perf.py``'s interleaved measurement (every
repetition runs each variant once, in rotating order, after a cache flush; medians; ratios paired
per repetition). Writes ``targets_cost.json`` (machine, configuration, raw times), ``results.md``
and, where matplotlib is installed, ``targets_cost.png``::

    PYTHONPATH=src python benchmarks/targets_cost.py [--reps 21] [--threads 1] [--quick]
        [--out benchmarks/results/targets-cost]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import perf  # noqa: E402  (its timing helpers; it also sets SYRE_COMPILE=1 unless set)
import torch  # noqa: E402

import syre  # noqa: E402
from syre.init import init_record  # noqa: E402

GAMMA, LR, D_SPREAD = perf.GAMMA, perf.LR, perf.D_SPREAD
FULL, QUICK = (512, 4), (32, 2)
BASE, BASE_BF16 = "AdamW alone (fp32)", "AdamW alone (bf16)"

#: (row, target, mode, rounding, dtype) before the AR split; "init_" is target="init" after syre.init_.
ROWS = [
    ("random, stored", "random", "stored", "nearest", "fp32"),
    ("random, seeded", "random", "seeded", "nearest", "fp32"),
    ("init via syre.init_, seeded", "init_", "seeded", "nearest", "fp32"),
    ("init copy, stored", "init", "stored", "nearest", "fp32"),
    ("pretrained, stored", "pretrained", "stored", "nearest", "fp32"),
    ("mapping, stored", "mapping", "stored", "nearest", "fp32"),
]
BF16_ROWS = [
    ("bf16 params, rounding nearest", "random", "stored", "nearest", "bf16"),
    ("bf16 params, rounding stochastic", "random", "stored", "stochastic", "bf16"),
]


def variants():
    """Every measured variant: (name, target, mode, rounding, dtype, d_spread)."""
    out = [(f"{row}, {kind}", t, mode, r, dt, ds) for row, t, mode, r, dt in ROWS
           for kind, ds in (("basic", 0.0), ("AR", D_SPREAD))]
    return out + [(f"{row}, basic", t, mode, r, dt, 0.0) for row, t, mode, r, dt in BF16_ROWS]


def _adamw(params, weight_decay):
    return torch.optim.AdamW(params, lr=LR, weight_decay=weight_decay, fused=True)


def measure(width: int, depth: int, reps: int) -> dict:
    """Bytes per parameter and step times of every variant on one MLP (see the module docstring)."""
    model = perf.make_model(width, depth)
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    low = perf.make_model(width, depth).to(torch.bfloat16)  # bf16 storage, no fp32 master weights
    for p in low.parameters():
        p.grad = torch.randn(p.shape, dtype=torch.bfloat16) * 1e-3
    opts = {BASE: _adamw(params, GAMMA), BASE_BF16: _adamw(list(low.parameters()), GAMMA)}
    syres = {}
    config = {name: {"target": t, "mode": mode, "rounding": r, "dtype": dt, "d_spread": ds}
              for name, t, mode, r, dt, ds in variants()}
    # The copied targets first: "init copy" is a copy only of a model that syre.init_ did not initialise.
    for name, target, mode, rounding, dtype, ds in sorted(variants(), key=lambda v: v[1] == "init_"):
        if target == "init_" and init_record(model) is None:
            syre.init_(model, seed=0)  # the weights now are init_'s: target="init" recomputes them
        m = low if dtype == "bf16" else model
        spec = {"init_": "init", "mapping": {k: v.detach().clone() for k, v in m.named_parameters()}}.get(target, target)
        opts[name] = _adamw(list(m.parameters()), 0.0)
        syres[name] = syre.attach(opts[name], m, gamma=GAMMA, d_spread=ds, mode=mode, target=spec, rounding=rounding)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", syre.PrecisionWarning)  # bf16 with rounding to nearest: the case measured
        for o in opts.values():
            o.step()
        with torch.no_grad():
            step = perf.bench({k: o.step for k, o in opts.items()}, reps)
    base_of = {k: BASE_BF16 if c["dtype"] == "bf16" else BASE for k, c in config.items()}
    return {"params": n, "width": width, "depth": depth, "reps": reps, "variants": config, "step": step,
            "base": base_of, "ratio": {k: perf.paired(step, k, base_of[k]) for k in config},
            "bytes_per_param": {k: s.anchor_nbytes() / n for k, s in syres.items()}}


def table(res: dict) -> str:
    lines = ["| target | anchor bytes / param | step ms | x AdamW alone |", "|---|---|---|---|"]
    for base in (BASE, BASE_BF16):
        lines.append(f"| {base} (weight_decay={GAMMA}) | 0 | {perf.perf_table._ms(res['step'][base]['median_ms'])} | 1.00 |")
    for k in res["variants"]:
        lines.append(f"| {k} | {res['bytes_per_param'][k]:g} | {perf.perf_table._ms(res['step'][k]['median_ms'])} | "
                     f"{res['ratio'][k]:.2f} |")
    return "\n".join(lines)


def report(res: dict) -> str:
    m, r = res["machine"], res["run"]
    return "\n".join([
        "# Cost of each anchor target (benchmarks/targets_cost.py)",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs; Python {m['python']}, torch {m['torch']}, syre {m['syre']}; "
        f"torch.set_num_threads({res['config']['threads']}); load average {m['load_average']} at the start, "
        f"{m['load_average_end']} at the end (a shared machine: read the ratios, measured side by side).",
        f"MLP of depth {r['depth']} (Linear({r['width']}, {r['width']}) + GELU), {r['params']:,} parameters; fused AdamW, "
        f"gamma={GAMMA}, lr={LR}, d_spread={D_SPREAD} for AR; medians over {r['reps']} interleaved repetitions; ratios "
        "paired per repetition, to fused AdamW(weight_decay=gamma) without syre on parameters of the same dtype.",
        "",
        table(r),
        "",
        "Anchor bytes are what the Syre object holds between steps (`Syre.anchor_nbytes()`): theta0 (or the target's copy) "
        "in fp32, plus AR's xi in fp32 in stored mode; seeded mode regenerates the random anchor, D and syre.init_'s "
        "initial weights at every step, while a copied target (init copy, pretrained, mapping) is kept in every mode. "
        "A bf16 parameter's anchor is fp32 too (4 bytes against the parameter's 2).",
        "",
    ])


def plot(res: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        perf.log("matplotlib is not installed: no plot (pip install 'torch-syre[plots]')")
        return False
    names = list(res["variants"])
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(names) + 1.2))
    ys = range(len(names))
    ax.barh(ys, [res["ratio"][k] for k in names], color=["C1" if res["bytes_per_param"][k] == 0 else "C0" for k in names])
    for y, k in zip(ys, names):
        ax.text(res["ratio"][k], y, f"  {res['bytes_per_param'][k]:g} B/param", va="center", fontsize=8)
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlim(right=max(res["ratio"].values()) * 4)  # room for the labels
    ax.set_xlabel("step time / AdamW alone (median of paired ratios; log scale)")
    ax.set_title(f"syre targets on a {res['params'] / 1e6:.2f}M-parameter MLP (orange: nothing stored)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 21; --quick: 3)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a smoke run: a tiny MLP, 3 repetitions, output to a temp dir")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results/targets-cost)")
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 21)
    out = Path(args.out or (Path(tempfile.gettempdir()) / "syre-targets-cost-quick" if args.quick
                            else HERE / "results" / "targets-cost"))
    torch.set_num_threads(args.threads)
    width, depth = QUICK if args.quick else FULL
    res = {"machine": perf.machine(), "config": {"width": width, "depth": depth, "reps": reps, "threads": args.threads,
                                                 "gamma": GAMMA, "lr": LR, "d_spread": D_SPREAD, "quick": args.quick}}
    perf.log(f"torch {torch.__version__}, {args.threads} thread(s); MLP width {width}, depth {depth}; {reps} repetitions")
    res["run"] = measure(width, depth, reps)
    res["machine"]["load_average_end"] = perf.machine()["load_average"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "targets_cost.json").write_text(json.dumps(res, indent=1))
    md = report(res)
    (out / "results.md").write_text(md)
    plotted = plot(res["run"], out / "targets_cost.png")
    print(md)
    perf.log(f"wrote {out / 'targets_cost.json'}, {out / 'results.md'}" + (" and targets_cost.png" if plotted else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
