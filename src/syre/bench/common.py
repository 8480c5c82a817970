"""Shared pieces of the experiments: cached datasets, small models, a training loop, features.

Every trial draws its randomness from explicit generators seeded by the trial's seed, and runs
inside ``trial_rng(seed)`` (a forked global RNG) so that dropout masks are reproducible too
without touching the caller's global RNG.

``dataset(..., split="val")`` replaces the test images by a validation split: images of the
training pool that no trial trains on (the next ``n_test`` images of the same seeded draw for
Fashion-MNIST; for digits, the last quarter of the training part, which is then not trained on).
Tuning scores on it, so the test images play no part in any choice.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from syre.data import Split, digits, fashion_mnist

__all__ = [
    "tuned_cells",
    "accuracy",
    "dataset",
    "hidden_features",
    "lecun_init_",
    "mlp",
    "train_epochs",
    "trial_rng",
]

_CACHE: Dict[tuple, Split] = {}


def dataset(name: str, split: str = "test", **kwargs) -> Split:
    """``"fashion"`` (``syre.data.fashion_mnist(**kwargs)``) or ``"digits"``, cached per process.

    ``split``: ``"test"`` (the test images) or ``"val"`` (a validation split, see the module docstring).
    """
    if split not in ("test", "val"):
        raise ValueError(f"Invalid eval_split: {split!r}; expected 'test' or 'val'")
    key = (name, split, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        if name == "fashion":
            if split == "test":
                _CACHE[key] = fashion_mnist(**kwargs)
            else:
                n_train, n_val = kwargs["n_train"], kwargs["n_test"]
                pool = fashion_mnist(**{**kwargs, "n_train": n_train + n_val})
                _CACHE[key] = Split(pool.x_train[:n_train], pool.y_train[:n_train], pool.x_train[n_train:], pool.y_train[n_train:])
        elif name == "digits":
            d = digits(**kwargs)
            if split == "val":
                k = len(d.x_train) * 3 // 4
                d = Split(d.x_train[:k], d.y_train[:k], d.x_train[k:], d.y_train[k:])
            _CACHE[key] = d
        else:
            raise ValueError(f"Invalid dataset: {name!r}; expected 'fashion' or 'digits'")
    return _CACHE[key]


def tuned_cells(tuning) -> list:
    """The evaluation cells of the tuned arms of ``tuning``: ``<arm>@tuned`` and ``<arm>@<source>-gamma`` per context."""
    from .protocol import Cell

    out = []
    for context in tuning.contexts:
        out += [Cell(f"{a}@tuned", tuple(context)) for a in tuning.arms]
        out += [Cell(f"{a}@{src}-gamma", tuple(context)) for a, src in tuning.also]
    return out


@contextlib.contextmanager
def trial_rng(seed: int):
    """Run a block with the global torch RNG seeded by ``seed`` and restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def lecun_init_(model: nn.Module, gen: torch.Generator, gain: float = 1.0) -> nn.Module:
    """Weights of every Linear/Conv ~ N(0, gain^2 / fan_in) (LeCun normal); biases 0."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (gain / math.sqrt(fan_in)))
            if m.bias is not None:
                m.bias.zero_()
    return model


class MLP(nn.Module):
    """``depth`` hidden Linear+ReLU layers of ``width`` and a linear head; ``features`` keeps them."""

    def __init__(self, d_in: int, width: int, depth: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        layers = []
        d = d_in
        for _ in range(depth):
            layers.append(nn.Linear(d, width))
            d = width
        self.hidden = nn.ModuleList(layers)
        self.head = nn.Linear(d, d_out)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, keep: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.relu(layer(x))
            if keep is not None:
                keep.append(x)
            x = self.drop(x)
        return self.head(x)


def mlp(d_in: int, width: int, depth: int, d_out: int, *, dropout: float = 0.0, seed: int = 0, gain: float = 1.0) -> MLP:
    """A ReLU MLP, LeCun-normal initialised from ``seed``."""
    return lecun_init_(MLP(d_in, width, depth, d_out, dropout), torch.Generator().manual_seed(seed), gain)


@torch.no_grad()
def hidden_features(model: MLP, x: torch.Tensor) -> List[torch.Tensor]:
    """The post-activation output of every hidden layer of ``model`` on ``x`` (eval mode)."""
    was = model.training
    model.eval()
    keep: List[torch.Tensor] = []
    model(x, keep)
    model.train(was)
    return keep


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 4096) -> float:
    """Share of ``x`` whose argmax output equals ``y`` (eval mode)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    model.train(was)
    return correct / len(x)


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch: int,
    seed: int,
    loss_fn: Callable = nn.functional.cross_entropy,
) -> float:
    """Minibatch training (order from a generator seeded by ``seed``); the last epoch's mean loss."""
    gen = torch.Generator().manual_seed(seed + 7919)
    n = len(x)
    model.train()
    last = math.nan
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        last = total / count
    return last
