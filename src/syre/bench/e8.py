"""E8: continual learning on permuted Fashion-MNIST: plasticity and feature rank task after task.

One MLP (two hidden ReLU layers of ``width``, a shared 10-way head) is trained on ``tasks``
tasks in sequence. Task k is Fashion-MNIST (average-pooled to ``size`` x ``size``) under a
fixed random permutation of the pixels, trained for ``epochs`` epochs on ``n_per_task`` images
drawn from a pool of ``n_train``; the permutations and the images of each task are a function of
the seed only, shared by every arm. Adam, decoupled decay at ``gamma`` (the AdamW convention).

Arms: ``none``, ``wd``, ``syre`` (library default sigma0), ``syre_ar`` (AR), ``syre_0.3x`` and
``syre_3x`` (other scales), ``l2init`` (L2-Init, Kumar et al. 2023: decay toward the initial weights) and ``sp`` (Shrink and
Perturb, Ash and Adams 2020, in the per-step form of Dohare et al. 2024: weight decay at
``gamma`` plus ``sp_noise`` times a fresh LeCun initialisation added after every step, through
``syre.shrink_perturb_``: Gaussian of std ``sp_noise / sqrt(fan_in)`` for the weights, torch's uniform
bias init for the biases (std ``sp_noise / sqrt(3 fan_in)``).

Metrics per trial: per task, the test accuracy on that task right after training on it
(``task_acc``: plasticity), the effective rank of the last hidden layer on that task's test
inputs (``task_eff_rank``) and its share of dead units (``task_dead``); summarised as
``acc_last`` (mean over the last ``last_tasks`` tasks), ``acc_first`` (tasks 2 to
``last_tasks + 1``: the first task is learned from scratch and is not a plasticity measurement),
``acc_mean``, ``eff_rank_last``, ``eff_rank_first`` (task 1) and ``dead_last``.

The claim has two parts, and the verdict tests both for syre: it *keeps* accuracy and rank (its
own last tasks against its early ones: ``keep_acc_margin``, ``keep_rank_share``), and it does
better than the weight-decay control on the last tasks.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from torch import nn

import syre
from syre.diagnostics.metrics import effective_rank

from . import fmt, heldout
from .arms import ARM_DEFAULTS, Arm, apply_arm, arms as get_arms
from .common import accuracy, dataset, hidden_features, mlp, trial_rng, tuned_cells
from .protocol import Design, Test, Tuning, cell
from .registry import Experiment

CLAIM = ("In continual learning on permuted (Fashion-)MNIST, vanilla training loses effective rank and accuracy on new tasks "
         "after about 6 tasks; syre keeps both.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["none", "wd", "syre", "syre_ar", "l2init", "sp", "syre_0.3x", "syre_3x"],
    "gamma": 10.0,
    "tune_arms": ["wd", "syre", "syre_ar", "l2init", "sp"],
    "tune_gammas": [0.1, 1.0, 10.0],
    "tune_sigma0s": ["lecun:0.3", ARM_DEFAULTS["sigma0"], "lecun:3"],
    "noninferior_margin": 0.01,
    "sp_noise": 0.05,
    "tasks": 20,
    "epochs": 5,
    "n_per_task": 2000,
    "n_train": 20000,
    "n_test": 2000,
    "size": 14,
    "width": 256,
    "lr": 1e-3,
    "batch": 64,
    "n_rank": 1000,
    "last_tasks": 5,
    "keep_acc_margin": 0.01,
    "keep_rank_share": 0.9,
}
QUICK = {"arms": ["none", "wd", "syre", "sp"], "tune_arms": ["wd", "syre"], "tune_gammas": [1.0, 10.0],
         "tune_sigma0s": [ARM_DEFAULTS["sigma0"]], "tasks": 3, "epochs": 2, "n_per_task": 500, "n_train": 2000, "n_test": 500,
         "width": 64, "n_rank": 300, "last_tasks": 1}

SP_ARM = Arm("sp", "Shrink and Perturb", decay="wd", tag="sp")


def _arm_list(cfg: Dict[str, Any]) -> List[Arm]:
    return [SP_ARM if n == "sp" else get_arms([n])[0] for n in cfg["arms"]]


def _data(cfg):
    return dataset("fashion", cfg["eval_split"], n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"])


def _check(cfg: Dict[str, Any]) -> None:
    for key in ("tasks", "epochs", "n_per_task", "width", "batch", "last_tasks"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Invalid {key}: {v!r}; expected an int >= 1")
    if cfg["n_per_task"] > cfg["n_train"]:
        raise ValueError(f"Invalid n_per_task: {cfg['n_per_task']!r}; expected at most n_train = {cfg['n_train']}")
    if cfg["tasks"] < cfg["last_tasks"] + 1:
        raise ValueError(f"Invalid tasks: {cfg['tasks']!r}; expected at least last_tasks + 1 = {cfg['last_tasks'] + 1}")
    if not cfg["sp_noise"] >= 0:
        raise ValueError(f"Invalid sp_noise: {cfg['sp_noise']!r}; expected a number >= 0")


def _add_perturb(net: nn.Module, opt: torch.optim.Optimizer, noise: float, seed: int):
    """After every step add ``noise`` times a fresh LeCun initialisation to every parameter (Shrink and Perturb), through
    ``syre.shrink_perturb_`` (shrink 1: the shrink is the arm's weight decay): the noise of step k is generation k + 1
    of syre's init stream of ``seed``, the same on every rank and after a restart."""
    steps = iter(range(2**32 - 1))

    @torch.no_grad()
    def post_step(o, args, kwargs):
        syre.shrink_perturb_(net, shrink=1.0, perturb=noise, step=next(steps), seed=seed, scheme="lecun")

    return opt.register_step_post_hook(post_step)


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """Train through ``tasks`` permuted tasks with ``arm``; accuracy and feature rank per task."""
    with trial_rng(seed):  # module constructors draw from the global generator (their init is then overwritten)
        return _trial(cfg, arm, seed)


def _trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    _check(cfg)
    data = _data(cfg)
    d = data.x_train.shape[1]
    net = mlp(d, cfg["width"], 2, 10, seed=seed, gain=math.sqrt(2.0))
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    apply_arm(arm, net, opt, seed=seed, cfg=cfg)
    if arm.tag == "sp" and cfg["sp_noise"] > 0:
        _add_perturb(net, opt, float(cfg["sp_noise"]), seed)
    tasks = torch.Generator().manual_seed(60_000 + seed)  # permutations and task images: the same for every arm
    order = torch.Generator().manual_seed(seed + 7919)
    acc, rank, dead = [], [], []
    with trial_rng(seed):
        for _ in range(int(cfg["tasks"])):
            perm = torch.randperm(d, generator=tasks)
            idx = torch.randperm(len(data.x_train), generator=tasks)[: cfg["n_per_task"]]
            x, y = data.x_train[idx][:, perm], data.y_train[idx]
            xt = data.x_test[:, perm]
            net.train()
            for _ in range(int(cfg["epochs"])):
                o = torch.randperm(len(x), generator=order)
                for i in range(0, len(x), cfg["batch"]):
                    b = o[i : i + cfg["batch"]]
                    loss = nn.functional.cross_entropy(net(x[b]), y[b])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            acc.append(accuracy(net, xt, data.y_test))
            f = hidden_features(net, xt[: cfg["n_rank"]])[-1]
            rank.append(effective_rank(f))
            dead.append(float((f.max(dim=0).values <= 0).float().mean()))
    k = int(cfg["last_tasks"])
    return {
        "acc_last": float(np.mean(acc[-k:])),
        "acc_first": float(np.mean(acc[1 : k + 1])),
        "acc_mean": float(np.mean(acc)),
        "eff_rank_last": rank[-1],
        "eff_rank_first": rank[0],
        "dead_last": dead[-1],
        "task_acc": acc,
        "task_eff_rank": rank,
        "task_dead": dead,
    }


def design(cfg: Dict[str, Any]) -> Design:
    _check(cfg)
    arm_list = _arm_list(cfg)
    names = [a.name for a in arm_list]
    tun = Tuning(metric="acc_last", better="max", arms=tuple(a for a in cfg["tune_arms"] if a in names),
                 gammas=tuple(cfg["tune_gammas"]), sigma0s=tuple(cfg["tune_sigma0s"]),
                 also=(("syre", "wd"),) if {"syre", "wd"} <= set(cfg["tune_arms"]) else ())
    k, margin, share = cfg["last_tasks"], cfg["keep_acc_margin"], cfg["keep_rank_share"]
    c = cell
    tests: List[Test] = []
    for base in ("none", "wd"):
        if base in names:
            tests += [Test(f"{base} loses plasticity: accuracy on the last {k} tasks below tasks 2-{k + 1}", "acc_last", c(base), c(base),
                           metric_b="acc_first", direction="less", role="secondary"),
                      Test(f"{base} loses feature rank: last task below the first", "eff_rank_last", c(base), c(base),
                           metric_b="eff_rank_first", direction="less", role="secondary")]
    for arm in [n for n in names if n not in ("none", "wd")]:
        role = "primary" if arm == "syre" else "secondary"
        tests += [Test(f"{arm} keeps its accuracy: last {k} tasks not below tasks 2-{k + 1} by more than {margin:g}", "acc_last", c(arm),
                       c(arm), metric_b="acc_first", threshold=-margin, role=role),
                  Test(f"{arm} keeps its feature rank: last task above {share:g} x the first", "eff_rank_last", c(arm), c(arm),
                       metric_b="eff_rank_first", ratio=share, role=role),
                  Test(f"{arm}: accuracy on the last {k} tasks above weight decay's", "acc_last", c(arm), c("wd"), role=role),
                  Test(f"{arm}: feature rank on the last task above weight decay's", "eff_rank_last", c(arm), c("wd"), role=role)]
    if "syre" in names and "none" in names:
        tests.append(Test(f"syre: accuracy on the last {k} tasks above no decay's", "acc_last", c("syre"), c("none"), role="secondary"))
    if "syre" in tun.arms:
        for ref in [r for r in tun.arms if r != "syre"]:
            tests.append(Test(f"tuned: syre's accuracy on the last {k} tasks above {ref}'s", "acc_last", c("syre@tuned"), c(f"{ref}@tuned"),
                              family="tuned", role="primary" if ref == "wd" else "secondary"))
        if "none" in names:
            tests.append(Test(f"tuned: syre's accuracy on the last {k} tasks above no decay's", "acc_last", c("syre@tuned"), c("none"),
                              family="tuned"))
    tests += heldout.tests("permuted Fashion-MNIST", lambda a: c(a), lambda n: c(n), perf="acc_last", rank="eff_rank_last",
                           better="max", margin=cfg["noninferior_margin"], tuned_arms=tun.arms,
                           scale_arms=[a for a in ("syre_0.3x", "syre_3x") if a in names])
    return Design(arms=arm_list, cells=[c(n) for n in names] + tuned_cells(tun), tests=tests, tuning=tun, notes=[
        f"MLP {cfg['size'] ** 2}-{cfg['width']}-{cfg['width']}-10 (ReLU, shared head), Adam lr {cfg['lr']:g}, batch {cfg['batch']}, "
        f"{cfg['epochs']} epochs per task on {cfg['n_per_task']} images; {cfg['tasks']} tasks (pixel permutations of Fashion-MNIST "
        f"{cfg['size']}x{cfg['size']}); shared gamma {cfg['gamma']:g} (decoupled); Shrink and Perturb: weight decay plus N(0, "
        f"({cfg['sp_noise']:g} x init std)^2) noise after every step; effective rank of the last hidden layer on {cfg['n_rank']} "
        "test images of each task."])


def report(ctx) -> Dict[str, Any]:
    keys = [c.key for c in ctx.protocol.design.cells if c.key in ctx.arms]
    k = ctx.config["last_tasks"]
    metrics = ("acc_first", "acc_last", "eff_rank_first", "eff_rank_last", "dead_last")
    rows = [[a] + [fmt.ms(ctx.arms[a][m]) for m in metrics] for a in keys]
    _plot(ctx, ctx.config, keys)
    head = "; ".join(f"{a} acc tasks 2-{k + 1} {fmt.num(ctx.arms[a]['acc_first']['mean'])} -> last {k} "
                     f"{fmt.num(ctx.arms[a]['acc_last']['mean'])}, eff rank {fmt.num(ctx.arms[a]['eff_rank_first']['mean'])} -> "
                     f"{fmt.num(ctx.arms[a]['eff_rank_last']['mean'])}" for a in keys)
    return {"tables": ["## Cells\n\n" + fmt.md_table(["cell"] + list(metrics), rows), _table(ctx, ctx.config, keys)],
            "findings": {"headline": head}}


def _curves(ctx, arm: str, key: str) -> np.ndarray:
    rows = ctx.rows(cell(arm))
    return np.array([r[key] for r in rows], dtype=float)


def _table(ctx, cfg, names: Sequence[str]) -> str:
    data = {n: (_curves(ctx, n, "task_acc"), _curves(ctx, n, "task_eff_rank")) for n in names}
    rows = [[t + 1] + [v for n in names for v in (fmt.ms(data[n][0][:, t]), fmt.ms(data[n][1][:, t]))] for t in range(int(cfg["tasks"]))]
    return ("## Accuracy on each new task and effective rank of the features, task by task\n\n"
            + fmt.md_table(["task"] + [f"{n} {m}" for n in names for m in ("acc", "eff rank")], rows))


def _plot(ctx, cfg, names) -> None:
    fig, axes = ctx.subplots(1, 3, figsize=(13, 3.5))
    tasks = np.arange(1, int(cfg["tasks"]) + 1)
    for i, name in enumerate(names):
        for ax, key in zip(axes, ("task_acc", "task_eff_rank", "task_dead")):
            c = _curves(ctx, name, key)
            if c.size == 0:
                continue
            m, s = c.mean(axis=0), c.std(axis=0)
            ax.plot(tasks, m, marker="o", color=f"C{i % 10}", ls="-" if i < 10 else "--", label=name)
            ax.fill_between(tasks, m - s, m + s, color=f"C{i % 10}", alpha=0.1)
    for ax, label in zip(axes, ("test accuracy on the new task", "effective rank (last hidden layer)", "dead units (share)")):
        ax.set_xlabel("task")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    ctx.save(fig, "e8_permuted_fashion")


EXPERIMENT = Experiment(id="e8", title="continual learning on permuted Fashion-MNIST: accuracy on new tasks and feature rank",
                        claim=CLAIM, trial=trial, design=design, report=report, defaults=DEFAULTS, quick=QUICK, perf="acc_last",
                        better="max", rank="eff_rank_last", n_min=5, n_max=8, selection=2, heldout=True)
