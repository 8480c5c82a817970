"""syre.kernels._native: the C kernels built on first use, bitwise the for-loop decay, the fused steps within their
tolerance, threads splitting a call without changing a bit, a replaced parameter storage followed, and the
fallback (no compiler, SYRE_NATIVE=0) warned once and giving the same values."""
import copy
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import syre
from syre.kernels import _fused_kernels as FK, _native as N, functional as F

needs_native = pytest.mark.skipif(N.lib() is None, reason=f"the native kernels are off here: {N.disable_reason()}")


def test_the_kernels_build_wherever_there_is_a_c_compiler():
    if os.environ.get("SYRE_NATIVE", "") in ("0", "false", "no", "off"):
        pytest.skip("SYRE_NATIVE=0")
    has_cc = any(shutil.which(c) for c in ("cc", "gcc", "clang"))
    assert (N.lib() is not None) == has_cc, N.disable_reason()


def _tensors(sizes, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(n, generator=g, dtype=dtype) for n in sizes]
    ts = [torch.randn(n, generator=g, dtype=dtype) * 1.5 for n in sizes]
    xs = [(torch.rand(n, generator=g, dtype=dtype) - 0.5) * 0.4 for n in sizes]
    return ps, ts, xs


@needs_native
@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6), dtype=st.sampled_from([torch.float32, torch.float64]),
       kind=st.sampled_from(["lerp", "ar", "ar0"]), w=st.sampled_from([1e-5, 0.01, 0.3, 0.5, 0.7, 1.0]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_the_decay_kernels_are_the_for_loop_bitwise(sizes, dtype, kind, w, threads, seed):
    """Any sizes (empty ones too), both dtypes, both branches of lerp, one thread or several splitting the
    concatenated elements across tensor boundaries (parallel_min=1 forces the split)."""
    ps, ts, xs = _tensors(sizes, dtype, seed)
    ts = None if kind == "ar0" else ts
    xs = None if kind == "lerp" else xs
    want = [p.clone() for p in ps]
    for i, p in enumerate(want):
        F._decay_one(p, None if ts is None else ts[i], None if xs is None else xs[i], w)
    assert N.Batch.fits(ps, ts, xs)
    assert N.Batch(ps, ts, xs)(w, threads, 1)
    for a, b in zip(ps, want):
        assert torch.equal(a, b)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ar", [False, True])
def test_the_fused_steps_agree_with_their_eager_definitions_and_threads_change_no_bit(dtype, ar):
    sizes = [N.PARALLEL_MIN + 77, 5, 3000]
    ps, ts, xs = _tensors(sizes, dtype, 1)
    g = torch.Generator().manual_seed(2)
    gs = [torch.randn(n, generator=g, dtype=dtype) for n in sizes]
    ms = [torch.randn(n, generator=g, dtype=dtype) * 0.1 for n in sizes]
    vs = [torch.rand(n, generator=g, dtype=dtype) * 0.01 for n in sizes]
    xs = xs if ar else None
    s = [0.003, 0.999, 0.1, 0.999, 0.001, 0.01, 0.05, 1e-8]
    runs = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            got = [[t.clone() for t in ts_] for ts_ in (ps, gs, ms, vs)]
            N.adamw(got[0], got[1], got[2], got[3], ts, xs, s)
        finally:
            torch.set_num_threads(old)
        runs.append(got)
    for a, b in zip(runs[0], runs[1]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    st_ = torch.tensor(s, dtype=dtype)
    for i in range(len(sizes)):
        want = [t[i].clone() for t in (ps, gs, ms, vs)]
        FK._adamw_kernel(*want, ts[i], None if xs is None else xs[i], st_)
        for got, w in zip((runs[0][0][i], runs[0][2][i], runs[0][3][i]), (want[0], want[2], want[3])):
            torch.testing.assert_close(got, w, rtol=4 * torch.finfo(dtype).eps, atol=4 * torch.finfo(dtype).eps)
    # SGD with momentum, the same way
    s = [0.003, 0.9, 1.0, 0.05]
    got = [[t.clone() for t in ts_] for ts_ in (ps, gs, ms)]
    N.sgd(got[0], got[1], got[2], ts, xs, s)
    for i in range(len(sizes)):
        want = [t[i].clone() for t in (ps, gs, ms)]
        FK._sgd_kernel(*want, ts[i], None if xs is None else xs[i], torch.tensor(s, dtype=dtype))
        torch.testing.assert_close(got[0][i], want[0], rtol=4 * torch.finfo(dtype).eps, atol=4 * torch.finfo(dtype).eps)
        torch.testing.assert_close(got[2][i], want[2], rtol=4 * torch.finfo(dtype).eps, atol=4 * torch.finfo(dtype).eps)


@needs_native
def test_a_batch_follows_a_replaced_storage_and_declines_one_it_cannot_take():
    ps, ts, _ = _tensors([100, 50], torch.float32, 3)
    params = [nn.Parameter(p) for p in ps]
    buckets = F.buckets(params, ts, [None, None])
    assert [b[0] for b in buckets] == ["native"]
    with torch.no_grad():
        F.apply_buckets(buckets, 0.25)
        params[0].data = params[0].data.clone() + 1.0  # a new storage: the next call must write there
        want = [p.detach().clone() for p in params]
        for p, t in zip(want, ts):
            p.lerp_(t, 0.25)
        F.apply_buckets(buckets, 0.25)
    for p, w in zip(params, want):
        assert torch.equal(p, w)
    # a storage the kernels cannot take (not contiguous): the batch declines, torch's calls do the step
    with torch.no_grad():
        params[1].data = torch.randn(100)[::2]
        want = params[1].detach().clone().lerp_(ts[1], 0.25)
        F.apply_buckets(buckets, 0.25)
    assert torch.equal(params[1], want)


def _train(model, opt, steps=6):
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(8, 20, generator=g, dtype=next(model.parameters()).dtype)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d_spread", [0.0, 0.1])
def test_the_hook_with_native_kernels_is_bitwise_the_hook_without(monkeypatch, dtype, d_spread):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 5)).to(dtype)
    other = copy.deepcopy(model)
    calls = []
    real = N.Batch.run  # every decay of a batch runs it (through __call__, or directly once the hook checks in one call)
    monkeypatch.setattr(N.Batch, "run", lambda self, *a, **k: (calls.append(len(self.ps)), real(self, *a, **k))[1])
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(opt, model, d_spread=d_spread, seed=4)
    _train(model, opt)
    assert calls == [4] * 6  # one call per step for the group's four tensors
    monkeypatch.setattr(N.Batch, "fits", staticmethod(lambda ps, ts, xs: False))
    opt2 = torch.optim.AdamW(other.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(opt2, other, d_spread=d_spread, seed=4)
    _train(other, opt2)
    assert calls == [4] * 6
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)


_FALLBACK = textwrap.dedent("""
    import warnings, torch, syre
    from torch import nn
    from syre.kernels import _native as N
    torch.manual_seed(0)
    model = nn.Linear(30, 20)
    opt = syre.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(opt, model, d_spread=0.1, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            model(torch.ones(4, 30)).sum().backward()
            opt.step()
    native = [str(w.message) for w in caught if "native CPU kernels" in str(w.message)]
    print(repr((N.lib() is not None, N.disable_reason(), len(native), native[:1])))
    torch.save([p.detach() for p in model.parameters()], {out!r})
""")


def _run(tmp_path, name, env):
    out = tmp_path / f"{name}.pt"
    env = {**os.environ, "SYRE_CACHE_DIR": str(tmp_path / "cache"), **env}
    done = subprocess.run([sys.executable, "-c", _FALLBACK.format(out=str(out))], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1]), torch.load(out)


@needs_native
def test_built_into_the_cache_dir_and_off_without_a_compiler_or_by_setting(tmp_path):
    (on, reason, warned, _), built = _run(tmp_path, "on", {})
    assert on and reason is None and warned == 0
    assert [p.name for p in (tmp_path / "cache" / "native").iterdir()] and \
        all(p.name.startswith("syre_native_") and p.suffix == ".so" for p in (tmp_path / "cache" / "native").iterdir())
    # a cached library that does not load (truncated): built again, silently
    (lib,) = (tmp_path / "cache" / "native").iterdir()
    size = lib.stat().st_size
    lib.write_bytes(lib.read_bytes()[:100])
    (on, reason, warned, _), again = _run(tmp_path, "again", {})
    assert on and reason is None and warned == 0 and lib.stat().st_size == size
    assert all(torch.equal(a, b) for a, b in zip(built, again))
    (on, reason, warned, _), off = _run(tmp_path, "off", {"SYRE_NATIVE": "0"})
    assert not on and reason == "SYRE_NATIVE=0" and warned == 0  # asked for: no warning
    # no compiler: one warning naming why and the remedy, and the torch paths (the same trajectory, within tolerance)
    (on, reason, warned, msg), none = _run(tmp_path, "none", {"CC": "/nonexistent/cc", "PATH": "/nonexistent",
                                                              "SYRE_CACHE_DIR": str(tmp_path / "empty")})
    assert not on and "no C compiler" in reason and warned == 1 and "SYRE_NATIVE=0" in msg[0]
    for a, b, c in zip(built, off, none):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert torch.equal(b, c)
