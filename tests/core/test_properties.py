"""Property-based tests of syre's invariants (hypothesis)."""
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

import syre
from syre import anchors as A

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
shapes = st.lists(st.integers(1, 7), min_size=1, max_size=3).map(tuple)
pos = st.floats(1e-3, 1.0)


def _model(shape_out, shape_in, seed):
    m = nn.Sequential(nn.Linear(shape_in, shape_out), nn.Tanh(), nn.Linear(shape_out, 2))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return m


@SETTINGS
@given(seed=st.integers(0, 2**64 - 1), name=st.text(min_size=1, max_size=20), n=st.integers(1, 300),
       data=st.data(), sigma0=pos, eps=st.floats(0.0, 0.9))
def test_slice_of_anchor_is_anchor_of_slice(seed, name, n, data, sigma0, eps):
    a = data.draw(st.integers(0, n))
    b = data.draw(st.integers(a, n))
    full_t, full_x = A.anchor_slice(seed, name, 0, n, sigma0=sigma0, d_spread=eps)
    t, x = A.anchor_slice(seed, name, a, b, sigma0=sigma0, d_spread=eps)
    assert torch.equal(t, full_t[a:b])
    if eps:
        assert torch.equal(x, full_x[a:b])
        assert bool((x.abs() <= eps).all())


@SETTINGS
@given(out=st.integers(1, 6), inp=st.integers(1, 6), seed=st.integers(0, 1000), lr=pos, gamma=pos,
       sigma0=pos, eps=st.floats(0.0, 0.9), opt=st.sampled_from(["sgd", "adam", "rmsprop", "adagrad"]))
def test_theta0_is_a_fixed_point_with_zero_gradient(out, inp, seed, lr, gamma, sigma0, eps, opt):
    m = _model(out, inp, seed)
    make = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[opt]
    o = make(m.parameters(), lr=lr)
    s = syre.attach(o, m, gamma=gamma, sigma0=sigma0, d_spread=eps, seed=seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(s.anchor(name).theta0)
    for _ in range(3):
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        o.step()
    for name, p in m.named_parameters():
        assert torch.equal(p.detach(), s.anchor(name).theta0)


@SETTINGS
@given(out=st.integers(1, 6), inp=st.integers(1, 6), seed=st.integers(0, 1000), w=st.floats(1e-4, 0.9),
       sigma0=pos, eps=st.floats(0.0, 0.1))
def test_distance_to_anchor_shrinks_monotonically_with_zero_gradient(out, inp, seed, w, sigma0, eps):
    m = _model(out, inp, seed).double()
    gamma = w
    o = torch.optim.SGD(m.parameters(), lr=1.0)
    s = syre.attach(o, m, gamma=gamma, sigma0=sigma0, d_spread=eps, seed=seed)
    anchors = {n: s.anchor(n) for n, _ in m.named_parameters()}

    def dist():
        return sum(float((a.d.sqrt() * (p.detach() - a.theta0)).norm() ** 2) for (n, p), a in
                   zip(m.named_parameters(), anchors.values())) ** 0.5

    last = dist()
    for _ in range(5):
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        o.step()
        now = dist()
        assert now <= last * (1 + 1e-12)
        # and exactly by the factor the equations give when D = I
        if eps == 0:
            np.testing.assert_allclose(now, last * (1 - w), rtol=1e-9)
        last = now


@SETTINGS
@given(seed=st.integers(0, 1000), eps=st.sampled_from([0.0, 0.25]), sigma0=pos,
       opt=st.sampled_from(["sgd", "adamw"]))
def test_stored_and_seeded_modes_agree(seed, eps, sigma0, opt):
    results = []
    for mode in ("stored", "seeded"):
        m = _model(4, 3, seed)
        o = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5) if opt == "sgd"
             else torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.0))
        syre.attach(o, m, gamma=0.3, sigma0=sigma0, d_spread=eps, seed=seed, mode=mode)
        g = torch.Generator().manual_seed(seed)
        for _ in range(4):
            o.zero_grad()
            m(torch.randn(5, 3, generator=g)).pow(2).mean().backward()
            o.step()
        results.append([p.detach().clone() for p in m.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)
