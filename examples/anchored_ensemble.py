"""Anchored ensembles: syre with sigma0 at the init std is each member's own draw from the prior.

An anchored ensemble (Pearce et al., 2020) regularises each member toward its own random draw
from the prior instead of toward zero, so the members agree where the data pin them down and keep
their prior spread away from the data: an uncertainty estimate from plain training. That is syre's
decoupled form with sigma0 ``"lecun"`` (the init std: the prior's) and a different seed per member.
With plain weight decay the members are pulled toward the same point (the origin) and their spread
away from the data shrinks with the decay.

This script trains both ensembles on a 1-D slice of the benchmarks' teacher-student regression
(``syre.data.teacher_student(d_in=1)``, 32 inputs ~ N(0, 1)), then compares the members' spread
inside the range of the data and away from it (more than 1 beyond either end), and plots mean +- 2
std::

    python examples/anchored_ensemble.py            # writes syre-ensemble/ensemble.png and .json
    python examples/anchored_ensemble.py --quick    # the small set-up the test suite runs
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

import syre

ARMS = {"anchored (syre)": "lecun", "weight decay": 0.0}  # sigma0 per arm: the init std, or the origin


def member(seed: int, data, sigma0, *, gamma: float, width: int, steps: int, lr: float) -> nn.Module:
    """One member: its own init and its own anchor, both from ``seed`` (never the global RNG)."""
    g = torch.Generator().manual_seed(10_000 + seed)
    model = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))
    with torch.no_grad():
        for p in model.parameters():
            std = p.shape[1] ** -0.5 if p.dim() > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    syre.attach(opt, model, gamma=gamma, sigma0=sigma0, d_spread=0.0, seed=seed)
    for _ in range(steps):
        opt.zero_grad()
        ((model(data.x_train) - data.y_train) ** 2).mean().backward()
        opt.step()
    return model


def run(*, members: int = 8, width: int = 64, steps: int = 1500, lr: float = 3e-3, gamma: float = 1.0,
        n_train: int = 32) -> dict:
    """Train both ensembles; their predictions on a grid, spreads in and away from the data, test MSE."""
    data = syre.data.teacher_student(d_in=1, d_hidden=8, noise=0.05, n_train=n_train, n_test=256, seed=0)
    grid = torch.linspace(-6.0, 6.0, 241).view(-1, 1)
    gx, lo, hi = grid.squeeze(1), float(data.x_train.min()), float(data.x_train.max())
    inside, away = (gx > lo) & (gx < hi), (gx < lo - 1.0) | (gx > hi + 1.0)
    out = {"grid": grid.squeeze(1).tolist(), "x_train": data.x_train.squeeze(1).tolist(),
           "y_train": data.y_train.squeeze(1).tolist(), "config": dict(members=members, width=width, steps=steps,
                                                                         lr=lr, gamma=gamma, n_train=n_train), "arms": {}}
    for arm, sigma0 in ARMS.items():
        models = [member(k, data, sigma0, gamma=gamma, width=width, steps=steps, lr=lr) for k in range(members)]
        with torch.no_grad():
            preds = torch.stack([m(grid).squeeze(1) for m in models])
            test = torch.stack([m(data.x_test) for m in models]).mean(0)
        std = preds.std(0)
        out["arms"][arm] = {
            "mean": preds.mean(0).tolist(), "std": std.tolist(),
            "std_inside": float(std[inside].mean()), "std_away": float(std[away].mean()),
            "away_over_inside": float(std[away].mean() / std[inside].mean()),
            "test_mse": float(((test - data.y_test) ** 2).mean()),
        }
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    x = torch.tensor(result["grid"])
    for ax, (arm, r) in zip(axes, result["arms"].items()):
        mean, std = torch.tensor(r["mean"]), torch.tensor(r["std"])
        ax.fill_between(x, mean - 2 * std, mean + 2 * std, alpha=0.3, label="mean +- 2 std of the members")
        ax.plot(x, mean, lw=1.5, label="ensemble mean")
        ax.scatter(result["x_train"], result["y_train"], s=8, c="k", label="training data")
        ax.set_title(f"{arm}: spread {r['std_inside']:.3f} inside, {r['std_away']:.3f} away")
        ax.set_xlabel("x")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 members, width 32, 400 steps at lr 1e-2")
    ap.add_argument("--out", default="syre-ensemble")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    kwargs = dict(members=5, width=32, steps=400, lr=1e-2) if args.quick else {}
    result = run(**kwargs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ensemble.json").write_text(json.dumps({k: v for k, v in result.items()}, indent=1))
    plot(result, out / "ensemble.png")
    for arm, r in result["arms"].items():
        print(f"{arm:18s} spread inside the data {r['std_inside']:.4f}, away {r['std_away']:.4f}, test MSE {r['test_mse']:.5f}")
    print(f"wrote {out / 'ensemble.png'}")


if __name__ == "__main__":
    main()
