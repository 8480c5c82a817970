"""Small models the tests share: the seeded MLP and its batches that most core tests train (the ``mlp`` fixture is
one of these), and an embedding with a tied head."""
import torch
from torch import nn


def make_mlp(seed: int = 0, dtype=torch.float32, norm: bool = False) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    layers = [nn.Linear(6, 16), nn.ReLU()]
    if norm:
        layers.append(nn.LayerNorm(16))
    layers += [nn.Linear(16, 3)]
    m = nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) / p.shape[1] ** 0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=dtype))
    return m


def batches(n: int, seed: int = 1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 6, generator=g, dtype=dtype), torch.randn(8, 3, generator=g, dtype=dtype)) for _ in range(n)]


class TiedLM(nn.Module):
    """An embedding and a head that share one weight (vocabulary 10, width 4)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(self.emb(x))
