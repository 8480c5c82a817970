"""No recompiles over a learning-rate schedule: syre's compiled CPU kernels take lr, gamma and every
other scalar as tensors (or outside the graph), so after the first step an lr schedule, a gamma
change and another tensor size build nothing new. Counted with dynamo's own counter of compiled
graphs and with the number of graphs inductor was handed (``compile_fx``)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import syre
from syre.kernels import _native as N, _seeded as SD, functional as F, fused as FU
from syre.rng import _format2 as V2

pytestmark = pytest.mark.slow  # builds the kernels afresh: ~10-30 s on 2 CPU cores

STEPS = 8


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(300, 256)  # 76,800 weights: the fused kernel
        self.b = nn.Linear(256, 280)  # 71,680 weights: another size, the same compiled kernel
        self.c = nn.Linear(280, 4)  # small: the separate pass

    def forward(self, x):
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))


@pytest.fixture
def fresh(monkeypatch):
    """Every LazyKernel built from scratch at first use in this test; graphs handed to inductor counted. The native
    CPU kernels (C, no graphs) are off: the compiled kernels are the route they replace."""
    monkeypatch.setenv("SYRE_COMPILE", "1")
    monkeypatch.setattr(N, "on", lambda: False)
    monkeypatch.setattr(FU, "FOLD_MAX", 0)  # basic syre takes the kernel too
    monkeypatch.setattr(F, "_FUSED_MIN", 1000)  # the hook's AR decay kernel on these small tensors
    from torch._inductor import compile_fx as CF

    built = []
    real = CF.compile_fx

    def counting(gm, *args, **kwargs):
        built.append(gm)
        return real(gm, *args, **kwargs)

    monkeypatch.setattr(CF, "compile_fx", counting)
    kernels = (FU._ADAMW, FU._SGD, F._AR_FUSED, F._AR0_FUSED, V2._THETA, V2._XI, *SD._KERNELS.values())
    for k in kernels:
        k.reset()
    torch._dynamo.reset()
    counters.clear()
    yield built
    for k in kernels:  # the next tests build their own, with the real compile_fx
        k.reset()


def _graphs(built):
    return len(built), counters["stats"]["unique_graphs"]


def _run(opt_factory, built, **attach):
    torch.manual_seed(0)
    model = Net()
    opt = opt_factory(model)
    s = syre.attach(opt, model, **attach)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + 0.3 * k))  # a new lr at every step
    g = torch.Generator().manual_seed(1)
    after = []
    for k in range(STEPS):
        if k == STEPS // 2:
            opt.param_groups[0]["syre_gamma"] = 0.05  # a new gamma: a new lr * gamma, not a new kernel
        x, y = torch.randn(16, 300, generator=g), torch.randn(16, 4, generator=g)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        sched.step()
        after.append(_graphs(built))
    return s, after


@pytest.mark.parametrize("d_spread", [0.0, 0.1])
@pytest.mark.parametrize("mode", ["stored", "seeded"])
def test_fused_adamw_builds_its_kernels_once_over_an_lr_schedule(fresh, d_spread, mode):
    s, after = _run(lambda m: syre.AdamW(m.parameters(), lr=0.01, weight_decay=0.1), fresh, d_spread=d_spread,
                    mode=mode)
    assert s.group_gamma(0) == 0.05
    assert after[0][0] > 0  # the kernels were built in this run, at the first step ...
    assert after == [after[0]] * STEPS, after  # ... and never again: 0 recompiles after warm-up


def test_fused_sgd_and_the_hooks_ar_kernel_build_once_over_an_lr_schedule(fresh):
    # syre.SGD: the first step has no momentum buffer (the separate pass), the kernel comes at the second
    _, after = _run(lambda m: syre.SGD(m.parameters(), lr=0.05, momentum=0.9), fresh, gamma=0.2, d_spread=0.1)
    assert after[1][0] > 0 and after[1:] == [after[1]] * (STEPS - 1), after
    # the hook's advanced-removal kernel (torch's AdamW + syre.attach), lr * gamma a tensor argument
    _, after = _run(lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1), fresh, d_spread=0.1)
    assert after == [after[0]] * STEPS, after
    assert F._AR_FUSED._state  # built and used (not the blocked fallback)


@pytest.mark.parametrize("d_spread", [0.0, 0.1])
def test_the_hooks_seeded_kernel_builds_once_over_an_lr_schedule(fresh, d_spread):
    # seeded mode under torch's AdamW: the one-pass seeded decay, lr * gamma a tensor argument, two sizes
    _, after = _run(lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1), fresh, d_spread=d_spread,
                    mode="seeded")
    assert after[0][0] > 0 and after == [after[0]] * STEPS, after
    assert SD._KERNELS["basic" if d_spread == 0.0 else "ar"]._state  # built and used
