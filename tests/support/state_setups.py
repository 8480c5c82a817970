"""Set-ups whose ``Syre.state_dict()`` is pinned byte for byte in ``data/state_dicts_v*.json``.

``state_dicts_v1.json`` was written by the code before the core was restructured (format 1, the
Box-Muller anchors); ``state_dicts_v2.json`` by ``python tests/support/state_setups.py`` when format 2 (the
integer-only anchors) became the format of new attachments. ``test_core_params.py`` checks that the
set-ups give the v2 bytes, and that each of them, loaded from its v1 state, saves the v1 bytes again
(a v1 state stays a v1 state, with its own anchors).
Each set-up uses only behaviour that the restructuring keeps (no LSTM biases or weight_norm, whose
sigma0 rules changed on purpose).
"""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import torch
from torch import nn

import syre

DATA_V1 = Path(__file__).resolve().parents[1] / "data" / "state_dicts_v1.json"
DATA = Path(__file__).resolve().parents[1] / "data" / "state_dicts_v2.json"


def _init(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _steps(model, opt, x, n=3):
    for _ in range(n):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def adamw_takeover():
    m = _init(nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3)), 0)
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    return syre.attach(o, m, sigma0="lecun")


def two_groups_seeded():
    m = _init(nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3)), 1)
    decay = [p for n, p in m.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in m.named_parameters() if p.dim() < 2]
    o = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=0.01)
    s = syre.attach(o, m, seed=123, mode="seeded", exclude=syre.NORM_TYPES, d_spread=0.0, sigma0="lecun")
    _steps(m, o, torch.randn(4, 6, generator=torch.Generator().manual_seed(0)))
    return s


def sgd_explicit_frozen():
    m = _init(nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)), 2)
    m[2].bias.requires_grad_(False)
    o = torch.optim.SGD(list(m[0].parameters()) + [m[2].weight, m[2].bias], lr=0.1, momentum=0.9)
    return syre.attach(o, m, gamma=0.05, sigma0=0.2, d_spread=0.0, seed=9)


def conv_embedding_attention():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(11, 8)
            self.conv = nn.Conv1d(8, 8, 3, padding=1)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            h = self.emb(x)
            h = self.conv(h.transpose(1, 2)).transpose(1, 2)
            h, _ = self.attn(h, h, h)
            return self.head(h)

    m = _init(Net(), 3)
    o = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.05)
    return syre.attach(o, m, sigma0="kaiming:0.5", d_spread=0.2, seed=2**40 + 7)


def add_group_and_callable_sigma0():
    m = _init(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 1)), 4)
    o = torch.optim.SGD(m[0].parameters(), lr=0.05)
    s = syre.attach(o, m, gamma=0.3, sigma0=lambda n, p: 0.01 * (1 + len(n)), strict=False, seed=5)
    o.add_param_group({"params": list(m[2].parameters()), "syre_gamma": 0.7})
    _steps(m, o, torch.randn(3, 4, generator=torch.Generator().manual_seed(1)), n=2)
    return s


def lazy_materialised():
    torch.manual_seed(0)
    m = nn.Sequential(nn.LazyLinear(5), nn.ReLU(), nn.Linear(5, 2))
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.2)
    s = syre.attach(o, m, sigma0="xavier", seed=77)
    _steps(m, o, torch.randn(3, 9, generator=torch.Generator().manual_seed(2)), n=1)
    return s


def loaded_state():
    src = adamw_takeover()
    m = _init(nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3)), 5)
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.3)
    s = syre.attach(o, m, seed=31, sigma0="lecun:0.3")
    s.load_state_dict(src.state_dict())
    return s


SETUPS = {f.__name__: f for f in (adamw_takeover, two_groups_seeded, sgd_explicit_frozen, conv_embedding_attention,
                                  add_group_and_callable_sigma0, lazy_materialised, loaded_state)}


def state_bytes(name: str) -> bytes:
    return pickle.dumps(SETUPS[name]().state_dict(), protocol=4)


def v1_roundtrip_bytes(name: str) -> bytes:
    """The set-up with its v1 state loaded, saved again."""
    s = SETUPS[name]()
    s.load_state_dict(pickle.loads(bytes.fromhex(json.loads(DATA_V1.read_text())[name])))
    return pickle.dumps(s.state_dict(), protocol=4)


if __name__ == "__main__":
    out = {name: state_bytes(name).hex() for name in SETUPS}
    DATA.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(out)} set-ups to {DATA}", file=sys.stderr)
