"""E12's pieces: stochastic-block-model graphs, a dense message-passing network, and its exact equivariance check.

**Graphs** (``sbm``): ``n_nodes`` nodes in ``blocks`` equal communities; an edge between two nodes
with probability ``p_in`` inside a community and ``p_out`` across; each node's features are
``signal`` x the one-hot of its community in the first ``blocks`` of ``n_feat`` dimensions plus
N(0, 1) noise in all of them; the label is the community. A node's own features are too noisy to
classify it (at the default ``signal``), its neighbourhood is not. Graphs are a function of their
generator only: the training graphs of a trial of the trial's seed, the validation and test graphs
of fixed seeds (the same for every trial).

**Network** (``GCN``): ``layers`` rounds of ``h <- relu(A_hat h W + b)`` with the symmetrically
normalised adjacency with self-loops ``A_hat = D^-1/2 (A + I) D^-1/2`` (Kipf and Welling), then a
linear read-out per node. Dense adjacency in plain torch (no graph library). Every parameter is
shared over the nodes, so a permutation P of the nodes gives ``f(P A P^T, P X) = P f(A, X)``
whatever the parameters are: the architecture's symmetry is not a symmetry of the parameters, and
syre's anchor, a function of the parameters' names and indices, cannot touch it.
``equivariance_error`` measures it in float64 on a copy of the trained network.
"""
from __future__ import annotations

import copy
from typing import Dict, List, Tuple

import torch
from torch import nn

from syre.diagnostics import effective_rank

__all__ = ["sbm", "normalise", "GCN", "build", "equivariance_error", "embeddings"]

#: Generator seeds of the fixed validation and test graphs.
SPLIT_SEEDS = {"val": 2_000_003, "test": 1_000_003}


def sbm(n_graphs: int, cfg: Dict, gen: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A [G, N, N] float 0/1 symmetric without self-loops, X [G, N, F], y [G, N])``."""
    n, k, f = int(cfg["n_nodes"]), int(cfg["blocks"]), int(cfg["n_feat"])
    if n % k or f < k:
        raise ValueError(f"Invalid graph shape: n_nodes {n} must be a multiple of blocks {k}, and n_feat {f} >= blocks")
    if not (0.0 <= cfg["p_out"] <= 1.0 and 0.0 <= cfg["p_in"] <= 1.0):
        raise ValueError(f"Invalid edge probabilities: p_in {cfg['p_in']!r}, p_out {cfg['p_out']!r}; expected numbers in [0, 1]")
    ys, adj, feats = [], [], []
    for _ in range(n_graphs):
        y = torch.randperm(n, generator=gen) % k
        same = y[:, None] == y[None, :]
        p = torch.where(same, torch.tensor(float(cfg["p_in"])), torch.tensor(float(cfg["p_out"])))
        upper = (torch.rand(n, n, generator=gen) < p).triu(1).float()
        adj.append(upper + upper.T)
        x = torch.randn(n, f, generator=gen)
        x[torch.arange(n), y] += float(cfg["signal"])
        feats.append(x)
        ys.append(y)
    return torch.stack(adj), torch.stack(feats), torch.stack(ys)


def normalise(a: torch.Tensor) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` for a batch of adjacency matrices."""
    a = a + torch.eye(a.shape[-1], dtype=a.dtype)
    d = a.sum(-1).rsqrt()
    return d[..., :, None] * a * d[..., None, :]


class GCN(nn.Module):
    def __init__(self, n_feat: int, width: int, layers: int, n_classes: int):
        super().__init__()
        dims = [n_feat] + [width] * layers
        self.convs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(width, n_classes)

    def forward(self, a_hat: torch.Tensor, x: torch.Tensor, keep: List[torch.Tensor] = None) -> torch.Tensor:
        h = x
        for conv in self.convs:
            h = torch.relu(a_hat @ conv(h))
            if keep is not None:
                keep.append(h)
        return self.head(h)


@torch.no_grad()
def build(cfg: Dict, seed: int) -> GCN:
    """The network, LeCun-normal (ReLU gain sqrt 2 in the message-passing layers) from a generator seeded by ``seed``."""
    net = GCN(int(cfg["n_feat"]), int(cfg["width"]), int(cfg["layers"]), int(cfg["blocks"]))
    gen = torch.Generator().manual_seed(seed)
    for i, m in enumerate(list(net.convs) + [net.head]):
        gain = 2.0 if i < len(net.convs) else 1.0
        m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (gain / m.weight.shape[1]) ** 0.5)
        m.bias.zero_()
    return net


@torch.no_grad()
def equivariance_error(net: GCN, a: torch.Tensor, x: torch.Tensor, gen: torch.Generator) -> float:
    """``max |f(P A P^T, P X) - P f(A, X)| / max |f(A, X)|`` over the graphs, a random node permutation P per graph, in float64."""
    net64 = copy.deepcopy(net).double().eval()
    a, x = a.double(), x.double()
    worst = 0.0
    for g in range(a.shape[0]):
        perm = torch.randperm(a.shape[1], generator=gen)
        out = net64(normalise(a[g]), x[g])
        out_p = net64(normalise(a[g][perm][:, perm]), x[g][perm])
        worst = max(worst, float((out_p - out[perm]).abs().max() / out.abs().max().clamp_min(1e-300)))
    return worst


@torch.no_grad()
def embeddings(net: GCN, a_hat: torch.Tensor, x: torch.Tensor) -> List[torch.Tensor]:
    """Every message-passing layer's node embeddings on the graphs, nodes of all graphs as rows."""
    keep: List[torch.Tensor] = []
    net(a_hat, x, keep)
    return [h.reshape(-1, h.shape[-1]) for h in keep]


def rank(h: torch.Tensor) -> float:
    return effective_rank(h.double())
