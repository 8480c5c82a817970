"""The measurements of E0 (``syre.bench.e0``), one function per theorem: each returns its measured and predicted values.

``CHECKS`` maps a check's name to its function ``check(seed, cfg) -> record(s)``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np
import torch
from torch import nn

import syre

__all__ = ["CHECKS", "check_escape", "check_asymmetry", "check_scaling", "check_ridge", "check_trap", "expected_min_abs"]


def _two_layer(seed: int, d_in: int = 5, hidden: int = 6, d_out: int = 2) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out)).double()
    with torch.no_grad():
        for m in (net[0], net[2]):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64) / math.sqrt(m.weight.shape[1]))
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g, dtype=torch.float64))
    return net


def _pair_coords(net: nn.Module, i: int = 0, j: int = 1):
    """Flat views (unit i, unit j) of every parameter: W1 rows, b1 entries, W2 columns."""
    return [
        (net[0].weight[i], net[0].weight[j]),
        (net[0].bias[i : i + 1], net[0].bias[j : j + 1]),
        (net[2].weight[:, i], net[2].weight[:, j]),
    ]


def _project(tensors: Dict[str, torch.Tensor]) -> torch.Tensor:
    """P applied to a dict of tensors shaped like the net's parameters, as a flat vector.

    P x = ((x_i - x_j)/2, (x_j - x_i)/2) on the pairs; its flat form here keeps only the
    independent half ``(x_i - x_j) / 2`` scaled by sqrt(2) so that norms are preserved.
    """
    w1, b1, w2 = tensors["0.weight"], tensors["0.bias"], tensors["2.weight"]
    diff = torch.cat([w1[0] - w1[1], b1[0:1] - b1[1:2], w2[:, 0] - w2[:, 1]])
    return diff / math.sqrt(2.0)


def _rel(measured: torch.Tensor, predicted: torch.Tensor) -> float:
    den = float(predicted.norm())
    return float((measured - predicted).norm()) / (den if den > 0 else 1.0)


def check_escape(seed: int, cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    gamma, sigma0 = cfg["gamma"], cfg["sigma0"]
    net = _two_layer(seed)
    with torch.no_grad():  # put units 0 and 1 on the mirror
        for a, b in _pair_coords(net):
            b.copy_(a)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = torch.randn(32, 2, generator=g, dtype=torch.float64)
    out = []

    def grads(extra=None) -> Dict[str, torch.Tensor]:
        net.zero_grad()
        loss = ((net(x) - y) ** 2).mean()
        if extra is not None:
            loss = loss + extra()
        loss.backward()
        return {n: p.grad.detach().clone() for n, p in net.named_parameters()}

    pg = _project(grads())
    rank_p = pg.numel()
    full = torch.cat([v.flatten() for v in grads().values()]).norm()
    out.append(dict(arm="escape_vanilla", measured=float(pg.abs().max()), predicted=0.0, error=float(pg.norm() / full),
                    what="max |P grad l| at the mirror (vanilla); error: ||P grad|| / ||grad||"))
    for arm, d_spread in (("escape_syre", 0.0), ("escape_ar", cfg["d_spread"])):
        pen = syre.Penalty(net, gamma=gamma, sigma0=sigma0, d_spread=d_spread, seed=seed)
        pg = _project(grads(pen))
        anchors = {n: syre.anchor(seed, n, p.shape, sigma0=sigma0, d_spread=d_spread, dtype=torch.float64)
                   for n, p in net.named_parameters()}
        phi = {n: p.detach() for n, p in net.named_parameters()}
        if d_spread == 0.0:
            pred = -2.0 * gamma * _project({n: a.theta0 for n, a in anchors.items()})
            what = "P grad l_syre vs -2 gamma P theta0 (relative error)"
        else:
            pred = 2.0 * gamma * _project({n: a.d * (phi[n] - a.theta0) for n, a in anchors.items()})
            what = "P grad l_ar vs 2 gamma P D (phi - theta0) (relative error)"
        out.append(dict(arm=arm, measured=float(pg.norm()), predicted=float(pred.norm()), error=_rel(pg, pred), what=what,
                        norm_ratio=float(pg.norm()) / (2.0 * gamma * sigma0 * math.sqrt(rank_p))))
    return out


def check_asymmetry(seed: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    gamma, sigma0 = cfg["gamma"], cfg["sigma0"]
    net = _two_layer(seed + 100)
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = torch.randn(32, 2, generator=g, dtype=torch.float64)
    pen = syre.Penalty(net, gamma=gamma, sigma0=sigma0, d_spread=0.0, seed=seed)

    def l_syre() -> float:
        with torch.no_grad():
            return float(((net(x) - y) ** 2).mean() + pen())

    before = l_syre()
    phi = {n: p.detach().clone() for n, p in net.named_parameters()}
    with torch.no_grad():  # reflect: swap units 0 and 1
        for a, b in _pair_coords(net):
            tmp = a.clone()
            a.copy_(b)
            b.copy_(tmp)
    after = l_syre()
    theta0 = {n: syre.anchor(seed, n, p.shape, sigma0=sigma0, dtype=torch.float64).theta0 for n, p in net.named_parameters()}
    # _project keeps inner products: (P phi)^T (P theta0) = _project(phi) . _project(theta0)
    predicted = -4.0 * gamma * float(_project(phi) @ _project(theta0))
    measured = before - after
    return dict(arm="asymmetry", measured=measured, predicted=predicted, error=abs(measured - predicted) / abs(predicted),
                what="l_syre(phi) - l_syre(R phi) vs -4 gamma (P phi)^T (P theta0) (relative error)")


def expected_min_abs(n: int) -> float:
    """``N * E[min_i |Z_i|]`` for N iid standard normals: ``int_0^inf erfc(s / (N sqrt 2))^N ds``."""
    s = np.linspace(0.0, 40.0, 40001)
    vals = np.array([math.erfc(v / (n * math.sqrt(2.0))) for v in s]) ** n
    return float(np.sum((vals[1:] + vals[:-1]) * 0.5 * np.diff(s)))


def check_scaling(seed: int, cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    sigma0 = cfg["sigma0"]
    m = cfg["scaling_draws"]
    out = []
    for n in cfg["scaling_n"]:
        g = torch.Generator().manual_seed(seed * 1000 + n)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        theta0 = syre.anchor(seed, f"mirror-scaling-{n}", (m, n), sigma0=sigma0, dtype=torch.float64).theta0
        mins = (theta0 @ q).abs().min(dim=1).values * n / sigma0
        mean = float(mins.mean())
        se = float(mins.std()) / math.sqrt(m)
        pred = expected_min_abs(n)
        out.append(dict(arm=f"scaling_N{n}", measured=mean, predicted=pred, error=abs(mean - pred) / se if se else 0.0,
                        stderr=se, what=f"E[min_i |v_i^T theta0|] * N / sigma0, N = {n} (error in standard errors)"))
    # sign flips: k rank-2 mirrors, weakest ||P_i theta0|| * sqrt(k) / sigma0 -> sqrt(pi/2)
    for k in cfg["scaling_n"]:
        theta0 = syre.anchor(seed, f"signflip-scaling-{k}", (m, k, 2), sigma0=sigma0, dtype=torch.float64).theta0
        mins = theta0.norm(dim=2).min(dim=1).values * math.sqrt(k) / sigma0
        mean = float(mins.mean())
        se = float(mins.std()) / math.sqrt(m)
        pred = math.sqrt(math.pi / 2.0)
        out.append(dict(arm=f"signflip_k{k}", measured=mean, predicted=pred, error=abs(mean - pred) / se if se else 0.0,
                        stderr=se, what=f"E[min_i ||P_i theta0||] * sqrt(k) / sigma0, k = {k} sign flips (error in standard errors)"))
    return out


def _ridge_data(seed: int, cfg: Dict[str, Any]):
    g = torch.Generator().manual_seed(seed + 3)
    n, d = cfg["ridge_n"], cfg["ridge_d"]
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d, generator=g, dtype=torch.float64) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def _ridge_gd(x, y, gamma, sigma0, seed, steps, form: str) -> torch.Tensor:
    n, d = x.shape
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
    lam_max = float(torch.linalg.eigvalsh(x.T @ x / n).max())
    lr = 1.0 / (2.0 * lam_max + 2.0 * gamma)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    if form == "coupled":
        pen = syre.Penalty(model, gamma=gamma, sigma0=sigma0, d_spread=0.0, seed=seed)
    else:
        syre.attach(opt, model, gamma=2.0 * gamma, sigma0=sigma0, d_spread=0.0, seed=seed)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((y - model(x).squeeze(1)) ** 2).mean()
        if form == "coupled":
            loss = loss + pen()
        loss.backward()
        opt.step()
    return model.weight.detach().view(-1).clone()


def check_ridge(seed: int, cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    gamma, sigma0 = cfg["gamma"], cfg["sigma0"]
    x, y = _ridge_data(seed, cfg)
    n, d = x.shape
    theta0 = syre.anchor(seed, "weight", (1, d), sigma0=sigma0, dtype=torch.float64).theta0.view(-1)
    a = x.T @ x / n + gamma * torch.eye(d, dtype=torch.float64)
    closed = torch.linalg.solve(a, x.T @ y / n + gamma * theta0)
    out = []
    for form in ("coupled", "attach"):
        phi = _ridge_gd(x, y, gamma, sigma0, seed, cfg["ridge_steps"], form)
        out.append(dict(arm=f"ridge_{form}", measured=float(phi.norm()), predicted=float(closed.norm()), error=_rel(phi, closed),
                        what=f"GD ({'syre.Penalty' if form == 'coupled' else 'syre.attach, gamma x 2'}) vs closed form (relative error)"))
    # distance to plain ridge (both by GD), predicted gamma ||A^-1 theta0||: linear in sigma0
    plain = _ridge_gd(x, y, gamma, 0.0, seed, cfg["ridge_steps"], "coupled")
    for scale in (0.01, 0.1, 1.0):
        s0 = sigma0 * scale
        th = syre.anchor(seed, "weight", (1, d), sigma0=s0, dtype=torch.float64).theta0.view(-1)
        sol = _ridge_gd(x, y, gamma, s0, seed, cfg["ridge_steps"], "coupled")
        pred = gamma * float(torch.linalg.solve(a, th).norm())
        meas = float((sol - plain).norm())
        out.append(dict(arm=f"ridge_shift_s{scale:g}", measured=meas, predicted=pred, error=abs(meas - pred) / pred,
                        what=f"||phi_syre - phi_ridge|| (GD) at sigma0 = {s0:g} vs gamma ||A^-1 theta0|| (relative error)"))
    return out


def check_trap(seed: int, cfg: Dict[str, Any]) -> List[Dict[str, Any]]:
    sigma0, gamma = cfg["sigma0"], cfg["gamma"]
    g = torch.Generator().manual_seed(seed + 4)
    x = torch.randn(64, 3, generator=g, dtype=torch.float64)
    teacher = torch.randn(2, 3, generator=g, dtype=torch.float64)
    y = x @ teacher.T
    w1_init = torch.randn(8, 3, generator=g, dtype=torch.float64) / math.sqrt(3)
    w2_init = torch.randn(2, 8, generator=g, dtype=torch.float64) / math.sqrt(8)
    a1 = syre.anchor(seed, "0.weight", (8, 3), sigma0=sigma0, dtype=torch.float64).theta0
    a2 = syre.anchor(seed, "1.weight", (2, 8), sigma0=sigma0, dtype=torch.float64).theta0
    # n orthogonal to the columns of A1 and the rows of A2: a mirror basic syre keeps
    m = torch.cat([a1.T, a2], dim=0)  # 5 x 8
    _, _, vh = torch.linalg.svd(m)
    nvec = vh[-1]
    proj = torch.eye(8, dtype=torch.float64) - torch.outer(nvec, nvec)
    out = []
    for arm, d_spread in (("trap_syre", 0.0), ("trap_ar", cfg["d_spread_trap"])):
        net = nn.Sequential(nn.Linear(3, 8, bias=False), nn.Linear(8, 2, bias=False)).double()
        with torch.no_grad():
            net[0].weight.copy_(proj @ w1_init)
            net[1].weight.copy_(w2_init @ proj)
        start = float((nvec @ net[0].weight.detach()).abs().max())
        opt = torch.optim.SGD(net.parameters(), lr=cfg["trap_lr"])
        syre.attach(opt, net, gamma=gamma, sigma0=sigma0, d_spread=d_spread, seed=seed)
        for _ in range(cfg["trap_steps"]):
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
            opt.step()
        with torch.no_grad():
            off1 = float((nvec @ net[0].weight).abs().max())
            off2 = float((net[1].weight @ nvec).abs().max())
            loss = float(((net(x) - y) ** 2).mean())
        out.append(dict(arm=arm, measured=max(off1, off2), predicted=0.0 if d_spread == 0 else None, start=start,
                        loss=loss, error=None,
                        what=f"max(|n^T W1|, |W2 n|) after {cfg['trap_steps']} steps "
                             f"({'basic' if d_spread == 0 else f'AR, D in [{1 - d_spread:g}, {1 + d_spread:g}]'})"))
    return out


def _absolute(spec) -> float:
    if isinstance(spec, str) and spec.startswith("abs:"):
        spec = spec[4:]
    try:
        value = float(spec)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid sigma0 for e0: {spec!r}; the theorem checks take an absolute value (a number or 'abs:X')") from None
    if not value > 0:
        raise ValueError(f"Invalid sigma0 for e0: {spec!r}; expected a number > 0")
    return value


CHECKS = {"escape": check_escape, "asymmetry": check_asymmetry, "scaling": check_scaling, "ridge": check_ridge, "trap": check_trap}
