"""Several optimizers over one model (Muon + AdamW), and the weight decay of Muon and Adafactor taken over."""
import copy

import pytest
import torch
from torch import nn

import syre
from small_models import batches

HAS_MUON = hasattr(torch.optim, "Muon")
HAS_ADAFACTOR = hasattr(torch.optim, "Adafactor")


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))


def _split(m):
    matrices = [p for p in m.parameters() if p.dim() == 2]
    rest = [p for p in m.parameters() if p.dim() != 2]
    return matrices, rest


def _pair(m, lr=0.02):
    matrices, rest = _split(m)
    first = torch.optim.Muon(matrices, lr=lr, weight_decay=0.1) if HAS_MUON else torch.optim.AdamW(matrices, lr=lr, weight_decay=0.1)
    return [first, torch.optim.AdamW(rest, lr=0.01, weight_decay=0.0)]


def _train(m, opts, n=6):
    for x, y in batches(n):
        for o in opts:
            o.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        for o in opts:
            o.step()


def test_one_syre_over_two_optimizers_covers_the_model_once():
    m = _model()
    opts = _pair(m)
    s = syre.attach(opts, m, seed=3)  # gamma=None: Muon's weight decay is taken over, AdamW's is 0
    assert isinstance(s, syre.MultiSyre) and len(s.syres) == 2
    rows = {r["name"]: r for r in s.coverage()}
    assert {n: r["optimizer"] for n, r in rows.items()} == {"0.weight": 0, "3.weight": 0, "0.bias": 1, "1.weight": 1,
                                                            "1.bias": 1, "3.bias": 1}
    assert rows["0.weight"]["decayed"] and not rows["0.bias"]["decayed"]
    assert "[optimizer 0: " in s.summary() and "[optimizer 1: AdamW]" in s.summary()
    # The anchors do not depend on which optimizer holds a parameter.
    twin = copy.deepcopy(m)
    one = syre.attach(torch.optim.AdamW(twin.parameters(), lr=0.01, weight_decay=0.1), twin, seed=3)
    for name in s.names():
        assert torch.equal(s.anchor(name).theta0, one.anchor(name).theta0)


def test_a_parameter_held_twice_or_by_no_one_is_named():
    m = _model()
    matrices, rest = _split(m)
    both = [torch.optim.AdamW(matrices + rest[:1], lr=0.01, weight_decay=0.1), torch.optim.AdamW(rest, lr=0.01)]
    with pytest.raises(ValueError, match=r"'0.bias' is held by optimizers 0 and 1"):
        syre.attach(both, m)
    missing = [torch.optim.AdamW(matrices, lr=0.01, weight_decay=0.1), torch.optim.AdamW(rest[1:], lr=0.01)]
    with pytest.raises(ValueError, match=r"held by none of the 2 optimizers: '0.bias'"):
        syre.attach(missing, m)
    assert all(not o._optimizer_step_pre_hooks for o in both + missing)
    idle = [torch.optim.AdamW(matrices, lr=0.01, weight_decay=0.0), torch.optim.AdamW(rest, lr=0.01, weight_decay=0.0)]
    with pytest.raises(ValueError, match="every param group of the 2 optimizers has weight_decay=0"):
        syre.attach(idle, m)


def test_a_refusal_by_one_optimizer_leaves_the_others_untouched():
    m = _model()
    matrices, rest = _split(m)
    opts = [torch.optim.AdamW(matrices, lr=0.01, weight_decay=0.1), torch.optim.Adam(rest, lr=0.01, weight_decay=0.1)]
    with pytest.raises(ValueError, match="coupled"):
        syre.attach(opts, m)
    assert opts[0].param_groups[0]["weight_decay"] == 0.1 and "syre_gamma" not in opts[0].param_groups[0]
    assert syre.attached(opts[0]) is None


def test_the_pair_resumes_bitwise_from_its_optimizer_checkpoints():
    m = _model()
    opts = _pair(m)
    syre.attach(opts, m, seed=5)
    _train(m, opts, 3)
    ckpt = copy.deepcopy({"model": m.state_dict(), "opts": [o.state_dict() for o in opts]})
    _train(m, opts, 3)
    m2 = _model(seed=1)
    m2.load_state_dict(ckpt["model"])
    opts2 = _pair(m2)
    s2 = syre.attach(opts2, m2, seed=999)
    for o, sd in zip(opts2, ckpt["opts"]):
        o.load_state_dict(sd)
    assert all(s.seed == 5 for s in s2.syres)
    _train(m2, opts2, 3)
    for p1, p2 in zip(m.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


@pytest.mark.skipif(not HAS_MUON, reason="torch.optim.Muon needs torch >= 2.9")
def test_muon_weight_decay_is_taken_over_bitwise():
    """sigma0 = 0, d_spread = 0: syre's takeover is Muon's own p.mul_(1 - lr * weight_decay), bitwise."""
    m1 = nn.Sequential(nn.Linear(6, 16, bias=False), nn.ReLU(), nn.Linear(16, 3, bias=False))
    m2 = copy.deepcopy(m1)
    o1 = torch.optim.Muon(m1.parameters(), lr=0.02, weight_decay=0.1)
    o2 = torch.optim.Muon(m2.parameters(), lr=0.02, weight_decay=0.1)
    s = syre.attach(o1, m1, sigma0=0.0, d_spread=0.0)
    assert o1.param_groups[0]["weight_decay"] == 0.0 and s.group_gamma(0) == 0.1
    for m, o in ((m1, o1), (m2, o2)):
        _train(m, [o], 8)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


@pytest.mark.skipif(not HAS_ADAFACTOR, reason="torch.optim.Adafactor needs torch >= 2.5")
def test_adafactor_weight_decay_is_taken_over_to_a_stated_tolerance():
    """Adafactor decays after reading the parameter's RMS for its relative step; syre decays before the
    step, so the step size reads the decayed RMS: a relative change of about lr * weight_decay."""
    m1 = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    m2 = copy.deepcopy(m1)
    o1 = torch.optim.Adafactor(m1.parameters(), lr=0.01, weight_decay=0.1)
    o2 = torch.optim.Adafactor(m2.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(o1, m1, sigma0=0.0, d_spread=0.0)
    start = [p.detach().clone() for p in m1.parameters()]
    for m, o in ((m1, o1), (m2, o2)):
        _train(m, [o], 8)
    for p1, p2, p0 in zip(m1.parameters(), m2.parameters(), start):
        moved = (p2 - p0).abs().max()
        assert (p1 - p2).abs().max() <= 1e-3 * moved + 1e-7  # vs a movement 1000x larger
        assert not torch.equal(p2, p0)


def test_coupled_optimizers_are_still_refused_with_the_truth():
    m = _model()
    with pytest.raises(ValueError, match="Adam applies it coupled.*divides it by the adaptive denominator"):
        syre.attach(torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.1), m)
    s = syre.attach(torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), m)
    assert s.group_gamma(0) == 0.1
