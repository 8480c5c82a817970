"""sigma-sweep: how large theta0 must be, the study the library's default sigma0 was chosen by.

syre breaks a symmetry with a force proportional to ``gamma * sigma0``; this study measures the
outcome against the scale of sigma0 relative to each parameter's init std (``syre_<X>x`` arms:
``sigma0 = "lecun:X"``), from X = 0.01 (the paper's "1% of the LeCun init std") to X = 3, in the
experiments of ``experiments`` (E1, E5 on Fashion-MNIST, E6 by default), each run through **its own
trial function and its own configuration** (``settings`` may override keys; by default none, so a
cell here is the same protocol as the experiment's), at each gamma of ``gammas``: weight decay, syre
at every scale, and no decay. E7 and E8 carry their own scale arms (``syre_0.3x``, ``syre``,
``syre_3x``), so their sigma0 curves live in their own runs, under one protocol.

The sweep scores on the validation split (``eval_split = "val"``) and runs on seeds 0-4 (the
``sweep`` range): it is the selection study of the default, and the held-out check
(``syre.bench.heldout``) judges the default on other experiments' evaluation seeds.

Per syre trial, besides the experiment's metrics: ``dist_wd`` (``||phi - phi_wd|| / ||phi_wd||``
against weight decay's trained weights, same seed and gamma) and ``pull_ratio`` (median over
elements of ``Syre.pull_ratios()``). Side studies (``studies.py``): the 1-D parameter rule and the
default ``d_spread``.

Primary tests (declared settings, fixed before the runs): at every ``collapse_settings`` entry,
syre at the library's default scale has a higher rank metric than weight decay; at every
``helps_settings`` entry (where weight decay beats no decay), it is non-inferior to weight decay
(``harm_margin``: absolute for accuracies, relative for losses); AR at the default ``d_spread``
leaves the rotation mirror. The report re-applies the rule the default was chosen by (the largest
scale never significantly worse than weight decay where it helps, and raising the rank wherever it
collapses) and states which scale this run picks.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

import syre

from . import fmt
from .arms import ARMS, WEAK_PULL, Arm, arms as get_arms, capture, default_scale
from .protocol import Design, Test, cell
from .registry import Experiment, get_experiment
from .studies import NORM_RULES, norm_trial, pull_ratio, trap_distance, weights

CLAIM = ("At the library's default sigma0 scale (a multiple of each parameter's init std), syre restores the rank that weight "
         "decay collapses and is not worse than weight decay where weight decay helps; at 1% of the init std syre is hard to "
         "tell from weight decay.")

DEFAULTS: Dict[str, Any] = {
    "eval_split": "val",
    "experiments": ["e1", "e5", "e6"],
    "scales": [0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 3.0],
    "gammas": {"e1": [0.01, 0.1], "e5": [1.0, 10.0], "e6": [3.0, 10.0]},
    "settings": {"e5": {"dataset": "fashion"}},
    "collapse_settings": [["e5", 10.0], ["e6", 10.0]],
    "helps_settings": [["e1", 0.01]],
    "harm_margin": {"test_acc": 0.01, "test_loss": 0.05, "recon": 0.02, "excess_risk": 0.05},
    "parts": ["scale", "norm", "spread"],
    "study_scale": 1.0,
    "norm_rules": list(NORM_RULES),
    "norm_gamma": 10.0, "norm_width": 128, "norm_depth": 3, "norm_epochs": 4, "norm_lr": 1e-3, "norm_batch": 64,
    "n_train": 5000, "n_test": 2000, "size": 14, "n_rank": 1000, "rank_rtol": 1e-3,
    "spreads": [0.0, 0.01, 0.1, 0.3, 0.5],
    "spread_gamma": 10.0, "trap_steps": 1500, "trap_lr": 0.05, "trap_gamma": 0.1, "trap_sigma0": 0.1,
}
QUICK: Dict[str, Any] = {
    "experiments": ["e1", "e5"], "scales": [0.01, 1.0], "gammas": {"e1": [0.1], "e5": [10.0]},
    "settings": {"e1": {"steps": 150, "n_train": 64, "n_test": 128},
                 "e5": {"dataset": "digits", "epochs": {"fashion": 1, "digits": 2}, "width": 32, "n_rank": 200}},
    "collapse_settings": [["e5", 10.0]], "helps_settings": [["e1", 0.1]],
    "norm_rules": ["unit", "one"], "norm_width": 32, "norm_epochs": 1, "n_train": 600, "n_test": 300, "n_rank": 200,
    "spreads": [0.0, 0.1], "trap_steps": 200,
}

_WD: Dict[tuple, Any] = {}  # (experiment, gamma, seed, split) -> weight decay's trained weights, for dist_wd


def _scale_arm(s: float) -> Arm:
    return get_arms([f"syre_{s:g}x"])[0]


def _target_cfg(cfg: Dict[str, Any], exp_id: str) -> Dict[str, Any]:
    t = get_experiment(exp_id).config(overrides=cfg["settings"].get(exp_id, {}))
    return {**t, "eval_split": cfg["eval_split"], "gamma": float(cfg["gamma"])}


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """One cell of the sweep: an experiment's own trial (scale part), or a side study's."""
    if arm.tag == "norm":
        return norm_trial(cfg, arm.name.split(":", 1)[1], seed)[0]
    if arm.tag == "trap":
        return {"mirror_distance": trap_distance(seed, float(cfg["d_spread"]), cfg)}
    if arm.tag == "spread":
        tcfg = {**_target_cfg({**cfg, "gamma": cfg["spread_gamma"]}, "e5"), "d_spread": float(cfg["d_spread"])}
        return _scalars(get_experiment("e5").trial(
            tcfg, ARMS["syre_ar"].with_name("syre_ar", sigma0=f"lecun:{cfg['study_scale']!r}"), seed))
    exp_id = cfg["experiment"]
    tcfg = _target_cfg(cfg, exp_id)
    with capture() as seen:
        metrics = _scalars(get_experiment(exp_id).trial(tcfg, arm, seed))
    key = (exp_id, float(cfg["gamma"]), seed, cfg["eval_split"])
    if arm.name == "wd":
        _WD[key] = weights([m for m, _ in seen])
        metrics["dist_wd"] = 0.0
    elif arm.decay == "syre":
        if key not in _WD:
            trial(cfg, ARMS["wd"], seed)
        w, ref = weights([m for m, _ in seen]), _WD[key]
        metrics["dist_wd"] = float((w - ref).norm() / ref.norm().clamp_min(1e-300)) if w.shape == ref.shape else None
        metrics["pull_ratio"] = pull_ratio([h.syre for _, h in seen])
    return metrics


def _scalars(m: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in m.items() if not isinstance(v, (list, tuple, dict))}


def design(cfg: Dict[str, Any]) -> Design:
    parts = list(cfg["parts"])
    if not parts or any(p not in ("scale", "norm", "spread") for p in parts):
        raise ValueError(f"Invalid parts: {parts!r}; expected a non-empty subset of ['scale', 'norm', 'spread']")
    scales = [float(s) for s in cfg["scales"]]
    if any(not s > 0 for s in scales):
        raise ValueError(f"Invalid scales: {scales!r}; expected numbers > 0")
    default = default_scale()
    arms = [ARMS["none"], ARMS["wd"]] + [_scale_arm(s) for s in scales]
    cells, tests = [], []
    if "scale" in parts:
        for e in cfg["experiments"]:
            exp = get_experiment(e)
            if exp.perf is None or exp.rank is None:
                raise ValueError(f"Invalid experiments: {e!r} declares no perf/rank metric for the sweep")
            if e not in cfg["gammas"]:
                raise ValueError(f"Invalid gammas: no entry for {e!r}; set gammas={{\"{e}\": [...]}}")
            cells.append(cell("none", experiment=e, gamma=0.0))
            for g in cfg["gammas"][e]:
                cells += ([cell("wd", experiment=e, gamma=float(g))]
                          + [cell(_scale_arm(s).name, experiment=e, gamma=float(g)) for s in scales])
                for s in scales:
                    c = cell(_scale_arm(s).name, experiment=e, gamma=float(g))
                    side = "greater" if exp.better == "max" else "less"
                    tests += [Test(f"{e} gamma {g:g}: syre at {s:g}x better than weight decay", exp.perf, c,
                                   cell("wd", experiment=e, gamma=float(g)), direction=side, role="secondary"),
                              Test(f"{e} gamma {g:g}: syre at {s:g}x worse than weight decay (harm)", exp.perf, c,
                                   cell("wd", experiment=e, gamma=float(g)), direction="less" if side == "greater" else "greater",
                                   role="secondary"),
                              Test(f"{e} gamma {g:g}: syre at {s:g}x raises {exp.rank} above weight decay's", exp.rank, c,
                                   cell("wd", experiment=e, gamma=float(g)), role="secondary")]
        if default in scales:
            d = _scale_arm(default).name
            for e, g in cfg["collapse_settings"]:
                rank = get_experiment(e).rank
                tests.append(Test(f"{e} gamma {g:g}: the default scale raises {rank} above weight decay's", rank,
                                  cell(d, experiment=e, gamma=float(g)), cell("wd", experiment=e, gamma=float(g))))
            for e, g in cfg["helps_settings"]:
                exp = get_experiment(e)
                m = float(cfg["harm_margin"][exp.perf])
                ni = dict(threshold=-m) if exp.better == "max" else dict(ratio=1.0 + m, direction="less")
                tests.append(Test(f"{e} gamma {g:g}: the default scale non-inferior to weight decay (margin {m:g}"
                                  f"{'' if exp.better == 'max' else ' relative'})", exp.perf, cell(d, experiment=e, gamma=float(g)),
                                  cell("wd", experiment=e, gamma=float(g)), **ni))
    if "norm" in parts:
        bad = [r for r in cfg["norm_rules"] if r not in NORM_RULES]
        if bad:
            raise ValueError(f"Invalid norm_rules: {bad!r}; expected some of {list(NORM_RULES)}")
        for r in ["none", "wd"] + list(cfg["norm_rules"]):
            arms.append(Arm(f"norm:{r}", f"LayerNorm MLP, rule {r}", decay="none", tag="norm"))
            cells.append(cell(f"norm:{r}", study="norm"))
    if "spread" in parts:
        arms += [Arm("trap", "rotation trap", decay="none", tag="trap"), Arm("spread", "E5 with AR", decay="none", tag="spread")]
        spreads = [float(e) for e in cfg["spreads"]]
        cells += [cell("trap", d_spread=e) for e in spreads] + [cell("spread", d_spread=e) for e in spreads]
        if syre.DEFAULT_D_SPREAD in spreads:
            tests.append(Test(f"AR at the default d_spread {syre.DEFAULT_D_SPREAD:g} leaves the rotation mirror", "mirror_distance",
                              cell("trap", d_spread=syre.DEFAULT_D_SPREAD), kind="bound", threshold=1e-6))
        if 0.0 in spreads:
            tests.append(Test("basic syre (d_spread 0) stays on the rotation mirror", "mirror_distance", cell("trap", d_spread=0.0),
                              kind="bound", direction="less", threshold=1e-12, role="sanity",
                              why="the mirror is orthogonal to the anchors, so nothing moves the model off it"))
    return Design(arms=arms, cells=cells, tests=tests, notes=[
        "sigma0 = scale x the LeCun init std 1/sqrt(fan_in) of each parameter (a bias takes its layer's fan-in); basic syre (D = I) "
        f"in the scale part; library defaults when it ran: sigma0 'lecun' ({default} x), d_spread {syre.DEFAULT_D_SPREAD:g}.",
        "dist_wd: ||phi - phi_wd|| / ||phi_wd|| over all trained weights, against weight decay at the same gamma and seed; pull_ratio: "
        "per-step pull lr * gamma * sigma0 over the RMS of the optimizer's own update (first steps; median over elements).",
        "Scores on the validation split of each experiment (the sweep is a selection study)."])


def pick(ctx) -> Dict[str, Any]:
    """The default's selection rule re-applied to this run: the largest scale passing (a) and (b) everywhere."""
    cfg = ctx.config
    scales = [float(s) for s in cfg["scales"]]
    ok = {s: True for s in scales}
    for e in cfg["experiments"]:
        exp = get_experiment(e)
        none = ctx.values("none", exp.perf, experiment=e, gamma=0.0)
        r_none = ctx.values("none", exp.rank, experiment=e, gamma=0.0)
        for g in cfg["gammas"][e]:
            wd = ctx.values("wd", exp.perf, experiment=e, gamma=float(g))
            helps = np.mean(wd) >= np.mean(none) if exp.better == "max" else np.mean(wd) <= np.mean(none)
            collapses = np.mean(ctx.values("wd", exp.rank, experiment=e, gamma=float(g))) < 0.9 * np.mean(r_none)
            for s in scales:
                pre = f"{e} gamma {g:g}: syre at {s:g}x"
                if helps and ctx.result(f"{pre} worse than weight decay (harm)").get("passed"):
                    ok[s] = False
                if collapses and not ctx.result(f"{pre} raises {exp.rank} above weight decay's").get("passed"):
                    ok[s] = False
    passing = [s for s in scales if ok[s]]
    return {"passing": passing, "pick": max(passing) if passing else None}


def report(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    tables, heads = [], []
    scales = [float(s) for s in cfg["scales"]]
    for e in cfg["experiments"] if "scale" in cfg["parts"] else []:
        exp = get_experiment(e)
        rows = [["0", "no decay"] + [fmt.ms(ctx.values("none", m, experiment=e, gamma=0.0)) for m in (exp.perf, exp.rank)]
                + ["-", "-", "-"]]
        for g in cfg["gammas"][e]:
            p = dict(experiment=e, gamma=float(g))
            rows.append([f"{g:g}", "wd (0)"] + [fmt.ms(ctx.values("wd", m, **p)) for m in (exp.perf, exp.rank)] + ["0", "-", "-"])
            for s in scales:
                a = _scale_arm(s).name
                better = ctx.result(f"{e} gamma {g:g}: syre at {s:g}x better than weight decay")
                worse = ctx.result(f"{e} gamma {g:g}: syre at {s:g}x worse than weight decay (harm)")
                verdict = (f"better ({fmt.pval(better['p'])})" if better.get("passed") else
                           f"worse ({fmt.pval(worse['p'])})" if worse.get("passed") else "same")
                rows.append([f"{g:g}", f"{s:g}"] + [fmt.ms(ctx.values(a, m, **p)) for m in (exp.perf, exp.rank, "dist_wd", "pull_ratio")]
                            + [verdict])
        tables.append(f"### {e}: {exp.perf} ({'higher' if exp.better == 'max' else 'lower'} is better), {exp.rank}\n\n" + fmt.md_table(
            ["gamma", "sigma0 scale", exp.perf, exp.rank, "dist_wd", "pull/update", "vs wd"], rows))
    if "norm" in cfg["parts"]:
        cols = ("test_acc", "eff_rank_last", "rank_last", "dead_units", "ln_weight_median", "pull_ratio")
        rows = [[r] + [fmt.ms(ctx.values(f"norm:{r}", c, study="norm")) for c in cols] for r in ["none", "wd"] + list(cfg["norm_rules"])]
        tables.append(f"### 1-D parameters: LayerNorm MLP, gamma {cfg['norm_gamma']:g}, weights at {cfg['study_scale']:g} x LeCun std\n\n"
                      + fmt.md_table(["rule"] + list(cols), rows))
    if "spread" in cfg["parts"]:
        rows = [[f"{float(e):g}", fmt.ms(ctx.values("trap", "mirror_distance", d_spread=float(e))),
                 fmt.ms(ctx.values("spread", "test_acc", d_spread=float(e))),
                 fmt.ms(ctx.values("spread", "eff_rank_last", d_spread=float(e)))]
                for e in cfg["spreads"]]
        tables.append(f"### d_spread: rotation trap (distance from the mirror after {cfg['trap_steps']} steps) and E5 at gamma "
                      f"{cfg['spread_gamma']:g}, scale {cfg['study_scale']:g}\n\n" + fmt.md_table(
                          ["d_spread", "mirror distance", "test_acc", "eff_rank_last"], rows))
    findings: Dict[str, Any] = {}
    if "scale" in cfg["parts"]:
        chosen = pick(ctx)
        findings["rule re-applied"] = (f"scales passing the default's selection rule: {chosen['passing']}; the rule picks "
                                       f"{chosen['pick']} (library default: {default_scale()})")
        heads.append(findings["rule re-applied"])
    findings["headline"] = "; ".join(heads) or "side studies only"
    if "scale" in cfg["parts"]:
        _plots(ctx, cfg, scales)
    return {"tables": tables, "findings": findings}


def _plots(ctx, cfg, scales) -> None:
    exps = list(cfg["experiments"])
    fig, axes = ctx.subplots(len(exps), 3, figsize=(12, 3.2 * len(exps)), squeeze=False)
    for i, e in enumerate(exps):
        exp = get_experiment(e)
        for j, metric in enumerate((exp.perf, exp.rank, "dist_wd")):
            ax = axes[i][j]
            for k, g in enumerate(cfg["gammas"][e]):
                p = dict(experiment=e, gamma=float(g))
                vals = [ctx.values(_scale_arm(s).name, metric, **p) or [np.nan] for s in scales]
                ax.errorbar(scales, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], marker="o", color=f"C{k}", capsize=2,
                            label=f"syre, gamma {g:g}")
                if metric != "dist_wd":
                    ax.axhline(np.mean(ctx.values("wd", metric, **p)), color=f"C{k}", ls="--", lw=1, label=f"wd, gamma {g:g}")
            if metric != "dist_wd":
                ax.axhline(np.mean(ctx.values("none", metric, experiment=e, gamma=0.0)), color="k", ls=":", lw=1, label="no decay")
            else:
                ax.set_yscale("log")
            if default_scale():
                ax.axvline(default_scale(), color="grey", lw=0.8)
            ax.set(xscale="log", xlabel="sigma0 / LeCun init std", ylabel=metric)
            ax.set_title(f"{e} (validation split, seeds 0-4)", fontsize=9)
            if j == 0:
                ax.legend(fontsize=6)
    ctx.save(fig, "sigma_sweep")
    fig, axes = ctx.subplots(1, 2, figsize=(10, 3.8))
    for i, e in enumerate(exps):
        exp = get_experiment(e)
        r_none = np.mean(ctx.values("none", exp.rank, experiment=e, gamma=0.0))
        for k, g in enumerate(cfg["gammas"][e]):
            p = dict(experiment=e, gamma=float(g))
            r_wd = np.mean(ctx.values("wd", exp.rank, **p))
            xs, dist, undone = [], [], []
            for s in scales:
                r = ctx.values(_scale_arm(s).name, "pull_ratio", **p)
                if not r:
                    continue
                xs.append(np.median(r))
                dist.append(np.median(ctx.values(_scale_arm(s).name, "dist_wd", **p)))
                gap = r_none - r_wd
                undone.append((np.mean(ctx.values(_scale_arm(s).name, exp.rank, **p)) - r_wd) / gap if gap > 0.1 * r_none else np.nan)
            style = dict(color=f"C{i}", marker="o" if k == 0 else "s", ls="-" if k == 0 else "--", label=f"{e}, gamma {g:g}")
            axes[1].plot(xs, dist, **style)
            if not np.all(np.isnan(undone)):
                axes[0].plot(xs, undone, **style)
    if not axes[0].get_legend_handles_labels()[0]:
        axes[0].text(0.5, 0.5, "no setting where weight decay\ncollapses the rank", ha="center", va="center", transform=axes[0].transAxes)
        axes[0].set_xlim(1e-5, 10)
    for ax in axes:
        ax.set_xscale("log")
        ax.axvline(WEAK_PULL, color="grey", lw=0.8)
        ax.set_xlabel("pull / optimizer update (median over elements, first steps)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    axes[0].axhline(0.0, color="k", lw=0.6)
    axes[0].set(ylabel="share of weight decay's rank loss undone", title="where weight decay collapses the rank")
    axes[1].set(yscale="log", ylabel="distance from weight decay's weights", title="all settings")
    ctx.save(fig, "sigma_sweep_pull")


EXPERIMENT = Experiment(id="sigma-sweep", title="sigma0 scale sweep, 1-D parameter rule and d_spread: the evidence behind the defaults",
                        claim=CLAIM, trial=trial, design=design, report=report, defaults=DEFAULTS, quick=QUICK, n_min=5, n_max=5,
                        seed_range="sweep")
