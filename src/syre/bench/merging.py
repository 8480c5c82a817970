"""E13's pieces: weight matching of two MLPs (permutation alignment) and the loss along the straight line between them.

``weight_matching(a, b, gen)``: the permutation of every hidden layer of ``b`` that maximises the sum
over layers of the inner products of ``a``'s and the permuted ``b``'s weights and biases (Ainsworth
et al. 2023, "Git Re-Basin"), by coordinate ascent: one layer at a time (in a seeded random order),
the best permutation given the others is a linear assignment problem
(``scipy.optimize.linear_sum_assignment``); repeated until no permutation changes. Started from the
identity, each step can only raise the objective, so the final objective is at least the
identity's (``gain >= 0``, a sanity check of the implementation).

``permute(b, perms)`` applies them: each hidden unit moves with its incoming weights, its bias and
its outgoing weights, which leaves the function unchanged (another sanity check).

``interpolate(a, b, x, y, ts)``: test loss and accuracy of ``(1 - t) a + t b`` for each ``t``;
``barrier`` = ``max_t [L(t) - ((1 - t) L(0) + t L(1))]``: the loss barrier of linear mode
connectivity (0 when the straight line is no worse than the ends; ``accuracy_barrier`` likewise,
as a drop).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .common import MLP

__all__ = ["weight_matching", "permute", "interpolate", "barrier", "pca_project", "mix"]


def _layers(net: MLP) -> List[nn.Linear]:
    return list(net.hidden) + [net.head]


def _objective(a: MLP, b: MLP) -> float:
    return float(sum((la.weight * lb.weight).sum() + (la.bias * lb.bias).sum() for la, lb in zip(_layers(a), _layers(b))))


@torch.no_grad()
def permute(net: MLP, perms: Sequence[torch.Tensor]) -> MLP:
    """A copy of ``net`` whose hidden layer ``l`` has its units in the order ``perms[l]``."""
    out = copy.deepcopy(net)
    layers = _layers(out)
    prev = None
    for i, layer in enumerate(layers):
        w = layer.weight
        if prev is not None:
            w = w[:, prev]
        if i < len(perms):
            w = w[perms[i]]
            layer.bias.copy_(layer.bias[perms[i]])
            prev = perms[i]
        layer.weight.copy_(w)
    return out


@torch.no_grad()
def weight_matching(a: MLP, b: MLP, gen: torch.Generator, max_iter: int = 100) -> Tuple[List[torch.Tensor], Dict[str, float]]:
    """``(perms, info)``: the hidden-unit permutations of ``b`` that match ``a`` (see the module docstring);
    ``info``: ``objective_identity``, ``objective``, ``gain``, ``iterations``."""
    from scipy.optimize import linear_sum_assignment

    la, lb = _layers(a), _layers(b)
    n = len(la) - 1
    perms = [torch.arange(layer.weight.shape[0]) for layer in la[:-1]]
    start = _objective(a, b)
    it = 0
    for it in range(1, max_iter + 1):
        changed = False
        for i in torch.randperm(n, generator=gen).tolist():
            wa, wb = la[i].weight.double(), lb[i].weight.double()
            if i > 0:
                wb = wb[:, perms[i - 1]]
            cost = wa @ wb.T + la[i].bias.double()[:, None] * lb[i].bias.double()[None, :]
            na, nb = la[i + 1].weight.double(), lb[i + 1].weight.double()
            if i + 1 < n:
                nb = nb[perms[i + 1]]
            cost += na.T @ nb
            _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            new = torch.as_tensor(cols, dtype=torch.long)
            old_score = float(cost[torch.arange(len(new)), perms[i]].sum())
            new_score = float(cost[torch.arange(len(new)), new].sum())
            if new_score > old_score + 1e-12 * max(1.0, abs(old_score)) and not torch.equal(new, perms[i]):
                perms[i] = new
                changed = True
        if not changed:
            break
    end = _objective(a, permute(b, perms))
    return perms, {"objective_identity": start, "objective": end, "gain": end - start, "iterations": it}


@torch.no_grad()
def mix(a: nn.Module, b: nn.Module, t: float) -> nn.Module:
    """A copy of ``a`` holding ``(1 - t) a + t b`` (parameters and buffers)."""
    out = copy.deepcopy(a)
    sb = b.state_dict()
    out.load_state_dict({k: (1.0 - t) * v + t * sb[k] for k, v in a.state_dict().items()})
    return out


@torch.no_grad()
def interpolate(a: MLP, b: MLP, x: torch.Tensor, y: torch.Tensor, ts: Sequence[float]) -> Dict[str, List[float]]:
    """Loss and accuracy on ``(x, y)`` of the straight line from ``a`` to ``b``, at each ``t`` of ``ts``."""
    loss, acc = [], []
    for t in ts:
        net = mix(a, b, float(t)).eval()
        logits = net(x)
        loss.append(float(nn.functional.cross_entropy(logits, y)))
        acc.append(float((logits.argmax(1) == y).float().mean()))
    return {"loss": loss, "acc": acc}


def barrier(values: Sequence[float], ts: Sequence[float], *, higher_is_worse: bool = True) -> float:
    """``max_t`` of how much worse the path is than the straight line between its ends (>= 0 when the ends are included)."""
    v, t = np.asarray(values, dtype=float), np.asarray(ts, dtype=float)
    line = (1.0 - t) * v[0] + t * v[-1]
    gap = v - line if higher_is_worse else line - v
    return float(gap.max())


@torch.no_grad()
def pca_project(x_fit: torch.Tensor, dims: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(mean, basis [F, dims])`` of the top ``dims`` principal components of ``x_fit``."""
    if not 1 <= dims <= x_fit.shape[1]:
        raise ValueError(f"Invalid pca_dims: {dims!r}; expected 1 to {x_fit.shape[1]}")
    mean = x_fit.mean(0)
    _, _, vh = torch.linalg.svd((x_fit - mean).double(), full_matrices=False)
    return mean, vh[:dims].T.to(x_fit.dtype)
