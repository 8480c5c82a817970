"""The compiled seeded decay on CPU (``syre.kernels._seeded``) is the block path, bit for bit.

Philox in int64 lanes (``philox4x32_rk``) against the reference ``philox4x32`` over many keys and
counters across 2**32 boundaries, eager and compiled; the one-pass kernels (basic, advanced
removal, advanced removal toward the origin; fp32 and fp64) against generate-interleave-decay over
unaligned ranges, counters past 2**32 blocks and both branches of ``lerp``; and a seeded ``Syre``
step with the kernel equal to one without it.
"""
import pytest
import torch
from torch import nn

import syre
from syre.kernels import _seeded
from syre.rng._philox import MASK32, philox4x32, philox4x32_rk, round_keys, stream_key

KEYS = [(0, 0), (MASK32, MASK32), (0x243F6A88, 0x85A308D3), stream_key(7, "layer.weight"), stream_key(0, "b")]


def _counters():
    edges = [0, 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 32) + 1, (1 << 33) - 3, (1 << 40) + 5]
    j = torch.tensor(sorted({e + d for e in edges for d in range(-40, 40) if e + d >= 0}), dtype=torch.int64)
    rand = torch.randint(0, 1 << 62, (2000,), generator=torch.Generator().manual_seed(0))
    return torch.cat([j, rand])


@pytest.mark.parametrize("key", KEYS)
def test_philox_rk_equals_reference_across_2_32(key):
    j = _counters()
    c2 = (j * 7) & 1
    c3 = (j >> 3) & MASK32
    rk = torch.tensor(round_keys(key), dtype=torch.int64) & MASK32
    want = philox4x32(j & MASK32, j >> 32, key, c2=c2, c3=c3)
    got = philox4x32_rk(j & MASK32, j >> 32, c2, c3, rk)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert all(int(g.min()) >= 0 and int(g.max()) <= MASK32 for g in got)


def test_philox_rk_compiled_equals_reference():
    compiled = torch.compile(philox4x32_rk, dynamic=True, fullgraph=True)
    j = _counters()
    z = torch.zeros_like(j)
    for key in KEYS[:3]:
        rk = torch.tensor(round_keys(key), dtype=torch.int64) & MASK32
        want = philox4x32(j & MASK32, j >> 32, key, c2=z + 1)
        got = compiled(j & MASK32, j >> 32, z + 1, z, rk)
        assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.setenv("SYRE_COMPILE", "1")
    yield
    for k in _seeded._KERNELS.values():
        k.reset()


CASES = [  # (start, n): aligned, unaligned both ends, across 2**32 Philox blocks (element 2**34)
    (0, 4096), (3, 1000), (61, 130), ((1 << 34) - 4 * 37 - 2, 1001), ((1 << 34) + 64, 640), (5, 63)]


@pytest.mark.parametrize("kind,sigma0,d_spread", [("basic", 0.02, 0.0), ("ar", 0.02, 0.1), ("ar0", 0.0, 0.1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_equals_block_path(compiled, kind, sigma0, d_spread, dtype):
    if dtype == torch.float64 and kind != "basic":
        pytest.skip("fp64 covered by basic (one compile per kind and dtype)")
    gen = torch.Generator().manual_seed(1)
    used = 0
    for key in KEYS[2:]:
        for (start, n) in CASES:
            for weight in (1e-3, 0.75):
                p = torch.randn(n, dtype=dtype, generator=gen)
                want = p.clone()
                _seeded._reference(want, key, start, sigma0, d_spread, weight)
                got = p.clone()
                took = _seeded.seeded_decay(got, key, start, sigma0, d_spread, weight)
                used += took
                assert torch.equal(got, want if took else p), (kind, key, start, n, weight)
    assert used == len(KEYS[2:]) * (len(CASES) - 1) * 2  # every range with an aligned interior took the kernel
    assert not _seeded._KERNELS[kind]._failed


def test_declines_without_touching(compiled):
    p = torch.randn(1000)
    before = p.clone()
    key = KEYS[2]
    assert not _seeded.seeded_decay(p.to(torch.bfloat16), key, 0, 0.02, 0.0, 1e-3)
    assert not _seeded.seeded_decay(p, key, 0, 0.02, 0.0, torch.tensor(1e-3))
    assert not _seeded.seeded_decay(p[:60], key, 2, 0.02, 0.0, 1e-3)
    assert not _seeded.seeded_decay(p, key, 0, 0.0, 0.0, 1e-3)
    assert torch.equal(p, before)


def _seeded_steps(monkeypatch, setting: str, d_spread: float):
    monkeypatch.setenv("SYRE_COMPILE", setting)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(37, 29), nn.Linear(29, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    syre.attach(opt, model, gamma=0.5, mode="seeded", d_spread=d_spread, seed=3)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 37)).square().mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("d_spread", [0.0, 0.2])
def test_seeded_step_same_with_and_without_kernel(compiled, monkeypatch, d_spread):
    eager = _seeded_steps(monkeypatch, "0", d_spread)
    kind = "basic" if d_spread == 0.0 else "ar"
    assert _seeded._KERNELS[kind]._compiled is None
    fast = _seeded_steps(monkeypatch, "1", d_spread)
    assert _seeded._KERNELS[kind]._compiled is not None  # the kernel ran
    assert all(torch.equal(a, b) for a, b in zip(eager, fast))

