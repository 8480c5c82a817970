"""Low precision: fp32 anchors and arithmetic for fp16/bf16 parameters, the stalled-pull warning,
autocast and GradScaler (a skipped step skips the decay)."""
from __future__ import annotations

import warnings

import pytest
import torch

import syre
from small_models import batches, make_mlp
from syre.functional import decay_, stalled_pull
from syre.optim import PRECISION_CHECK_EVERY, PrecisionWarning

LOW = [torch.bfloat16, torch.float16]


def _zero_grads(model):
    for p in model.parameters():
        p.grad = torch.zeros_like(p)


def _decay_only_step(model, opt):
    """One step whose gradient is zero: with plain SGD only syre's decay moves the weights."""
    _zero_grads(model)
    opt.step()


def _precision_warnings(record):
    return [w for w in record if issubclass(w.category, PrecisionWarning)]


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("mode", ["stored", "seeded"])
@pytest.mark.parametrize("d_spread", [0.0, 0.2])
def test_anchors_and_arithmetic_are_fp32_rounded_once(dtype, mode, d_spread):
    m = make_mlp(dtype=dtype)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    s = syre.attach(opt, m, gamma=0.3, sigma0=0.5, d_spread=d_spread, seed=4, mode=mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionWarning)
        _decay_only_step(m, opt)
    changed = 0
    for n, p in m.named_parameters():
        a = s.anchor(n)
        assert a.theta0.dtype == torch.float32 and a.d.dtype == torch.float32
        want = syre.anchor(4, n, p.shape, sigma0=0.5, d_spread=d_spread)
        assert torch.equal(a.theta0, want.theta0) and torch.equal(a.d, want.d)
        q = before[n].float()
        expected = (q - 0.15 * (a.d * (q - a.theta0))).to(dtype)  # fp32, then one rounding
        torch.testing.assert_close(p.detach(), expected, atol=0, rtol=0)
        # Anchors rounded to the storage dtype first would land elsewhere.
        t16 = a.theta0.to(dtype).float()
        changed += int(((q - 0.15 * (a.d * (q - t16))).to(dtype) != p.detach()).sum())
    assert changed > 0


@pytest.mark.parametrize("dtype", LOW)
def test_stalled_pull_counts_exactly_the_elements_rounding_returns(dtype):
    g = torch.Generator().manual_seed(0)
    n = 50_000
    p = (torch.randn(n, generator=g) * 10.0 ** torch.randint(-6, 3, (n,), generator=g).float()).to(dtype)
    p[:500], p[500:1000], p[1000:1100] = 1.0, -0.5, 0.0  # powers of two and zeros
    theta0 = 0.01 * torch.randn(n, generator=g)
    xi = 0.4 * torch.rand(n, generator=g) - 0.2
    for weight in (1e-4, 1e-3, 1e-2, 1e-1):
        for x in (None, xi):
            stalled, pulled = stalled_pull(p, theta0, x, weight)
            q = p.clone()
            decay_([q], [theta0], [x], weight=weight)
            unmoved = int(((q == p) & (p.float() != theta0)).sum())
            assert pulled == n
            assert abs(stalled - unmoved) <= 3, (weight, stalled, unmoved)  # ties of the fp32 arithmetic


@pytest.mark.parametrize("dtype", LOW)
def test_stalled_pull_analytic_edges(dtype):
    eps = torch.finfo(dtype).eps
    one = torch.ones(1, dtype=dtype)
    theta0 = torch.zeros(1)
    # Above 1 the spacing is eps; toward zero from 1 it is eps / 2, so half of it is eps / 4.
    assert stalled_pull(one, theta0, None, 0.9 * eps / 4) == (1, 1)
    assert stalled_pull(one, theta0, None, 1.1 * eps / 4) == (0, 1)
    assert stalled_pull(one, torch.full((1,), 2.0), None, 0.9 * eps / 2) == (1, 1)  # away from zero
    assert stalled_pull(one, torch.full((1,), 2.0), None, 1.1 * eps / 2) == (0, 1)
    assert stalled_pull(one, torch.ones(1), None, 0.5) == (0, 0)  # at the anchor: no pull at all


def _three_decay_steps(dtype, lr: float, gamma: float):
    """syre at sigma0 0.01 on the small MLP in ``dtype``, three decay-only steps: the precision warnings, and the
    number of weights that moved out of the total."""
    m = make_mlp(dtype=dtype)
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    syre.attach(opt, m, gamma=gamma, sigma0=0.01, seed=1)
    start = [p.detach().clone() for p in m.parameters()]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):
            _decay_only_step(m, opt)
    moved = sum(int((p.detach() != q).sum()) for p, q in zip(m.parameters(), start))
    return _precision_warnings(record), moved, sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("dtype", LOW)
def test_warning_fires_once_when_the_pull_is_below_half_an_ulp(dtype):
    got, moved, total = _three_decay_steps(dtype, lr=1e-3, gamma=0.1)
    assert len(got) == 1
    msg = str(got[0].message)
    assert "half an ulp" in msg and "fp32 master weights" in msg and str(dtype).split(".")[1] in msg
    # And it tells the truth: the decay moved (almost) nothing.
    assert moved < total / 2


@pytest.mark.parametrize("dtype", LOW + [torch.float32])
def test_no_warning_when_the_pull_moves_the_weights(dtype):
    got, moved, total = _three_decay_steps(dtype, lr=0.5, gamma=0.2)
    assert got == []
    assert moved > 0.9 * total


def test_fp32_parameters_never_warn_even_when_the_pull_is_tiny():
    m = make_mlp()
    opt = torch.optim.SGD(m.parameters(), lr=1e-6)
    syre.attach(opt, m, gamma=1e-6, seed=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _decay_only_step(m, opt)
    assert _precision_warnings(record) == []


def test_warning_comes_later_when_the_learning_rate_decays():
    m = make_mlp(dtype=torch.bfloat16)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    syre.attach(opt, m, gamma=0.2, sigma0=0.01, seed=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _decay_only_step(m, opt)
        assert _precision_warnings(record) == []
        opt.param_groups[0]["lr"] = 1e-4
        for step in range(1, PRECISION_CHECK_EVERY + 1):
            _decay_only_step(m, opt)
            assert len(_precision_warnings(record)) == (1 if step >= PRECISION_CHECK_EVERY else 0), step
        for _ in range(PRECISION_CHECK_EVERY + 1):
            _decay_only_step(m, opt)
    assert len(_precision_warnings(record)) == 1


# ----------------------------------------------------------------------------- AMP
def _amp_run(model, opt, scaler, x, y, poison=False):
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    loss = ((out.float() - y) ** 2).mean()
    if scaler is None:
        loss.backward()
        opt.step()
        return
    scaler.scale(loss).backward()
    if poison:
        next(model.parameters()).grad[0, 0] = float("inf")
    scaler.step(opt)
    scaler.update()


def test_autocast_and_gradscaler_decay_exactly_as_without_the_scaler():
    (x, y), = batches(1)
    runs = []
    for use_scaler in (False, True):
        m = make_mlp()
        opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.5)
        syre.attach(opt, m, sigma0=0.2, d_spread=0.1, seed=2)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if use_scaler else None
        for _ in range(3):
            _amp_run(m, opt, scaler, x, y)
        runs.append([p.detach().clone() for p in m.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)  # scaling by a power of two, then unscaling, is exact


def test_a_step_the_gradscaler_skips_applies_no_decay():
    (x, y), = batches(1)
    m = make_mlp()
    opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.5)
    syre.attach(opt, m, sigma0=0.2, seed=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = [p.detach().clone() for p in m.parameters()]
    _amp_run(m, opt, scaler, x, y, poison=True)
    assert scaler.get_scale() == 2.0**9  # the step was skipped
    for p, q in zip(m.parameters(), before):
        assert torch.equal(p.detach(), q)  # neither the optimizer nor syre moved anything
    _amp_run(m, opt, scaler, x, y)
    assert all(not torch.equal(p.detach(), q) for p, q in zip(m.parameters(), before))
