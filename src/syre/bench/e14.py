"""E14: loss of plasticity: a long stream of random-label memorisation tasks with abrupt switches.

One fixed set of ``n_images`` Fashion-MNIST images (``size`` x ``size``; the test images in evaluation runs, a
validation split of the training pool during tuning) is relabelled at random (``classes`` classes) at the start of
each of ``tasks`` tasks; an MLP (two hidden ReLU layers of ``width``, Kaiming-normal init) fits each labelling for
``epochs`` epochs (batch ``batch``, Adam at ``lr``) and goes on to the next. The labels are a function of the seed
only, shared by every arm. Accuracy is the fit of the current labels: ``task_acc`` (the whole set, after the task's
budget), ``task_online`` (the training batches before each step: the online accuracy of Dohare et al. 2024) and
the effective rank of the last hidden layer (``task_eff_rank``). Summaries: ``acc_first`` / ``acc_last`` (first /
last ``last_tasks`` tasks), ``acc_online`` (all tasks), ``plasticity_loss`` (``acc_first - acc_last``).

Shrunk from the published protocols (random-label tasks of Lyle et al. 2023 on CIFAR-10 and Kumar et al. 2023 on
MNIST, with larger image sets, larger networks and many more tasks; Dohare et al. 2024: 2000 Continual-ImageNet
tasks): 500 images at 14x14, a 2 x 128 MLP, 30 tasks of 100 Adam steps, a larger Adam step (3e-3) so that plain
training loses plasticity within so short a stream, one CPU core for the whole run. ReDo-style resets are not an arm: ``syre.reset_units_``
exists, but ReDo also needs a dormant-unit score and resets of Adam's state, left out of this budget.

Arms: ``none``, ``wd``, ``wd_ln`` (weight decay + LayerNorm before each ReLU: the strong rival of Lyle et al.),
``l2init`` (``target="init"``), ``sp`` (Shrink and Perturb through ``syre.shrink_perturb_``, as in E8), syre
basic and AR at the library default sigma0 (``"match"``, the tensor's own RMS; ``syre``, ``syre_ar``) and at
``"lecun"`` (``syre_lecun``, ``syre_ar_lecun``; spelled ``"lecun:1"``: the same anchors, a label that does not call it
the library default, which it was for E0-E13). Every decay acts on every parameter (LayerNorm's too). Every arm is
tuned (gamma only: syre arms keep their sigma0); at the shared gamma only ``shared_arms`` run (no decay, weight
decay, syre: the shared and held-out tests need no more). Primary
tests read the task metric (late-task and online accuracy); effective rank is secondary. The power of every
primary test (shared, tuned and held-out) comes from a pilot that is a small run of the whole design on pilot
seeds (selection on one, evaluation on three: ``pilot``).
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from syre.diagnostics.metrics import effective_rank

from . import fmt, heldout, power, stats
from .arms import ARM_DEFAULTS, Arm, apply_arm, arms as get_arms
from .common import MLP, dataset, hidden_features, lecun_init_, trial_rng, tuned_cells
from .e8 import SP_ARM, _add_perturb
from .protocol import Design, Protocol, Test, Tuning, canonical, cell, seeds_for
from .registry import Experiment

CLAIM = ("In a long stream of random-label tasks with abrupt switches, plain training loses plasticity; syre at the "
         "library default sigma0 keeps a higher late-task and online accuracy than no decay and than every tuned rival "
         "(weight decay, weight decay + LayerNorm, L2-Init, Shrink and Perturb).")
ARMS14 = {a.name: a for a in (
    get_arms(["none"])[0], get_arms(["wd"])[0], Arm("wd_ln", "weight decay + LayerNorm", decay="wd", tag="ln"),
    get_arms(["l2init"])[0], SP_ARM,
    Arm("syre", "syre, sigma0 'match' (the library default)", decay="syre", sigma0="match", d_spread=0.0),
    Arm("syre_ar", "syre AR, sigma0 'match' (the library default)", decay="syre", sigma0="match", d_spread=None),
    Arm("syre_lecun", "syre, sigma0 'lecun' (1 x LeCun init std)", decay="syre", sigma0="lecun:1", d_spread=0.0),
    Arm("syre_ar_lecun", "syre AR, sigma0 'lecun' (1 x LeCun init std)", decay="syre", sigma0="lecun:1", d_spread=None))}
RIVALS = ("wd", "wd_ln", "l2init", "sp")
DEFAULTS: dict[str, Any] = {**ARM_DEFAULTS, "arms": list(ARMS14), "tune_arms": [a for a in ARMS14 if a != "none"],
                            "shared_arms": ["none", "wd", "syre"],
                            "gamma": 1.0, "tune_gammas": [0.1, 0.3, 1.0], "sp_noise": 0.05, "noninferior_margin": 0.01,
                            "tasks": 30, "epochs": 10, "n_images": 500, "n_pool": 2000, "classes": 10, "size": 14, "width": 128,
                            "lr": 3e-3, "batch": 50, "last_tasks": 5}
QUICK = {"tune_gammas": [1.0], "tasks": 3, "epochs": 2, "n_images": 100, "n_pool": 200, "width": 32, "last_tasks": 1}


class LNMLP(MLP):
    """``MLP`` with a LayerNorm before every ReLU."""

    def __init__(self, d_in: int, width: int, depth: int, d_out: int):
        super().__init__(d_in, width, depth, d_out)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))

    def forward(self, x, keep=None):
        for layer, norm in zip(self.hidden, self.norms):
            x = torch.relu(norm(layer(x)))
            if keep is not None:
                keep.append(x)
        return self.head(x)


def _check(cfg: dict[str, Any]) -> None:
    for key in ("tasks", "epochs", "n_images", "n_pool", "width", "batch", "last_tasks", "size"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Invalid {key}: {v!r}; expected an int >= 1")
    if isinstance(cfg["classes"], bool) or not isinstance(cfg["classes"], int) or cfg["classes"] < 2:
        raise ValueError(f"Invalid classes: {cfg['classes']!r}; expected an int >= 2")
    if cfg["tasks"] < 2 * cfg["last_tasks"]:
        raise ValueError(f"Invalid tasks: {cfg['tasks']!r}; expected at least 2 x last_tasks = {2 * cfg['last_tasks']} "
                         "(the early and the late tasks must not overlap)")
    if not (isinstance(cfg["lr"], (int, float)) and cfg["lr"] > 0) or not cfg["sp_noise"] >= 0:
        raise ValueError(f"Invalid lr / sp_noise: {cfg['lr']!r} / {cfg['sp_noise']!r}; expected lr > 0 and sp_noise >= 0")
    unknown = [a for a in cfg["arms"] if a not in ARMS14]
    if unknown:
        raise ValueError(f"Invalid arms: {unknown}; expected names from {list(ARMS14)}")
    extra = [a for a in cfg["shared_arms"] if a not in cfg["arms"]]
    if extra:
        raise ValueError(f"Invalid shared_arms: {extra} are not in arms {cfg['arms']}")


def trial(cfg: dict[str, Any], arm, seed: int) -> dict[str, Any]:
    """Fit ``tasks`` random labellings of one image set in sequence with ``arm``; accuracy and feature rank per task."""
    _check(cfg)
    with trial_rng(seed):
        x = dataset("fashion", cfg["eval_split"], n_train=cfg["n_pool"], n_test=cfg["n_images"], size=cfg["size"]).x_test
        net = (LNMLP if arm.tag == "ln" else MLP)(x.shape[1], cfg["width"], 2, cfg["classes"])
        lecun_init_(net, torch.Generator().manual_seed(seed), math.sqrt(2.0))
        opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        apply_arm(arm, net, opt, seed=seed, cfg=cfg)
        if arm.tag == "sp" and cfg["sp_noise"] > 0:
            _add_perturb(net, opt, float(cfg["sp_noise"]), seed)
        labels, order = torch.Generator().manual_seed(60_000 + seed), torch.Generator().manual_seed(seed + 7919)
        acc, online, rank = [], [], []
        for _ in range(cfg["tasks"]):
            y = torch.randint(cfg["classes"], (len(x),), generator=labels)
            hits = steps = 0
            net.train()
            for _ in range(cfg["epochs"]):
                o = torch.randperm(len(x), generator=order)
                for i in range(0, len(x), cfg["batch"]):
                    b = o[i: i + cfg["batch"]]
                    out = net(x[b])
                    hits, steps = hits + int((out.argmax(1) == y[b]).sum()), steps + len(b)
                    opt.zero_grad(set_to_none=True)
                    nn.functional.cross_entropy(out, y[b]).backward()
                    opt.step()
            f = hidden_features(net, x)[-1]
            with torch.no_grad():
                acc.append(float((net.eval()(x).argmax(1) == y).float().mean()))
            online.append(hits / steps)
            rank.append(effective_rank(f))
    k = cfg["last_tasks"]
    return {"acc_first": float(np.mean(acc[:k])), "acc_last": float(np.mean(acc[-k:])), "acc_online": float(np.mean(online)),
            "plasticity_loss": float(np.mean(acc[:k]) - np.mean(acc[-k:])), "eff_rank_last": rank[-1], "eff_rank_first": rank[0],
            "task_acc": acc, "task_online": online, "task_eff_rank": rank}


def design(cfg: dict[str, Any]) -> Design:
    _check(cfg)
    names, shared, k = list(cfg["arms"]), list(cfg["shared_arms"]), cfg["last_tasks"]
    tun = Tuning(metric="acc_last", better="max", arms=tuple(a for a in cfg["tune_arms"] if a in names and a != "none"),
                 gammas=tuple(cfg["tune_gammas"]), sigma0s=(None,),
                 also=(("syre", "wd"),) if {"syre", "wd"} <= set(cfg["tune_arms"]) else ())
    c, late, onl = cell, f"accuracy on the last {k} tasks", "online accuracy over all tasks"
    tests: list[Test] = []
    if "none" in shared:
        tests.append(Test(f"no decay loses plasticity: {late} below the first {k}", "acc_last", c("none"), c("none"), metric_b="acc_first",
                          direction="less", role="secondary"))
    for a in [n for n in shared if n != "none"]:
        tests += [Test(f"{a} at the shared gamma: {m} above no decay's", key, c(a), c("none"),
                       role="primary" if a == "syre" else "secondary")
                  for m, key in ((late, "acc_last"), (onl, "acc_online")) if "none" in shared]
    if "syre" in tun.arms:
        for ref in [r for r in RIVALS if r in tun.arms] + (["none"] if "none" in shared else []):
            b = c("none") if ref == "none" else c(f"{ref}@tuned")
            tests += [Test(f"tuned: syre's {m} above {ref}'s", key, c("syre@tuned"), b, family="tuned") for m, key in
                      ((late, "acc_last"), (onl, "acc_online"))]
            tests.append(Test(f"tuned: syre's effective rank on the last task above {ref}'s", "eff_rank_last", c("syre@tuned"), b,
                              family="tuned", role="secondary"))
        for var in [v for v in ("syre_ar", "syre_lecun", "syre_ar_lecun") if v in tun.arms]:
            tests += [Test(f"tuned: {var}'s {late} above {ref}'s", "acc_last", c(f"{var}@tuned"), c(f"{ref}@tuned"), family="tuned",
                           role="secondary") for ref in [r for r in ("syre", "wd_ln", "l2init") if r in tun.arms]]
    held = heldout.tests("random-label tasks", c, c, perf="acc_last", rank="eff_rank_last", better="max",
                         margin=cfg["noninferior_margin"], tuned_arms=tun.arms) if {"syre", "wd"} <= set(shared) else []
    tests += [dataclasses.replace(t, role="secondary") if t.metric == "eff_rank_last" else t for t in held]  # rank: not the task metric
    return Design(arms=[ARMS14[n] for n in names], cells=[c(n) for n in shared] + tuned_cells(tun), tests=tests, tuning=tun, notes=[
        (f"{cfg['tasks']} tasks, each a fresh random labelling ({cfg['classes']} classes) of the same {cfg['n_images']} "
         f"Fashion-MNIST images ({cfg['size']}x{cfg['size']}); MLP {cfg['size'] ** 2}-{cfg['width']}-{cfg['width']}-"
         f"{cfg['classes']} (ReLU; wd_ln: LayerNorm before each ReLU), Adam lr {cfg['lr']:g}, batch {cfg['batch']}, "
         f"{cfg['epochs']} epochs per task; shared gamma {cfg['gamma']:g} (decoupled) for {', '.join(shared)}, every other arm "
         f"at its tuned gamma only; Shrink and Perturb noise {cfg['sp_noise']:g} x init std per step; syre arms keep their own "
         "sigma0 when tuned "
        "(only gamma is tuned); the effective-rank held-out test is secondary (the rank of features near a random anchor "
        "is high by construction).")])


def plan(pilot, design_: Design, exp: Experiment, quick: bool) -> dict[str, Any]:
    """The power rule over every primary test (shared, tuned and held-out), from the pilot."""
    prim = [t for t in design_.tests if t.role == "primary"]
    out = power.plan(pilot, prim, n_min=exp.n_min, n_max=exp.n_max)
    if not out["tests"]:  # no pilot (a quick run): every primary test is still listed, its power not estimated
        out["tests"] = {t.name: {"family": t.family, "power": None, "note": "no pilot: power not estimated"} for t in prim}
    for t in prim:
        out["tests"][t.name]["family"] = t.family
    if pilot:
        out["pilot"].update({key: pilot.get(key) for key in ("selection_seeds", "plasticity_loss")})
    return out


def pilot(exp: Experiment, *, n: int = power.PILOT_SEEDS, verbose: bool = True, jobs: int = 1, out=None) -> dict[str, Any]:
    """The whole design on pilot seeds (selection on the first, evaluation on the next ``n``): effect sizes of every test."""
    from .runner import _run, environment

    cfg = exp.config()
    seeds = seeds_for("pilot", n + 1)
    proto = Protocol(experiment=exp.id, version=exp.version, changes="pilot", claim=exp.claim, design=exp.design(cfg),
                     evaluation_seeds=seeds[1:], selection_seeds=seeds[:1], power={}, config=canonical(cfg))
    t0, threads, rev = time.perf_counter(), torch.get_num_threads(), environment().get("git_revision")  # the code the pilot runs
    torch.set_num_threads(1)
    try:
        s = _run(exp, proto, False, Path(out or tempfile.mkdtemp(prefix="pilot-e14-")), verbose, ["pilot"], False, jobs)
    finally:
        torch.set_num_threads(threads)
    rec = power.pilot_record(s["tests"], seeds[1:], time.perf_counter() - t0, rev, time.strftime("%Y-%m-%d"))
    return {**rec, "selection_seeds": seeds[:1], "plasticity_loss": s["plasticity_loss"]}


def _ci(v: dict[str, Any]) -> str:
    if not v or v.get("mean") is None:
        return "-"
    h = stats._scipy_stats().t.ppf(0.975, v["n"] - 1) * v["std"] / math.sqrt(v["n"]) if v["n"] > 1 else float("nan")
    return f"{fmt.num(v['mean'])} [{fmt.num(v['mean'] - h)}, {fmt.num(v['mean'] + h)}]"


def report(ctx) -> dict[str, Any]:
    keys = [c.key for c in ctx.protocol.design.cells if c.key in ctx.arms]
    A, k = ctx.arms, ctx.config["last_tasks"]
    metrics = ("acc_first", "acc_last", "acc_online", "eff_rank_last")
    table = fmt.md_table(["cell", f"first {k} tasks", f"last {k} tasks", "online", "eff rank (last task)"],
                         [[a] + [_ci(A[a].get(m)) for m in metrics] for a in keys]) + "\nmean [95% t-interval] over the evaluation seeds.\n"
    prim = [t for t in ctx.tests if t["role"] == "primary"]
    by = {v: [t for t in prim if t["passed"] is v] for v in (False, None, True)}
    brief = lambda t: f"{t['name']} ({fmt.num(t.get('mean_a'))} vs {fmt.num(t.get('mean_b'))}, {fmt.pval(t.get('p'))})"
    loss = A["none"]["plasticity_loss"]["mean"] if "none" in A else None
    head = " ".join(f"{label}: {'; '.join(brief(t) for t in by[v])}." for v, label in (
        (False, "Where syre does not help (failed primary tests)"), (None, "Undecided"), (True, "Where it helps (passed)")) if by[v])
    if loss is not None:
        head += (f" No decay loses {fmt.num(100 * loss, 2)} points of accuracy from its first {k} tasks to its last {k} "
                 f"({fmt.num(A['none']['acc_first']['mean'])} -> {fmt.num(A['none']['acc_last']['mean'])}).")
    pw = ctx.protocol.power.get("tests", {})
    power_text = "; ".join(f"{name}: {fmt.num(v['power'], 2) if v.get('power') is not None else v.get('note') or 'not estimated'}"
                           for name, v in pw.items()) or ctx.protocol.power.get("statement", "")
    _plot(ctx, keys)
    grid, edge = list(ctx.protocol.design.tuning.gammas), []
    for arm in ctx.protocol.design.tuning.arms:
        score = {g: np.mean([r["acc_last"] for r in ctx.selection_records if r["arm"] == arm and r["point"]["gamma"] == g]) for g in grid}
        best = max(grid, key=lambda g: score[g])  # the tuning rule: best mean, ties to the first in grid order
        if len(grid) > 1 and best in (min(grid), max(grid)):
            edge.append(f"{arm} (gamma {best:g})")
    tuning_text = (f"Chosen at an edge of the gamma grid {', '.join(f'{g:g}' for g in grid)} (its best gamma may lie beyond "
                   f"it): {', '.join(edge)}." if edge else "Every chosen gamma lies inside the grid." if len(grid) > 1
                   else "The grid has one gamma.")
    return {"tables": ["## Accuracy and rank with 95% intervals\n\n" + table], "summary": {"plasticity_loss": loss},
            "findings": {"headline": head, "tuning": tuning_text,
                         "table": "late-task accuracy, online accuracy and effective rank per cell:\n\n" + table,
                         "power": f"Power of each primary test at n = "
                         f"{len(ctx.protocol.evaluation_seeds)} (pilot effect sizes): {power_text}."}}


def _plot(ctx, keys: list[str]) -> None:
    fig, axes = ctx.subplots(1, 2, figsize=(13, 4), sharey=True)
    tasks = np.arange(1, int(ctx.config["tasks"]) + 1)
    for ax, group in zip(axes, ([a for a in keys if "@" not in a], [a for a in keys if "@" in a or a == "none"])):
        for i, a in enumerate(group):
            c = np.array([r["task_acc"] for r in ctx.records if r["arm"] == a and not r["point"]], dtype=float)
            if c.size:
                ax.plot(tasks, c.mean(axis=0), color=f"C{i % 10}", ls="-" if i < 10 else "--", label=a)
        ax.set_xlabel("task")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("accuracy on the task's labels after its budget")
    axes[0].set_title("at the shared gamma", fontsize=9)
    axes[1].set_title("every arm at its tuned gamma", fontsize=9)
    ctx.save(fig, "e14_accuracy_per_task")


EXPERIMENT = Experiment(id="e14", title="loss of plasticity: random-label tasks with abrupt switches", claim=CLAIM, trial=trial,
                        design=design, report=report, defaults=DEFAULTS, quick=QUICK, perf="acc_last", better="max",
                        rank="eff_rank_last", n_min=6, n_max=10, selection=2, heldout=True, plan=plan, pilot=pilot)
