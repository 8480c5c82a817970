"""E6: posterior collapse in a beta-VAE (beta = 10) on Fashion-MNIST, decay on the encoder only.

A fully connected VAE on average-pooled Fashion-MNIST (``size`` x ``size`` images, a subset):
encoder ``d -> hidden -> hidden -> 2 * latent`` (the means and log-variances of a diagonal
Gaussian posterior), decoder ``latent -> hidden -> hidden -> d`` (Bernoulli logits), ReLU,
LeCun-normal init. The loss is ``reconstruction + beta * KL`` with the reconstruction the summed
binary cross-entropy per image. The encoder and the decoder have their own Adam optimizers (one
Adam over both is the same update: Adam is per parameter); the arm's decay (decoupled, the AdamW
convention) is attached to the **encoder's** optimizer only, as in the paper. gamma = 0 is the
no-decay arm.

Metrics per trial, on ``n_test`` test images, from the posterior means ``mu`` ``[n_test, latent]``:

* ``rank_mu``: numerical rank of the centred means at ``rtol = rank_rtol`` (singular values
  above ``rank_rtol`` times the largest);
* ``eff_rank_mu``: their effective rank (Roy and Vetterli, centred);
* ``active_units``: latent units whose mean varies over the data, ``Var_x(mu_j) > active_threshold``
  (Burda, Grosse and Salakhutdinov 2016: 0.01);
* ``recon``: test reconstruction loss (summed BCE per image, decoding ``mu``), ``kl``: test KL per
  image, ``elbo_loss = recon + kl`` (the beta = 1 negative ELBO, decoding a sample).
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch
from torch import nn

from syre.diagnostics.metrics import effective_rank, numerical_rank

from . import stats
from .arms import ARM_DEFAULTS, ARMS, apply_arm, arms as get_arms, sigma0_label
from .common import dataset, lecun_init_, trial_rng
from .registry import Experiment

CLAIM = ("In a beta-VAE (beta = 10) on Fashion-MNIST with decay on the encoder, syre raises the rank of the latent means "
         "and lowers the reconstruction loss compared with weight decay.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["wd", "syre", "syre_ar", "syre_big"],
    "gammas": [3.0, 10.0],
    "beta": 10.0,
    "latent": 16,
    "hidden": 128,
    "lr": 1e-3,
    "batch": 128,
    "epochs": 8,
    "n_train": 6000,
    "n_test": 2000,
    "size": 14,
    "rank_rtol": 1e-2,
    "active_threshold": 0.01,
    "n_show": 8,
}
QUICK = {"arms": ["wd", "syre"], "gammas": [10.0], "epochs": 2, "n_train": 1000, "n_test": 300, "hidden": 64}


class VAE(nn.Module):
    """A fully connected VAE: ``encode(x) -> (mu, logvar)``, ``decode(z) -> logits``."""

    def __init__(self, d: int, hidden: int, latent: int):
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, d))

    def encode(self, x: torch.Tensor):
        h = self.encoder(x)
        return h[:, : self.latent], h[:, self.latent :]

    def losses(self, x: torch.Tensor, sample: bool = True):
        """``(recon, kl)`` per image, averaged over the batch (decoding a sample, or ``mu``)."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        recon = nn.functional.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(1).mean()
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
        return recon, kl


def _data(cfg):
    return dataset("fashion", n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"])


def trial(cfg: Dict[str, Any], arm, seed: int, gamma: float, keep: Dict[str, Any] = None) -> Dict[str, Any]:
    """Train the VAE with ``arm``'s decay on the encoder at ``gamma``; latent rank, active units, losses."""
    with trial_rng(seed):  # module constructors draw from the global generator (their init is then overwritten)
        return _trial(cfg, arm, seed, gamma, keep)


def _trial(cfg: Dict[str, Any], arm, seed: int, gamma: float, keep: Dict[str, Any] = None) -> Dict[str, Any]:
    data = _data(cfg)
    d = data.x_train.shape[1]
    vae = lecun_init_(VAE(d, cfg["hidden"], cfg["latent"]), torch.Generator().manual_seed(seed))
    enc_opt = torch.optim.Adam(vae.encoder.parameters(), lr=cfg["lr"])
    dec_opt = torch.optim.Adam(vae.decoder.parameters(), lr=cfg["lr"])
    apply_arm(arm, vae.encoder, enc_opt, gamma=gamma, seed=seed, cfg=cfg)
    x = data.x_train
    order = torch.Generator().manual_seed(seed + 7919)
    beta = float(cfg["beta"])
    with trial_rng(seed):  # the reparametrisation noise
        for _ in range(int(cfg["epochs"])):
            perm = torch.randperm(len(x), generator=order)
            for i in range(0, len(x), cfg["batch"]):
                recon, kl = vae.losses(x[perm[i : i + cfg["batch"]]])
                loss = recon + beta * kl
                enc_opt.zero_grad(set_to_none=True)
                dec_opt.zero_grad(set_to_none=True)
                loss.backward()
                enc_opt.step()
                dec_opt.step()
        with torch.no_grad():
            xt = data.x_test
            mu, _ = vae.encode(xt)
            recon, kl = vae.losses(xt, sample=False)
            s_recon, s_kl = vae.losses(xt, sample=True)
    var = mu.var(dim=0)
    if keep is not None:
        with torch.no_grad():
            keep["recon_images"] = torch.sigmoid(vae.decoder(mu[: cfg["n_show"]])).tolist()
    return {
        "rank_mu": numerical_rank(mu, rtol=cfg["rank_rtol"], center=True),
        "eff_rank_mu": effective_rank(mu, center=True),
        "active_units": int((var > cfg["active_threshold"]).sum()),
        "recon": float(recon),
        "kl": float(kl),
        "elbo_loss": float(s_recon + s_kl),
        "mu_var_sorted": sorted((float(v) for v in var), reverse=True),
    }


def run(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    arm_list = get_arms(cfg["arms"])
    gammas = [float(g) for g in cfg["gammas"]]
    if not gammas or any(g <= 0 for g in gammas):
        raise ValueError(f"Invalid gammas: {gammas!r}; expected values > 0 (gamma = 0 is run once as the no-decay arm)")
    _data(cfg)
    gmax = max(gammas)
    shown: Dict[str, Any] = {}
    ctx.progress(len(ctx.seeds) * (1 + len(gammas) * len(arm_list)))
    for seed in ctx.seeds:
        keep = {} if seed == ctx.seeds[0] else None
        ctx.record("none", seed, {"gamma": 0.0}, **trial(cfg, ARMS["none"], seed, 0.0, keep))
        if keep:
            shown["none"] = keep["recon_images"]
        ctx.step(f"none seed {seed}")
    for g in gammas:
        for arm in arm_list:
            for seed in ctx.seeds:
                keep = {} if (seed == ctx.seeds[0] and g == gmax) else None
                ctx.record(arm.name, seed, {"gamma": g}, **trial(cfg, arm, seed, g, keep))
                if keep:
                    shown[arm.name] = keep["recon_images"]
                ctx.step(f"{arm.name} gamma={g:g} seed {seed}")

    names = [a.name for a in arm_list]
    at = {"gamma": gmax}
    zero = {"gamma": 0.0}
    v = lambda arm, m, p=at: ctx.values(arm, m, p)  # noqa: E731
    tests: List[Dict[str, Any]] = []
    if "wd" in names:
        tests.append(stats.secondary(stats.compare(f"weight decay on the encoder lowers the latent rank at gamma = {gmax:g}",
                                                   v("wd", "rank_mu"), v("none", "rank_mu", zero), metric="rank_mu",
                                                   arms=[f"wd[gamma={gmax:g}]", "none"], alternative="less")))
    for arm in ("syre", "syre_ar", "syre_big"):
        if arm not in names or "wd" not in names:
            continue
        wrap = (lambda t: t) if arm == "syre" else stats.secondary
        tests.append(wrap(stats.compare(f"{arm}'s latent rank above weight decay's at gamma = {gmax:g}", v(arm, "rank_mu"),
                                        v("wd", "rank_mu"), metric="rank_mu", arms=[arm, "wd"], alternative="greater")))
        tests.append(wrap(stats.compare(f"{arm}'s reconstruction loss below weight decay's at gamma = {gmax:g}", v(arm, "recon"),
                                        v("wd", "recon"), metric="recon", arms=[arm, "wd"], alternative="less")))
        tests.append(stats.secondary(stats.compare(f"{arm}: more active units than weight decay at gamma = {gmax:g}",
                                                   v(arm, "active_units"), v("wd", "active_units"), metric="active_units",
                                                   arms=[arm, "wd"], alternative="greater")))

    def ms(arm, m, p=at, fmt=".3g"):
        d = stats.describe(ctx.values(arm, m, p))
        return f"{d['mean']:{fmt}} ± {d['std']:.2g}" if d["n"] else "-"

    findings = {"headline": f"gamma {gmax:g}: " + "; ".join(
        f"{a} rank {ms(a, 'rank_mu', zero if a == 'none' else at)}, active {ms(a, 'active_units', zero if a == 'none' else at)}, "
        f"recon {ms(a, 'recon', zero if a == 'none' else at, '.1f')}" for a in ["none"] + names)}
    table = _table(ctx, names, gammas)
    _plot(ctx, cfg, arm_list, gammas)
    _plot_recons(ctx, cfg, arm_list, shown, gmax)
    return {
        "tests": tests,
        "rule": f"at the largest gamma ({gmax:g}), syre (the configured sigma0) has a higher numerical rank of the latent means "
        "and a lower test reconstruction loss than weight decay (one-sided paired t-tests over seeds, p < 0.05); AR, the large "
        "sigma0 and the active-unit counts are reported (secondary)",
        "findings": findings,
        "tables": [table],
        "notes": [f"VAE {cfg['size'] ** 2}-{cfg['hidden']}-{cfg['hidden']}-2x{cfg['latent']} / {cfg['latent']}-{cfg['hidden']}-"
                  f"{cfg['hidden']}-{cfg['size'] ** 2}, ReLU, beta {cfg['beta']:g}, Bernoulli decoder; Adam lr {cfg['lr']:g}, batch "
                  f"{cfg['batch']}, {cfg['epochs']} epochs on {cfg['n_train']} Fashion-MNIST images ({cfg['size']}x{cfg['size']}), "
                  f"{cfg['n_test']} test images; decay on the encoder only.",
                  f"rank_mu: numerical rank of the centred latent means at rtol {cfg['rank_rtol']:g}; active unit: Var_x(mu_j) > "
                  f"{cfg['active_threshold']:g}.",
                  f"syre sigma0: {sigma0_label(cfg['sigma0'])}; syre_big: {sigma0_label(cfg['sigma0_big'])}."],
    }


def _table(ctx, names, gammas) -> str:
    metrics = (("rank_mu", ".1f"), ("active_units", ".1f"), ("recon", ".1f"), ("kl", ".2f"))
    rows = ["## Latent rank, active units and losses vs gamma (decay on the encoder)", "",
            "| gamma | arm | " + " | ".join(m for m, _ in metrics) + " |", "|---|---|" + "---|" * len(metrics)]

    def cells(arm, p):
        out = []
        for m, f in metrics:
            d = stats.describe(ctx.values(arm, m, p))
            out.append(f"{d['mean']:{f}} ± {d['std']:{f}}" if d["n"] else "-")
        return " | ".join(out)

    rows.append(f"| 0 | none | {cells('none', {'gamma': 0.0})} |")
    for g in gammas:
        for n in names:
            rows.append(f"| {g:g} | {n} | {cells(n, {'gamma': g})} |")
    return "\n".join(rows) + "\n"


def _plot(ctx, cfg, arm_list, gammas) -> None:
    fig, axes = ctx.subplots(1, 3, figsize=(12, 3.4))
    for ax, (metric, label) in zip(axes, (("rank_mu", f"rank of latent means (rtol {cfg['rank_rtol']:g})"),
                                          ("active_units", "active latent units"), ("recon", "test reconstruction loss"))):
        base = ctx.values("none", metric, {"gamma": 0.0})
        ax.axhline(np.mean(base), color="k", ls="--", lw=0.8, label="no decay")
        for i, arm in enumerate(arm_list):
            m = [np.mean(ctx.values(arm.name, metric, {"gamma": g})) for g in gammas]
            s = [np.std(ctx.values(arm.name, metric, {"gamma": g})) for g in gammas]
            ax.errorbar(gammas, m, yerr=s, marker="o", color=f"C{i}", label=arm.label, capsize=2)
        ax.set_xscale("log")
        ax.set_xlabel("gamma on the encoder (decoupled)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    ctx.save(fig, "e6_beta_vae")


def _plot_recons(ctx, cfg, arm_list, shown, gmax) -> None:
    data = _data(cfg)
    side = cfg["size"]
    n = min(cfg["n_show"], len(data.x_test))
    rows = [("test images", data.x_test[:n].tolist()), ("no decay", shown.get("none"))]
    rows += [(f"{a.label} (gamma {gmax:g})", shown.get(a.name)) for a in arm_list]
    rows = [(label, imgs) for label, imgs in rows if imgs is not None]
    fig, axes = ctx.subplots(len(rows), n, figsize=(1.1 * n, 1.2 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.asarray(imgs[c], dtype=float).reshape(side, side), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    ctx.save(fig, "e6_reconstructions")


EXPERIMENT = Experiment(
    id="e6",
    title="beta-VAE on Fashion-MNIST: latent rank and reconstruction, decay on the encoder",
    claim=CLAIM,
    run=run,
    defaults=DEFAULTS,
    quick=QUICK,
)
