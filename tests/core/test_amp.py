"""AMP's GradScaler on every decay path: a scaled step decays and updates on the unscaled gradient,
and a step GradScaler skips (inf/NaN gradients) skips syre's decay, also for optimizers that handle
the scaling themselves (``fused=True``, which GradScaler always calls with ``grad_scale`` and
``found_inf``).

The loss scale is a power of two, so unscaling is exact: a run under GradScaler with one inf step
among its batches must give bitwise the parameters of the same run without GradScaler and without
that batch."""
import pytest
import torch
from torch import nn

import syre

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _model(device):
    torch.manual_seed(0)
    # 512 x 256 = 131072 weights: syre.AdamW / syre.SGD take their fused kernel for it
    return nn.Sequential(nn.Linear(512, 256), nn.Tanh(), nn.Linear(256, 4)).to(device)


PATHS = {
    "syre.SGD(fused=True)": lambda ps: syre.SGD(ps, lr=0.01, momentum=0.9, fused=True),
    "syre.AdamW(fused=True)": lambda ps: syre.AdamW(ps, lr=0.01, weight_decay=0.0, fused=True),
    "torch.optim.AdamW(fused=True)": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.0, fused=True),
    "torch.optim.SGD(fused=True)": lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, fused=True),
    "torch.optim.AdamW": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.0),
}


def _run(device, make, *, scaler, inf_at=None, steps=5, **attach):
    m = _model(device)
    o = make(m.parameters())
    s = syre.attach(o, m, gamma=0.5, seed=1, **attach)
    sc = torch.amp.GradScaler(device, init_scale=2.0**16) if scaler else None
    g = torch.Generator().manual_seed(3)
    before = None
    for k in range(steps):
        x = torch.randn(8, 512, generator=g).to(device)
        if k == inf_at and sc is None:
            continue  # the reference run leaves the skipped batch out
        o.zero_grad()
        loss = m(x).pow(2).mean() * (float("inf") if k == inf_at else 1.0)
        if sc is None:
            loss.backward()
            o.step()
            continue
        sc.scale(loss).backward()
        if k == inf_at:
            before = [p.detach().clone() for p in m.parameters()]
        sc.step(o)
        if k == inf_at:
            assert all(torch.equal(a, p) for a, p in zip(before, m.parameters())), "the skipped step changed a parameter"
        sc.update()
    return m, o, s


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path,mode", [(p, "stored") for p in sorted(PATHS)]
                         + [("syre.SGD(fused=True)", "seeded"), ("syre.AdamW(fused=True)", "seeded")])
def test_grad_scaler_steps_on_the_unscaled_gradient_and_skips_inf_steps(device, path, mode):
    m, o, s = _run(device, PATHS[path], scaler=True, inf_at=2, mode=mode)
    ref, ref_o, ref_s = _run(device, PATHS[path], scaler=False, inf_at=2, mode=mode)
    for (n, p), q in zip(m.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), f"{path}: {n} differs from the run without GradScaler and without the inf batch"
    # the optimizer's own step count skipped the inf step too (4 steps of 5)
    st = o.state[m[0].weight]
    if "step" in st:
        assert int(st["step"]) == 4
    assert float(m[0].weight.detach().abs().max()) < 1.0  # on the scaled gradient it reaches ~18 (then NaN)


@pytest.mark.parametrize("path", ["syre.SGD(fused=True)", "syre.AdamW(fused=True)"])
def test_fused_under_grad_scaler_agrees_with_torch_fused_plus_attach(path):
    """syre's fused pass and torch's own fused class + syre's hook: the same run to rounding."""
    twin = {"syre.SGD(fused=True)": "torch.optim.SGD(fused=True)", "syre.AdamW(fused=True)": "torch.optim.AdamW(fused=True)"}
    a, _, _ = _run("cpu", PATHS[path], scaler=True, inf_at=3)
    b, _, _ = _run("cpu", PATHS[twin[path]], scaler=True, inf_at=3)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_a_skipped_step_does_not_advance_stochastic_rounding():
    """The step GradScaler skips is not counted: the rounding stream's generation stays in step with the optimizer."""
    m, o, s = _run("cpu", PATHS["torch.optim.AdamW(fused=True)"], scaler=True, inf_at=1, steps=4, rounding="stochastic")
    assert s.state_dict()["step"] == 3
