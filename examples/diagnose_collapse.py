"""A collapsed model next to a healthy one, as the audit sees them.

A 2-layer ReLU network (64 -> 32 -> 10) on scikit-learn's digits starts with its 32 hidden
units made of 4 distinct neurons copied 8 times: a point on the permutation mirrors. It is
trained twice with the same AdamW (lr 0.01, weight_decay 0.1, full batch, 600 steps): once as
is, once with ``syre.attach`` taking over the weight decay (decay toward a random anchor). The
audit of each trained model is printed (each layer against its structural maximum and a
fresh-init twin), and a ``Monitor`` logs the share of duplicated units and the effective rank of
the hidden representation during training.

    python examples/diagnose_collapse.py [--steps 600] [--out diagnose-collapse]
    python examples/diagnose_collapse.py --update-docs   # rewrite the output shown in docs/diagnostics.md

The text is deterministic (one thread, seeded data, init and anchors); tests/artifacts/test_docs_diagnostics.py
checks that docs/diagnostics.md shows exactly what this script prints.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

import syre
from syre.data import digits
from syre.demo import duplicated_start
from syre.diagnostics import CollapseWarning, Monitor, audit

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- output of examples/diagnose_collapse.py{}: begin -->"
END = "<!-- output of examples/diagnose_collapse.py: end -->"
ARMS = ("weight decay", "syre")


def train(arm: str, data, steps: int, log=None):
    m = duplicated_start(0)
    opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    s = syre.attach(opt, m, seed=0) if arm == "syre" else None  # the one added line
    mon = Monitor(m, every=max(steps // 12, 1), metrics=("duplicate_fraction", "effective_rank", "dead_fraction"),
                  path=log)
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


def run(steps: int = 600, out: Path = None) -> str:
    """The text this example prints; with ``out``, also the plots and monitor logs there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = digits(seed=0)
        mean = data.x_train.mean(0)  # centred inputs: no hidden unit starts dead on every image
        data = data._replace(x_train=data.x_train - mean, x_test=data.x_test - mean)
        parts = []
        for arm in ARMS:
            print(f"training with {arm} ...", file=sys.stderr)
            name = arm.replace(" ", "-")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CollapseWarning)  # its alarms are counted below
                m, s, mon, loss, acc = train(arm, data, steps, out / f"monitor-{name}.csv" if out else None)
            report = audit(m, data.x_test, s)
            first, last = mon.records[0], mon.records[-1]
            parts.append(
                f"=== AdamW + {arm}: train loss {loss:.4f}, test accuracy {acc:.1%} ===\n{report}\n"
                f"monitor, step {first['step']} -> {last['step']}: duplicated units "
                f"{first['0/duplicate_fraction']:.0%} -> {last['0/duplicate_fraction']:.0%}, hidden effective rank "
                f"{first['0/effective_rank']:.1f} -> {last['0/effective_rank']:.1f}, alarms: {len(mon.alarms)}\n")
            if out is not None:
                report.plot(out / f"audit-{name}.png")
                mon.plot(out / f"monitor-{name}.png")
        return "\n".join(parts)
    finally:
        torch.set_num_threads(threads)


def blocks():
    """``{path: (tag, text producer)}``: where the output is shown, and which part of it."""
    return {ROOT / "docs" / "diagnostics.md": ("", lambda t: t)}


def shown(path: Path, tag: str) -> str:
    """The text between the markers of ``path`` (without the code fence), or '' when missing."""
    doc = path.read_text()
    begin = BEGIN.format(tag)
    if begin not in doc or END not in doc:
        return ""
    inner = doc.split(begin, 1)[1].split(END, 1)[0]
    return inner.strip().removeprefix("```").removesuffix("```").strip("\n") + "\n"


def update_docs(text: str) -> None:
    for path, (tag, make) in blocks().items():
        doc = path.read_text()
        begin = BEGIN.format(tag)
        if begin not in doc or END not in doc:
            raise SystemExit(f"{path}: no {begin!r} ... {END!r} markers to write between")
        head, rest = doc.split(begin, 1)
        tail = rest.split(END, 1)[1]
        path.write_text(f"{head}{begin}\n```\n{make(text)}```\n{END}{tail}")
        print(f"updated {path.relative_to(ROOT)}", file=sys.stderr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--out", default="diagnose-collapse", help="folder for the plots and monitor logs")
    p.add_argument("--update-docs", action="store_true", help="rewrite the output shown in docs/diagnostics.md")
    a = p.parse_args(argv)
    out = None if a.update_docs else Path(a.out)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    text = run(a.steps, out)
    print(text)
    if a.update_docs:
        if a.steps != 600:
            raise SystemExit("--update-docs writes the 600-step output; leave --steps at its default")
        update_docs(text)
    else:
        print(f"wrote the plots and monitor logs to {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
