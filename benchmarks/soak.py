"""Soak: many optimizer steps on a tiny model with syre attached.

Checks that the anchors do not drift (the stored anchors equal freshly generated ones, bitwise)
and that memory does not grow (resident set size and Python's allocated blocks sampled along the way).
Prints a table and writes JSON.

    python benchmarks/soak.py [--steps 100000] [--out benchmarks/results/soak.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn

import syre
from syre.anchors import anchor_like


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def soak(steps: int = 100_000, samples: int = 10, mode: str = "stored", quiet: bool = False) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    s = syre.attach(opt, model, seed=3, mode=mode)
    start_anchors = {n: s.anchor(n) for n in s.names()}
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(64, 8, generator=g)
    ys = xs[:, :1].sin()
    every = max(steps // samples, 1)
    trace = []
    t0 = time.time()
    for step in range(1, steps + 1):
        i = (step * 8) % 64
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(xs[i:i + 8]), ys[i:i + 8]).backward()
        opt.step()
        if step % every == 0 or step == steps:
            gc.collect()
            trace.append({"step": step, "rss_mib": round(rss_mib(), 2), "py_blocks": sys.getallocatedblocks(),
                          "seconds": round(time.time() - t0, 2)})
            if not quiet:
                print(f"\rstep {step}/{steps}  rss {trace[-1]['rss_mib']:.1f} MiB", end="", file=sys.stderr, flush=True)
    if not quiet:
        print(file=sys.stderr)
    drift = 0.0
    for e in s._entries:
        fresh_t, fresh_x = anchor_like(s.seed, e.name, e.param.detach(), sigma0=e.sigma0, d_spread=s.d_spread)
        now = s.anchor(e.name)
        same = torch.equal(now.theta0, fresh_t) and torch.equal(now.theta0, start_anchors[e.name].theta0)
        same &= torch.equal(now.d, start_anchors[e.name].d)
        drift = max(drift, 0.0 if same else float((now.theta0 - fresh_t).abs().max()))
    half = trace[len(trace) // 2]
    return {
        "steps": steps,
        "mode": mode,
        "anchors_bitwise_unchanged": drift == 0.0,
        "max_anchor_drift": drift,
        "rss_growth_mib_second_half": round(trace[-1]["rss_mib"] - half["rss_mib"], 2),
        "py_blocks_growth_second_half": trace[-1]["py_blocks"] - half["py_blocks"],
        "us_per_step": round(1e6 * trace[-1]["seconds"] / steps, 1),
        "trace": trace,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--out", default="benchmarks/results/soak.json")
    args = ap.parse_args(argv)
    rows = [soak(args.steps, mode=m) for m in ("stored", "seeded")]
    print(f"{'mode':<8} {'steps':>8} {'anchors unchanged':>18} {'RSS growth (2nd half)':>22} {'py blocks growth':>17} {'us/step':>8}")
    for r in rows:
        print(f"{r['mode']:<8} {r['steps']:>8} {str(r['anchors_bitwise_unchanged']):>18} {r['rss_growth_mib_second_half']:>18.2f} MiB "
              f"{r['py_blocks_growth_second_half']:>17d} {r['us_per_step']:>8.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["anchors_bitwise_unchanged"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
