"""Fast paths against the ground truth: blocked and fused decay vs the for-loop, compiled vs eager
anchors, seeded mode without per-parameter memory, and the compile policy with its fallback."""
import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import syre
from small_models import batches
from syre import _compile as C, anchors as A, functional as F, reference as ref
from syre.rng import _format1 as V1, _format2 as V2
from syre_state import syre_tensors as _syre_tensors

DTYPES = [torch.float32, torch.float64]
KINDS = [(True, True), (False, True), (True, False), (False, False)]


def _tensors(shapes, dtype, theta_on, xi_on, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    ts = [torch.randn(s, generator=g, dtype=dtype) * 1.5 if theta_on else None for s in shapes]
    xs = [(torch.rand(s, generator=g, dtype=dtype) - 0.5) * 0.6 if xi_on else None for s in shapes]
    return ps, ts, xs


@pytest.fixture
def compiled(monkeypatch):
    """Build the compiled kernels at first use (they are cached for the rest of the session)."""
    monkeypatch.setenv("SYRE_COMPILE", "1")
    kernel = A._UNIFORMS.get(1 << 20)
    v2 = V2._THETA.get(1 << 20, torch.float32), V2._XI.get(1 << 20, torch.float32)  # format 2: fp32 kernels
    if kernel is None or None in v2:
        pytest.skip("torch.compile is not available here; the eager paths are what syre uses")
    return kernel


# ----------------------------------------------------------------------------- decay kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_blocked_multi_tensor_path_is_bitwise_the_for_loop(monkeypatch, dtype, kind):
    """Small blocks force tensors split across blocks and blocks packing several tensors."""
    monkeypatch.setattr(F, "_BLOCK", 37)
    monkeypatch.setenv("SYRE_COMPILE", "0")
    shapes = [(7, 5), (13,), (3, 4, 5), (1,), (50, 3), (2, 2)]
    ps, ts, xs = _tensors(shapes, dtype, *kind)
    fast = [p.clone() for p in ps]
    loop = [p.clone() for p in ps]
    F.decay_(fast, ts, xs, weight=0.3, foreach=True)
    F.decay_(loop, ts, xs, weight=0.3, foreach=False)
    tol = 1e-13 if dtype == torch.float64 else 2e-6
    for a, b, p0, t, x in zip(fast, loop, ps, ts, xs):
        assert torch.equal(a, b)
        theta0 = np.zeros(p0.shape) if t is None else t.double().numpy()
        d = np.ones(p0.shape) if x is None else 1 + x.double().numpy()
        np.testing.assert_allclose(a.double().numpy(), ref.decay(p0.double().numpy(), theta0, d, 1.0, 0.3), rtol=tol, atol=tol)


def test_blocked_path_handles_strided_tensors_and_a_single_big_tensor(monkeypatch):
    monkeypatch.setattr(F, "_BLOCK", 64)
    monkeypatch.setenv("SYRE_COMPILE", "0")
    g = torch.Generator().manual_seed(1)
    base = torch.randn(20, 30, generator=g)
    strided = [base.t().contiguous().t(), torch.randn(1000, generator=g)]  # a transposed layout, 16 blocks
    ts = [torch.randn(p.shape, generator=g) for p in strided]
    xs = [torch.rand(p.shape, generator=g) * 0.2 - 0.1 for p in strided]
    assert not strided[0].is_contiguous()
    fast = [p.clone() for p in strided]
    loop = [p.clone() for p in strided]
    F.decay_(fast, ts, xs, weight=0.05)
    F.decay_(loop, ts, xs, weight=0.05, foreach=False)
    for a, b in zip(fast, loop):
        assert torch.equal(a, b)
    one = strided[1].clone()
    F.decay_([one], [ts[1]], [xs[1]], weight=0.05)  # foreach=None with one tensor takes the blocked path
    assert torch.equal(one, loop[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_ar_kernel_is_bitwise_the_for_loop(monkeypatch, compiled, dtype):
    monkeypatch.setattr(F, "_FUSED_MIN", 1000)
    shapes = [(40, 50), (2001,), (7,), (33, 61)]  # fused, fused, blocked, fused
    for kind in ((True, True), (False, True)) if dtype == torch.float32 else ((True, True),):
        ps, ts, xs = _tensors(shapes, dtype, *kind, seed=2)
        lazy = F._AR_FUSED if kind[0] else F._AR0_FUSED
        assert lazy.get(1 << 20, dtype) is not None
        for weight in (0.3, 1e-4, 1.0):
            fast = [p.clone() for p in ps]
            loop = [p.clone() for p in ps]
            F.decay_(fast, ts, xs, weight=weight)
            F.decay_(loop, ts, xs, weight=weight, foreach=False)
            for a, b in zip(fast, loop):
                assert torch.equal(a, b)


def test_basic_fast_path_still_lands_on_theta0_and_keeps_adamw_decay():
    ps, ts, _ = _tensors([(5, 6), (9,)], torch.float32, True, False)
    fast = [p.clone() for p in ps]
    F.decay_(fast, ts, [None, None], weight=1.0)
    assert all(torch.equal(a, t) for a, t in zip(fast, ts))
    fast = [p.clone() for p in ps]
    F.decay_(fast, [None, None], [None, None], weight=0.01)
    assert all(torch.equal(a, p * (1 - 0.01)) for a, p in zip(fast, ps))


# ----------------------------------------------------------------------------- anchors
def _eager(version, seed, name, start, stop, s0, ds, dtype):
    if version == 1:
        return A._fill_eager(seed, name, start, stop, s0, ds, torch.device("cpu"), dtype)
    return V2.fill_eager(A.stream_key(seed, name), start, stop, s0, ds, torch.device("cpu"), dtype)


@pytest.mark.parametrize("version,dtype", [(1, torch.float32), (1, torch.float64), (2, torch.float32)])
def test_compiled_generator_is_bitwise_the_eager_generator(compiled, version, dtype):
    g = torch.Generator().manual_seed(3)
    cases = [(0, 100_000, 0.3, 0.2), (2**32 - 7, 70_000, 1.0, 0.0), (2**40 + 11, 65, 0.0, 0.5), (5, 3 * A._FAST_BLOCK + 1, 0.01, 0.1)]
    for i, (start, n, s0, ds) in enumerate(cases):
        name = f"layer{i}.weight"
        fast = A.anchor_slice(i, name, start, start + n, sigma0=s0, d_spread=ds, dtype=dtype, version=version)
        eager = _eager(version, i, name, start, start + n, s0, ds, dtype)
        for f, e in zip(fast, eager):
            assert (f is None) == (e is None)
            if f is not None:
                assert torch.equal(f, e)
        # the block iterator used by seeded mode gives the same numbers
        for lo, hi, t, x in A._blocks(i, name, start, start + n, s0, ds, dtype, "cpu", version):
            if t is not None:
                assert torch.equal(t, eager[0][lo - start : hi - start])
            if x is not None:
                assert torch.equal(x, eager[1][lo - start : hi - start])
    assert int(torch.randint(0, 2, (1,), generator=g)) in (0, 1)  # the global RNG was never needed


def test_compiled_generator_matches_the_pure_python_reference(compiled):
    t2, d2 = A.anchor(7, "layer.weight", (300,), sigma0=0.3, d_spread=0.2)
    r2, x2 = ref.anchor_v2(7, "layer.weight", 300, 0.3, 0.2)
    assert np.array_equal(t2.numpy(), r2) and np.array_equal((d2 - 1).numpy(), (np.float32(1) + x2) - np.float32(1))
    theta0, d = A.anchor(7, "layer.weight", (300,), sigma0=0.3, d_spread=0.2, dtype=torch.float64, version=1)
    r_theta0, r_d = ref.anchor(7, "layer.weight", 300, 0.3, 0.2)
    np.testing.assert_allclose(theta0.numpy(), r_theta0, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(d.numpy(), r_d, rtol=1e-14)


def test_small_fills_and_other_devices_stay_eager(monkeypatch):
    calls = []
    monkeypatch.setattr(A._UNIFORMS, "get", lambda n, key=None: calls.append(n))
    monkeypatch.setattr(V2._THETA, "get", lambda n, key=None: calls.append(("v2", n)))
    for version in (1, 2):
        A.anchor_slice(0, "w", 0, A._FAST_MIN - 1, sigma0=1.0, version=version)
        A.anchor_slice(0, "w", 0, 100, sigma0=0.0, d_spread=0.0, version=version)
    assert calls == []
    A.anchor_slice(0, "w", 0, A._FAST_MIN, sigma0=1.0, version=1)
    A.anchor_slice(0, "w", 0, A._FAST_MIN, sigma0=1.0)
    assert calls == [A._FAST_MIN, ("v2", A._FAST_MIN)]


# ----------------------------------------------------------------------------- compile policy
def _fake_lazy(monkeypatch, budget=100, compile_fn=None, probe=lambda k, key: True):
    built = []

    def fake_compile(fn, **kwargs):
        built.append(kwargs)
        return fn if compile_fn is None else compile_fn(fn)

    monkeypatch.setattr(torch, "compile", fake_compile)
    return C.LazyKernel("test kernel", lambda x: x, probe, budget=budget), built


def test_kernel_is_built_only_after_its_eager_budget(monkeypatch):
    monkeypatch.delenv("SYRE_COMPILE", raising=False)
    lazy, built = _fake_lazy(monkeypatch, budget=100)
    assert lazy.get(60) is None and lazy.get(30) is None and built == []
    assert lazy.eager_done == 90
    assert lazy.get(20) is not None and len(built) == 1
    assert built[0]["dynamic"] is True and built[0]["fullgraph"] is True
    assert lazy.get(1) is not None and len(built) == 1  # built once


@pytest.mark.parametrize("flag,expected", [("0", None), ("1", "built")])
def test_syre_compile_environment_variable(monkeypatch, flag, expected):
    monkeypatch.setenv("SYRE_COMPILE", flag)
    lazy, built = _fake_lazy(monkeypatch, budget=10**12)
    got = lazy.get(1)
    assert (got is None) if expected is None else (got is not None and len(built) == 1)


@pytest.mark.parametrize("failure", ["raises", "mismatch"])
def test_a_failed_build_warns_once_and_falls_back_to_eager(monkeypatch, failure):
    monkeypatch.setenv("SYRE_COMPILE", "1")

    def broken(fn):
        def k(*a):
            raise RuntimeError("no C++ compiler")
        return k

    if failure == "raises":
        lazy, _ = _fake_lazy(monkeypatch, compile_fn=broken, probe=lambda k, key: k(1))
    else:
        lazy, _ = _fake_lazy(monkeypatch, probe=lambda k, key: False)
    with pytest.warns(RuntimeWarning, match="eager path"):
        assert lazy.get(10) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lazy.get(10) is None  # no second warning, no second attempt


def test_eager_fallback_gives_the_same_anchors_and_steps(monkeypatch):
    """With the generator's kernel unavailable, syre runs on the eager paths with the same numbers."""
    m = nn.Linear(300, 40)
    before = A.anchor_slice(3, "weight", 0, 12_000, sigma0=0.1, d_spread=0.2)
    broken = C.LazyKernel("anchor generator", A._uniforms, A._verify_uniforms, budget=0)
    broken._failed = True
    monkeypatch.setattr(A, "_UNIFORMS", broken)
    monkeypatch.setattr(V1, "_UNIFORMS", broken)
    for lazy in (V2._THETA, V2._XI):
        monkeypatch.setattr(lazy, "_failed", True)
    after = A.anchor_slice(3, "weight", 0, 12_000, sigma0=0.1, d_spread=0.2)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    syre.attach(o, m, gamma=0.5, d_spread=0.1, mode="seeded")
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    o.step()  # runs without the kernel


# ----------------------------------------------------------------------------- seeded mode
class _Wide(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Linear(6, 300)
        self.b = nn.Linear(300, 3)
        self.scale = nn.Parameter(torch.ones(300))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.big = nn.Parameter(torch.randn(A._FAST_BLOCK + 77, generator=g) * 0.3)  # several blocks

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) * self.scale) + self.big[:3].sum()


@pytest.mark.parametrize("d_spread", [0.0, 0.2])
@pytest.mark.parametrize("fast", [False, True])
def test_seeded_mode_is_bitwise_stored_and_keeps_no_per_parameter_tensors(request, d_spread, fast):
    if fast:
        request.getfixturevalue("compiled")
    models = [_Wide(), None]
    models[1] = copy.deepcopy(models[0])
    syres, opts = [], []
    for mode, m in zip(("stored", "seeded"), models):
        o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.0)
        syres.append(syre.attach(o, m, gamma=0.5, sigma0=0.1, d_spread=d_spread, mode=mode))
        opts.append(o)
    for x, y in batches(4):
        for m, o in zip(models, opts):
            o.zero_grad()
            ((m(x) - y) ** 2).mean().backward()
            o.step()
    for p1, p2 in zip(*(m.parameters() for m in models)):
        assert torch.equal(p1, p2)
    stored, seeded = (_syre_tensors(s) for s in syres)
    for s, m in zip(syres, models):
        own = {id(t) for t in _syre_tensors(s)} | {id(p) for p in m.parameters()}
        cached = [t for params, buckets in s._cache.values() for t in params]
        cached += [t for params, buckets in s._cache.values() for b in (buckets or []) for ts in b[1:4] for t in ts if t is not None]
        assert cached and all(id(t) in own for t in cached)
        check = s._one_call.current
        if check is not None:  # the one-call check: the optimizer's parameters and the buckets of _cache
            decided = {id(b) for params, buckets in s._cache.values() for b in buckets or []}
            assert all(id(bucket[0]) in decided for runs in check.runs.values() for _, bucket in runs)
            assert {id(p) for p in check._flat} <= {id(p) for p in m.parameters()}
    n_params = sum(p.numel() for p in models[0].parameters())
    assert sum(t.numel() for t in stored) == n_params * (2 if d_spread else 1)
    assert seeded == []  # zero bytes per parameter between steps


def test_seeded_mode_low_precision_and_strided_parameters(compiled):
    m1 = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in m1.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    m1 = m1.to(memory_format=torch.channels_last).to(torch.bfloat16)
    m2 = copy.deepcopy(m1)
    assert not m1[0].weight.is_contiguous()
    outs = []
    for mode, m in (("stored", m1), ("seeded", m2)):
        o = torch.optim.SGD(m.parameters(), lr=0.3)
        syre.attach(o, m, gamma=1.0, sigma0=0.5, d_spread=0.3, mode=mode)
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        o.step()
        outs.append([p.detach().clone() for p in m.parameters()])
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_a_tensor_weight_decays_as_the_float_weight(kind):
    """``lr * gamma`` as a 0-d tensor (a device lr: no host sync) gives the float weight's decay (to
    rounding for advanced removal, whose ``weight * diff`` is then rounded on its own)."""
    ps, ts, xs = _tensors([(7, 5), (300,), (2, 2)], torch.float32, *kind)
    a, b = [p.clone() for p in ps], [p.clone() for p in ps]
    F.decay_(a, ts, xs, weight=0.3)
    F.decay_(b, ts, xs, weight=torch.tensor(0.3))
    for x, y in zip(a, b):
        if kind[1]:
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(x, y)
