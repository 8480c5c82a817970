"""E11's model: a small ResNet with BatchNorm, its three ways of treating BatchNorm under syre, and its collapse metrics.

``ResNet``: a 3x3 stem convolution (BatchNorm, ReLU), then one basic block per stage (two 3x3
convolutions with BatchNorm, ReLU, a residual; stride 2 and a 1x1 projection shortcut with
BatchNorm where the stage halves the resolution and doubles the channels), global average
pooling and a linear head. Convolutions have no bias (BatchNorm follows each); weights are
Kaiming-normal (fan-in, ReLU gain), as torchvision's ResNet; BatchNorm at (1, 0).

BatchNorm under syre (``bn_sigma0``): the library's rule gives BatchNorm's weight and bias, which
have no fan-in, sigma0 = 0.01 at the default scale (``"unit"``: close to decay toward the origin);
``"exclude"`` leaves them undecayed (``exclude=syre.NORM_TYPES``); ``"fanin"`` anchors them at the
LeCun std of the convolution they follow, ``1 / sqrt(fan_in)`` (a callable sigma0; every other
parameter keeps the library's LeCun rule).

Metrics: ``features`` records the output of the stem and of every stage (after its ReLU);
``stage_ranks`` gives the effective rank of each stage's output averaged over space (images as
samples, channels as features); ``dead_channels`` the share of channels never varying on the
images (``syre.diagnostics.inactive_units``) over every ReLU output of the network.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from syre.diagnostics import effective_rank, inactive_units

__all__ = ["ResNet", "build", "bn_sigma0_fn", "stage_ranks", "dead_channels", "bn_small"]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: Optional[nn.Sequential] = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor, keep: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        if keep is not None:
            keep.append(h)
        out = self.bn2(self.conv2(h))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    def __init__(self, width: int, stages: int, n_classes: int = 10, in_ch: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))
        blocks, c = [], width
        for s in range(stages):
            cout = width * 2 ** s
            blocks.append(BasicBlock(c, cout, 1 if s == 0 else 2))
            c = cout
        self.stages = nn.ModuleList(blocks)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor, keep: Optional[Dict[str, list]] = None) -> torch.Tensor:
        x = F.relu(self.stem(x))
        if keep is not None:
            keep["relu"].append(x)
        for blk in self.stages:
            x = blk(x, None if keep is None else keep["relu"])
            if keep is not None:
                keep["relu"].append(x)
                keep["stage"].append(x)
        return self.fc(x.mean(dim=(2, 3)))


@torch.no_grad()
def build(width: int, stages: int, seed: int) -> ResNet:
    """The ResNet, Kaiming-normal (fan-in, ReLU) from a generator seeded by ``seed``; the head LeCun-normal."""
    net = ResNet(width, stages)
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / m.weight[0].numel()))
        elif isinstance(m, nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / math.sqrt(m.weight.shape[1]))
            m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.fill_(1.0)
            m.bias.zero_()
    return net


def bn_sigma0_fn(net: ResNet, scale: float = 1.0):
    """A sigma0 callable ``(name, param) -> float``: ``scale / sqrt(fan_in)`` for convolutions and the head (its
    bias: its weight's), and for each BatchNorm's weight and bias that of the convolution it follows."""
    table: Dict[str, float] = {}
    last_conv = None
    for mname, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            last_conv = scale / math.sqrt(m.weight[0].numel())
            for pname, _ in m.named_parameters(recurse=False):
                table[f"{mname}.{pname}"] = last_conv
        elif isinstance(m, nn.BatchNorm2d):
            if last_conv is None:
                raise ValueError(f"BatchNorm {mname!r} follows no convolution")
            for pname, _ in m.named_parameters(recurse=False):
                table[f"{mname}.{pname}"] = last_conv

    def sigma0(name: str, param: torch.Tensor) -> float:
        if name not in table:
            raise ValueError(f"bn_sigma0_fn: no sigma0 for parameter {name!r}")
        return table[name]

    return sigma0


@torch.no_grad()
def probe(net: ResNet, x: torch.Tensor) -> Dict[str, list]:
    was = net.training
    net.eval()
    keep: Dict[str, list] = {"relu": [], "stage": []}
    net(x, keep)
    net.train(was)
    return keep


def stage_ranks(keep: Dict[str, list]) -> List[float]:
    """Effective rank of each stage's output, averaged over space (images x channels)."""
    return [effective_rank(s.mean(dim=(2, 3)).double()) for s in keep["stage"]]


def dead_channels(keep: Dict[str, list]) -> float:
    """Share of the channels of every ReLU output that never vary over the images and positions."""
    dead = total = 0
    for a in keep["relu"]:
        dead += len(inactive_units(a, unit_dim=1))
        total += a.shape[1]
    return dead / total


@torch.no_grad()
def bn_small(net: ResNet, tol: float = 1e-2) -> float:
    """Share of BatchNorm channels whose scale |weight| is below ``tol`` (init 1): the scale symmetry's collapsed state."""
    w = torch.cat([m.weight.detach().abs().reshape(-1) for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    return float((w < tol).float().mean())
