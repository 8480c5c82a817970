"""E10's pieces: a character corpus on every machine, a nanoGPT-style causal LM, its training loop and its collapse metrics.

**Corpus.** CPython's ``pydoc_data.topics`` (the text of ``help()`` topics, shipped with every
CPython): the topics' texts concatenated in sorted key order. Its content depends on the Python
version, so ``corpus()`` reports its length and SHA-256 (recorded in every trial). The text is cut
into chunks of ``CHUNK`` characters; chunk ``i`` goes to the validation split when ``i % 10 == 8``,
to the test split when ``i % 10 == 9``, and to the training split otherwise. The vocabulary is every
character of the text.

**Model** (nanoGPT's ``model.py``, smaller): token and position embeddings, ``n_layer`` pre-LN
blocks (LayerNorm, causal self-attention with a fused QKV projection, residual; LayerNorm, GELU MLP
of width 4d, residual), a final LayerNorm and a head tied to the token embedding. nanoGPT's init:
every Linear and Embedding weight ~ N(0, 0.02^2), the residual projections ~ N(0, (0.02 /
sqrt(2 n_layer))^2), biases 0; LayerNorms at (1, 0). nanoGPT's optimizer groups: every parameter
with two or more dimensions is decayed (the embeddings, the tied head, every Linear weight), the
rest (biases, LayerNorms) is not (its group carries ``syre_gamma = 0``).

**Metrics.** Per head ``h`` of every layer, the effective rank (Roy and Vetterli) of the bilinear
form of attention ``W_Q,h^T W_K,h`` and of the value-output map ``W_O,h W_V,h`` (each d x d, of
rank at most d / n_head); the effective rank of the residual stream after each block on held-out
tokens (centred); the MLP units that are dead (``syre.diagnostics.dead_units``: never varying on
the tokens, or with near-zero weights) or duplicated (``duplicate_units``).
"""
from __future__ import annotations

import functools
import hashlib
import math
from typing import Dict, List, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from syre.diagnostics import dead_units, duplicate_units, effective_rank

__all__ = ["CHUNK", "GPT", "corpus", "splits", "build", "groups", "batches", "eval_windows", "evaluate_loss",
           "attention_ranks", "residual_ranks", "mlp_units"]

CHUNK = 1000


@functools.lru_cache(maxsize=1)
def corpus() -> Tuple[str, Dict[str, object]]:
    """The text and ``{"source", "chars", "sha256", "vocab"}``."""
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics))
    info = {"source": "pydoc_data.topics (CPython)", "chars": len(text),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], "vocab": len(set(text))}
    return text, info


@functools.lru_cache(maxsize=1)
def splits() -> Dict[str, torch.Tensor]:
    """``{"train", "val", "test"}``: character ids (int64) of each split, and ``"vocab"`` its size as a 0-d tensor."""
    text, _ = corpus()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    parts: Dict[str, List[torch.Tensor]] = {"train": [], "val": [], "test": []}
    for i in range(0, len(data), CHUNK):
        k = (i // CHUNK) % 10
        parts["val" if k == 8 else "test" if k == 9 else "train"].append(data[i : i + CHUNK])
    out = {k: torch.cat(v) for k, v in parts.items()}
    out["vocab"] = torch.tensor(len(chars))
    return out


class Attention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.c_proj = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor, keep: list = None) -> torch.Tensor:
        h = F.gelu(self.c_fc(x))
        if keep is not None:
            keep.append(h.detach())
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(d), Attention(d, n_head), nn.LayerNorm(d), MLP(d)

    def forward(self, x: torch.Tensor, keep: list = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x), keep)


class GPT(nn.Module):
    """nanoGPT's GPT at a small size; ``forward(idx, keep)`` returns logits and, with ``keep``, records per block
    ``("resid", x)`` and ``("mlp", hidden)``."""

    def __init__(self, vocab: int, block: int, n_layer: int, n_head: int, d: int):
        super().__init__()
        if d % n_head:
            raise ValueError(f"Invalid n_embd: {d}; expected a multiple of n_head = {n_head}")
        self.block = block
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.h = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as nanoGPT

    def forward(self, idx: torch.Tensor, keep: Dict[str, list] = None) -> torch.Tensor:
        x = self.wte(idx) + self.wpe.weight[: idx.shape[1]]
        for blk in self.h:
            x = blk(x, None if keep is None else keep["mlp"])
            if keep is not None:
                keep["resid"].append(x.detach())
        return self.lm_head(self.ln_f(x))


@torch.no_grad()
def build(cfg: Dict, seed: int) -> GPT:
    """The model of ``cfg`` with nanoGPT's init drawn from a generator seeded by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    net = GPT(int(splits()["vocab"]), cfg["block"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"])
    std = float(cfg["init_std"])
    for name, p in net.named_parameters():
        if p.dim() >= 2:
            s = std / math.sqrt(2 * cfg["n_layer"]) if name.endswith("c_proj.weight") else std
            p.copy_(torch.randn(p.shape, generator=gen) * s)
        elif name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            p.fill_(1.0)
        else:
            p.zero_()
    return net


def groups(net: nn.Module) -> List[Dict]:
    """nanoGPT's AdamW groups: 2-D and larger parameters decayed, the rest not (``syre_gamma = 0``).

    Every trainable parameter lands in exactly one group (a ValueError names any that do not)."""
    params = dict(net.named_parameters())
    decay = [p for n, p in params.items() if p.dim() >= 2]
    nodecay = [p for n, p in params.items() if p.dim() < 2]
    if len(decay) + len(nodecay) != len(params):
        raise ValueError("Invalid model: a parameter is in neither group")
    return [{"params": decay, "weight_decay": 0.0}, {"params": nodecay, "weight_decay": 0.0, "syre_gamma": 0.0}]


def batches(data: torch.Tensor, block: int, batch: int, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows (inputs, next-character targets)."""
    ix = torch.randint(len(data) - block - 1, (batch,), generator=gen)
    x = torch.stack([data[i : i + block] for i in ix.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + block] for i in ix.tolist()])
    return x, y


def eval_windows(data: torch.Tensor, block: int, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` non-overlapping windows spread evenly over ``data`` (the same for every trial)."""
    starts = list(range(0, len(data) - block - 1, block))
    if len(starts) > n:
        step = len(starts) / n
        starts = [starts[int(i * step)] for i in range(n)]
    x = torch.stack([data[i : i + block] for i in starts])
    y = torch.stack([data[i + 1 : i + 1 + block] for i in starts])
    return x, y


@torch.no_grad()
def evaluate_loss(net: GPT, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> float:
    net.eval()
    total = 0.0
    for i in range(0, len(x), batch):
        logits = net(x[i : i + batch])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i : i + batch].reshape(-1), reduction="sum"))
    net.train()
    return total / y.numel()


@torch.no_grad()
def attention_ranks(net: GPT) -> Dict[str, List[float]]:
    """Per layer and head, the effective rank of ``W_Q,h^T W_K,h`` (``qk``) and of ``W_O,h W_V,h`` (``vo``)."""
    qk, vo = [], []
    for blk in net.h:
        w = blk.attn.c_attn.weight.detach().double()
        d = w.shape[1]
        hd = d // blk.attn.n_head
        wq, wk, wv = w[:d], w[d : 2 * d], w[2 * d :]
        wo = blk.attn.c_proj.weight.detach().double()
        for h in range(blk.attn.n_head):
            s = slice(h * hd, (h + 1) * hd)
            qk.append(effective_rank(wq[s].T @ wk[s]))
            vo.append(effective_rank(wo[:, s] @ wv[s]))
    return {"qk": qk, "vo": vo}


@torch.no_grad()
def probe(net: GPT, x: torch.Tensor) -> Dict[str, list]:
    """The residual stream after each block and the MLP hidden activations on ``x`` (eval mode)."""
    net.eval()
    keep: Dict[str, list] = {"resid": [], "mlp": []}
    net(x, keep)
    net.train()
    return keep


def residual_ranks(keep: Dict[str, list]) -> List[float]:
    """Effective rank (centred) of the residual stream after each block, tokens as samples."""
    return [effective_rank(r.reshape(-1, r.shape[-1]).double(), center=True) for r in keep["resid"]]


def mlp_units(net: GPT, keep: Dict[str, list]) -> Dict[str, float]:
    """Share of the MLP hidden units that are dead, and that belong to a duplicated group, over all layers."""
    dead = dup = total = 0
    for blk, act in zip(net.h, keep["mlp"]):
        fc, proj = blk.mlp.c_fc, blk.mlp.c_proj
        a = act.reshape(-1, act.shape[-1])
        dead += len(dead_units(fc.weight.detach(), proj.weight.detach(), b_in=fc.bias.detach(), activations=a))
        dup += sum(len(g) for g in duplicate_units(fc.weight.detach(), proj.weight.detach(), b_in=fc.bias.detach()))
        total += a.shape[1]
    return {"dead": dead / total, "duplicated": dup / total}


def train(net: nn.Module, param_groups: List[Dict], cfg: Dict, arm, seed: int, schedule, logits_of) -> Tuple[object, List[float]]:
    """The char LMs' training loop (E10's and the default study's GPT-2): AdamW (betas 0.9 / 0.99) over
    ``param_groups``, ``arm`` applied, the lr ``schedule`` (step -> factor), gradient clipping at 1, ``cfg["steps"]``
    steps of ``cfg["batch"]`` random training windows; ``logits_of(net, x)`` is the model's forward. Returns the
    arm's handle and the training losses."""
    from .arms import apply_arm

    data = splits()
    opt = torch.optim.AdamW(param_groups, lr=cfg["lr"], betas=(0.9, 0.99), weight_decay=0.0)
    handle = apply_arm(arm, net, opt, seed=seed, cfg=cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(seed + 7919)
    losses: List[float] = []
    for _ in range(int(cfg["steps"])):
        x, y = batches(data["train"], cfg["block"], cfg["batch"], gen)
        logits = logits_of(net, x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return handle, losses
