"""E8: continual learning on permuted Fashion-MNIST: plasticity and feature rank task after task.

One MLP (two hidden ReLU layers of ``width``, a shared 10-way head) is trained on ``tasks``
tasks in sequence. Task k is Fashion-MNIST (average-pooled to ``size`` x ``size``) under a
fixed random permutation of the pixels, trained for ``epochs`` epochs on ``n_per_task`` images
drawn from a pool of ``n_train``; the permutations and the images of each task are a function of
the seed only, shared by every arm. Adam, decoupled decay at ``gamma`` (the AdamW convention).

Arms: ``none``, ``wd``, ``syre`` (the configured sigma0), ``syre_big`` (sigma0 = the init std),
``l2init`` (L2-Init, Kumar et al. 2023: decay toward the initial weights) and ``sp`` (Shrink and
Perturb, Ash and Adams 2020, in the per-step form of Dohare et al. 2024: weight decay at
``gamma`` plus Gaussian noise of std ``sp_noise`` times each parameter's LeCun init std added
after every step).

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

from syre.diagnostics.metrics import effective_rank

from . import stats
from .arms import ARM_DEFAULTS, Arm, apply_arm, arms as get_arms, sigma0_label, sigma0_values
from .common import accuracy, dataset, hidden_features, mlp, trial_rng
from .registry import Experiment

CLAIM = ("In continual learning on permuted (Fashion-)MNIST, vanilla training loses effective rank and accuracy on new tasks "
         "after about 6 tasks; syre keeps both.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["none", "wd", "syre", "syre_big", "l2init", "sp"],
    "gamma": 10.0,
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
QUICK = {"arms": ["wd", "syre", "sp"], "tasks": 3, "epochs": 2, "n_per_task": 500, "n_train": 2000, "n_test": 500,
         "width": 64, "n_rank": 300, "last_tasks": 1}

SP_ARM = Arm("sp", "Shrink and Perturb", decay="wd")


def _arm_list(cfg: Dict[str, Any]) -> List[Arm]:
    return [SP_ARM if n == "sp" else get_arms([n])[0] for n in cfg["arms"]]


def _data(cfg):
    return dataset("fashion", n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"])


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
    """After every step add ``noise`` x init std Gaussian noise to every parameter (Shrink and Perturb)."""
    stds = sigma0_values("rel:1.0", net)
    names = {id(p): n for n, p in net.named_parameters()}
    pairs = [(p, noise * stds[names[id(p)]]) for g in opt.param_groups for p in g["params"]]
    gen = torch.Generator().manual_seed(40_000 + seed)

    @torch.no_grad()
    def post_step(o, args, kwargs):
        for p, s in pairs:
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype), alpha=s)

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
    apply_arm(arm, net, opt, gamma=cfg["gamma"], seed=seed, cfg=cfg)
    if arm.name == "sp" and cfg["sp_noise"] > 0:
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


def run(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    _check(cfg)
    arm_list = _arm_list(cfg)
    _data(cfg)
    ctx.run_grid(arm_list, trial)
    names = [a.name for a in arm_list]
    v = ctx.values
    k = cfg["last_tasks"]
    tests: List[Dict[str, Any]] = []
    for base in ("none", "wd"):
        if base in names:
            tests.append(stats.secondary(stats.compare(f"{base} loses plasticity: accuracy on the last {k} tasks below tasks 2-{k + 1}",
                                                       v(base, "acc_last"), v(base, "acc_first"), metric="accuracy",
                                                       arms=[f"{base}, last {k} tasks", f"{base}, tasks 2-{k + 1}"],
                                                       alternative="less")))
            tests.append(stats.secondary(stats.compare(f"{base} loses feature rank: last task below the first",
                                                       v(base, "eff_rank_last"), v(base, "eff_rank_first"),
                                                       metric="eff_rank", arms=[f"{base}, last task", f"{base}, first task"],
                                                       alternative="less")))
    margin, share = cfg["keep_acc_margin"], cfg["keep_rank_share"]
    for arm in ("syre", "syre_big", "l2init", "sp"):
        if arm not in names:
            continue
        wrap = (lambda t: t) if arm == "syre" else stats.secondary
        # "keeps accuracy and rank": no loss beyond the margin from the early tasks to the last ones
        tests.append(wrap(stats.compare(f"{arm} keeps its accuracy: last {k} tasks not below tasks 2-{k + 1} by more than "
                                        f"{margin:g}", v(arm, "acc_last"), v(arm, "acc_first"), metric="accuracy",
                                        arms=[f"{arm}, last {k} tasks", f"{arm}, tasks 2-{k + 1}"], alternative="greater",
                                        margin=-margin)))
        first = np.array(v(arm, "eff_rank_first"), dtype=float)
        last = np.array(v(arm, "eff_rank_last"), dtype=float)
        tests.append(wrap(stats.within(f"{arm} keeps its feature rank: last task >= {share:g} x the first, every seed",
                                       last / np.maximum(first, 1e-12), metric="eff_rank_last / eff_rank_first", low=share,
                                       arm=arm, min_n=stats.MIN_N)))
        if "wd" not in names:
            continue
        tests.append(wrap(stats.compare(f"{arm}: accuracy on the last {k} tasks above weight decay's", v(arm, "acc_last"),
                                        v("wd", "acc_last"), metric="acc_last", arms=[arm, "wd"], alternative="greater")))
        tests.append(wrap(stats.compare(f"{arm}: feature rank on the last task above weight decay's", v(arm, "eff_rank_last"),
                                        v("wd", "eff_rank_last"), metric="eff_rank_last", arms=[arm, "wd"], alternative="greater")))
    for arm in ("syre", "syre_big"):
        if arm in names and "none" in names:
            tests.append(stats.secondary(stats.compare(f"{arm}: accuracy on the last {k} tasks above no decay's", v(arm, "acc_last"),
                                                       v("none", "acc_last"), metric="acc_last", arms=[arm, "none"],
                                                       alternative="greater")))

    def ms(arm, m, fmt=".3f"):
        d = stats.describe(v(arm, m))
        return f"{d['mean']:{fmt}} ± {d['std']:.2g}" if d["n"] else "-"

    findings = {"headline": "; ".join(f"{a} acc tasks 2-{k + 1} {ms(a, 'acc_first')} -> last {k} {ms(a, 'acc_last')}, eff rank "
                                      f"{ms(a, 'eff_rank_first', '.0f')} -> {ms(a, 'eff_rank_last', '.0f')}" for a in names)}
    _plot(ctx, cfg, arm_list)
    return {
        "tests": tests,
        "rule": f"syre (the configured sigma0) keeps its plasticity and its features: accuracy over the last {k} tasks not below "
        f"tasks 2-{k + 1} by more than {margin:g} (one-sided paired non-inferiority t-test, p < 0.05) and effective rank of the "
        f"last hidden layer on the last task >= {share:g} x the first task's in every seed; and it beats the weight-decay "
        f"control: higher accuracy over the last {k} tasks and higher last-task effective rank (one-sided paired t-tests, "
        "p < 0.05). No decay, the large sigma0, L2-Init and Shrink and Perturb are reported (secondary)",
        "findings": findings,
        "tables": [_table(ctx, cfg, names)],
        "notes": [
            f"MLP {cfg['size'] ** 2}-{cfg['width']}-{cfg['width']}-10 (ReLU, shared head), Adam lr {cfg['lr']:g}, batch {cfg['batch']}, "
            f"{cfg['epochs']} epochs per task on {cfg['n_per_task']} images; {cfg['tasks']} tasks (pixel permutations of "
            f"Fashion-MNIST {cfg['size']}x{cfg['size']}); gamma {cfg['gamma']:g} (decoupled) for every decaying arm.",
            f"Shrink and Perturb: weight decay at gamma plus N(0, ({cfg['sp_noise']:g} x init std)^2) noise after every step.",
            f"effective rank of the last hidden layer on {cfg['n_rank']} test images of each task.",
            f"syre sigma0: {sigma0_label(cfg['sigma0'])}; syre_big: {sigma0_label(cfg['sigma0_big'])}.",
        ],
    }


def _curves(ctx, arm: str, key: str) -> np.ndarray:
    rows = sorted((r for r in ctx.records if r["arm"] == arm), key=lambda r: r["seed"])
    return np.array([r[key] for r in rows], dtype=float)


def _table(ctx, cfg, names: Sequence[str]) -> str:
    rows = ["## Accuracy on each new task and effective rank of the features, task by task", "",
            "| task | " + " | ".join(f"{n} acc | {n} eff rank" for n in names) + " |", "|---|" + "---|---|" * len(names)]
    data = {n: (_curves(ctx, n, "task_acc"), _curves(ctx, n, "task_eff_rank")) for n in names}
    for t in range(int(cfg["tasks"])):
        cells = [f"{data[n][0][:, t].mean():.3f} ± {data[n][0][:, t].std():.3f} | {data[n][1][:, t].mean():.1f} ± "
                 f"{data[n][1][:, t].std():.1f}" for n in names]
        rows.append(f"| {t + 1} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _plot(ctx, cfg, arm_list) -> None:
    fig, axes = ctx.subplots(1, 3, figsize=(13, 3.5))
    tasks = np.arange(1, int(cfg["tasks"]) + 1)
    for i, arm in enumerate(arm_list):
        for ax, key in zip(axes, ("task_acc", "task_eff_rank", "task_dead")):
            c = _curves(ctx, arm.name, key)
            if c.size == 0:
                continue
            m, s = c.mean(axis=0), c.std(axis=0)
            ax.plot(tasks, m, marker="o", color=f"C{i}", label=arm.label)
            ax.fill_between(tasks, m - s, m + s, color=f"C{i}", alpha=0.15)
    for ax, label in zip(axes, ("test accuracy on the new task", "effective rank (last hidden layer)", "dead units (share)")):
        ax.set_xlabel("task")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    ctx.save(fig, "e8_permuted_fashion")


EXPERIMENT = Experiment(
    id="e8",
    title="continual learning on permuted Fashion-MNIST: accuracy on new tasks and feature rank",
    claim=CLAIM,
    run=run,
    defaults=DEFAULTS,
    quick=QUICK,
)
