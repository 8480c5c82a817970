"""A collapsed model next to the same model trained with syre, as the audit sees them.

A 2-layer ReLU network (64 -> 32 -> 10) on scikit-learn's digits starts with its 32 hidden
units made of 4 distinct neurons copied 8 times: a point on the permutation mirrors. It is
trained twice with the same AdamW (lr 0.01, weight_decay 0.1, full batch, 600 steps): once as
is, once with ``syre.attach`` taking over the weight decay (decay toward a random anchor). The
audit of each trained model is printed, and a ``Monitor`` logs the share of duplicated units
and the effective rank of the hidden representation during training.

    python examples/diagnose_collapse.py [--steps 600] [--out diagnose-collapse]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

import syre
from syre.data import digits
from syre.demo import duplicated_start
from syre.diagnostics import Monitor, audit


def train(arm: str, data, steps: int, out: Path):
    m = duplicated_start(0)
    opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    s = syre.attach(opt, m, seed=0) if arm == "syre" else None  # the one added line
    mon = Monitor(m, every=max(steps // 12, 1), path=out / f"monitor-{arm.replace(' ', '-')}.csv",
                  metrics=("duplicate_fraction", "effective_rank", "dead_fraction"))
    loss_fn = nn.CrossEntropyLoss()
    for step in range(steps + 1):
        loss = loss_fn(m(data.x_train), data.y_train)
        mon.step(step, batch=data.x_test, loss=loss)
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    mon.close()
    with torch.no_grad():
        acc = (m(data.x_test).argmax(1) == data.y_test).float().mean().item()
    return m, s, mon, loss.item(), acc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--out", default="diagnose-collapse")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = digits(seed=0)
    mean = data.x_train.mean(0)  # centred inputs: no hidden unit starts dead on every image
    data = data._replace(x_train=data.x_train - mean, x_test=data.x_test - mean)
    for arm in ("weight decay", "syre"):
        print(f"training with {arm} ...", file=sys.stderr)
        m, s, mon, loss, acc = train(arm, data, a.steps, out)
        report = audit(m, data.x_test, s)
        print(f"=== AdamW + {arm}: train loss {loss:.4f}, test accuracy {acc:.1%} ===")
        print(report)
        first, last = mon.records[0], mon.records[-1]
        print(f"monitor, step {first['step']} -> {last['step']}: duplicated units "
              f"{first['0/duplicate_fraction']:.0%} -> {last['0/duplicate_fraction']:.0%}, hidden effective rank "
              f"{first['0/effective_rank']:.1f} -> {last['0/effective_rank']:.1f} "
              f"(recording took {mon.overhead_s:.2f} s in all)")
        print()
        report.plot(out / f"audit-{arm.replace(' ', '-')}.png")
        mon.plot(out / f"monitor-{arm.replace(' ', '-')}.png")
    print(f"wrote the plots and monitor logs to {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
