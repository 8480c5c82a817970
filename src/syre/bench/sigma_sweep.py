"""sigma-sweep: how large theta0 must be, per parameter kind, and what the default should be.

syre breaks a symmetry with a force proportional to ``gamma * sigma0``; this study measures the
outcome as a function of the scale of sigma0 relative to each parameter's init std
(``sigma0 = "lecun:X"``: X / sqrt(fan_in); a bias takes its layer's fan-in), from X = 0.01 (the
paper's "1% of the LeCun init std") to X = 3. Three parts (``parts``):

1. **scale**: the experiments in ``experiments`` (E1, E5, E6 by default; E7 and E8 have adapters
   but are slow, run them apart), each run through its own trial function, at each gamma of ``gammas[id]``: weight decay (the control,
   sigma0 = 0), basic syre (D = I) at every scale of ``scales``, and no decay once (gamma = 0).
   Per trial, besides the experiment's own metrics: ``dist_wd``, the relative distance
   ``||phi - phi_wd|| / ||phi_wd||`` of all trained weights from weight decay's trained weights
   (same seed: same init, data order and anchors), and ``pull_ratio``, the median over the
   weights (by element) of ``Syre.pull_ratios()``: the per-step pull ``lr * gamma * sigma0``
   over the RMS of the optimizer's own update in the first steps.
2. **norm**: the rule for 1-D parameters without a fan-in. A ReLU MLP with LayerNorm after every
   hidden Linear (Fashion-MNIST, Adam, decoupled decay at ``norm_gamma``), weights at
   ``study_scale`` x the LeCun std, and the LayerNorm weights and biases anchored by each rule
   of ``norm_rules``: ``origin`` (sigma0 = 0, plain weight decay there), ``unit``
   (``study_scale * 0.01``, the library's rule), ``width`` (``study_scale / sqrt(n)``, n the
   layer's width, as if a fan-in), ``one`` (``study_scale * 1``: "fan-in 1"), ``excluded`` (no
   decay at all on them). ``bias-origin`` anchors Linear biases at the origin instead of at their
   layer's fan-in (norm rule ``unit``). Metrics: accuracy, rank, share of dead hidden units,
   median |LayerNorm weight|.
3. **spread**: the default of ``d_spread`` (eps of ``D_ii ~ U(1 - eps, 1 + eps)``). (a) The
   rotation trap of E0 (a deep linear net started on a rotation mirror orthogonal to the
   anchors): the distance from the mirror after ``trap_steps`` steps, per eps; (b) E5's trial at
   ``spread_gamma`` with syre AR at ``study_scale`` per eps: what a spread costs.

The verdict checks the library's default (``DEFAULT_SIGMA0_SCALE``, ``DEFAULT_D_SPREAD``): no
significant harm against weight decay where weight decay helps, a higher rank wherever weight
decay collapses it, the distance from weight decay growing with the scale, and AR at the default
spread leaving the rotation mirror. docs/defaults.md reads the results.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

import syre
from syre.anchors import DEFAULT_D_SPREAD, DEFAULT_SIGMA0_SCALE, resolve_sigma0
from syre.diagnostics.metrics import effective_rank, numerical_rank
from syre.select import NORM_TYPES, collect

from . import stats
from .arms import ARMS, capture
from .common import accuracy, dataset, lecun_init_, train_epochs
from .registry import EXPERIMENT_MODULES, Experiment, get_experiment
from .runner import md_cell

CLAIM = (
    "At the library's default sigma0 scale (a multiple of each parameter's init std), syre restores the rank that weight "
    "decay collapses and is not worse than weight decay where weight decay helps; at 1% of the init std syre is hard to "
    "tell from weight decay."
)

#: Weight decay "collapses" a rank metric when its mean falls below this share of no decay's.
COLLAPSE_SHARE = 0.9

#: id -> {"call", "perf" (metric), "better" ("max" | "min"), "rank" (a rank metric, higher is fuller),
#: "also" (more metrics for the table)}; ``call(module, cfg, arm, seed, gamma) -> metrics``. An experiment
#: not listed here can define ``SIGMA_SWEEP`` (the same dict) in its module.
Adapter = Dict[str, Any]


def _call_gamma_key(mod, cfg, arm, seed, gamma):
    return mod.trial({**cfg, "gamma": gamma}, arm, seed)


def _call_e5(mod, cfg, arm, seed, gamma):
    return mod.trial(cfg, arm, seed, cfg["datasets"][0], gamma)


def _call_gamma_arg(mod, cfg, arm, seed, gamma):
    return mod.trial(cfg, arm, seed, gamma)


ADAPTERS: Dict[str, Adapter] = {
    "e1": {"call": _call_gamma_key, "perf": "test_loss", "better": "min", "rank": "distinct_units"},
    "e5": {"call": _call_e5, "perf": "test_acc", "better": "max", "rank": "rank_last"},
    "e6": {"call": _call_gamma_arg, "perf": "recon", "better": "min", "rank": "rank_mu", "also": ["active_units"]},
    "e7": {"call": _call_gamma_key, "perf": "probe_proj", "better": "max", "rank": "eff_rank_proj",
           "also": ["probe_backbone", "lowrank_proj"]},
    "e8": {"call": _call_gamma_key, "perf": "acc_last", "better": "max", "rank": "eff_rank_last", "also": ["dead_last"]},
}

DEFAULTS: Dict[str, Any] = {
    "parts": ["scale", "norm", "spread"],
    # E7 and E8 take about 10 s a trial on one core: run them apart (docs/defaults.md), e.g.
    # --set 'experiments=["e7","e8"]' --set 'parts=["scale"]' --set 'scales=[0.01,0.1,0.5,1,3]' --seeds 3
    "experiments": ["e1", "e5", "e6"],
    "scales": [0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 3.0],
    "gammas": {"e1": [0.01, 0.1], "e5": [1.0, 10.0], "e6": [3.0, 10.0], "e7": [10.0], "e8": [10.0]},
    # overrides of each experiment's own configuration (sized for the sweep)
    "settings": {"e1": {"steps": 1500}, "e5": {"datasets": ["fashion"], "epochs": {"fashion": 4, "digits": 10}},
                 "e6": {"epochs": 6}, "e7": {"steps": 150}, "e8": {"tasks": 10, "epochs": 2, "n_per_task": 1000}},
    "study_scale": DEFAULT_SIGMA0_SCALE,
    "norm_rules": ["origin", "unit", "width", "one", "excluded", "bias-origin"],
    "norm_gamma": 10.0,
    "norm_width": 128,
    "norm_depth": 3,
    "norm_epochs": 4,
    "norm_lr": 1e-3,
    "norm_batch": 64,
    "n_train": 5000,
    "n_test": 2000,
    "size": 14,
    "n_rank": 1000,
    "rank_rtol": 1e-3,
    "spreads": [0.0, 0.01, 0.1, 0.3, 0.5],
    "spread_gamma": 10.0,
    "trap_steps": 1500,
    "trap_lr": 0.05,
    "trap_gamma": 0.1,
    "trap_sigma0": 0.1,
    # "not worse than weight decay": by at most this much (absolute for accuracies, relative for losses)
    "harm_margin": {"test_acc": 0.01, "test_loss": 0.05, "recon": 0.02},
}
QUICK: Dict[str, Any] = {
    "experiments": ["e1", "e5"],
    "scales": sorted({0.01, DEFAULT_SIGMA0_SCALE}),
    "gammas": {"e1": [0.1], "e5": [10.0]},
    "settings": {"e1": {"steps": 150, "n_train": 64, "n_test": 128},
                 "e5": {"datasets": ["digits"], "epochs": {"fashion": 1, "digits": 2}, "width": 32, "n_rank": 200}},
    "norm_rules": ["unit", "one"],
    "norm_width": 32,
    "norm_epochs": 1,
    "n_train": 600,
    "n_test": 300,
    "n_rank": 200,
    "spreads": [0.0, 0.1],
    "trap_steps": 200,
}


def _weights(models: Sequence[nn.Module]) -> torch.Tensor:
    return torch.cat([p.detach().double().reshape(-1) for m in models for p in m.parameters()])


def _pull_ratio(syres) -> Optional[float]:
    """Median over elements of the measured pull / update ratios of the ``Syre`` objects ``syres``."""
    vals, weights = [], []
    for s in syres:
        if s is None:
            continue
        sizes = {r["name"]: r["numel"] for r in s.coverage()}
        for name, r in s.pull_ratios().items():
            vals.append(r)
            weights.append(sizes.get(name, 1))
    if not vals:
        return None
    order = np.argsort(vals)
    cum = np.cumsum(np.asarray(weights, dtype=float)[order])
    return float(np.asarray(vals)[order][np.searchsorted(cum, cum[-1] / 2.0)])


def _scalars(metrics: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in metrics.items() if not isinstance(v, (list, tuple, dict))}


def available(ids: Sequence[str]) -> List[str]:
    """The ids of ``ids`` that are registered and whose module exists (the others are skipped with a note)."""
    return [i for i in ids if i in EXPERIMENT_MODULES and importlib.util.find_spec(EXPERIMENT_MODULES[i]) is not None]


def _gammas(cfg, exp_id: str, exp_cfg: Dict[str, Any]) -> List[float]:
    g = cfg["gammas"].get(exp_id)
    if g is None:
        if "gamma" not in exp_cfg:
            raise ValueError(f"Invalid gammas: no entry for {exp_id!r} and its configuration has no 'gamma'; "
                             f"set gammas={{\"{exp_id}\": [...]}}")
        base = float(exp_cfg["gamma"])
        g = [base, 10.0 * base]
    return [float(x) for x in g]


# ----------------------------------------------------------------------------- part 1: scale
def run_scale(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    ids = available(cfg["experiments"])
    plan, no_adapter = [], []
    for exp_id in ids:
        mod = importlib.import_module(EXPERIMENT_MODULES[exp_id])
        ad = ADAPTERS.get(exp_id) or getattr(mod, "SIGMA_SWEEP", None)
        if ad is None:
            no_adapter.append(exp_id)
            continue
        ecfg = get_experiment(exp_id).config(overrides=cfg["settings"].get(exp_id, {}))
        plan.append((exp_id, mod, ecfg, ad, _gammas(cfg, exp_id, ecfg)))
    scales = [float(s) for s in cfg["scales"]]
    if any(s <= 0 or not math.isfinite(s) for s in scales):
        raise ValueError(f"Invalid scales: {scales!r}; expected finite numbers > 0")
    return {"plan": plan, "scales": scales, "skipped": [i for i in cfg["experiments"] if i not in ids] + no_adapter}


def _one(mod, ecfg, ad, arm, seed, gamma, extra=None):
    with capture() as seen:
        t0 = time.perf_counter()
        metrics = _scalars(ad["call"](mod, {**ecfg, **(extra or {})}, arm, seed, gamma))
        metrics["time_s"] = time.perf_counter() - t0
    return metrics, [m for m, _ in seen], [h for _, h in seen]


def scale_trials(ctx, part) -> None:
    seeds = ctx.seeds
    for exp_id, mod, ecfg, ad, gammas in part["plan"]:
        for seed in seeds:
            m, _, _ = _one(mod, ecfg, ad, ARMS["none"], seed, 0.0)
            ctx.record("none", seed, {"experiment": exp_id, "gamma": 0.0}, **m)
            ctx.step(f"{exp_id} none seed {seed}")
        for gamma in gammas:
            for seed in seeds:
                m, models, _ = _one(mod, ecfg, ad, ARMS["wd"], seed, gamma)
                ref = _weights(models)
                ctx.record("wd", seed, {"experiment": exp_id, "gamma": gamma}, dist_wd=0.0, **m)
                ctx.step(f"{exp_id} wd gamma={gamma:g} seed {seed}")
                for scale in part["scales"]:
                    m, models, handles = _one(mod, ecfg, ad, ARMS["syre"], seed, gamma, {"sigma0": f"lecun:{scale!r}"})
                    w = _weights(models)
                    dist = float((w - ref).norm() / ref.norm().clamp_min(1e-300)) if w.shape == ref.shape else None
                    ctx.record("syre", seed, {"experiment": exp_id, "gamma": gamma, "scale": scale}, dist_wd=dist,
                               pull_ratio=_pull_ratio([h.syre for h in handles]), **m)
                    ctx.step(f"{exp_id} syre scale={scale:g} gamma={gamma:g} seed {seed}")


def scale_size(part, n_seeds) -> int:
    return sum(n_seeds * (1 + len(g) * (1 + len(part["scales"]))) for _, _, _, _, g in part["plan"])


# ----------------------------------------------------------------------------- part 2: norm
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


def norm_sigma0(rule: str, model: nn.Module, scale: float) -> Callable[[str, torch.Tensor], float]:
    """The sigma0 callable of a norm-study rule (see the module docstring)."""
    table = {}
    for info in collect(model).values():
        s = resolve_sigma0(f"lecun:{scale!r}", info.name, info.param, info.module, info.attr)
        if isinstance(info.module, NORM_TYPES):
            n = info.param.numel()
            s = {"origin": 0.0, "unit": scale * 0.01, "width": scale / math.sqrt(n), "one": scale, "excluded": 0.0,
                 "bias-origin": scale * 0.01}[rule]
        elif rule == "bias-origin" and info.param.dim() == 1:
            s = 0.0
        table[info.name] = s
    return lambda name, p: table[name]


NORM_RULES = ("origin", "unit", "width", "one", "excluded", "bias-origin")


def norm_trial(cfg: Dict[str, Any], rule: str, seed: int, ref: Optional[torch.Tensor] = None) -> tuple:
    """Train the LayerNorm MLP under ``rule`` (or ``"wd"``/``"none"``); (metrics, trained weights)."""
    data = dataset("fashion", n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"])
    net = NormMLP(data.x_train.shape[1], cfg["norm_width"], cfg["norm_depth"], 10)
    lecun_init_(net, torch.Generator().manual_seed(seed), math.sqrt(2.0))
    opt = torch.optim.Adam(net.parameters(), lr=cfg["norm_lr"])
    gamma = cfg["norm_gamma"]
    s = None
    if rule == "wd":
        s = syre.attach(opt, net, gamma=gamma, sigma0=0.0, d_spread=0.0, seed=seed)
    elif rule == "excluded":
        s = syre.attach(opt, net, gamma=gamma, sigma0=f"lecun:{cfg['study_scale']!r}", d_spread=0.0, seed=seed,
                        exclude=NORM_TYPES)
    elif rule != "none":
        s = syre.attach(opt, net, gamma=gamma, sigma0=norm_sigma0(rule, net, float(cfg["study_scale"])), d_spread=0.0, seed=seed)
    loss = train_epochs(net, opt, data.x_train, data.y_train, epochs=cfg["norm_epochs"], batch=cfg["norm_batch"], seed=seed)
    keep: list = []
    with torch.no_grad():
        net.eval()
        net(data.x_test[: cfg["n_rank"]], keep)
    feats = keep[-1]
    dead = float(np.mean([float((f.abs().amax(0) == 0).float().mean()) for f in keep]))
    ln_w = torch.cat([n.weight.detach().abs() for n in net.norms])
    w = _weights([net])
    out = {
        "test_acc": accuracy(net, data.x_test, data.y_test),
        "train_loss": loss,
        "rank_last": numerical_rank(feats, rtol=cfg["rank_rtol"]),
        "eff_rank_last": effective_rank(feats),
        "dead_units": dead,
        "ln_weight_median": float(ln_w.median()),
        "pull_ratio": _pull_ratio([s]),
    }
    if ref is not None:
        out["dist_wd"] = float((w - ref).norm() / ref.norm())
    return out, w


def norm_trials(ctx) -> None:
    cfg = ctx.config
    rules = list(cfg["norm_rules"])
    bad = [r for r in rules if r not in NORM_RULES]
    if bad:
        raise ValueError(f"Invalid norm_rules: {bad!r}; expected some of {list(NORM_RULES)}")
    g = float(cfg["norm_gamma"])
    for seed in ctx.seeds:
        m, _ = norm_trial(cfg, "none", seed)
        ctx.record("norm:none", seed, {"gamma": 0.0}, **m)
        ctx.step(f"norm none seed {seed}")
        m, ref = norm_trial(cfg, "wd", seed)
        ctx.record("norm:wd", seed, {"gamma": g}, dist_wd=0.0, **m)
        ctx.step(f"norm wd seed {seed}")
        for rule in rules:
            m, _ = norm_trial(cfg, rule, seed, ref)
            ctx.record(f"norm:{rule}", seed, {"gamma": g}, **m)
            ctx.step(f"norm {rule} seed {seed}")


# ----------------------------------------------------------------------------- part 3: spread
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


def spread_trials(ctx) -> None:
    cfg = ctx.config
    spreads = [float(e) for e in cfg["spreads"]]
    if any(not 0.0 <= e < 1.0 for e in spreads):
        raise ValueError(f"Invalid spreads: {spreads!r}; expected values in [0, 1)")
    exp = get_experiment("e5")
    ecfg = exp.config(overrides=cfg["settings"].get("e5", {}))
    mod = importlib.import_module(EXPERIMENT_MODULES["e5"])
    g = float(cfg["spread_gamma"])
    for eps in spreads:
        for seed in ctx.seeds:
            ctx.record("trap", seed, {"d_spread": eps}, mirror_distance=trap_distance(seed, eps, cfg))
            ctx.step(f"trap d_spread={eps:g} seed {seed}")
    for eps in spreads:
        for seed in ctx.seeds:
            m, _, _ = _one(mod, ecfg, ADAPTERS["e5"], ARMS["syre_ar"], seed, g,
                           {"sigma0": f"lecun:{float(cfg['study_scale'])!r}", "d_spread": eps})
            ctx.record("spread", seed, {"d_spread": eps}, **m)
            ctx.step(f"e5 syre d_spread={eps:g} seed {seed}")


# ----------------------------------------------------------------------------- run and report
def run(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    parts = list(cfg["parts"])
    bad = [p for p in parts if p not in ("scale", "norm", "spread")]
    if bad or not parts:
        raise ValueError(f"Invalid parts: {parts!r}; expected a non-empty subset of ['scale', 'norm', 'spread']")
    n = len(ctx.seeds)
    total = 0
    part = None
    if "scale" in parts:
        part = run_scale(ctx)
        total += scale_size(part, n)
    if "norm" in parts:
        total += n * (2 + len(cfg["norm_rules"]))
    if "spread" in parts:
        total += 2 * n * len(cfg["spreads"])
    ctx.progress(total)
    if part is not None:
        scale_trials(ctx, part)
    if "norm" in parts:
        norm_trials(ctx)
    if "spread" in parts:
        spread_trials(ctx)
    return report(ctx, part)


def _cell(vals: Sequence[float], fmt: str = ".3g") -> str:
    d = stats.describe(vals)
    if not d["n"]:
        return "-"
    return f"{d['mean']:{fmt}} ± {d['std']:.2g}"


def report(ctx, part) -> Dict[str, Any]:
    cfg = ctx.config
    tests: List[Dict[str, Any]] = []
    tables: List[str] = []
    findings: Dict[str, str] = {}
    notes: List[str] = [
        "sigma0 = scale x the LeCun init std 1/sqrt(fan_in) of each parameter (a bias takes its layer's fan-in); "
        f"basic syre (D = I) in the scale part; library defaults: scale {DEFAULT_SIGMA0_SCALE:g}, d_spread {DEFAULT_D_SPREAD:g}.",
        "dist_wd: ||phi - phi_wd|| / ||phi_wd|| over all trained weights, against weight decay at the same gamma and seed; "
        "pull_ratio: per-step pull lr * gamma * sigma0 over the RMS of the optimizer's own update (first steps; median over elements).",
    ]
    if part is not None:
        if part["skipped"]:
            notes.append(f"not registered here or without a sigma-sweep adapter (ADAPTERS, or SIGMA_SWEEP in the "
                         f"experiment's module), skipped: {part['skipped']}")
        scale_report(ctx, part, tests, tables, findings)
    if "norm" in cfg["parts"]:
        norm_report(ctx, tables, findings, tests)
    if "spread" in cfg["parts"]:
        spread_report(ctx, tables, findings, tests)
    _plots(ctx, part)
    return {
        "tests": tests,
        "rule": f"at the library's default scale ({DEFAULT_SIGMA0_SCALE:g} x init std): syre is not significantly worse than "
        "weight decay wherever weight decay is at least as good as no decay (the one-sided paired t-test of harm does not "
        f"reach p < 0.05); wherever weight decay collapses the rank metric (significantly, below {COLLAPSE_SHARE:g} of no "
        "decay's), syre's is above weight decay's (one-sided paired t-test, p < 0.05); and the distance from weight "
        "decay's weights grows with the scale",
        "findings": findings,
        "tables": tables,
        "notes": notes,
    }



def scale_report(ctx, part, tests, tables, findings) -> None:
    cfg = ctx.config
    scales = part["scales"]
    default = DEFAULT_SIGMA0_SCALE if DEFAULT_SIGMA0_SCALE in scales else None
    if default is None:
        ctx.log(f"the library's default scale {DEFAULT_SIGMA0_SCALE:g} is not in the grid: no verdict tests on it")
    heads = []
    for exp_id, mod, ecfg, ad, gammas in part["plan"]:
        perf, rank, better = ad["perf"], ad["rank"], ad["better"]
        alt_better = "greater" if better == "max" else "less"
        margin0 = float(cfg["harm_margin"].get(perf, 0.0))
        none = {"experiment": exp_id, "gamma": 0.0}
        rows = [f"### {exp_id}: {perf} ({'higher' if better == 'max' else 'lower'} is better), {rank}, distance from weight decay",
                "", f"no decay: {perf} {_cell(ctx.values('none', perf, none), '.4g')}, {rank} {_cell(ctx.values('none', rank, none))}"
                + "".join(f", {a} {_cell(ctx.values('none', a, none))}" for a in ad.get("also", [])) + ".", ""]
        also = list(ad.get("also", []))
        rows.append("| gamma | sigma0 scale | " + f"{md_cell(perf)} | {md_cell(rank)} | "
                    + "".join(f"{md_cell(a)} | " for a in also) + "dist_wd | pull/update | vs wd (p) |")
        rows.append("|---|---|---|---|" + "---|" * len(also) + "---|---|---|")
        for gamma in gammas:
            wp = {"experiment": exp_id, "gamma": gamma}
            wd_perf = ctx.values("wd", perf, wp)
            # relative margin for losses, absolute for accuracies
            margin = margin0 * abs(float(np.mean(wd_perf))) if (better == "min" and wd_perf) else margin0
            rows.append(f"| {gamma:g} | wd (0) | {_cell(wd_perf, '.4g')} | {_cell(ctx.values('wd', rank, wp))} | "
                        + "".join(f"{_cell(ctx.values('wd', a, wp))} | " for a in also) + "0 | - | - |")
            hurt, helps = [], []
            for s in scales:
                p = {**wp, "scale": s}
                v = ctx.values("syre", perf, p)
                better_t = stats.compare(f"{exp_id} gamma {gamma:g}: syre at {s:g} better than wd", v, wd_perf, metric=perf,
                                         arms=[f"syre[{s:g}]", "wd"], alternative=alt_better)
                worse_t = stats.compare(f"{exp_id} gamma {gamma:g}: syre at {s:g} worse than wd", v, wd_perf, metric=perf,
                                        arms=[f"syre[{s:g}]", "wd"], alternative="less" if better == "max" else "greater")
                verdict = ("better" if better_t["passed"] else "worse" if worse_t["passed"] else "same")
                pval = better_t["p"] if better_t["passed"] else worse_t["p"] if worse_t["passed"] else None
                if better_t["passed"]:
                    helps.append(s)
                if worse_t["passed"]:
                    hurt.append(s)
                rows.append(f"| {gamma:g} | {s:g} | {_cell(v, '.4g')} | {_cell(ctx.values('syre', rank, p))} | "
                            + "".join(f"{_cell(ctx.values('syre', a, p))} | " for a in also)
                            + f"{_cell(ctx.values('syre', 'dist_wd', p), '.2g')} | {_cell(ctx.values('syre', 'pull_ratio', p), '.2g')} | "
                            f"{verdict}{'' if pval is None else f' ({pval:.2g})'} |")
                if s == default:
                    _default_tests(ctx, tests, exp_id, gamma, s, perf, rank, better, v, wd_perf, worse_t, better_t, margin)
            d_lo = ctx.values("syre", "dist_wd", {**wp, "scale": scales[0]})
            d_hi = ctx.values("syre", "dist_wd", {**wp, "scale": scales[-1]})
            tests.append(stats.compare(f"{exp_id}, gamma {gamma:g}: distance from weight decay grows with the scale", d_hi, d_lo,
                                       metric="dist_wd", arms=[f"syre[{scales[-1]:g}]", f"syre[{scales[0]:g}]"], alternative="greater"))
            findings[f"{exp_id} gamma {gamma:g}"] = (f"better than wd at scales {helps or 'none'}; worse at {hurt or 'none'}")
            heads.append(f"{exp_id}@{gamma:g}: better {helps or '-'}, worse {hurt or '-'}")
        tables.append("\n".join(rows) + "\n")
    findings["headline"] = "; ".join(heads)


def _default_tests(ctx, tests, exp_id, gamma, s, perf, rank, better, v, wd_perf, worse_t, better_t, margin) -> None:
    """The verdict's tests on the library's default scale ``s`` at one experiment and gamma."""
    alt_better = "greater" if better == "max" else "less"
    none = {"experiment": exp_id, "gamma": 0.0}
    wp = {"experiment": exp_id, "gamma": gamma}
    # 1. no significant harm where weight decay does its job (is at least as good as no decay)
    none_perf = ctx.values("none", perf, none)
    wd_ok = bool(none_perf) and (np.mean(wd_perf) >= np.mean(none_perf) if better == "max"
                                 else np.mean(wd_perf) <= np.mean(none_perf))
    harm = dict(worse_t)
    harm.update(name=f"{exp_id}, gamma {gamma:g}: no significant harm at the default scale {s:g}"
                + ("" if wd_ok else " (weight decay itself is worse than no decay here)"),
                kind="no significant harm",
                rule=f"not ({worse_t['rule']}): passed when syre at {s:g} is not significantly worse than weight decay",
                passed=None if worse_t["passed"] is None else not worse_t["passed"])
    tests.append(harm if wd_ok else stats.secondary(harm))
    tests.append(stats.secondary(stats.compare(
        f"{exp_id}, gamma {gamma:g}: the default scale {s:g} is non-inferior to weight decay (margin {margin:.3g})", v, wd_perf,
        metric=perf, arms=[f"syre[{s:g}]", "wd"], alternative=alt_better, margin=-margin)))
    tests.append(stats.secondary(better_t))
    # 2. where weight decay collapses the representation (rank below 90% of no decay's), the default raises it
    rk_wd, rk_none = ctx.values("wd", rank, wp), ctx.values("none", rank, none)
    collapse = stats.compare("", rk_wd, rk_none, metric=rank, arms=["wd", "none"], alternative="less")
    if collapse["passed"] and np.mean(rk_wd) < COLLAPSE_SHARE * np.mean(rk_none):
        tests.append(stats.compare(
            f"{exp_id}, gamma {gamma:g}: weight decay collapses {rank}; the default scale {s:g} raises it",
            ctx.values("syre", rank, {**wp, "scale": s}), rk_wd, metric=rank, arms=[f"syre[{s:g}]", "wd"],
            alternative="greater"))


def norm_report(ctx, tables, findings, tests) -> None:
    cfg = ctx.config
    g = float(cfg["norm_gamma"])
    cols = ("test_acc", "rank_last", "dead_units", "ln_weight_median", "dist_wd", "pull_ratio")
    rows = [f"### 1-D parameters: LayerNorm MLP, gamma {g:g}, weights at {float(cfg['study_scale']):g} x LeCun std", "",
            "| rule | " + " | ".join(cols) + " | acc vs unit (p) |", "|---|" + "---|" * (len(cols) + 1)]
    base = ctx.values("norm:unit", "test_acc", {"gamma": g})
    for arm, p in [("norm:none", {"gamma": 0.0}), ("norm:wd", {"gamma": g})] + [(f"norm:{r}", {"gamma": g}) for r in cfg["norm_rules"]]:
        acc = ctx.values(arm, "test_acc", p)
        cmp = "-"
        if arm != "norm:unit" and base and len(acc) == len(base):
            lo = stats.compare("", acc, base, metric="test_acc", arms=[arm, "norm:unit"], alternative="less")
            hi = stats.compare("", acc, base, metric="test_acc", arms=[arm, "norm:unit"], alternative="greater")
            cmp = "lower" if lo["passed"] else "higher" if hi["passed"] else "same"
            pv = lo["p"] if lo["passed"] else hi["p"] if hi["passed"] else None
            cmp += "" if pv is None else f" ({pv:.2g})"
        rows.append(f"| {arm.split(':', 1)[1]} | " + " | ".join(_cell(ctx.values(arm, c, p), '.3g') for c in cols) + f" | {cmp} |")
    tables.append("\n".join(rows) + "\n")
    findings["norm"] = "; ".join(f"{r} acc {_cell(ctx.values(f'norm:{r}', 'test_acc', {'gamma': g}), '.3f')}" for r in cfg["norm_rules"])


def spread_report(ctx, tables, findings, tests) -> None:
    cfg = ctx.config
    rows = [f"### d_spread: rotation trap (distance from the mirror after {cfg['trap_steps']} steps) and E5 at gamma "
            f"{float(cfg['spread_gamma']):g}, scale {float(cfg['study_scale']):g}", "",
            "| d_spread | mirror distance | test_acc | rank_last | acc vs d_spread 0 (p) |", "|---|---|---|---|---|"]
    base = ctx.values("spread", "test_acc", {"d_spread": 0.0})
    for eps in cfg["spreads"]:
        p = {"d_spread": float(eps)}
        acc = ctx.values("spread", "test_acc", p)
        cmp = "-"
        if float(eps) != 0.0 and base:
            lo = stats.compare("", acc, base, metric="test_acc", arms=["", ""], alternative="less")
            cmp = f"lower ({lo['p']:.2g})" if lo["passed"] else "not lower"
        rows.append(f"| {float(eps):g} | {_cell(ctx.values('trap', 'mirror_distance', p), '.2g')} | {_cell(acc, '.4g')} | "
                    f"{_cell(ctx.values('spread', 'rank_last', p))} | {cmp} |")
    tables.append("\n".join(rows) + "\n")
    if DEFAULT_D_SPREAD in [float(e) for e in cfg["spreads"]]:
        tests.append(stats.within(f"AR at the default d_spread {DEFAULT_D_SPREAD:g} leaves the rotation mirror",
                                  ctx.values("trap", "mirror_distance", {"d_spread": DEFAULT_D_SPREAD}), metric="mirror_distance",
                                  low=1e-6, arm="trap", min_n=stats.MIN_N))


def _plots(ctx, part) -> None:
    cfg = ctx.config
    if part is not None and part["plan"]:
        plan = part["plan"]
        scales = part["scales"]
        fig, axes = ctx.subplots(len(plan), 3, figsize=(12, 3.2 * len(plan)), squeeze=False)
        for i, (exp_id, mod, ecfg, ad, gammas) in enumerate(plan):
            for j, metric in enumerate((ad["perf"], ad["rank"], "dist_wd")):
                ax = axes[i][j]
                for k, gamma in enumerate(gammas):
                    wp = {"experiment": exp_id, "gamma": gamma}
                    m = [np.mean(ctx.values("syre", metric, {**wp, "scale": s}) or [np.nan]) for s in scales]
                    sd = [np.std(ctx.values("syre", metric, {**wp, "scale": s}) or [np.nan]) for s in scales]
                    ax.errorbar(scales, m, yerr=sd, marker="o", color=f"C{k}", capsize=2, label=f"syre, gamma {gamma:g}")
                    if metric != "dist_wd":
                        ax.axhline(np.mean(ctx.values("wd", metric, wp)), color=f"C{k}", ls="--", lw=1, label=f"wd, gamma {gamma:g}")
                if metric != "dist_wd":
                    ax.axhline(np.mean(ctx.values("none", metric, {"experiment": exp_id, "gamma": 0.0})), color="k", ls=":", lw=1,
                               label="no decay")
                else:
                    ax.set_yscale("log")
                ax.axvline(DEFAULT_SIGMA0_SCALE, color="grey", lw=0.8)
                ax.set_xscale("log")
                ax.set_xlabel("sigma0 / LeCun init std")
                ax.set_ylabel(metric)
                ax.set_title(exp_id, fontsize=9)
                if j == 0:
                    ax.legend(fontsize=6)
        ctx.save(fig, "sigma_sweep")
        # what "negligible" looks like: the effect against the measured pull / update
        fig, axes = ctx.subplots(1, 2, figsize=(10, 3.8))
        for i, (exp_id, mod, ecfg, ad, gammas) in enumerate(plan):
            none = {"experiment": exp_id, "gamma": 0.0}
            for k, gamma in enumerate(gammas):
                wp = {"experiment": exp_id, "gamma": gamma}
                rk_wd, rk_none = np.mean(ctx.values("wd", ad["rank"], wp) or [np.nan]), np.mean(ctx.values("none", ad["rank"], none) or [np.nan])
                xs, dist, undone = [], [], []
                for s in scales:
                    p = {**wp, "scale": s}
                    r = ctx.values("syre", "pull_ratio", p)
                    if not r:
                        continue
                    xs.append(np.median(r))
                    dist.append(np.median(ctx.values("syre", "dist_wd", p)))
                    gap = rk_none - rk_wd
                    undone.append((np.mean(ctx.values("syre", ad["rank"], p)) - rk_wd) / gap if gap > (1 - COLLAPSE_SHARE) * rk_none else np.nan)
                style = dict(color=f"C{i}", marker="o" if k == 0 else "s", ls="-" if k == 0 else "--", label=f"{exp_id}, gamma {gamma:g}")
                axes[1].plot(xs, dist, **style)
                if not np.all(np.isnan(undone)):
                    axes[0].plot(xs, undone, **style)
        from syre.optim import WEAK_PULL_RATIO

        if not axes[0].get_legend_handles_labels()[0]:
            axes[0].text(0.5, 0.5, "no setting where weight decay\ncollapses the rank", ha="center", va="center",
                         transform=axes[0].transAxes)
            axes[0].set_xlim(axes[1].get_xlim())
        for ax in axes:
            ax.set_xscale("log")
            ax.axvline(WEAK_PULL_RATIO, color="grey", lw=0.8)
            ax.set_xlabel("pull / optimizer update (median over elements, first steps)")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
        axes[0].axhline(0.0, color="k", lw=0.6)
        axes[0].set_ylabel("share of weight decay's rank loss undone")
        axes[0].set_title("where weight decay collapses the rank", fontsize=9)
        axes[1].set_yscale("log")
        axes[1].set_ylabel("distance from weight decay's weights")
        axes[1].set_title("all settings", fontsize=9)
        ctx.save(fig, "sigma_sweep_pull")


EXPERIMENT = Experiment(
    id="sigma-sweep",
    title="sigma0 scale sweep, 1-D parameter rule and d_spread: the evidence behind the defaults",
    claim=CLAIM,
    run=run,
    defaults=DEFAULTS,
    quick=QUICK,
)
