"""E3: dead coefficients of ``f(x) = sum_i u_i w_i x_i`` under weight decay.

Each coordinate i has the sign-flip mirror ``(u_i, w_i) -> (-u_i, -w_i)``; its fixed point
``u_i = w_i = 0`` is a dead coefficient: the gradient in ``(u_i, w_i)`` vanishes there, so a
coordinate started dead stays dead whatever its information, and weight decay pulls toward it.

Data: ``x ~ N(0, I_d)``, ``y = sum_i beta_i x_i + noise`` with every ``|beta_i|`` in
``[beta_min, beta_max]``, all above the weight-decay threshold ``gamma / 2`` for every gamma of the
tuning grid. The first ``n_dead`` coordinates start dead, the others at ``N(0, init_std^2)``.
Full-batch gradient descent, decoupled decay. Data are drawn per seed.

Arms: no decay; weight decay (the paper's "vanilla"); W-fix + weight decay; the **perturbed start**
(N(0, (perturb_scale x init_std)^2) noise on every coordinate, then weight decay: a started-dead
coordinate with any noise is on a saddle, not on the mirror); syre at the library default (u and w
are 1-D parameters without a fan-in: 0.01 absolute), AR, and ``syre_abs0.5`` (the init std of the
live coordinates). W-fix: the model has one incoming weight per unit, so the per-unit subset of
Lim et al. is taken over the whole vector: a random share ``wfix_frac`` of the entries of ``u`` and
of ``w`` is frozen at ``N(0, init_std^2)`` constants; it revives exactly the started-dead
coordinates with a frozen entry (a sanity check).

Metrics: ``dead_started_dead`` (started-dead coordinates with ``|u_i w_i| < dead_tol``),
``unfrozen_dead_start`` (started-dead coordinates with no frozen entry: W-fix only), ``dead``,
``excess_risk`` ``= sum_i (beta_i - u_i w_i)^2`` (population test MSE minus the noise).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch
from torch import nn

from . import fmt
from .arms import ARM_DEFAULTS, ArmHandle, apply_arm, arms as get_arms, perturb_
from .common import tuned_cells
from .protocol import Design, Rejudge, Test, Tuning, cell
from .registry import Experiment

CLAIM_V1 = ("In f = sum_i u_i w_i x_i trained with weight decay, informative coefficients started dead stay dead under vanilla "
         "training and under W-fix (frozen random weights), while syre revives them.")

CLAIM = ("In f = sum_i u_i w_i x_i trained with weight decay, informative coefficients started dead stay dead under vanilla "
         "training and under W-fix (frozen random weights); with syre the excess risk falls below weight decay's, W-fix's and the "
         "perturbed start's (that syre moves the started-dead coefficients holds by construction: a sanity check).")

#: Version 2 re-judges version 1's trials (no retraining).
VERSION = 2
CHANGES = ("v2, re-judged from v1's trials, no retraining: 'syre: no started-dead coefficient stays dead' is a sanity check (it holds by "
           "construction); the verdict reads the excess risk")


def _v2_role(t, cfg):
    if t.metric == "dead_started_dead" and t.a.arm == "syre" and t.role == "primary":
        return ("sanity", "the anchor of a started-dead coordinate is nonzero with probability 1, so syre's pull moves it off u = w = 0 "
                          "at the first step whatever the data; the excess risk decides")
    return None


DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["none", "wd", "wfix", "perturb", "syre", "syre_ar", "syre_abs0.5"],
    "tune_arms": ["wd", "wfix", "perturb", "syre", "syre_ar"],
    "tune_gammas": [0.01, 0.03, 0.1, 0.3],
    "tune_sigma0s": ["lecun", "abs:0.1", "abs:0.5"],
    "d": 20,
    "n_dead": 10,
    "n_train": 500,
    "beta_min": 0.2,
    "beta_max": 1.0,
    "noise": 0.1,
    "init_std": 0.5,
    "gamma": 0.1,
    "lr": 0.05,
    "steps": 3000,
    "dead_tol": 1e-3,
}
QUICK = {"steps": 400, "arms": ["none", "wd", "wfix", "perturb", "syre"], "tune_arms": ["wd", "syre"], "tune_gammas": [0.03, 0.1],
         "tune_sigma0s": ["lecun"]}


class Diagonal(nn.Module):
    """``f(x) = sum_i u_i w_i x_i``."""

    def __init__(self, d: int):
        super().__init__()
        self.u = nn.Parameter(torch.zeros(d))
        self.w = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.u * self.w)


def _wfix(handle: ArmHandle, model: Diagonal, opt, cfg, seed: int) -> None:
    gen = torch.Generator().manual_seed(20_000 + seed)
    for p in (model.u, model.w):
        mask = torch.rand(p.shape, generator=gen) < cfg["wfix_frac"]
        values = torch.randn(p.shape, generator=gen) * cfg["init_std"]
        with torch.no_grad():
            p[mask] = values[mask]
        handle.frozen.append((p, mask, values))

    @torch.no_grad()
    def restore(o, args, kwargs):
        for p, mask, values in handle.frozen:
            p[mask] = values[mask]

    handle._hooks.append(opt.register_step_post_hook(restore))


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    d, k = cfg["d"], cfg["n_dead"]
    if not 0 <= k <= d:
        raise ValueError(f"Invalid n_dead: {k!r}; expected 0 <= n_dead <= d = {d}")
    g = torch.Generator().manual_seed(300 + seed)
    mag = torch.linspace(cfg["beta_min"], cfg["beta_max"], d)[torch.randperm(d, generator=g)]
    beta = mag * torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0)
    x = torch.randn(cfg["n_train"], d, generator=g)
    y = x @ beta + cfg["noise"] * torch.randn(cfg["n_train"], generator=g)
    model = Diagonal(d)
    with torch.no_grad():
        model.u.copy_(torch.randn(d, generator=g) * cfg["init_std"])
        model.w.copy_(torch.randn(d, generator=g) * cfg["init_std"])
        model.u[:k] = 0.0
        model.w[:k] = 0.0
    if arm.perturb:
        perturb_([model.u, model.w], [cfg["init_std"]] * 2, float(cfg["perturb_scale"]), seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    handle = apply_arm(arm.with_name(arm.name, wfix=False) if arm.wfix else arm, model, opt, seed=seed, cfg=cfg)
    unfrozen = k
    if arm.wfix:
        _wfix(handle, model, opt, cfg, seed)
        frozen_any = handle.frozen[0][1] | handle.frozen[1][1]
        unfrozen = int((~frozen_any[:k]).sum())
    for _ in range(cfg["steps"]):
        opt.zero_grad(set_to_none=True)
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        prod = model.u * model.w
        dead = prod.abs() < cfg["dead_tol"]
        return {
            "dead_started_dead": int(dead[:k].sum()),
            "dead": int(dead.sum()),
            "excess_risk": float(((beta - prod) ** 2).sum()),
            "excess_risk_started_dead": float(((beta - prod)[:k] ** 2).sum()),
            "unfrozen_dead_start": unfrozen,
        }


def design(cfg: Dict[str, Any]) -> Design:
    if cfg["beta_min"] <= max(cfg["tune_gammas"] + [cfg["gamma"]]) / 2:
        raise ValueError(f"Invalid beta_min: {cfg['beta_min']!r}; expected above gamma / 2 for every gamma tried (else weight "
                         "decay's optimum kills those coordinates and the claim does not apply)")
    arm_list = get_arms(cfg["arms"])
    names = [a.name for a in arm_list]
    tun = Tuning(metric="excess_risk", better="min", arms=tuple(a for a in cfg["tune_arms"] if a in names),
                 gammas=tuple(cfg["tune_gammas"]), sigma0s=tuple(cfg["tune_sigma0s"]))
    k = cfg["n_dead"]
    why_dead = ("at u_i = w_i = 0 the loss gradient in (u_i, w_i) is exactly zero and the decay pulls toward 0: a started-dead "
                "coordinate cannot move")
    tests = [Test(f"{b}: the started-dead coefficients stay dead", "dead_started_dead", cell(b), kind="bound", threshold=k,
                  role="sanity", why=why_dead) for b in ("none", "wd") if b in names]
    if "wfix" in names:
        tests.append(Test("W-fix: every started-dead coefficient without a frozen entry stays dead", "dead_started_dead",
                          cell("wfix"), cell("wfix"), metric_b="unfrozen_dead_start", kind="bound", threshold=0.0, role="sanity",
                          why="W-fix's frozen constants are the only thing that moves a dead coordinate off the mirror"))
        tests.append(Test("W-fix leaves started-dead coefficients dead", "dead_started_dead", cell("wfix"), kind="bound",
                          threshold=1, role="secondary"))
    for arm in [n for n in names if n.startswith("syre") or n == "perturb"]:
        tests.append(Test(f"{arm}: no started-dead coefficient stays dead", "dead_started_dead", cell(arm), kind="bound",
                          direction="less", threshold=0, role="primary" if arm == "syre" else "secondary"))
    for arm in [n for n in names if n.startswith("syre")]:
        for ref in [r for r in ("wd", "wfix", "perturb") if r in names]:
            tests.append(Test(f"{arm}: excess risk below {ref}'s", "excess_risk", cell(arm), cell(ref), direction="less",
                              role="primary" if arm == "syre" else "secondary"))
    for arm in [a for a in tun.arms if a.startswith("syre")]:
        for ref in [r for r in ("wd", "wfix", "perturb") if r in tun.arms] + (["none"] if "none" in names else []):
            b = cell("none") if ref == "none" else cell(f"{ref}@tuned")
            tests.append(Test(f"tuned: {arm} excess risk below {ref}'s", "excess_risk", cell(f"{arm}@tuned"), b, direction="less",
                              family="tuned", role="primary" if arm == "syre" else "secondary"))
    return Design(arms=arm_list, cells=[cell(n) for n in names] + tuned_cells(tun), tests=tests, tuning=tun, notes=[
        f"d = {cfg['d']}, {k} started dead, |beta| in [{cfg['beta_min']:g}, {cfg['beta_max']:g}], full-batch GD lr {cfg['lr']:g}, "
        f"{cfg['steps']} steps, shared gamma {cfg['gamma']:g} (decoupled); dead: |u_i w_i| < {cfg['dead_tol']:g}; perturbed start: "
        f"N(0, ({cfg['perturb_scale']:g} x {cfg['init_std']:g})^2).",
        "sigma0 of u and w (1-D parameters with no fan-in): the library default gives its unit rule, 0.01 absolute."])


def report(ctx) -> Dict[str, Any]:
    keys = [c.key for c in ctx.protocol.design.cells if c.key in ctx.arms]
    metrics = ["dead_started_dead", "dead", "excess_risk"]
    rows = [[k] + [fmt.ms(ctx.arms[k][m]) for m in metrics] for k in keys]
    _plot(ctx, keys)
    k = ctx.config["n_dead"]
    return {"tables": ["## Arms\n\n" + fmt.md_table(["cell"] + metrics, rows)],
            "findings": {"headline": f"dead of {k} started dead: "
                         + ", ".join(f"{a} {fmt.ms(ctx.arms[a]['dead_started_dead'])}" for a in keys)
                         + "; excess risk: " + ", ".join(f"{a} {fmt.ms(ctx.arms[a]['excess_risk'])}" for a in keys)}}


def _plot(ctx, names) -> None:
    fig, axes = ctx.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, label in ((axes[0], "dead_started_dead", f"dead of the {ctx.config['n_dead']} started dead"),
                              (axes[1], "excess_risk", "excess risk sum (beta - u w)^2")):
        vals = [ctx.values(n, metric) for n in names]
        ax.bar(range(len(names)), [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals],
               color=[f"C{i}" for i in range(len(names))])
        for i, v in enumerate(vals):
            ax.scatter([i] * len(v), v, color="k", s=8, zorder=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, fontsize=7, ha="right")
        ax.set_ylabel(label)
    axes[1].set_yscale("log")
    ctx.save(fig, "e3_dead_coefficients")


EXPERIMENT = Experiment(id="e3", title="dead coefficients of f = sum u_i w_i x_i: vanilla, W-fix, perturbed start, syre", claim=CLAIM,
                        version=VERSION, changes=CHANGES,
                        rejudge=Rejudge(VERSION, 1, CLAIM_V1, "first pre-registered version", _v2_role),
                        trial=trial, design=design, report=report, defaults=DEFAULTS, quick=QUICK, perf="excess_risk", better="min",
                        rank="dead_started_dead", n_min=5, n_max=12, selection=3)
