"""torch.compile: a compiled model, and a whole compiled training step (forward, backward and
``opt.step()`` with syre's hook, under an lr scheduler), match eager with syre attached; names
drop ``_orig_mod.``."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import syre

pytestmark = pytest.mark.slow  # inductor compiles C++: 15-30 s per test on 2 CPU cores

STEPS = 5
ATOL, RTOL = 1e-6, 1e-5  # fused inductor kernels round differently from eager (measured ~4e-7)


def _model() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.LayerNorm(16), nn.Linear(16, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return m


def _data():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)) for _ in range(STEPS)]


def _run(compile_model: bool, compile_step: bool):
    torch._dynamo.reset()
    counters.clear()
    bare = _model()
    model = torch.compile(bare) if compile_model else bare
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
    s = syre.attach(opt, model, sigma0=0.2, d_spread=0.1, seed=3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k))  # a new lr at every step

    def step(x, y):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    if compile_step:
        step = torch.compile(step)
    graphs = []  # graphs compiled so far, after each step
    for x, y in _data():
        step(x, y)
        sched.step()
        graphs.append(counters["stats"]["unique_graphs"])
    return s, graphs, {n: p.detach().clone() for n, p in bare.named_parameters()}


@pytest.fixture(scope="module")
def eager():
    return _run(False, False)


def _assert_matches(got, want):
    assert list(got) == list(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=ATOL, rtol=RTOL, msg=lambda m: f"{n}: {m}")


def test_eager_run_moves_far_beyond_the_tolerance(eager):
    s, _, params = eager
    start = dict(_model().named_parameters())
    assert min((params[n] - start[n]).abs().max().item() for n in params) > 1000 * ATOL
    # Without syre's decay the same steps land elsewhere, far beyond the tolerance.
    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + k))
    for x, y in _data():
        opt.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        opt.step()
        sched.step()
    assert max((p.detach() - params[n]).abs().max().item() for n, p in m.named_parameters()) > 1000 * ATOL


def test_compiled_model_has_the_bare_names_and_matches_eager(eager):
    s, _, params = _run(True, False)
    raw = [n for n, _ in torch.compile(_model()).named_parameters()]
    assert raw[0].startswith("_orig_mod.")
    assert s.names() == eager[0].names() == [n.removeprefix("_orig_mod.") for n in raw]
    for n in s.names():
        assert torch.equal(s.anchor(n).theta0, eager[0].anchor(n).theta0)
    _assert_matches(params, eager[2])


def test_compiled_training_step_matches_eager_and_does_not_recompile(eager):
    _, graphs, params = _run(False, True)
    _assert_matches(params, eager[2])
    # AdamW alone compiles at the first step and once more when the lr first changes (the float
    # lr becomes dynamic); syre adds no recompile at any later lr: it runs outside the graph.
    assert graphs[0] > 0 and graphs[1:] == [graphs[1]] * (len(graphs) - 1), graphs
