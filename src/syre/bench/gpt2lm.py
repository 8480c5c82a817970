"""A GPT-2-shaped character LM built from ``transformers``' ``GPT2Config`` (its ``Conv1D`` layers), on E10's corpus.

The model is ``transformers.GPT2LMHeadModel`` at a small size (no download: built from a config),
with GPT-2's own init (every weight ~ N(0, ``initializer_range``^2), the residual projections
scaled by 1 / sqrt(2 n_layer), biases 0, LayerNorms at (1, 0)), dropout off, the head tied to the
token embedding. Its attention and MLP layers are ``transformers.pytorch_utils.Conv1D``, whose
weight is stored ``[in, out]``. The training loop, corpus and splits are E10's
(``syre.bench.charlm``): AdamW (betas 0.9 / 0.99), warmup then cosine to lr / 10, clip 1, decay on
the 2-D parameters only (nanoGPT's groups).

``transformers`` is an optional dependency (the ``bench`` extra); ``available()`` says whether it
imports, and ``trial`` raises an ImportError that names the extra when it does not.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch

from syre.diagnostics import effective_rank

from . import charlm
from .common import trial_rng

__all__ = ["available", "build", "trial", "attention_ranks"]


def available() -> bool:
    """True when ``transformers`` imports."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def build(cfg: Dict[str, Any], seed: int):
    """``GPT2LMHeadModel`` of ``cfg`` (``n_layer``, ``n_head``, ``n_embd``, ``block``, ``init_std``), its init drawn
    from the global torch RNG seeded by ``seed`` (inside ``trial_rng``)."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ImportError("the GPT-2 setting needs transformers: pip install 'torch-syre[bench]'") from exc
    hf_logging.set_verbosity_error()
    conf = GPT2Config(vocab_size=int(charlm.splits()["vocab"]), n_positions=int(cfg["block"]), n_embd=int(cfg["n_embd"]),
                      n_layer=int(cfg["n_layer"]), n_head=int(cfg["n_head"]), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      initializer_range=float(cfg["init_std"]), tie_word_embeddings=True)
    torch.manual_seed(seed)
    net = GPT2LMHeadModel(conf)
    net.config.use_cache = False
    return net


def groups(net) -> List[Dict]:
    """AdamW groups: the 2-D parameters decayed (embeddings, every ``Conv1D`` weight), the rest not (``syre_gamma = 0``)."""
    params = list(net.parameters())
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.0},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, "syre_gamma": 0.0}]


@torch.no_grad()
def attention_ranks(net) -> List[float]:
    """Per layer and head, the effective rank of ``W_Q,h^T W_K,h`` (``Conv1D`` weights are ``[in, out]``)."""
    out = []
    for blk in net.transformer.h:
        w = blk.attn.c_attn.weight.detach().double().T  # [3d, d]
        d = w.shape[1]
        heads = blk.attn.num_heads
        hd = d // heads
        wq, wk = w[:d], w[d : 2 * d]
        for h in range(heads):
            s = slice(h * hd, (h + 1) * hd)
            out.append(effective_rank(wq[s].T @ wk[s]))
    return out


@torch.no_grad()
def _loss(net, x, y, batch: int = 64) -> float:
    net.eval()
    total = 0.0
    for i in range(0, len(x), batch):
        logits = net(input_ids=x[i : i + batch]).logits
        total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i : i + batch].reshape(-1),
                                                         reduction="sum"))
    net.train()
    return total / y.numel()


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """Train the GPT-2-shaped LM with ``arm``; validation loss and attention rank (E10's loop and metrics)."""
    from .e10 import _schedule, pull_numbers

    with trial_rng(seed):
        data = charlm.splits()
        net = build(cfg, seed)
        handle, losses = charlm.train(net, groups(net), cfg, arm, seed, _schedule(cfg), lambda m, x: m(input_ids=x).logits)
        xe, ye = charlm.eval_windows(data["val" if cfg["eval_split"] == "val" else "test"], cfg["block"], cfg["n_eval"])
        ranks = attention_ranks(net)
        out = {"val_loss": _loss(net, xe, ye), "train_loss": float(np.mean(losses[-50:])), "qk_rank": float(np.mean(ranks)),
               "qk_rank_min": float(np.min(ranks)), **pull_numbers(handle)}
        if handle.syre is not None:
            handle.syre.remove()
        return out
