"""Cost of a full symmetry audit and of the training monitor on ~10M-parameter models.

For each model (an MLP, a CNN with residual blocks, a Transformer encoder; each about 10M
parameters) and a batch of 1024: the median time of a plain eval forward pass, of a full
``audit`` (trace pass, capture pass, per-layer analysis, with the slowest layers), and of one
``Monitor`` recording with its default metrics; then the monitor's overhead on a training loop
(AdamW step on the same batch), measured per recording and amortised over ``every`` steps.

    PYTHONPATH=src python benchmarks/audit_cost.py [--repeats 3] [--threads 1] [--models mlp,cnn,transformer]

Prints a table and writes ``benchmarks/results/audit_cost.json`` (with the configuration,
hardware and torch version) and ``audit_cost.png`` beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from syre.diagnostics import Monitor, audit


class MLP(nn.Module):
    def __init__(self, d_in=784, width=2048, depth=3, d_out=10):
        super().__init__()
        dims = [d_in] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(width, d_out)

    def forward(self, x):
        for layer in self.hidden:
            x = F.relu(layer(x))
        return self.out(x)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class CNN(nn.Module):
    """A small-image ResNet: 3x16x16 -> 128 channels at 8x8 (2 residual blocks) -> 400 at 4x4 (3 blocks)."""

    def __init__(self, n_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.stage1 = nn.Sequential(Block(128), Block(128))
        self.down = nn.Sequential(nn.Conv2d(128, 400, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(400),
                                  nn.ReLU())
        self.stage2 = nn.Sequential(Block(400), Block(400), Block(400))
        self.head = nn.Linear(400, n_classes)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Transformer(nn.Module):
    def __init__(self, d=384, layers=6, heads=6, ff=1536, vocab_in=64, n_classes=10):
        super().__init__()
        self.embed = nn.Linear(vocab_in, d)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True), layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, n_classes)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


MODELS = {
    "mlp": (MLP, (784,)),
    "cnn": (CNN, (3, 16, 16)),
    "transformer": (Transformer, (4, 64)),
}


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench(name, repeats, batch, every):
    cls, shape = MODELS[name]
    torch.manual_seed(0)
    model = cls()
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    x = torch.randn((batch,) + shape, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    model.eval()
    with torch.no_grad():
        model(x)  # warm-up
        t_fwd, _ = median_time(lambda: model(x), repeats)
    t_audit, report = median_time(lambda: audit(model, x), repeats)
    timings = report.meta["timings_s"]
    slow = sorted(report.layers, key=lambda layer: -layer.analysis_s)[:3]

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)

    def train_step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    train_step()  # warm-up (optimizer state)
    t_step, _ = median_time(train_step, repeats)
    mon = Monitor(model, every=1)
    mon.step(0, batch=x)  # the first recording also traces the structure
    t_rec, _ = median_time(lambda: mon.step(0, batch=x), repeats)
    return {
        "model": name,
        "parameters": n_params,
        "batch": batch,
        "input_shape": list(shape),
        "layers_audited": len(report.layers),
        "forward_s": t_fwd,
        "audit_s": t_audit,
        "audit_over_forward": t_audit / t_fwd,
        "audit_breakdown_s": timings,
        "slowest_layers": [{"name": layer.name, "units": layer.units, "seconds": layer.analysis_s} for layer in slow],
        "findings": report.findings,
        "train_step_s": t_step,
        "monitor_record_s": t_rec,
        "monitor_every": every,
        "monitor_overhead": t_rec / (every * t_step),
    }


def table(rows):
    head = ["model", "params", "layers", "forward s", "audit s", "= trace + capture + analysis", "train step s",
            "monitor rec s", "overhead @every"]
    body = []
    for r in rows:
        b = r["audit_breakdown_s"]
        body.append([r["model"], f"{r['parameters'] / 1e6:.2f}M", str(r["layers_audited"]), f"{r['forward_s']:.3f}",
                     f"{r['audit_s']:.2f}", f"{b['trace']:.2f} + {b['capture']:.2f} + {b['analysis']:.2f}",
                     f"{r['train_step_s']:.3f}", f"{r['monitor_record_s']:.2f}",
                     f"{100 * r['monitor_overhead']:.1f}% @{r['monitor_every']}"])
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'torch-syre[plots]')", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(6, 3.4))
    names = [r["model"] for r in rows]
    bottom = [0.0] * len(rows)
    for part in ("trace", "capture", "analysis"):
        vals = [r["audit_breakdown_s"][part] for r in rows]
        ax.bar(names, vals, bottom=bottom, label=f"audit: {part}")
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.scatter(names, [r["forward_s"] for r in rows], color="k", marker="_", s=400, label="one eval forward", zorder=3)
    ax.set_ylabel("seconds (median)")
    ax.set_title(f"audit cost, ~10M parameters, batch {rows[0]['batch']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1, for stable timings)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--every", type=int, default=100, help="monitor period used for the amortised overhead")
    p.add_argument("--models", default="mlp,cnn,transformer")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args(argv)
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    bad = [n for n in names if n not in MODELS]
    if bad:
        p.error(f"unknown --models {bad}; choose from {sorted(MODELS)}")
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    start = time.time()
    for i, name in enumerate(names):
        print(f"[{i + 1}/{len(names)}] {name} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
        rows.append(bench(name, a.repeats, a.batch, a.every))
    print(table(rows))
    for r in rows:
        slow = ", ".join(f"{layer['name']} ({layer['units']} units) {layer['seconds']:.2f} s" for layer in r["slowest_layers"])
        print(f"{r['model']}: slowest layers to analyse: {slow}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "config": vars(a),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    (out / "audit_cost.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    plotted = plot(rows, out / "audit_cost.png")
    if load_before is not None:
        print(f"load average before/after: {load_before[0]:.1f} / {meta['loadavg_after'][0]:.1f} "
              f"on {os.cpu_count()} cores (other work on the machine slows every number alike)")
    print(f"wrote {out / 'audit_cost.json'}" + (f" and {out / 'audit_cost.png'}" if plotted else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
