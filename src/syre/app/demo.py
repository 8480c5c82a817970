"""``syre demo``: symmetry-induced collapse and its removal, side by side, in about a minute.

A 2-layer ReLU network on scikit-learn's digits starts with its 32 hidden neurons made of 4
distinct neurons copied 8 times (a point on the permutation mirrors). Copies receive identical
gradients, so under plain training and under weight decay they stay bit-identical forever: the
network computes with 4 neurons. syre, attached to the same AdamW with the same gamma (it takes
over AdamW's weight decay), decays toward a random anchor instead of the origin, which breaks the
tie. Three arms, a few seeds: no decay, weight decay, syre.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
from torch import nn

from .._attach import attach
from ..diagnostics import dead_units, duplicate_units, numerical_rank
from .data import digits

ARMS = ("no decay", "weight decay", "syre")
_FLOOR = 1e-9  # where exact ties are drawn on the log-scale plot


def duplicated_start(seed: int, width: int = 32, distinct: int = 4) -> nn.Sequential:
    """A 64-width-10 ReLU net whose hidden units are ``distinct`` neurons repeated."""
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    with torch.no_grad():
        idx = torch.arange(width) % distinct
        m[0].weight.copy_((torch.randn(distinct, 64, generator=g) / 8.0)[idx])
        m[0].bias.zero_()
        m[2].weight.copy_((torch.randn(10, distinct, generator=g) / width**0.5)[:, idx])
        m[2].bias.zero_()
    return m


def _unit_vectors(m: nn.Sequential) -> torch.Tensor:
    return torch.cat([m[0].weight, m[0].bias[:, None], m[2].weight.T], 1).detach()


def count_distinct(m: nn.Sequential) -> int:
    """Number of distinct hidden units: duplicated groups (``syre.diagnostics.duplicate_units``) count once."""
    groups = duplicate_units(m[0].weight.detach(), m[2].weight.detach(), b_in=m[0].bias.detach())
    return m[0].out_features - sum(len(g) - 1 for g in groups)


def copy_spread(m: nn.Sequential, distinct: int = 4) -> float:
    """Largest distance between copies of one starting neuron, relative to their norm (0: tied)."""
    w = _unit_vectors(m)
    idx = torch.arange(len(w)) % distinct
    spread = 0.0
    for g in range(distinct):
        ww = w[idx == g]
        d = torch.cdist(ww, ww, compute_mode="donot_use_mm_for_euclid_dist").max()
        spread = max(spread, (d / ww.norm(dim=1).mean().clamp_min(1e-12)).item())
    return spread


def weight_rank(m: nn.Sequential) -> int:
    return numerical_rank(m[0].weight.detach(), rtol=1e-4)


def count_dead(m: nn.Sequential, x: torch.Tensor) -> int:
    with torch.no_grad():
        return len(dead_units(activations=torch.relu(m[0](x))))


def run_arm(arm: str, seed: int, steps: int, gamma: float, lr: float, data, every: int) -> Dict:
    torch.manual_seed(seed)
    m = duplicated_start(seed)
    wd = 0.0 if arm == "no decay" else gamma
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd)
    if arm == "syre":
        attach(opt, m, seed=seed)  # one added line: takes over AdamW's weight_decay
    curve = []
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            with torch.no_grad():
                acc = (m(data.x_test).argmax(1) == data.y_test).float().mean().item()
            curve.append({"step": step, "distinct": count_distinct(m), "spread": copy_spread(m), "test_acc": acc})
        if step == steps:
            break
        opt.zero_grad()
        loss = loss_fn(m(data.x_train), data.y_train)
        loss.backward()
        opt.step()
    with torch.no_grad():
        train_loss = loss_fn(m(data.x_train), data.y_train).item()
    return {
        "arm": arm,
        "seed": seed,
        "distinct_neurons": count_distinct(m),
        "weight_rank": weight_rank(m),
        "dead_units": count_dead(m, data.x_train),
        "train_loss": train_loss,
        "test_acc": curve[-1]["test_acc"],
        "curve": curve,
    }


def _mean_std(xs: List[float]):
    t = torch.tensor(xs, dtype=torch.float64)
    return t.mean().item(), (t.std().item() if len(xs) > 1 else 0.0)


def summarise(results: List[Dict]) -> Dict[str, Dict[str, tuple]]:
    out = {}
    for arm in ARMS:
        rows = [r for r in results if r["arm"] == arm]
        out[arm] = {k: _mean_std([r[k] for r in rows]) for k in ("distinct_neurons", "weight_rank", "dead_units", "train_loss", "test_acc")}
    return out


def table(summary: Dict, n: int) -> str:
    head = f"{'arm':<13} {'distinct neurons':>17} {'W1 rank':>11} {'dead units':>11} {'train loss':>17} {'test acc':>15}"
    lines = [head, "-" * len(head)]
    for arm, s in summary.items():
        lines.append(
            f"{arm:<13} {s['distinct_neurons'][0]:>10.1f} ± {s['distinct_neurons'][1]:<4.1f} "
            f"{s['weight_rank'][0]:>5.1f} ± {s['weight_rank'][1]:<3.1f} {s['dead_units'][0]:>5.1f} ± {s['dead_units'][1]:<3.1f} "
            f"{s['train_loss'][0]:>9.4f} ± {s['train_loss'][1]:<5.4f} {s['test_acc'][0]:>7.2%} ± {s['test_acc'][1]:<5.2%}"
        )
    lines.append(f"(mean ± std over {n} seeds; 32 hidden units started as 4 distinct neurons)")
    return "\n".join(lines)


def plot(results: List[Dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'torch-syre[plots]')", file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"no decay": "tab:gray", "weight decay": "tab:red", "syre": "tab:blue"}
    for r in results:
        steps = [c["step"] for c in r["curve"]]
        label = r["arm"] if r["seed"] == results[0]["seed"] else None
        axes[0].plot(steps, [max(c["spread"], _FLOOR) for c in r["curve"]], color=colors[r["arm"]], alpha=0.7, label=label)
        axes[1].plot(steps, [c["test_acc"] for c in r["curve"]], color=colors[r["arm"]], alpha=0.7, label=label)
    axes[0].set(xlabel="step", ylabel="spread between copies (relative)", yscale="log",
                title=f"Duplicated neurons (at {_FLOOR:g}: bit-identical)")
    axes[1].set(xlabel="step", ylabel="test accuracy", title="Digits, 2-layer ReLU net")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run(seeds: int = 3, steps: int = 600, gamma: float = 0.1, lr: float = 0.01, out: str = "syre-demo", quiet: bool = False) -> Dict:
    """Run the demo; returns ``{"summary": ..., "results": ...}`` and writes JSON and PNG to ``out``."""
    for arg, v in (("seeds", seeds), ("steps", steps)):
        if not isinstance(v, int) or v <= 0:
            raise ValueError(f"Invalid {arg}: {v!r}; expected a positive int")
    torch.set_num_threads(1)
    data = digits(seed=0)
    mean = data.x_train.mean(0)  # centred inputs: no hidden unit starts dead on every image
    data = data._replace(x_train=data.x_train - mean, x_test=data.x_test - mean)
    results = []
    start = time.time()
    total = seeds * len(ARMS)
    for seed in range(seeds):
        for arm in ARMS:
            if not quiet:
                print(f"\r[{len(results) + 1}/{total}] seed {seed}, {arm:<12} ({time.time() - start:4.0f} s)", end="",
                      file=sys.stderr, flush=True)
            results.append(run_arm(arm, seed, steps, gamma, lr, data, every=max(steps // 30, 1)))
    if not quiet:
        print(f"\rdone: {total} runs in {time.time() - start:.0f} s{' ' * 30}", file=sys.stderr)
    summary = summarise(results)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    config = dict(seeds=seeds, steps=steps, gamma=gamma, lr=lr)
    (outdir / "demo.json").write_text(json.dumps({"config": config, "summary": summary, "results": results}, indent=1))
    plotted = plot(results, outdir / "demo.png")
    if not quiet:
        print(table(summary, seeds))
        s, w = summary["syre"], summary["weight decay"]
        print(
            f"\nWith the same AdamW and gamma = {gamma}, weight decay keeps the {w['distinct_neurons'][0]:.0f} duplicated neurons "
            f"tied (the symmetry masks the gradient), while syre splits them into {s['distinct_neurons'][0]:.0f} distinct neurons "
            f"and lifts test accuracy from {w['test_acc'][0]:.1%} to {s['test_acc'][0]:.1%}."
        )
        print(f"wrote {outdir / 'demo.json'}" + (f" and {outdir / 'demo.png'}" if plotted else ""))
    return {"summary": summary, "results": results}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="show symmetry-induced collapse and its removal (about a minute)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
    p.add_argument("--steps", type=int, default=600, help="full-batch AdamW steps (default 600)")
    p.add_argument("--gamma", type=float, default=0.1, help="weight decay = syre gamma (default 0.1)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--out", default="syre-demo", help="output folder for demo.json and demo.png")
    p.set_defaults(func=lambda a: (run(a.seeds, a.steps, a.gamma, a.lr, a.out), 0)[1])
