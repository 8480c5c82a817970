"""The benchmark arms for sigma0='match' and L2-Init under per-group gammas (nanoGPT's no-decay group)."""
import pytest
import torch
from torch import nn

from syre.bench.arms import apply_arm, arms, sigma0_label, sigma0_spec, syre_arm


def test_match_arms_are_named_after_their_spec_and_attach_the_library_preset():
    a, b = arms(["syre_match", "syre_match0.3x"])
    assert (a.name, a.sigma0, b.name, b.sigma0) == ("syre_match", "match", "syre_match0.3x", "match:0.3")
    assert syre_arm("match").name == "syre_match" and syre_arm("match:2").name == "syre_match2x"
    assert sigma0_spec("match") == "match" and sigma0_spec("match:0.3") == "match:0.3"
    assert "RMS" in sigma0_label("match:0.3") and sigma0_label("match:0.3").startswith("0.3 x")
    with pytest.raises(ValueError, match="syre_match"):
        arms(["syre_matchx"])
    lin = nn.Linear(64, 8)
    with torch.no_grad():
        lin.weight.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    h = apply_arm(b, lin, torch.optim.SGD(lin.parameters(), lr=0.1), seed=0, cfg={"gamma": 0.1})
    s0 = {c["name"]: c["sigma0"] for c in h.syre.coverage()}
    assert s0["weight"] == pytest.approx(0.3 * float(lin.weight.detach().square().mean().sqrt()), rel=1e-5)
    h.remove()


def test_l2init_leaves_a_group_with_syre_gamma_zero_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    decay, no_decay = [net[0].weight], [net[0].bias, net[1].weight, net[1].bias]
    opt = torch.optim.SGD([{"params": decay}, {"params": no_decay, "syre_gamma": 0.0}], lr=0.5)
    apply_arm(arms(["l2init"])[0], net, opt, seed=0, cfg={"gamma": 1.0})
    start = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)  # move every parameter 1 away from its initial value
            p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only the decay toward theta(0) moves anything
    moved = [p.detach() - s for p, s in zip(net.parameters(), start)]
    assert torch.allclose(moved[0], torch.full_like(moved[0], 0.5))  # 1 - lr * gamma * 1
    for m in moved[1:]:
        assert torch.allclose(m, torch.ones_like(m))
