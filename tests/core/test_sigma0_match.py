"""sigma0="match": anchors at the scale the weights were actually initialised at."""

import pytest
import torch
from torch import nn

import syre
from syre.select import collect
from syre.sigma0 import UNIT_SIGMA0, describe_sigma0, resolve_sigma0_of


class TinyGPT(nn.Module):
    """nanoGPT's init: N(0, 0.02) for matrices and embeddings, zero biases, a tied head."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(50, 16)
        self.ln = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 64)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.wte.weight
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in (self.wte.weight, self.fc.weight):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.head(torch.relu(self.fc(self.ln(self.wte(x))))[..., :16])


def _rms(t):
    return float(t.detach().double().square().mean().sqrt())


def test_match_takes_each_tensors_own_scale():
    m = TinyGPT()
    o = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
    s = syre.attach(o, m, sigma0="match")
    rows = {r["name"]: r["sigma0"] for r in s.coverage()}
    assert rows["wte.weight"] == pytest.approx(_rms(m.wte.weight), rel=1e-12)  # ~0.02, where "lecun" gives 1
    assert rows["fc.weight"] == pytest.approx(_rms(m.fc.weight), rel=1e-12)
    assert rows["fc.bias"] == pytest.approx(_rms(m.fc.weight), rel=1e-12)  # a bias takes its layer's weight's RMS
    assert rows["ln.weight"] == pytest.approx(UNIT_SIGMA0)  # no fan-in: the 1-D rule, as under the other presets
    assert 0.015 < rows["wte.weight"] < 0.025
    half = {i.name: resolve_sigma0_of("match:0.5", i) for i in collect(m).values()}
    assert half["wte.weight"] == pytest.approx(0.5 * rows["wte.weight"])
    assert "weights' RMS at attach" in describe_sigma0("match:0.5")


def test_match_is_resolved_once_and_restored_from_the_state():
    m = TinyGPT()
    o = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
    s = syre.attach(o, m, sigma0="match")
    before = {r["name"]: r["sigma0"] for r in s.coverage()}
    with torch.no_grad():
        m.fc.weight.mul_(10.0)  # the weights move in training: the anchors do not
    x = torch.randint(0, 50, (4, 8))
    o.zero_grad()
    m(x).sum().backward()
    o.step()
    assert {r["name"]: r["sigma0"] for r in s.coverage()} == before
    other = TinyGPT()
    with torch.no_grad():
        other.fc.weight.mul_(3.0)
    s2 = syre.attach(torch.optim.AdamW(other.parameters(), lr=1e-3, weight_decay=0.1), other, sigma0="match")
    s2.load_state_dict(s.state_dict())
    assert {r["name"]: r["sigma0"] for r in s2.coverage()} == before
    assert torch.equal(s2.anchor("fc.weight").theta0, s.anchor("fc.weight").theta0)


def test_match_is_refused_where_it_cannot_hold():
    with pytest.raises(ValueError, match="sigma0 value: 'mach'"):
        syre.attach(torch.optim.SGD(TinyGPT().parameters(), lr=0.1), TinyGPT(), gamma=0.1, sigma0="mach")
    with pytest.raises(ValueError, match="after 'match:'"):
        syre.Config(sigma0="match:-1")


def test_the_jax_port_resolves_match_from_values_and_refuses_it_per_update():
    pytest.importorskip("jax")
    np = pytest.importorskip("numpy")
    from syre import optax as sx

    g = np.random.default_rng(0)
    params = {"dense": {"kernel": g.normal(0, 0.02, (16, 8)).astype(np.float32), "bias": np.zeros(8, np.float32)},
              "norm": {"scale": np.ones(8, np.float32)}}
    table = sx.sigma0s(params, "match")
    k = float(np.sqrt(np.mean(params["dense"]["kernel"].astype(np.float64) ** 2)))
    assert table["dense.kernel"] == pytest.approx(k) and table["dense.bias"] == pytest.approx(k)
    assert table["norm.scale"] == pytest.approx(UNIT_SIGMA0)
    with pytest.raises(ValueError, match=r"sigma0s\(params, 'match'\)"):
        sx.syre_decay(0.1, sigma0="match")
