"""The three forms (attach, Penalty, reparametrize) share anchors and follow the paper's equations."""
import copy

import pytest
import torch
from torch import nn

import syre
from small_models import batches, make_mlp
from syre import reference as ref


def _loss(model, x, y):
    return ((model(x) - y) ** 2).mean()


@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
@pytest.mark.parametrize("d_spread", [0.0, 0.3])
def test_penalty_and_reparametrize_follow_the_same_effective_weights(opt_name, d_spread):
    """l(phi) + g||phi - theta0||_D^2 (Penalty) == l(theta + theta0) + g||theta||_D^2 (reparametrize)."""
    make_opt = (lambda ps: torch.optim.SGD(ps, lr=0.05)) if opt_name == "sgd" else (lambda ps: torch.optim.Adam(ps, lr=0.01))
    mb = make_mlp()
    mc = copy.deepcopy(mb)
    pen = syre.Penalty(mb, gamma=0.2, sigma0=0.1, d_spread=d_spread, seed=9)
    handle = syre.reparametrize(mc, sigma0=0.1, d_spread=d_spread, seed=9)
    # start matched: the effective weights are the model's weights
    for i in (0, 2):
        torch.testing.assert_close(mc[i].weight, mb[i].weight, rtol=0, atol=1e-7)
        torch.testing.assert_close(mc[i].bias, mb[i].bias, rtol=0, atol=1e-7)
    ob, oc = make_opt(mb.parameters()), make_opt(mc.parameters())
    for x, y in batches(100):
        ob.zero_grad()
        (_loss(mb, x, y) + pen()).backward()
        ob.step()
        oc.zero_grad()
        (_loss(mc, x, y) + handle.penalty(0.2)).backward()
        oc.step()
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        mod, attr = name.split(".")
        torch.testing.assert_close(getattr(mc[int(mod)], attr), getattr(mb[int(mod)], attr), rtol=0, atol=1e-6)


def test_reparametrize_starts_matched_reads_effective_weights_and_undoes():
    m = make_mlp()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    h = syre.reparametrize(m, sigma0=0.3, seed=1, d_spread=0.0)
    assert [n for n, _ in m.named_parameters()] == [
        "0.parametrizations.weight.original", "0.parametrizations.bias.original",
        "2.parametrizations.weight.original", "2.parametrizations.bias.original"]
    theta0 = syre.anchor(1, "0.weight", (16, 6), sigma0=0.3).theta0
    torch.testing.assert_close(m[0].parametrizations.weight.original.detach(), before["0.weight"] - theta0)
    torch.testing.assert_close(m[0].weight, before["0.weight"], rtol=0, atol=1e-7)
    with torch.no_grad():
        m[0].parametrizations.weight.original.zero_()
    assert torch.equal(m[0].weight, theta0)  # theta = 0 reads as the anchor
    h.remove()
    assert [n for n, _ in m.named_parameters()] == list(before)
    assert torch.equal(m[0].weight.detach(), theta0)
    torch.testing.assert_close(m[2].weight.detach(), before["2.weight"], rtol=0, atol=1e-7)


def test_all_three_forms_share_anchors_by_name():
    m = make_mlp()
    kw = dict(sigma0="kaiming", d_spread=0.2, seed=11)
    s = syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1, **kw)
    pen = syre.Penalty(m, gamma=0.1, **kw)
    assert pen.names == s.names()
    for i, name in enumerate(pen.names):
        a = s.anchor(name)
        assert torch.equal(getattr(pen, f"theta0_{i}"), a.theta0)
        assert torch.equal(1.0 + getattr(pen, f"xi_{i}"), a.d)
    m2 = copy.deepcopy(m)
    h = syre.reparametrize(m2, **kw)
    for name in h.names:
        mod, attr = name.split(".")
        shift = getattr(m2[int(mod)].parametrizations, attr)[0]
        assert torch.equal(shift.theta0, s.anchor(name).theta0)


def test_penalty_value_and_gradient_match_the_reference():
    m = make_mlp(dtype=torch.float64)
    pen = syre.Penalty(m, gamma=0.7, sigma0=0.2, d_spread=0.4, seed=2)
    value = pen()
    value.backward()
    total = 0.0
    for i, (name, p) in enumerate(m.named_parameters()):
        theta0 = getattr(pen, f"theta0_{i}").numpy()
        d = 1 + getattr(pen, f"xi_{i}").numpy()
        total += ref.penalty(p.detach().numpy(), theta0, d, 0.7)
        torch.testing.assert_close(p.grad, torch.from_numpy(ref.penalty_grad(p.detach().numpy(), theta0, d, 0.7)))
    assert value.item() == pytest.approx(total, rel=1e-12)
    assert list(pen.parameters()) == [] and pen.state_dict() == {}


def test_translation_alone_keeps_symmetry():
    """gamma = 0 (offset without decay) leaves duplicated neurons bit-identical; gamma > 0 splits them."""
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    with torch.no_grad():
        m[0].weight[1] = m[0].weight[0]
        m[0].bias[1] = m[0].bias[0]
        m[2].weight[0, 1] = m[2].weight[0, 0]
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    syre.attach(o, m, gamma=0.0, sigma0=0.5)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = torch.randn(16, 3, generator=g)
        o.zero_grad()
        (m(x) ** 2).mean().backward()
        o.step()
    assert torch.equal(m[0].weight[0], m[0].weight[1])
    o2 = torch.optim.SGD(m.parameters(), lr=0.1)
    syre.attach(o2, m, gamma=0.1, sigma0=0.5)
    for _ in range(5):
        x = torch.randn(16, 3, generator=g)
        o2.zero_grad()
        (m(x) ** 2).mean().backward()
        o2.step()
    assert not torch.equal(m[0].weight[0], m[0].weight[1])


def test_penalty_and_reparametrize_errors():
    m = make_mlp()
    with pytest.raises(ValueError, match="gamma"):
        syre.Penalty(m, gamma=-1.0)
    with pytest.raises(ValueError, match="sigma0"):
        syre.reparametrize(m, sigma0="unknown")
    h = syre.reparametrize(m, sigma0=0.1)
    with pytest.raises(ValueError, match="already parametrized"):
        syre.reparametrize(m, sigma0=0.1)
    h.remove()
    with pytest.raises(RuntimeError, match="removed"):
        h.penalty(0.1)
