"""The sigma0 sweep's two side studies: the sigma0 rule of 1-D parameters, and the default ``d_spread``.

**norm**: a ReLU MLP with LayerNorm after every hidden Linear (Fashion-MNIST, Adam, decoupled decay
at ``norm_gamma``), weights at ``study_scale`` x the LeCun std, and the LayerNorm weights and
biases anchored by each rule of ``norm_rules``: ``origin`` (sigma0 = 0), ``unit`` (``study_scale *
0.01``, the library's rule), ``width`` (``study_scale / sqrt(n)``), ``one`` (``study_scale * 1``),
``excluded`` (no decay on them), ``bias-origin`` (the library's rule for the norms, but Linear
biases at the origin instead of their layer's fan-in); also ``none`` and ``wd``.

**spread**: (a) E0's rotation trap (a deep linear net started on a rotation mirror orthogonal to the
anchors): the distance from the mirror after ``trap_steps`` steps, per eps; (b) E5's trial at
``spread_gamma`` with syre AR at ``study_scale`` per eps: what a spread costs.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

import syre
from syre.diagnostics.metrics import effective_rank, numerical_rank

from .arms import init_stds
from .common import accuracy, dataset, lecun_init_, train_epochs

__all__ = ["NORM_RULES", "NormMLP", "norm_trial", "trap_distance", "weights", "pull_ratio"]

NORM_RULES = ("origin", "unit", "width", "one", "excluded", "bias-origin")


def weights(models) -> torch.Tensor:
    return torch.cat([p.detach().double().reshape(-1) for m in models for p in m.parameters()])


def pull_ratio(syres) -> Optional[float]:
    """Median over elements of the measured pull / update ratios of the ``Syre`` objects ``syres``."""
    vals, sizes = [], []
    for s in syres:
        if s is None:
            continue
        numel = {r["name"]: r["numel"] for r in s.coverage()}
        for name, r in s.pull_ratios().items():
            vals.append(r)
            sizes.append(numel.get(name, 1))
    if not vals:
        return None
    order = np.argsort(vals)
    cum = np.cumsum(np.asarray(sizes, dtype=float)[order])
    return float(np.asarray(vals)[order][np.searchsorted(cum, cum[-1] / 2.0)])


class NormMLP(nn.Module):
    """``depth`` x (Linear -> LayerNorm -> ReLU) and a linear head."""

    def __init__(self, d_in: int, width: int, depth: int, d_out: int):
        super().__init__()
        self.lins = nn.ModuleList(nn.Linear(d_in if i == 0 else width, width) for i in range(depth))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.head = nn.Linear(width, d_out)

    def forward(self, x, keep: Optional[list] = None):
        for lin, norm in zip(self.lins, self.norms):
            x = torch.relu(norm(lin(x)))
            if keep is not None:
                keep.append(x)
        return self.head(x)


def norm_sigma0(rule: str, model: nn.Module, scale: float):
    """The sigma0 callable ``(name, param) -> float`` of a norm-study rule."""
    stds = init_stds(model)
    table = {}
    for mname, m in model.named_modules():
        for pname, p in m.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if isinstance(m, syre.NORM_TYPES):
                table[name] = {"origin": 0.0, "unit": scale * 0.01, "width": scale / math.sqrt(p.numel()), "one": scale,
                               "excluded": 0.0, "bias-origin": scale * 0.01}[rule]
            elif rule == "bias-origin" and p.dim() == 1:
                table[name] = 0.0
            else:
                table[name] = scale * stds[name]
    return lambda name, p: table[name]


def norm_trial(cfg: Dict[str, Any], rule: str, seed: int) -> tuple:
    """Train the LayerNorm MLP under ``rule`` (or ``"wd"``/``"none"``); (metrics, trained weights)."""
    if rule not in NORM_RULES + ("wd", "none"):
        raise ValueError(f"Invalid norm rule: {rule!r}; expected one of {list(NORM_RULES) + ['wd', 'none']}")
    data = dataset("fashion", cfg["eval_split"], n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"])
    net = NormMLP(data.x_train.shape[1], cfg["norm_width"], cfg["norm_depth"], 10)
    lecun_init_(net, torch.Generator().manual_seed(seed), math.sqrt(2.0))
    opt = torch.optim.Adam(net.parameters(), lr=cfg["norm_lr"])
    gamma, scale = float(cfg["norm_gamma"]), float(cfg["study_scale"])
    s = None
    if rule == "wd":
        s = syre.attach(opt, net, gamma=gamma, sigma0=0.0, d_spread=0.0, seed=seed)
    elif rule == "excluded":
        s = syre.attach(opt, net, gamma=gamma, sigma0=f"lecun:{scale!r}", d_spread=0.0, seed=seed, exclude=syre.NORM_TYPES)
    elif rule != "none":
        s = syre.attach(opt, net, gamma=gamma, sigma0=norm_sigma0(rule, net, scale), d_spread=0.0, seed=seed)
    loss = train_epochs(net, opt, data.x_train, data.y_train, epochs=cfg["norm_epochs"], batch=cfg["norm_batch"], seed=seed)
    keep: list = []
    with torch.no_grad():
        net.eval()
        net(data.x_test[: cfg["n_rank"]], keep)
    dead = float(np.mean([float((f.abs().amax(0) == 0).float().mean()) for f in keep]))
    ln_w = torch.cat([n.weight.detach().abs() for n in net.norms])
    return {"test_acc": accuracy(net, data.x_test, data.y_test), "train_loss": loss,
            "eff_rank_last": effective_rank(keep[-1]), "rank_last": numerical_rank(keep[-1], rtol=cfg["rank_rtol"]),
            "dead_units": dead, "ln_weight_median": float(ln_w.median()), "pull_ratio": pull_ratio([s])}, weights([net])


def trap_distance(seed: int, d_spread: float, cfg: Dict[str, Any]) -> float:
    """E0's rotation trap: max(|n^T W1|, |W2 n|) after ``trap_steps`` steps of syre at ``d_spread``."""
    sigma0, gamma = float(cfg["trap_sigma0"]), float(cfg["trap_gamma"])
    g = torch.Generator().manual_seed(seed + 4)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64)
    y = x @ torch.randn(2, 3, generator=g, dtype=torch.float64).T
    w1 = torch.randn(8, 3, generator=g, dtype=torch.float64) / math.sqrt(3)
    w2 = torch.randn(2, 8, generator=g, dtype=torch.float64) / math.sqrt(8)
    a1 = syre.anchor(seed, "0.weight", (8, 3), sigma0=sigma0, dtype=torch.float64).theta0
    a2 = syre.anchor(seed, "1.weight", (2, 8), sigma0=sigma0, dtype=torch.float64).theta0
    nvec = torch.linalg.svd(torch.cat([a1.T, a2], dim=0))[2][-1]
    proj = torch.eye(8, dtype=torch.float64) - torch.outer(nvec, nvec)
    net = nn.Sequential(nn.Linear(3, 8, bias=False), nn.Linear(8, 2, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(proj @ w1)
        net[1].weight.copy_(w2 @ proj)
    opt = torch.optim.SGD(net.parameters(), lr=cfg["trap_lr"])
    syre.attach(opt, net, gamma=gamma, sigma0=sigma0, d_spread=d_spread, seed=seed)
    for _ in range(int(cfg["trap_steps"])):
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        return max(float((nvec @ net[0].weight).abs().max()), float((net[1].weight @ nvec).abs().max()))
