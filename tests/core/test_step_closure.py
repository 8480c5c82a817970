"""optimizer.step(closure): the decay runs once per step, after the closure's gradients."""
import torch

import syre
from small_models import batches, make_mlp


def _closure(model, opt, x, y, calls=None):
    def closure():
        if calls is not None:
            calls.append(1)
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    return closure


def test_step_with_closure_equals_step_after_backward():
    data = batches(4)
    runs = []
    for use_closure, positional in [(False, False), (True, False), (True, True)]:
        m = make_mlp()
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        syre.attach(opt, m, gamma=0.3, sigma0=0.2, d_spread=0.1, seed=3)
        for x, y in data:
            if use_closure:
                c = _closure(m, opt, x, y)
                opt.step(c) if positional else opt.step(closure=c)
            else:
                _closure(m, opt, x, y)()
                opt.step()
        runs.append([p.detach().clone() for p in m.parameters()])
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_lbfgs_decays_once_per_step_however_often_it_calls_the_closure():
    m = make_mlp()
    x, y = batches(1)[0]
    opt = torch.optim.LBFGS(m.parameters(), lr=0.5, max_iter=4)
    s = syre.attach(opt, m, gamma=0.2, sigma0=0.3, seed=1)
    decays, calls = [], []
    inner = s._decay
    s._decay = lambda o: (decays.append(1), inner(o))
    for _ in range(3):
        opt.step(_closure(m, opt, x, y, calls))
    assert len(calls) > 3 and len(decays) == 3


def test_decay_with_closure_is_exact_when_the_gradient_is_zero():
    m = make_mlp()
    p0 = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.LBFGS(m.parameters(), lr=0.5, max_iter=5)
    s = syre.attach(opt, m, gamma=0.2, sigma0=0.3, d_spread=0.0, seed=1)

    def closure():  # a zero gradient: only syre moves the parameters
        opt.zero_grad()
        loss = 0.0 * sum(p.sum() for p in m.parameters())
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    w = 0.5 * 0.2
    for n, p in m.named_parameters():
        theta0 = s.anchor(n).theta0
        expected = theta0 + (1 - w) ** 3 * (p0[n] - theta0)
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)
