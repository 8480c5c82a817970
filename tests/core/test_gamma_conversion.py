"""Converting a coupled weight decay into syre's decoupled gamma: SGD with momentum and Adam's L2, on small runs."""
import copy
import math

import pytest
import torch
from torch import nn

import syre


def _model(seed=0):
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 1))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


def _data(n=256, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    return x, torch.sin(x[:, :1] * 2) + 0.1 * torch.randn(n, 1, generator=g)


def _run(model, opt, steps, zero_grad=False):
    x, y = _data()
    for _ in range(steps):
        opt.zero_grad()
        if zero_grad:
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
        else:
            ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return math.sqrt(sum(float(p.detach().square().sum()) for p in model.parameters()))


def test_sgd_momentum_the_decoupled_gamma_is_weight_decay_over_one_minus_momentum():
    lr, wd, mu = 0.05, 0.02, 0.9
    model = _model()
    coupled = torch.optim.SGD(model.parameters(), lr=lr, momentum=mu, weight_decay=wd)
    assert syre.equivalent_gamma(coupled) == [pytest.approx(wd / (1 - mu))]
    with pytest.raises(ValueError, match=r"weight_decay x 10 = 0.2"):
        syre.attach(coupled, model)
    results = {}
    for name, gamma in (("coupled", None), ("converted", wd / (1 - mu)), ("naive", wd)):
        for zero in (True, False):
            m = _model()
            if gamma is None:
                o = torch.optim.SGD(m.parameters(), lr=lr, momentum=mu, weight_decay=wd)
            else:
                o = torch.optim.SGD(m.parameters(), lr=lr, momentum=mu)
                syre.attach(o, m, gamma=gamma, sigma0=0.0, d_spread=0.0)
            results[name, zero] = _run(m, o, 400, zero_grad=zero)
    start = _run(_model(), torch.optim.SGD(_model().parameters(), lr=0.0), 0)
    for zero in (True, False):
        c, v, n = results["coupled", zero], results["converted", zero], results["naive", zero]
        assert abs(math.log(v / c)) < 0.1 * abs(math.log(c / start)) + 0.02  # the same shrinkage, to 10%
        assert abs(math.log(n / c)) > 3 * abs(math.log(v / c))  # the naive gamma is far off


def test_adam_l2_has_no_single_gamma_but_the_norm_rate_one_matches_a_small_run():
    lr, wd = 3e-3, 0.05
    m = _model()
    adam = torch.optim.Adam(m.parameters(), lr=lr, weight_decay=wd)
    assert syre.equivalent_gamma(adam) == [None]  # no state yet
    _run(m, adam, 100)
    (gamma,) = syre.equivalent_gamma(adam)
    # The per-element rates wd / (sqrt(v) + eps) spread over more than an order of magnitude.
    v = torch.cat([adam.state[p]["exp_avg_sq"].flatten() for p in m.parameters()])
    step = float(adam.state[next(iter(m.parameters()))]["step"])
    rates = wd / ((v / (1 - 0.999 ** step)).sqrt() + 1e-8)
    assert float(rates.max() / rates.min()) > 10
    assert gamma > 3 * wd  # gradients are small here, so L2 through Adam decays far more than lr * wd
    with pytest.raises(ValueError, match="syre.equivalent_gamma"):
        syre.attach(torch.optim.Adam(m.parameters(), lr=lr, weight_decay=wd), m)
    # Continue 100 steps: Adam with L2, against Adam + syre at the converted gamma and at the naive one,
    # each compared with no decay at all. The decay's share of the change of log-norm is the measure.
    def cont(decoupled, coupled_wd):
        mm = copy.deepcopy(m)
        o = torch.optim.Adam(mm.parameters(), lr=lr, weight_decay=coupled_wd)
        sd = adam.state_dict()
        sd["param_groups"][0]["weight_decay"] = coupled_wd
        o.load_state_dict(sd)
        if decoupled:
            syre.attach(o, mm, gamma=decoupled, sigma0=0.0, d_spread=0.0)
        return _run(mm, o, 100)

    base = cont(None, 0.0)
    part = {name: math.log(cont(g, c) / base) for name, g, c in (("coupled", None, wd), ("converted", gamma, 0.0), ("naive", wd, 0.0))}
    assert part["coupled"] < -0.2  # the L2 decay shrinks the weights clearly
    assert 0.7 < part["converted"] / part["coupled"] < 1.4, part  # measured: 0.89
    assert abs(part["naive"]) < 0.1 * abs(part["coupled"]), part  # gamma = weight_decay does about nothing
