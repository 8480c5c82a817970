"""E4: controlling the degree of symmetry: objective vs share of symmetric directions.

A loss with known mirrors: ``l(w) = sum_i (z_i^2 - b_i)^2`` with ``z = V^T w``, V a random
orthonormal basis of R^n (seeded). Every reflection ``z_i -> -z_i`` is a symmetry and its
mirror is ``z_i = 0``; for ``b_i > 0`` the mirror is a saddle in ``z_i``. The **degree of
symmetry** of ``w`` is the share of directions with ``|z_i| < sym_tol``. Two spectra: the
structured ``b_i = i / n`` and the random ``b_i ~ U(0, 1)``.

Two starts: **on the mirrors** (``w = 0``, the collapsed state weight decay drives a model to)
and **near the mirrors** (``w ~ N(0, near_std^2)``). Gradient descent for ``steps`` steps,
each method with its knob swept over a grid:

* weight decay: gamma (decoupled);
* dropout: the drop probability p on the coordinates of w (inverted dropout, a fresh mask per step);
* W-fix: the share of w's coordinates frozen at ``N(0, wfix_std^2)`` constants (a random subset of
  ``max(1, round(share * n))`` coordinates);
* syre: gamma, at the library default sigma0 (``syre``; w has no fan-in: 0.01 absolute) and at the
  absolute 0.1 (``syre_abs0.1``, above the symmetry tolerance).

One trial is a method's whole knob sweep in one setting (spectrum, start) and seed: the final
objective ``l(w)`` (without any regulariser) and degree of symmetry at every knob, summarised as
``min_symmetry`` (the least over the knob), ``max_symmetry_on`` (the largest over knob > 0) and
``best_objective``.

Weight decay and dropout cannot leave the mirrors from the on-mirror start (their gradient there
is exactly zero), and W-fix, which has no knob pulling toward the mirrors, cannot make the model
symmetric: those halves of the claim hold by construction and are reported as sanity checks; the
tests that decide are syre's. This loss is this benchmark's construction after the paper's description
("a loss with known mirrors", two spectra); the paper's exact function is not given.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch
from torch import nn

import syre

from . import fmt
from .arms import ARM_DEFAULTS, Arm, sigma0_label, sigma0_spec
from .protocol import Design, Test, cell
from .registry import Experiment

CLAIM = ("On a loss with known mirrors, sweeping syre's strength trades the degree of symmetry against the objective smoothly, "
         "while weight decay, dropout and W-fix do not.")

METHODS = ("wd", "dropout", "wfix", "syre", "syre_abs0.1")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "methods": list(METHODS),
    "n": 32,
    "steps": 800,
    "lr": 0.05,
    "sym_tol": 0.05,
    "near_std": 1e-3,
    "wfix_std": 0.5,
    "gamma_grid": [0.0, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0, 2.0, 4.0],
    "dropout_grid": [0.0, 0.1, 0.2, 0.3, 0.5],
    "wfix_grid": [0.0, 0.03, 0.1, 0.25, 0.5, 0.75],
    "spectra": ["structured", "random"],
    "spectrum": "structured",
    "start": "on",
    "starts": ["on", "near"],
    "near_methods": ["wd", "syre"],
    "low_symmetry": 0.1,
    "high_symmetry": 0.75,
}
QUICK = {"steps": 300, "gamma_grid": [0.0, 1e-3, 4.0], "dropout_grid": [0.0, 0.3], "wfix_grid": [0.0, 0.25],
         "starts": ["on"], "methods": ["wd", "wfix", "syre"]}


class MirrorLoss(nn.Module):
    """``l(w) = sum_i ((V^T w)_i^2 - b_i)^2`` with a trainable ``w``."""

    def __init__(self, v: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(v.shape[0], dtype=v.dtype))
        self.register_buffer("v", v)
        self.register_buffer("b", b)

    def z(self, w=None) -> torch.Tensor:
        return (self.w if w is None else w) @ self.v

    def forward(self, w=None) -> torch.Tensor:
        return ((self.z(w) ** 2 - self.b) ** 2).sum()


def _problem(n: int, spectrum: str, seed: int):
    g = torch.Generator().manual_seed(400 + seed)
    v, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    if spectrum == "structured":
        b = torch.arange(1, n + 1, dtype=torch.float64) / n
    elif spectrum == "random":
        b = torch.rand(n, generator=g, dtype=torch.float64)
    else:
        raise ValueError(f"Invalid spectrum: {spectrum!r}; expected 'structured' or 'random'")
    return v, b, g


def train(cfg: Dict[str, Any], method: str, seed: int, spectrum: str, start: str, knob: float) -> Dict[str, Any]:
    """Train ``method`` at ``knob`` from ``start`` on the ``spectrum`` problem of ``seed``."""
    n = cfg["n"]
    v, b, g = _problem(n, spectrum, seed)
    model = MirrorLoss(v, b)
    if start == "near":
        with torch.no_grad():
            model.w.copy_(torch.randn(n, generator=g, dtype=torch.float64) * cfg["near_std"])
    elif start != "on":
        raise ValueError(f"Invalid start: {start!r}; expected 'on' or 'near'")
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    frozen = None
    drop_p = 0.0
    if method == "wd" and knob > 0:
        syre.attach(opt, model, gamma=knob, sigma0=0.0, d_spread=0.0, seed=seed)
    elif method in ("syre", "syre_abs0.1") and knob > 0:
        spec = cfg["sigma0"] if method == "syre" else "abs:0.1"
        syre.attach(opt, model, gamma=knob, sigma0=sigma0_spec(spec), d_spread=0.0, seed=seed)
    elif method == "dropout":
        drop_p = float(knob)
        if not 0.0 <= drop_p < 1.0:
            raise ValueError(f"Invalid dropout knob: {knob!r}; expected 0 <= p < 1")
    elif method == "wfix" and knob > 0:
        if not 0.0 < knob <= 1.0:
            raise ValueError(f"Invalid W-fix knob: {knob!r}; expected 0 < share <= 1")
        gf = torch.Generator().manual_seed(30_000 + seed)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=gf)[: max(1, int(round(knob * n)))]] = True  # a fixed subset, at least one
        values = torch.randn(n, generator=gf, dtype=torch.float64) * cfg["wfix_std"]
        with torch.no_grad():
            model.w[mask] = values[mask]
        frozen = (mask, values)
    elif method not in METHODS:
        raise ValueError(f"Invalid method: {method!r}; expected one of {METHODS}")
    gd = torch.Generator().manual_seed(40_000 + seed)
    for _ in range(cfg["steps"]):
        opt.zero_grad(set_to_none=True)
        if drop_p > 0:
            keep = (torch.rand(n, generator=gd) >= drop_p).to(model.w.dtype) / (1.0 - drop_p)
            loss = model(model.w * keep)
        else:
            loss = model()
        loss.backward()
        opt.step()
        if frozen is not None:
            with torch.no_grad():
                model.w[frozen[0]] = frozen[1][frozen[0]]
    with torch.no_grad():
        z = model.z()
        return {"objective": float(model()), "symmetry": float((z.abs() < cfg["sym_tol"]).double().mean())}


def _methods(cfg, start: str) -> List[str]:
    """The methods run from ``start`` (the near-mirror start runs ``near_methods`` only)."""
    if start == "near":
        return [m for m in cfg["methods"] if m in cfg["near_methods"]]
    return list(cfg["methods"])


def _grid(cfg, method) -> List[float]:
    if method == "dropout":
        return [float(x) for x in cfg["dropout_grid"]]
    if method == "wfix":
        return [float(x) for x in cfg["wfix_grid"]]
    return [float(x) for x in cfg["gamma_grid"]]


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """The knob sweep of method ``arm.name`` in setting ``cfg["spectrum"]``, ``cfg["start"]``: the range of symmetry reached."""
    knobs = _grid(cfg, arm.name)
    runs = [train(cfg, arm.name, seed, cfg["spectrum"], cfg["start"], k) for k in knobs]
    sym = np.array([r["symmetry"] for r in runs])
    obj = np.array([r["objective"] for r in runs])
    on = [i for i, k in enumerate(knobs) if k > 0]
    return {"min_symmetry": float(sym.min()), "objective_at_min": float(obj[int(sym.argmin())]), "best_objective": float(obj.min()),
            "max_symmetry_on": float(sym[on].max()) if on else 0.0, "knobs": knobs, "symmetry": sym.tolist(), "objective": obj.tolist()}


def design(cfg: Dict[str, Any]) -> Design:
    for m in cfg["methods"]:
        if m not in METHODS:
            raise ValueError(f"Invalid method: {m!r}; expected one of {METHODS}")
    sigma0_label(cfg["sigma0"])
    arms = [Arm(m, m, decay="none") for m in cfg["methods"]]
    lo, hi = cfg["low_symmetry"], cfg["high_symmetry"]
    cells, tests = [], []
    for sp in cfg["spectra"]:
        for st in cfg["starts"]:
            cells += [cell(m, spectrum=sp, start=st) for m in _methods(cfg, st)]
        if "on" not in cfg["starts"]:
            continue
        on = lambda m, sp=sp: cell(m, spectrum=sp, start="on")  # noqa: E731
        for m in [m for m in ("wd", "dropout") if m in cfg["methods"]]:
            tests.append(Test(f"{sp}, on the mirrors: {m} cannot leave them", "min_symmetry", on(m), kind="bound", threshold=1.0,
                              role="sanity", why=f"at w = 0 the gradient of the loss is exactly zero, and {m} keeps w = 0"))
        if "wfix" in cfg["methods"]:
            tests.append(Test(f"{sp}, on the mirrors: W-fix does not reach a high degree of symmetry", "max_symmetry_on", on("wfix"),
                              kind="bound", direction="less", threshold=hi, role="sanity",
                              why="W-fix's frozen constants take w off the mirrors and nothing pulls it back"))
            tests.append(Test(f"{sp}, on the mirrors: W-fix reaches a low degree of symmetry", "min_symmetry", on("wfix"),
                              kind="bound", direction="less", threshold=lo, role="secondary"))
        for m in [m for m in ("syre", "syre_abs0.1") if m in cfg["methods"]]:
            role = "primary" if m == "syre" else "secondary"
            tests += [Test(f"{sp}, on the mirrors: {m} reaches a low degree of symmetry", "min_symmetry", on(m), kind="bound",
                           direction="less", threshold=lo, role=role),
                      Test(f"{sp}, on the mirrors: {m} reaches a high degree of symmetry at a knob > 0", "max_symmetry_on", on(m),
                           kind="bound", threshold=hi, role=role)]
        if "near" in cfg["starts"]:
            for m in _methods(cfg, "near"):
                near = cell(m, spectrum=sp, start="near")
                tests += [Test(f"{sp}, near the mirrors: {m} reaches a low degree of symmetry", "min_symmetry", near, kind="bound",
                               direction="less", threshold=lo, role="secondary"),
                          Test(f"{sp}, near the mirrors: {m} reaches a high degree of symmetry", "max_symmetry_on", near, kind="bound",
                               threshold=hi, role="secondary")]
    return Design(arms=arms, cells=cells, tests=tests, notes=[
        f"n = {cfg['n']}, GD lr {cfg['lr']:g}, {cfg['steps']} steps, symmetric direction: |v_i^T w| < {cfg['sym_tol']:g}; a knob trades "
        f"off when its sweep reaches both a degree <= {lo:g} and >= {hi:g} (at a knob > 0), in every seed; syre sigma0 "
        f"{sigma0_label(cfg['sigma0'])} (w has no fan-in: the library's unit rule gives 0.01); W-fix constants ~ N(0, "
        f"{cfg['wfix_std']:g}^2).",
        "The loss l(w) = sum_i ((V^T w)_i^2 - b_i)^2 is this benchmark's construction after the paper's description (the paper "
        "gives no formula)."])


def report(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    rows, findings = [], {}
    for sp in cfg["spectra"]:
        for st in cfg["starts"]:
            parts = []
            for m in _methods(cfg, st):
                a = ctx.arms[cell(m, spectrum=sp, start=st).key]
                rows.append([sp, st, m, fmt.ms(a["min_symmetry"]), fmt.num(a["objective_at_min"]["mean"]), fmt.ms(a["best_objective"]),
                             fmt.ms(a["max_symmetry_on"])])
                parts.append(f"{m}: symmetry {fmt.num(a['min_symmetry']['mean'], 2)} to {fmt.num(a['max_symmetry_on']['mean'], 2)}, "
                             f"best objective {fmt.num(a['best_objective']['mean'])}")
            findings[f"{sp}, {st}"] = "; ".join(parts)
    first = f"{cfg['spectra'][0]}, {cfg['starts'][0]}"
    findings["headline"] = first + ": " + findings[first]
    _plot(ctx, cfg)
    return {"findings": findings, "tables": ["## Per setting: the range of the degree of symmetry each knob reaches\n\n" + fmt.md_table(
        ["spectrum", "start", "method", "least symmetry", "objective there", "best objective", "largest symmetry (knob > 0)"], rows)]}


def _plot(ctx, cfg) -> None:
    settings = [(sp, st) for sp in cfg["spectra"] for st in cfg["starts"]]
    fig, axes = ctx.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.6), squeeze=False)
    for ax, (sp, st) in zip(axes[0], settings):
        for i, m in enumerate(cfg["methods"]):
            if m not in _methods(cfg, st):
                continue
            rows = ctx.rows(cell(m, spectrum=sp, start=st))
            sym = np.mean([r["symmetry"] for r in rows], axis=0)
            obj = np.mean([r["objective"] for r in rows], axis=0)
            ax.plot(sym, obj, marker="o", color=f"C{i}", label=m, alpha=0.8)
        ax.set_xlabel("degree of symmetry")
        ax.set_ylabel("objective l(w)")
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_title(f"{sp} spectrum, start {st} the mirrors", fontsize=9)
        ax.legend(fontsize=7)
    ctx.save(fig, "e4_symmetry_control")


EXPERIMENT = Experiment(id="e4", title="symmetry control: objective vs degree of symmetry per method", claim=CLAIM, trial=trial,
                        design=design, report=report, defaults=DEFAULTS, quick=QUICK, n_min=5, n_max=5)
