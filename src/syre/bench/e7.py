"""E7: dimensional collapse in SimCLR, Fashion-MNIST, a small convolutional backbone and a 2-layer projector.

SimCLR (Chen et al. 2020) at CPU scale: two augmented views of each image of a batch, the
NT-Xent loss at temperature ``tau`` on the projector's outputs, Adam with decoupled decay at
``gamma`` (the AdamW convention) on every parameter. The backbone is three 3x3 convolutions
(``channels``, ReLU, 2x2 max-pooling after the first two) and global average pooling (its output
is the representation, ``channels[-1]`` wide); the projector is Linear-ReLU-Linear
(``proj_hidden``, ``proj_dim``). No batch normalisation. Images are Fashion-MNIST average-pooled to
``size`` x ``size``.

The augmentations are written in plain torch and drawn from a generator seeded by the trial's
seed: a random affine map per image (scale in ``[crop_scale, 1]``, i.e. a random zoomed crop;
rotation up to ``rotate`` radians; shift up to ``shift`` of the half-width; horizontal flip with
probability 1/2) applied with ``grid_sample``, then brightness and contrast jitter, then
Gaussian pixel noise of std ``noise``.

Metrics per trial, on ``n_test`` test images (the paper's two measurements, at both outputs):

* ``lowrank_proj`` / ``lowrank_backbone``: the share of near-zero eigenvalues of the covariance
  of the projector output / the backbone output (``syre.diagnostics.metrics.low_rank_fraction``:
  eigenvalues below ``low_rank_threshold`` times the largest);
* ``eff_rank_proj`` / ``eff_rank_backbone``: effective rank of the centred outputs;
* ``probe_proj`` / ``probe_backbone``: test accuracy of a linear probe (multinomial logistic
  regression on standardised features, L-BFGS, fitted on ``n_probe`` labelled training images).

Arms: ``none``, ``wd``, ``syre`` (the configured sigma0), ``syre_10x`` (ten times it:
``sigma0_10x = "auto"``, or any sigma0 spec) and ``syre_big`` (``sigma0_big``, the init std).
The paper's table (CIFAR-100, ResNet-18): projector output 70% -> 0% near-zero eigenvalues,
probe 22.2% -> 32.5%, backbone output 46.8% unchanged.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from syre.diagnostics.metrics import effective_rank, low_rank_fraction, singular_values

from . import stats
from .arms import ARM_DEFAULTS, ARMS, Arm, _parse, apply_arm, arms as get_arms, sigma0_label
from .common import dataset, lecun_init_, trial_rng
from .registry import Experiment

CLAIM = ("In SimCLR, syre removes the collapse of the projector output (near-zero eigenvalues 70% -> 0%) and raises linear-probe "
         "accuracy (22.2% -> 32.5%), while the backbone output's low-rank share (46.8%) is unchanged.")

PAPER = {"lowrank_proj": (0.70, 0.0), "probe": (0.222, 0.325), "lowrank_backbone": (0.468, 0.468)}

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "sigma0_10x": "auto",
    "arms": ["none", "wd", "syre", "syre_10x", "syre_big"],
    "gamma": 10.0,
    "steps": 400,
    "batch": 128,
    "lr": 1e-3,
    "tau": 0.5,
    "channels": [16, 32, 64],
    "proj_hidden": 64,
    "proj_dim": 64,
    "n_train": 10000,
    "n_test": 2000,
    "n_probe": 2000,
    "probe_iters": 100,
    "size": 14,
    "crop_scale": 0.75,
    "rotate": 0.25,
    "shift": 0.2,
    "noise": 0.1,
    "low_rank_threshold": 1e-3,
}
QUICK = {"arms": ["wd", "syre"], "steps": 20, "batch": 64, "n_train": 1000, "n_test": 300, "n_probe": 300, "probe_iters": 20}


class SimCLRNet(nn.Module):
    """``backbone`` (3 convolutions, global average pooling) and ``projector`` (Linear-ReLU-Linear)."""

    def __init__(self, channels, proj_hidden: int, proj_dim: int):
        super().__init__()
        if len(channels) != 3:
            raise ValueError(f"Invalid channels: {channels!r}; expected three widths, e.g. [16, 32, 64]")
        c1, c2, c3 = (int(c) for c in channels)
        self.backbone = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.projector = nn.Sequential(nn.Linear(c3, proj_hidden), nn.ReLU(), nn.Linear(proj_hidden, proj_dim))

    def forward(self, x: torch.Tensor):
        h = self.backbone(x)
        return h, self.projector(h)


def augment(x: torch.Tensor, gen: torch.Generator, cfg: Dict[str, Any]) -> torch.Tensor:
    """A random view of each image of ``x`` ``[N, 1, H, W]`` (see the module docstring)."""
    n = len(x)
    scale = cfg["crop_scale"] + (1.0 - cfg["crop_scale"]) * torch.rand(n, generator=gen)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    ang = (2.0 * torch.rand(n, generator=gen) - 1.0) * cfg["rotate"]
    shift = (2.0 * torch.rand(n, 2, generator=gen) - 1.0) * cfg["shift"]
    theta = torch.zeros(n, 2, 3)
    cos, sin = torch.cos(ang) * scale, torch.sin(ang) * scale
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    contrast = 0.6 + 0.8 * torch.rand(n, 1, 1, 1, generator=gen)
    bright = 0.4 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
    return y * contrast + bright + cfg["noise"] * torch.randn(y.shape, generator=gen)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss of two views ``[N, D]`` (cosine similarity, temperature ``tau``)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def linear_probe(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor, y_test: torch.Tensor, iters: int) -> float:
    """Test accuracy of multinomial logistic regression on standardised features (L-BFGS from zero)."""
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    a, b = (f_train - mean) / std, (f_test - mean) / std
    lin = nn.Linear(a.shape[1], int(y_train.max()) + 1)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(a), y_train) + 1e-4 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((lin(b).argmax(1) == y_test).float().mean())


def scaled_sigma0(spec, factor: float):
    """The sigma0 spec ``factor`` times ``spec`` (``"lecun"`` -> ``"lecun:<default scale * factor>"``, ...)."""
    kind, preset, x = _parse(spec)
    if kind == "rel":
        return f"{preset}:{x * factor:g}"
    return x * factor


def _arm_list(cfg: Dict[str, Any]) -> List[Arm]:
    ten = cfg["sigma0_10x"]
    ten = scaled_sigma0(cfg["sigma0"], 10.0) if ten == "auto" else ten
    sigma0_label(ten)  # validate
    extra = {"syre_10x": Arm("syre_10x", f"syre (sigma0 {sigma0_label(ten)})", decay="syre", sigma0=ten, d_spread=0.0)}
    out = []
    for name in cfg["arms"]:
        out.append(extra[name] if name in extra else get_arms([name])[0])
    return out


def _data(cfg):
    return dataset("fashion", n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"], flat=False)


def trial(cfg: Dict[str, Any], arm, seed: int, keep: Dict[str, Any] = None) -> Dict[str, Any]:
    """SimCLR with ``arm``; low-rank shares, effective ranks and linear-probe accuracy of both outputs."""
    with trial_rng(seed):  # module constructors draw from the global generator (their init is then overwritten)
        return _trial(cfg, arm, seed, keep)


def _trial(cfg: Dict[str, Any], arm, seed: int, keep: Dict[str, Any] = None) -> Dict[str, Any]:
    data = _data(cfg)
    net = lecun_init_(SimCLRNet(cfg["channels"], cfg["proj_hidden"], cfg["proj_dim"]), torch.Generator().manual_seed(seed),
                      gain=math.sqrt(2.0))
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    apply_arm(arm, net, opt, gamma=cfg["gamma"], seed=seed, cfg=cfg)
    gen = torch.Generator().manual_seed(30_000 + seed)
    x = data.x_train
    loss = torch.tensor(float("nan"))
    with trial_rng(seed):
        for _ in range(int(cfg["steps"])):
            xb = x[torch.randint(0, len(x), (cfg["batch"],), generator=gen)]
            _, z1 = net(augment(xb, gen, cfg))
            _, z2 = net(augment(xb, gen, cfg))
            loss = nt_xent(z1, z2, cfg["tau"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        h, z = net(data.x_test)
        h_tr, z_tr = net(x[: cfg["n_probe"]])
    y_tr = data.y_train[: cfg["n_probe"]]
    thr = cfg["low_rank_threshold"]
    if keep is not None:
        for name, f in (("proj", z), ("backbone", h)):
            s = singular_values(f, center=True)
            ev = (s * s) / float((s * s)[0]) if float(s[0]) > 0 else s * 0
            keep[name] = ev.tolist()
    return {
        "lowrank_proj": low_rank_fraction(z, threshold=thr),
        "lowrank_backbone": low_rank_fraction(h, threshold=thr),
        "eff_rank_proj": effective_rank(z, center=True),
        "eff_rank_backbone": effective_rank(h, center=True),
        "probe_proj": linear_probe(z_tr, y_tr, z, data.y_test, cfg["probe_iters"]),
        "probe_backbone": linear_probe(h_tr, y_tr, h, data.y_test, cfg["probe_iters"]),
        "train_loss": float(loss.detach()),
    }


def run(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    arm_list = _arm_list(cfg)
    _data(cfg)
    spectra: Dict[str, Dict[str, Any]] = {}
    ctx.progress(len(arm_list) * len(ctx.seeds))
    for arm in arm_list:
        for seed in ctx.seeds:
            keep = {} if seed == ctx.seeds[0] else None
            ctx.record(arm.name, seed, None, **trial(cfg, arm, seed, keep))
            if keep:
                spectra[arm.name] = keep
            ctx.step(f"{arm.name} seed {seed}")

    names = [a.name for a in arm_list]
    v = ctx.values
    tests: List[Dict[str, Any]] = []
    if "wd" in names and "none" in names:
        tests.append(stats.secondary(stats.compare("weight decay raises the projector's low-rank share", v("wd", "lowrank_proj"),
                                                   v("none", "lowrank_proj"), metric="lowrank_proj", arms=["wd", "none"],
                                                   alternative="greater")))
    for arm in ("syre", "syre_10x", "syre_big"):
        if arm not in names or "wd" not in names:
            continue
        wrap = (lambda t: t) if arm == "syre" else stats.secondary
        tests.append(wrap(stats.compare(f"{arm}: projector low-rank share below weight decay's", v(arm, "lowrank_proj"),
                                        v("wd", "lowrank_proj"), metric="lowrank_proj", arms=[arm, "wd"], alternative="less")))
        tests.append(wrap(stats.compare(f"{arm}: projector probe accuracy above weight decay's", v(arm, "probe_proj"),
                                        v("wd", "probe_proj"), metric="probe_proj", arms=[arm, "wd"], alternative="greater")))
        tests.append(stats.secondary(stats.compare(f"{arm}: backbone probe accuracy above weight decay's", v(arm, "probe_backbone"),
                                                   v("wd", "probe_backbone"), metric="probe_backbone", arms=[arm, "wd"],
                                                   alternative="greater")))
        tests.append(stats.secondary(stats.compare(f"{arm}: backbone low-rank share below weight decay's", v(arm, "lowrank_backbone"),
                                                   v("wd", "lowrank_backbone"), metric="lowrank_backbone", arms=[arm, "wd"],
                                                   alternative="less")))

    def ms(arm, m, pct=True):
        d = stats.describe(v(arm, m))
        return f"{100 * d['mean']:.1f}% ± {100 * d['std']:.1f}" if pct else f"{d['mean']:.3g} ± {d['std']:.2g}"

    findings = {"headline": "; ".join(f"{a}: projector low-rank {ms(a, 'lowrank_proj')}, probe {ms(a, 'probe_proj')}, backbone "
                                      f"low-rank {ms(a, 'lowrank_backbone')}, probe {ms(a, 'probe_backbone')}" for a in names)}
    table = _paper_table(ctx, names)
    _plot(ctx, cfg, arm_list, spectra)
    return {
        "tests": tests,
        "rule": "syre (the configured sigma0) has a lower share of near-zero eigenvalues of the projector output and a higher "
        "projector linear-probe accuracy than weight decay (one-sided paired t-tests over seeds, p < 0.05); the 10x and "
        "init-std sigma0, the backbone and weight decay vs no decay are reported (secondary)",
        "findings": findings,
        "tables": [table],
        "notes": [
            f"backbone conv {cfg['channels']} + global average pooling ({cfg['channels'][-1]}-d), projector "
            f"{cfg['channels'][-1]}-{cfg['proj_hidden']}-{cfg['proj_dim']}, no batch norm; SimCLR NT-Xent tau {cfg['tau']:g}, batch "
            f"{cfg['batch']} (x2 views), {cfg['steps']} Adam steps lr {cfg['lr']:g}, gamma {cfg['gamma']:g} (decoupled) on every "
            f"parameter; {cfg['n_train']} unlabelled Fashion-MNIST images {cfg['size']}x{cfg['size']}.",
            f"low-rank share: eigenvalues of the output covariance over {cfg['n_test']} test images below "
            f"{cfg['low_rank_threshold']:g} x the largest; linear probe: logistic regression on {cfg['n_probe']} labelled training "
            f"images, L-BFGS {cfg['probe_iters']} iterations, test accuracy on {cfg['n_test']} images.",
            f"syre sigma0: {sigma0_label(cfg['sigma0'])}; syre_10x: "
            f"{sigma0_label(_arm_list({**cfg, 'arms': ['syre_10x']})[0].sigma0)}; syre_big: {sigma0_label(cfg['sigma0_big'])}.",
            "Scale: the paper used ResNet-18 on CIFAR-100 (100 classes, probe chance 1%); this is a 3-layer CNN on Fashion-MNIST "
            "(10 classes, chance 10%), so compare directions and relative sizes, not the numbers.",
        ],
    }


def _paper_table(ctx, names) -> str:
    rows = ["## Against the paper's table", "",
            "| | projector low-rank share | projector probe | backbone low-rank share | backbone probe |", "|---|---|---|---|---|",
            f"| paper, SimCLR (CIFAR-100, ResNet-18) | {PAPER['lowrank_proj'][0]:.0%} | {PAPER['probe'][0]:.1%} | "
            f"{PAPER['lowrank_backbone'][0]:.1%} | - |",
            f"| paper, SimCLR + syre | {PAPER['lowrank_proj'][1]:.0%} | {PAPER['probe'][1]:.1%} | {PAPER['lowrank_backbone'][1]:.1%} | - |"]
    for n in names:
        cells = []
        for m in ("lowrank_proj", "probe_proj", "lowrank_backbone", "probe_backbone"):
            d = stats.describe(ctx.values(n, m))
            cells.append(f"{100 * d['mean']:.1f}% ± {100 * d['std']:.1f}")
        rows.append(f"| ours, {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _plot(ctx, cfg, arm_list, spectra) -> None:
    fig, axes = ctx.subplots(1, 4, figsize=(16, 3.6))
    for i, arm in enumerate(arm_list):
        for ax, key in zip(axes[:2], ("proj", "backbone")):
            ev = spectra.get(arm.name, {}).get(key)
            if ev:
                ax.semilogy(np.arange(1, len(ev) + 1), np.maximum(ev, 1e-12), color=f"C{i}", label=arm.label)
    for ax, key in zip(axes[:2], ("projector output", "backbone output")):
        ax.axhline(cfg["low_rank_threshold"], color="k", ls=":", lw=0.8)
        ax.set_xlabel("eigenvalue index")
        ax.set_ylabel("eigenvalue / largest (seed 0)")
        ax.set_title(key, fontsize=9)
    axes[0].legend(fontsize=6)
    names = [a.name for a in arm_list]
    xs = np.arange(len(names))
    for ax, (a, b, label) in zip(axes[2:], (("lowrank_proj", "lowrank_backbone", "near-zero eigenvalue share"),
                                            ("probe_proj", "probe_backbone", "linear-probe accuracy"))):
        for j, (m, off, lab) in enumerate(((a, -0.2, "projector"), (b, 0.2, "backbone"))):
            means = [np.mean(ctx.values(n, m)) for n in names]
            stds = [np.std(ctx.values(n, m)) for n in names]
            ax.bar(xs + off, means, width=0.4, yerr=stds, label=lab, color=f"C{j}", alpha=0.8)
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=20, fontsize=8)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    ctx.save(fig, "e7_simclr")


EXPERIMENT = Experiment(
    id="e7",
    title="SimCLR on Fashion-MNIST: low-rank share and linear probe of projector and backbone",
    claim=CLAIM,
    run=run,
    defaults=DEFAULTS,
    quick=QUICK,
)
