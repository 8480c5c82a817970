"""The code of docs/guide.md's "One decay, many targets" runs, in order, without a warning, on a small model."""
import re
import warnings

import torch
from torch import nn

import syre
from repo import ROOT


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.head = nn.Linear(32, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


def _snippets():
    text = (ROOT / "docs" / "guide.md").read_text()
    section = text.split("## One decay, many targets", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_family_section_of_the_guide_runs():
    snippets = _snippets()
    assert len(snippets) == 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)

    def train(model, opt, steps=5):
        for _ in range(steps):
            opt.zero_grad()
            ((model(x) - x[:, :1]) ** 2).mean().backward()
            opt.step()

    ns = {"torch": torch, "syre": syre, "x": x, "train": train, "pretrained_model": _Net,
          "make_model": lambda: nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for code in snippets:
            exec(compile(code, "docs/guide.md", "exec"), ns)
    assert ns["s"].config.rounding == "stochastic" and ns["model"][0].weight.dtype == torch.bfloat16
