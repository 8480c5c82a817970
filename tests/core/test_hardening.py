"""Non-finite values, odd layouts, and parameters that appear later."""
import pytest
import torch
from torch import nn

import syre
from small_models import make_mlp


def test_nan_in_one_parameter_stays_there():
    """A NaN/Inf in a parameter stays in that element (an Inf may turn into NaN: inf - w * (inf - theta0));
    syre's anchors and every other element and parameter decay exactly as without it."""
    clean, dirty = make_mlp(), make_mlp()
    oc, od = torch.optim.SGD(clean.parameters(), lr=0.1), torch.optim.SGD(dirty.parameters(), lr=0.1)
    syre.attach(oc, clean, gamma=0.5, sigma0=0.1, d_spread=0.2)
    sd = syre.attach(od, dirty, gamma=0.5, sigma0=0.1, d_spread=0.2)
    anchors_before = {n: sd.anchor(n) for n in sd.names()}
    with torch.no_grad():
        dirty[0].weight[3, 2] = float("nan")
        dirty[0].weight[1, 1] = float("inf")
        clean[0].weight[3, 2] = 0.0
        clean[0].weight[1, 1] = 0.0
    for m in (clean, dirty):
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
    oc.step()
    od.step()
    mask = torch.ones_like(dirty[0].weight, dtype=torch.bool)
    mask[3, 2] = mask[1, 1] = False
    assert torch.isnan(dirty[0].weight[3, 2]) and not torch.isfinite(dirty[0].weight[1, 1])
    assert torch.equal(dirty[0].weight[mask], clean[0].weight[mask])
    for (n, p), q in zip(list(dirty.named_parameters())[1:], list(clean.parameters())[1:]):
        assert torch.equal(p, q), n
    for n, a in anchors_before.items():
        assert torch.equal(sd.anchor(n).theta0, a.theta0) and torch.equal(sd.anchor(n).d, a.d)


def test_channels_last_and_non_contiguous_parameters():
    conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    lin = nn.Linear(5, 6)
    lin.weight = nn.Parameter(torch.randn(5, 6).t())  # a transposed (non-contiguous) view
    model = nn.ModuleDict({"conv": conv, "lin": lin})
    ref = nn.ModuleDict({"conv": nn.Conv2d(3, 4, 3), "lin": nn.Linear(5, 6)})
    ref.load_state_dict({k: v.contiguous() for k, v in model.state_dict().items()})
    o1, o2 = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    s1 = syre.attach(o1, model, gamma=0.5, sigma0=0.3, d_spread=0.2)
    s2 = syre.attach(o2, ref, gamma=0.5, sigma0=0.3, d_spread=0.2)
    assert not model["lin"].weight.is_contiguous()
    assert model["conv"].weight.is_contiguous(memory_format=torch.channels_last)
    for name in s1.names():
        assert torch.equal(s1.anchor(name).theta0, s2.anchor(name).theta0)
    for m in (model, ref):
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
    o1.step()
    o2.step()
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p.contiguous(), q), n
    assert model["conv"].weight.is_contiguous(memory_format=torch.channels_last)


def test_lazy_modules_get_their_anchors_when_materialised():
    torch.manual_seed(0)
    m = nn.Sequential(nn.LazyLinear(5), nn.ReLU(), nn.Linear(5, 1))
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    s = syre.attach(o, m, gamma=0.5, sigma0="lecun", d_spread=0.0)
    rows = {r["name"]: r for r in s.coverage()}
    assert rows["0.weight"]["covered"] is False and "lazy" in rows["0.weight"]["reason"]
    x = torch.randn(4, 3)
    m(x).sum().backward()  # materialises 0.weight (5, 3)
    w = m[0].weight.detach().clone()
    o.zero_grad()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    o.step()
    assert "0.weight" in s.names()
    ref = syre.anchor(0, "0.weight", (5, 3), sigma0=1 / 3**0.5 * syre.anchors.DEFAULT_SIGMA0_SCALE)
    assert torch.equal(s.anchor("0.weight").theta0, ref.theta0)
    torch.testing.assert_close(m[0].weight.detach(), w - 0.05 * (w - ref.theta0))
    assert [p["name"] for p in s.state_dict()["params"]] == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_meta_parameters_are_refused_with_the_remedy():
    m = nn.Linear(3, 2, device="meta")
    with pytest.raises(ValueError, match="meta device.*to_empty"):
        syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1)
