"""E12: a message-passing network on stochastic-block-model graphs: node-permutation equivariance and embedding collapse.

Node classification (the community of each node) on graphs of ``syre.bench.graphs.sbm``: a
dense-adjacency GCN of ``layers`` message-passing layers of ``width`` units and a linear read-out,
Adam with decoupled decay at gamma (the AdamW convention), ``steps`` steps on batches of ``batch``
of the ``n_train`` training graphs; the evaluation graphs are fixed (validation graphs for tuning).

The network's node-permutation equivariance is a property of the architecture (its parameters
are shared over the nodes), not a symmetry of its parameters, so syre cannot break it: that is a
*sanity check* here (it holds by construction, whatever the parameters; a failure would mean the
benchmark is broken), measured exactly in float64 for every trained network. The claim tested
is the other half: under strong weight decay the node embeddings collapse, and syre changes that.

Metrics per trial: ``test_acc`` (nodes of the evaluation graphs), ``emb_rank`` (effective rank of the
last message-passing layer's node embeddings over the evaluation nodes; ``emb_rank_l1..``),
``dead_units`` (share of last-layer units never active), ``equiv_error`` (float64, relative), the
pull numbers of the arms that attach syre.
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from . import fmt, graphs
from .arms import ARM_DEFAULTS, apply_arm
from .common import trial_rng
from .e10 import pull_numbers
from .gsweep import Sweep
from .protocol import Design, Test
from .registry import Experiment

CLAIM = ("A message-passing network keeps its node-permutation equivariance under syre exactly (a sanity check: it is the "
         "architecture's symmetry, not the parameters'); under a weight decay strong enough to collapse its node embeddings "
         "(lower effective rank), syre at the same gamma keeps a higher embedding rank and a higher accuracy.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "gamma": 10.0,
    "gamma_typical": 0.01,
    "gammas": [0.01, 0.3, 3.0, 10.0],
    "arms": ["wd", "syre"],
    "arms_gmax": ["syre_ar", "l2init", "syre_match", "syre_0.3x", "syre_3x"],
    "tune_arms": ["wd", "syre", "syre_ar", "l2init"],
    "tune_gammas": [0.01, 0.3, 3.0, 10.0],
    "tune_sigma0s": [ARM_DEFAULTS["sigma0"]],
    "noninferior_margin": 0.01,
    "equiv_tol": 1e-12,
    "n_nodes": 60,
    "blocks": 4,
    "n_feat": 16,
    "p_in": 0.3,
    "p_out": 0.02,
    "signal": 1.0,
    "n_train": 256,
    "n_eval_graphs": 32,
    "width": 64,
    "layers": 3,
    "lr": 1e-2,
    "batch": 16,
    "steps": 300,
}
QUICK = {"gammas": [0.01, 10.0], "arms_gmax": ["syre_match"], "tune_arms": ["wd", "syre"], "tune_gammas": [0.01, 10.0], "n_train": 16,
         "n_eval_graphs": 8, "width": 16, "layers": 2, "steps": 40}


def _check(cfg: Dict[str, Any]) -> None:
    for key in ("n_nodes", "blocks", "n_feat", "n_train", "n_eval_graphs", "width", "layers", "batch", "steps"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Invalid {key}: {v!r}; expected an int >= 1")
    if cfg["batch"] > cfg["n_train"]:
        raise ValueError(f"Invalid batch: {cfg['batch']!r}; expected at most n_train = {cfg['n_train']}")
    if not cfg["lr"] > 0:
        raise ValueError(f"Invalid lr: {cfg['lr']!r}; expected a number > 0")


def _eval_graphs(cfg):
    split = "val" if cfg["eval_split"] == "val" else "test"
    return graphs.sbm(cfg["n_eval_graphs"], cfg, torch.Generator().manual_seed(graphs.SPLIT_SEEDS[split]))


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """Train the GCN with ``arm``; accuracy, embedding ranks, the exact equivariance error, pull numbers."""
    _check(cfg)
    with trial_rng(seed):
        return _trial(cfg, arm, seed)


def _trial(cfg, arm, seed):
    a, x, y = graphs.sbm(cfg["n_train"], cfg, torch.Generator().manual_seed(30_000 + seed))
    a_hat = graphs.normalise(a)
    ae, xe, ye = _eval_graphs(cfg)
    ae_hat = graphs.normalise(ae)
    net = graphs.build(cfg, seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    handle = apply_arm(arm, net, opt, seed=seed, cfg=cfg)
    gen = torch.Generator().manual_seed(seed + 7919)
    k = int(cfg["blocks"])
    for _ in range(int(cfg["steps"])):
        idx = torch.randperm(cfg["n_train"], generator=gen)[: cfg["batch"]]
        loss = torch.nn.functional.cross_entropy(net(a_hat[idx], x[idx]).reshape(-1, k), y[idx].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(ae_hat, xe).argmax(-1) == ye).float().mean())
    embs = graphs.embeddings(net, ae_hat, xe)
    out: Dict[str, Any] = {"test_acc": acc, "train_loss": float(loss.detach())}
    out.update({f"emb_rank_l{i + 1}": graphs.rank(h) for i, h in enumerate(embs)})
    out["emb_rank"] = out[f"emb_rank_l{len(embs)}"]
    out["dead_units"] = float((embs[-1].max(dim=0).values <= 0).float().mean())
    out["equiv_error"] = graphs.equivariance_error(net, ae[:4], xe[:4], torch.Generator().manual_seed(80_000 + seed))
    out.update(pull_numbers(handle))
    if handle.syre is not None:
        handle.syre.remove()
    return out


def design(cfg: Dict[str, Any]) -> Design:
    _check(cfg)
    sw = Sweep(cfg, metric="test_acc", better="max")
    g, gt, at, ty, none = sw.g, sw.gt, sw.at, sw.ty, sw.none
    m, tol = cfg["noninferior_margin"], cfg["equiv_tol"]
    s = f"gamma {g:g}"
    why = ("every parameter is shared over the nodes, so f(P A P^T, P X) = P f(A, X) for any parameters: the architecture's "
           "symmetry is not a parameter symmetry and no decay can break it (float64 round-off only)")
    tests = [Test(f"equivariance: {c.key} permutes its outputs with the nodes (relative error <= {tol:g})", "equiv_error", c,
                  direction="less", kind="bound", threshold=tol, role="sanity", why=why, key=f"equivariance.{c.arm}")
             for c in (none, at("wd"), at("syre"))]
    tests += [
        Test(f"{s}: weight decay lowers the node embeddings' effective rank", "emb_rank", at("wd"), none, direction="less",
             key="collapse.wd_rank"),
        Test(f"{s}: syre's embedding rank above weight decay's", "emb_rank", at("syre"), at("wd"), key="collapse.syre_rank"),
        Test(f"{s}: syre's accuracy above weight decay's", "test_acc", at("syre"), at("wd"), key="collapse.syre_perf"),
        Test(f"gamma {gt:g}: syre's accuracy not below weight decay's by more than {m:g}", "test_acc", ty("syre"), ty("wd"), threshold=-m,
             key="cost"),
        Test(f"{s}: weight decay loses accuracy", "test_acc", at("wd"), none, direction="less", role="secondary", key="collapse.wd_perf"),
        Test(f"{s}: syre has fewer dead units than weight decay", "dead_units", at("syre"), at("wd"), direction="less", role="secondary",
             key="collapse.dead"),
    ]
    for a in cfg["arms_gmax"]:
        tests += [Test(f"{s}: {a}'s embedding rank above weight decay's", "emb_rank", at(a), at("wd"), role="secondary", key=f"{a}.rank"),
                  Test(f"{s}: {a}'s accuracy above weight decay's", "test_acc", at(a), at("wd"), role="secondary", key=f"{a}.perf")]
    scales = _scales(cfg)
    for a in scales:
        tests.append(Test(f"{s}: {a}'s accuracy below the default's", "test_acc", at(a), at("syre"), direction="less", role="secondary",
                          key=f"{a}.below_default"))
    tests += sw.tuned_tests("accuracy", "test_acc")
    tests += sw.heldout_tests(HELDOUT, perf="test_acc", rank="emb_rank", better="max", scale_arms=scales)
    return sw.design(tests, [
        f"SBM graphs: {cfg['n_nodes']} nodes in {cfg['blocks']} communities, p_in {cfg['p_in']:g}, p_out {cfg['p_out']:g}, {cfg['n_feat']} "
        f"features (community one-hot x {cfg['signal']:g} + N(0, 1) noise); "
        f"{cfg['n_train']} training graphs per seed, {cfg['n_eval_graphs']} "
        f"fixed evaluation graphs. Dense GCN: {cfg['layers']} layers of {cfg['width']} (ReLU), linear read-out; Adam lr {cfg['lr']:g}, "
        f"{cfg['steps']} steps of {cfg['batch']} graphs. No graph library: dense adjacency in plain torch. Equivariance: float64 copy of "
        "each trained network, a random node permutation per graph on 4 evaluation graphs."])


HELDOUT = "SBM graphs"


def _scales(cfg):
    return [a for a in cfg["arms_gmax"] if a in ("syre_0.3x", "syre_3x", "syre_match")]


METRICS = ("test_acc", "emb_rank", "dead_units", "equiv_error")


def report(ctx) -> Dict[str, Any]:
    from .curves import (
        cell_table,
        collapse_finding,
        cost_finding,
        plot_curves,
        pull_table,
        sigma0_finding,
    )

    cfg = ctx.config
    g = float(cfg["gamma"])
    plot_curves(ctx, "e12_rank_vs_gamma", [("test_acc", "test accuracy (nodes)"), ("emb_rank", "eff. rank of node embeddings"),
                                           ("dead_units", "dead units, last layer (share)")],
                [float(v) for v in cfg["gammas"]], list(cfg["arms"]), {g: list(cfg["arms_gmax"])}, title="E12 GCN on SBM graphs")
    finding = collapse_finding(ctx, premise=["collapse.wd_rank"], syre_tests=["collapse.syre_rank", "collapse.syre_perf"],
                               others=[f"{a}.{k}" for a in cfg["arms_gmax"] for k in ("rank", "perf")], gamma=g, what="the node embeddings")
    cost = cost_finding(ctx, ["cost"])
    # the held-out tests exist only when the tuned arms hold both syre and wd (``heldout.tests``): a --set tune_arms=... may drop them
    pairs = [(f"{a} at gamma {g:g}", f"{HELDOUT}/heldout.{a}.better", f"{a}.below_default") for a in _scales(cfg)]
    pairs = [q for q in pairs if ctx.declared(q[1])]
    s0 = sigma0_finding(ctx, pairs) if pairs else ""
    worst = max(max(r["equiv_error"] for r in ctx.records), 0.0)
    eq = f"Largest relative equivariance error over every trained network (float64): {worst:.1e} (tolerance {cfg['equiv_tol']:g})."
    head = "; ".join(f"{fmt.md_cell(k)} acc {fmt.num(ctx.arms[k]['test_acc']['mean'])}, emb rank {fmt.num(ctx.arms[k]['emb_rank']['mean'])}"
                     for k in ("none", f"wd[gamma={g:g}]", f"syre[gamma={g:g}]") if k in ctx.arms)
    ranks = [f"emb_rank_l{i + 1}" for i in range(int(cfg["layers"]))]
    return {"tables": ["## Cells\n\n" + cell_table(ctx, METRICS + tuple(ranks)), pull_table(ctx)],
            "findings": {"headline": head, "collapse": finding, "cost": cost, "sigma0": s0, "equivariance": eq}}


EXPERIMENT = Experiment(id="e12",
                        title="GCN on stochastic-block-model graphs: exact equivariance (sanity) and node-embedding collapse vs gamma",
                        claim=CLAIM, trial=trial, design=design, report=report, defaults=DEFAULTS, quick=QUICK, perf="test_acc",
                        better="max", rank="emb_rank", n_min=5, n_max=10, selection=2, heldout=True)
