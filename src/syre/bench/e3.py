"""E3: dead coefficients of ``f(x) = sum_i u_i w_i x_i`` under weight decay.

Each coordinate i has the sign-flip mirror ``(u_i, w_i) -> (-u_i, -w_i)``; its fixed point
``u_i = w_i = 0`` is a dead coefficient: the gradient in ``(u_i, w_i)`` vanishes there, so a
coordinate started dead stays dead whatever its information, and weight decay pulls toward it.

Data: ``x ~ N(0, I_d)``, ``y = sum_i beta_i x_i + noise`` with every ``|beta_i|`` in
``[beta_min, beta_max]``, all above the weight-decay threshold ``gamma / 2`` (below it the
optimum of ``(beta - p)^2`` plus decay is the mirror itself, ``p = u w = 0``). The first
``n_dead`` coordinates start dead (``u_i = w_i = 0``), the others at ``N(0, init_std^2)``.
Full-batch gradient descent, decoupled decay.

Arms: no decay; weight decay (the paper's "vanilla"); W-fix + weight decay; syre (default
sigma0, AR, and sigma0 = the init std); L2-Init is not run (a dead start is its own anchor).
W-fix here: the model has one incoming weight per unit, so Lim et al.'s per-unit subset is
taken over the whole parameter vector: a random fraction ``wfix_frac`` of the entries of ``u``
and of ``w`` is frozen at ``N(0, init_std^2)`` constants.

Metrics: ``dead_started_dead`` (started-dead coordinates whose ``|u_i w_i| < dead_tol``),
``dead`` (all coordinates), ``excess_risk`` ``= sum_i (beta_i - u_i w_i)^2`` (the population
test MSE minus the noise).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch
from torch import nn

from . import stats
from .arms import ARM_DEFAULTS, ArmHandle, apply_arm, arms as get_arms
from .registry import Experiment

CLAIM = ("In f = sum_i u_i w_i x_i trained with weight decay, informative coefficients started dead stay dead under vanilla "
         "training and under W-fix (frozen random weights), while syre revives them.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "sigma0_big": "abs:0.5",
    "arms": ["none", "wd", "wfix", "syre", "syre_ar", "syre_big"],
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
QUICK = {"steps": 400, "arms": ["wd", "wfix", "syre"]}


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
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    wfix_arm = arm.wfix
    handle = apply_arm(arm.with_name(arm.name, wfix=False) if wfix_arm else arm, model, opt, gamma=cfg["gamma"], seed=seed, cfg=cfg)
    if wfix_arm:
        _wfix(handle, model, opt, cfg, seed)
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
        }


def run(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    if cfg["beta_min"] <= cfg["gamma"] / 2:
        ctx.log(f"note: beta_min {cfg['beta_min']:g} <= gamma/2 = {cfg['gamma'] / 2:g}: weight decay's optimum kills those coordinates")
    arm_list = get_arms(cfg["arms"])
    ctx.run_grid(arm_list, trial)
    names = [a.name for a in arm_list]
    k = cfg["n_dead"]
    tests = []
    ref = "wd" if "wd" in names else None
    if ref:
        tests.append(stats.within("weight decay: the started-dead coefficients stay dead", ctx.values("wd", "dead_started_dead"),
                                  metric="dead_started_dead", low=k, arm="wd", min_n=stats.MIN_N))
    if "wfix" in names and "syre" in names:
        tests.append(stats.seedwise("W-fix leaves more dead coefficients than syre", ctx.values("wfix", "dead_started_dead"),
                                    ctx.values("syre", "dead_started_dead"), metric="dead_started_dead", arms=["wfix", "syre"]))
    if "syre" in names:
        tests.append(stats.within("syre: no started-dead coefficient stays dead", ctx.values("syre", "dead_started_dead"),
                                  metric="dead_started_dead", high=0, arm="syre", min_n=stats.MIN_N))
        for other in [n for n in ("wd", "wfix") if n in names]:
            tests.append(stats.compare(f"syre's excess risk below {other}'s", ctx.values("syre", "excess_risk"),
                                       ctx.values(other, "excess_risk"), metric="excess_risk", arms=["syre", other], alternative="less"))
    for other in ("syre_ar", "syre_big"):
        if other in names:
            tests.append(stats.secondary(stats.within(f"{other}: no started-dead coefficient stays dead",
                                                      ctx.values(other, "dead_started_dead"), metric="dead_started_dead",
                                                      high=0, arm=other, min_n=stats.MIN_N)))

    def ms(arm, m):
        dsc = stats.describe(ctx.values(arm, m))
        return f"{dsc['mean']:.3g} ± {dsc['std']:.2g}"

    _plot(ctx, arm_list)
    return {
        "tests": tests,
        "rule": "weight decay keeps all started-dead coefficients dead and syre none (every seed), W-fix leaves more dead than syre "
        "in every seed, and syre's excess risk is below weight decay's and W-fix's (one-sided paired t-tests, p < 0.05)",
        "findings": {"headline": f"dead of {k} started dead: " + ", ".join(f"{a} {ms(a, 'dead_started_dead')}" for a in names)
                     + "; excess risk: " + ", ".join(f"{a} {ms(a, 'excess_risk')}" for a in names)},
        "notes": [f"d = {cfg['d']}, {k} started dead, |beta| in [{cfg['beta_min']:g}, {cfg['beta_max']:g}] (all above gamma/2 = "
                  f"{cfg['gamma'] / 2:g}), full-batch GD lr {cfg['lr']:g}, {cfg['steps']} steps, gamma {cfg['gamma']:g} (decoupled); "
                  f"dead: |u_i w_i| < {cfg['dead_tol']:g}.",
                  "sigma0 of u and w (1-D parameters with no fan-in): the lecun preset gives the library's unit rule, 0.01 absolute; "
                  f"syre_big uses {cfg['sigma0_big']} (the init std of the live coordinates)."],
    }


def _plot(ctx, arm_list) -> None:
    fig, axes = ctx.subplots(1, 2, figsize=(9, 3.4))
    names = [a.name for a in arm_list]
    for ax, metric, label in ((axes[0], "dead_started_dead", f"dead of the {ctx.config['n_dead']} started dead"),
                              (axes[1], "excess_risk", "excess risk sum (beta - u w)^2")):
        vals = [ctx.values(n, metric) for n in names]
        ax.bar(range(len(names)), [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals],
               color=[f"C{i}" for i in range(len(names))])
        for i, v in enumerate(vals):
            ax.scatter([i] * len(v), v, color="k", s=8, zorder=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, fontsize=8)
        ax.set_ylabel(label)
    axes[1].set_yscale("log")
    ctx.save(fig, "e3_dead_coefficients")


EXPERIMENT = Experiment(
    id="e3",
    title="dead coefficients of f = sum u_i w_i x_i: vanilla, W-fix, syre",
    claim=CLAIM,
    run=run,
    defaults=DEFAULTS,
    quick=QUICK,
)
