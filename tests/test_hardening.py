"""Non-finite values, odd layouts, and parameters that appear later."""
import torch
from torch import nn

import syre

from conftest import make_mlp


def test_nan_in_one_parameter_stays_there():
    """A NaN/Inf in a parameter stays in that element (an Inf may turn into NaN: inf - w * (inf - theta0));
    syre's anchors and every other element and parameter decay exactly as without it."""
    clean, dirty = make_mlp(), make_mlp()
    oc, od = torch.optim.SGD(clean.parameters(), lr=0.1), torch.optim.SGD(dirty.parameters(), lr=0.1)
    sc = syre.attach(oc, clean, gamma=0.5, sigma0=0.1, d_spread=0.2)
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
