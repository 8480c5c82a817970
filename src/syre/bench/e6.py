"""E6: posterior collapse in a beta-VAE (beta = 10) on Fashion-MNIST, decay on the encoder only.

A fully connected VAE on average-pooled Fashion-MNIST (``size`` x ``size`` images, a subset):
encoder ``d -> hidden -> hidden -> 2 * latent`` (means and log-variances of a diagonal Gaussian
posterior), decoder ``latent -> hidden -> hidden -> d`` (Bernoulli logits), ReLU, LeCun-normal
init. The loss is ``reconstruction + beta * KL``, the reconstruction the summed binary
cross-entropy per image. The encoder and the decoder have their own Adam optimizers; the arm's
decay (decoupled) is attached to the **encoder's** only, as in the paper.

The outcome depends on training length (short runs leave even the no-decay VAE near the mean
image), so every cell runs at each length of ``lengths`` (epochs), and each length is tuned apart.

Metrics on ``n_test`` test images, from the posterior means ``mu``: ``eff_rank_mu`` (effective rank
of the centred means, Roy and Vetterli: the primary rank metric), ``rank_mu`` (numerical rank at
``rtol = rank_rtol``), ``active_units`` (``Var_x(mu_j) > active_threshold``, Burda et al. 2016),
``recon`` (test reconstruction loss decoding ``mu``), ``kl``, ``elbo_loss`` (beta = 1, a sample).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
import torch
from torch import nn

from syre.diagnostics.metrics import effective_rank, numerical_rank

from . import fmt, heldout
from .arms import ARM_DEFAULTS, apply_arm, arms as get_arms
from .common import dataset, lecun_init_, trial_rng, tuned_cells
from .protocol import Design, Test, Tuning, cell
from .registry import Experiment

CLAIM = ("In a beta-VAE (beta = 10) on Fashion-MNIST with decay on the encoder, syre raises the rank of the latent means "
         "and lowers the reconstruction loss compared with weight decay.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["wd", "syre"],
    "arms_gmax": ["syre_ar", "l2init", "syre_0.01x", "syre_0.3x", "syre_3x"],
    "gamma": 10.0,
    "gammas": [3.0, 10.0],
    "lengths": [8, 20],
    "tune_arms": ["wd", "syre", "syre_ar", "l2init"],
    "tune_gammas": [1.0, 3.0, 10.0],
    "tune_sigma0s": ["lecun:0.3", ARM_DEFAULTS["sigma0"], "lecun:3"],
    "noninferior_margin": 0.02,
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
QUICK = {"arms_gmax": ["syre_ar"], "gammas": [10.0], "lengths": [2], "tune_arms": ["wd", "syre"], "tune_gammas": [3.0, 10.0],
         "tune_sigma0s": [ARM_DEFAULTS["sigma0"]], "n_train": 1000, "n_test": 300, "hidden": 64}


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
    return dataset("fashion", cfg["eval_split"], n_train=cfg["n_train"], n_test=cfg["n_test"], size=cfg["size"])


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """Train the VAE for ``cfg["epochs"]`` with ``arm``'s decay on the encoder; latent ranks, active units, losses."""
    with trial_rng(seed):  # module constructors draw from the global generator (their init is then overwritten)
        return _trial(cfg, arm, seed)


def _trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    data = _data(cfg)
    vae = lecun_init_(VAE(data.x_train.shape[1], cfg["hidden"], cfg["latent"]), torch.Generator().manual_seed(seed))
    enc_opt = torch.optim.Adam(vae.encoder.parameters(), lr=cfg["lr"])
    dec_opt = torch.optim.Adam(vae.decoder.parameters(), lr=cfg["lr"])
    apply_arm(arm, vae.encoder, enc_opt, seed=seed, cfg=cfg)
    x = data.x_train
    order = torch.Generator().manual_seed(seed + 7919)
    with trial_rng(seed):  # the reparametrisation noise
        for _ in range(int(cfg["epochs"])):
            perm = torch.randperm(len(x), generator=order)
            for i in range(0, len(x), cfg["batch"]):
                recon, kl = vae.losses(x[perm[i : i + cfg["batch"]]])
                loss = recon + float(cfg["beta"]) * kl
                enc_opt.zero_grad(set_to_none=True)
                dec_opt.zero_grad(set_to_none=True)
                loss.backward()
                enc_opt.step()
                dec_opt.step()
        with torch.no_grad():
            mu, _ = vae.encode(data.x_test)
            recon, kl = vae.losses(data.x_test, sample=False)
            s_recon, s_kl = vae.losses(data.x_test, sample=True)
            shown = torch.sigmoid(vae.decoder(mu[: cfg["n_show"]])).tolist()
    var = mu.var(dim=0)
    return {"eff_rank_mu": effective_rank(mu, center=True), "rank_mu": numerical_rank(mu, rtol=cfg["rank_rtol"], center=True),
            "active_units": int((var > cfg["active_threshold"]).sum()), "recon": float(recon), "kl": float(kl),
            "elbo_loss": float(s_recon + s_kl), "mu_var_sorted": sorted((float(v) for v in var), reverse=True),
            "recon_images": shown}


def design(cfg: Dict[str, Any]) -> Design:
    gammas = [float(g) for g in cfg["gammas"]]
    if not gammas or any(g <= 0 for g in gammas):
        raise ValueError(f"Invalid gammas: {gammas!r}; expected values > 0 (gamma = 0 is the no-decay arm)")
    lengths = [int(e) for e in cfg["lengths"]]
    if not lengths or any(e < 1 for e in lengths):
        raise ValueError(f"Invalid lengths: {cfg['lengths']!r}; expected epochs >= 1")
    gmax = max(gammas)
    arm_list = get_arms(["none"] + list(cfg["arms"]) + list(cfg["arms_gmax"]))
    tun = Tuning(metric="recon", better="min", arms=tuple(cfg["tune_arms"]), gammas=tuple(cfg["tune_gammas"]),
                 sigma0s=tuple(cfg["tune_sigma0s"]), contexts=tuple(((("epochs", e),) for e in lengths)),
                 also=(("syre", "wd"),) if {"syre", "wd"} <= set(cfg["tune_arms"]) else ())
    cells, tests = [], []
    for e in lengths:
        none = cell("none", epochs=e)
        at = lambda a, e=e: cell(a, epochs=e, gamma=gmax)  # noqa: E731
        here = lambda n, e=e: cell(n, epochs=e)  # noqa: E731
        cells += [none] + [cell(a, epochs=e, gamma=g) for g in gammas for a in cfg["arms"]] + [at(a) for a in cfg["arms_gmax"]]
        cells += [c for c in tuned_cells(tun) if c.where["epochs"] == e]
        lab = f"{e} epochs, gamma {gmax:g}"
        tests += [Test(f"{lab}: weight decay lowers the effective rank of the latent means", "eff_rank_mu", at("wd"), none,
                       direction="less", role="secondary"),
                  Test(f"{lab}: syre's effective rank of the latent means above weight decay's", "eff_rank_mu", at("syre"), at("wd")),
                  Test(f"{lab}: syre's reconstruction loss below weight decay's", "recon", at("syre"), at("wd"), direction="less"),
                  Test(f"{lab}: syre's numerical rank of the latent means above weight decay's", "rank_mu", at("syre"), at("wd"),
                       role="secondary"),
                  Test(f"{lab}: syre has more active units than weight decay", "active_units", at("syre"), at("wd"), role="secondary")]
        for a in cfg["arms_gmax"]:
            tests += [Test(f"{lab}: {a}'s effective rank above weight decay's", "eff_rank_mu", at(a), at("wd"), role="secondary"),
                      Test(f"{lab}: {a}'s reconstruction loss below weight decay's", "recon", at(a), at("wd"), direction="less",
                           role="secondary")]
        if "syre" in tun.arms:
            for ref in [r for r in tun.arms if r != "syre"]:
                tests.append(Test(f"{e} epochs, tuned: syre's reconstruction loss below {ref}'s", "recon", here("syre@tuned"),
                                  here(f"{ref}@tuned"), direction="less", family="tuned", role="primary" if ref == "wd" else "secondary"))
            tests.append(Test(f"{e} epochs, tuned: syre's reconstruction loss below no decay's", "recon", here("syre@tuned"), none,
                              direction="less", family="tuned"))
        tests += heldout.tests(f"{e} epochs", at, here, perf="recon", rank="eff_rank_mu", better="min",
                               margin=cfg["noninferior_margin"], tuned_arms=tun.arms,
                               scale_arms=[a for a in ("syre_0.3x", "syre_3x") if a in cfg["arms_gmax"]])
    return Design(arms=arm_list, cells=cells, tests=tests, tuning=tun, notes=[
        f"VAE {cfg['size'] ** 2}-{cfg['hidden']}-{cfg['hidden']}-2x{cfg['latent']} / {cfg['latent']}-{cfg['hidden']}-{cfg['hidden']}-"
        f"{cfg['size'] ** 2}, ReLU, beta {cfg['beta']:g}, Bernoulli decoder; Adam lr {cfg['lr']:g}, batch {cfg['batch']}, "
        f"{lengths} epochs on {cfg['n_train']} Fashion-MNIST images ({cfg['size']}x{cfg['size']}), {cfg['n_test']} test images; "
        f"decay on the encoder only; rank_mu at rtol {cfg['rank_rtol']:g}; active unit: Var_x(mu_j) > {cfg['active_threshold']:g}."])


def report(ctx) -> Dict[str, Any]:
    cfg = ctx.config
    metrics = ("eff_rank_mu", "rank_mu", "active_units", "recon", "kl")
    rows = [[c.key] + [fmt.ms(ctx.arms[c.key][m]) for m in metrics] for c in ctx.protocol.design.cells if c.key in ctx.arms]
    gmax = max(float(g) for g in cfg["gammas"])
    heads = []
    for e in cfg["lengths"]:
        heads.append(f"{e} epochs, gamma {gmax:g}: " + ", ".join(
            f"{a} eff rank {fmt.num(np.mean(ctx.values(a, 'eff_rank_mu', **p)))} recon {fmt.num(np.mean(ctx.values(a, 'recon', **p)))}"
            for a, p in [("none", {"epochs": e})] + [(a, {"epochs": e, "gamma": gmax}) for a in ("wd", "syre")]))
    _plot(ctx, cfg)
    _plot_recons(ctx, cfg, gmax)
    return {"tables": ["## Cells\n\n" + fmt.md_table(["cell"] + list(metrics), rows)], "findings": {"headline": "; ".join(heads)}}


def _plot(ctx, cfg) -> None:
    gammas = [float(g) for g in cfg["gammas"]]
    lengths = list(cfg["lengths"])
    fig, axes = ctx.subplots(len(lengths), 3, figsize=(12, 3.3 * len(lengths)), squeeze=False)
    for r, e in enumerate(lengths):
        for ax, (metric, label) in zip(axes[r], (("eff_rank_mu", "effective rank of latent means"), ("active_units", "active units"),
                                                 ("recon", "test reconstruction loss"))):
            ax.axhline(np.mean(ctx.values("none", metric, epochs=e)), color="k", ls="--", lw=0.8, label="no decay")
            for i, a in enumerate(cfg["arms"]):
                vals = [ctx.values(a, metric, epochs=e, gamma=g) for g in gammas]
                ax.errorbar(gammas, [np.mean(v) for v in vals], yerr=[np.std(v) for v in vals], marker="o", color=f"C{i}",
                            label=a, capsize=2)
            for i, a in enumerate(cfg["arms_gmax"], len(cfg["arms"])):
                v = ctx.values(a, metric, epochs=e, gamma=max(gammas))
                ax.errorbar([max(gammas) * (1.08 + 0.06 * i)], [np.mean(v)], yerr=[np.std(v)], marker="s", color=f"C{i}",
                            label=a, capsize=2)
            ax.set_xscale("log")
            ax.set_xlabel("gamma on the encoder (decoupled)")
            ax.set_ylabel(label)
            ax.set_title(f"{e} epochs", fontsize=9)
        axes[r][0].legend(fontsize=6)
    ctx.save(fig, "e6_beta_vae")


def _plot_recons(ctx, cfg, gmax) -> None:
    data = _data(cfg)
    side = cfg["size"]
    n = min(cfg["n_show"], len(data.x_test))
    e = max(cfg["lengths"])
    first = ctx.protocol.evaluation_seeds[0]

    def imgs(arm, **p):
        rows = [r for r in ctx.rows(cell(arm, **p)) if r["seed"] == first]
        return rows[0]["recon_images"] if rows else None

    rows = [("test images", data.x_test[:n].tolist()), ("no decay", imgs("none", epochs=e))]
    rows += [(f"{a} (gamma {gmax:g})", imgs(a, epochs=e, gamma=gmax)) for a in list(cfg["arms"]) + list(cfg["arms_gmax"])]
    rows = [(label, im) for label, im in rows if im is not None]
    fig, axes = ctx.subplots(len(rows), n, figsize=(1.1 * n, 1.2 * len(rows)), squeeze=False)
    for r, (label, im) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(np.asarray(im[c], dtype=float).reshape(side, side), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    ctx.save(fig, "e6_reconstructions")


EXPERIMENT = Experiment(id="e6", title="beta-VAE on Fashion-MNIST: latent rank and reconstruction, decay on the encoder", claim=CLAIM,
                        trial=trial, design=design, report=report, defaults=DEFAULTS, quick=QUICK, perf="recon", better="min",
                        rank="eff_rank_mu", n_min=5, n_max=8, selection=2, heldout=True)
