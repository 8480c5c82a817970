import math

import numpy as np
import pytest
import torch
from torch import nn

import syre
from syre import anchors as A, reference as ref
from syre.rng import _format1 as V1, _format2 as V2

KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    t = [torch.tensor([c], dtype=torch.int64) for c in ctr]
    out = A.philox4x32(t[0], t[1], key, c2=t[2], c3=t[3])
    assert tuple(int(x) for x in out) == expected
    assert ref.philox4x32_10(ctr, key) == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_format2_matches_reference_elementwise(dtype):
    """Format 2 from its definition (Python ints, one rounding): bitwise, in fp32 and fp64."""
    theta0, d = A.anchor(7, "layer.weight", (5, 9), sigma0=0.3, d_spread=0.2, dtype=dtype)
    npd = np.float32 if dtype == torch.float32 else np.float64
    r_theta0, r_xi = ref.anchor_v2(7, "layer.weight", 45, 0.3, 0.2, npd)
    assert np.array_equal(theta0.flatten().numpy(), r_theta0)
    assert np.array_equal((d - 1).flatten().numpy(), (npd(1) + r_xi) - npd(1))
    t, x = A.anchor_slice(7, "layer.weight", 0, 45, sigma0=0.3, d_spread=0.2, dtype=dtype)
    assert np.array_equal(x.numpy(), r_xi)
    assert A.anchor(7, "layer.weight", (5, 9), sigma0=0.3, d_spread=0.2).theta0.dtype == torch.float32


def test_format1_matches_reference_elementwise():
    theta0, d = A.anchor(7, "layer.weight", (5, 9), sigma0=0.3, d_spread=0.2, dtype=torch.float64, version=1)
    r_theta0, r_d = ref.anchor(7, "layer.weight", 45, 0.3, 0.2)
    np.testing.assert_allclose(theta0.flatten().numpy(), r_theta0, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(d.flatten().numpy(), r_d, rtol=1e-14)
    # fp32 anchors are the float64 ones rounded once.
    t32, _ = A.anchor(7, "layer.weight", (5, 9), sigma0=0.3, d_spread=0.2, version=1)
    assert torch.equal(t32, theta0.float())


@pytest.mark.parametrize("version", A.FORMATS)
def test_slice_and_indices_equal_slice_of_full(monkeypatch, version):
    monkeypatch.setattr(V1, "_CHUNK", 7)  # force many chunk boundaries
    monkeypatch.setattr(V2, "CHUNK", 9)
    full_t, full_x = A.anchor_slice(3, "w", 0, 200, sigma0=1.0, d_spread=0.5, version=version)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = sorted(int(v) for v in rng.integers(0, 201, size=2))
        t, x = A.anchor_slice(3, "w", a, b, sigma0=1.0, d_spread=0.5, version=version)
        assert torch.equal(t, full_t[a:b]) and torch.equal(x, full_x[a:b])
    idx = torch.tensor(rng.integers(0, 200, size=(7, 5)), dtype=torch.int64)  # any shape, any order, repeats
    t, x = A._at(3, "w", idx, 1.0, 0.5, torch.float32, version)
    assert torch.equal(t, full_t[idx]) and torch.equal(x, full_x[idx])


def test_large_indices_use_the_high_counter_word():
    for i in (5, 2**34 + 5, 2**62 + 3):  # format 2: block i // 4 has a high word from 2**34 on
        t, x = A.anchor_slice(0, "w", i, i + 1, sigma0=1.0, d_spread=0.5)
        assert (t.item(), x.item()) == ref.element_v2(0, "w", i, 1.0, 0.5)
    lo_t, _ = A.anchor_slice(0, "w", 5, 6, sigma0=1.0, version=1)
    hi_t, _ = A.anchor_slice(0, "w", 2**32 + 5, 2**32 + 6, sigma0=1.0, version=1)
    assert not torch.equal(lo_t, hi_t)
    x0, x1, _, _ = ref.philox4x32_10(((2**32 + 5) & 0xFFFFFFFF, 1, 0, 0), A.stream_key(0, "w"))
    expected = math.sqrt(-2 * math.log((x0 + 1) / 2**32)) * math.cos(2 * math.pi * x1 / 2**32)
    assert hi_t.item() == pytest.approx(expected, rel=1e-6)


def test_independent_of_global_rng_and_of_other_parameters():
    torch.manual_seed(0)
    a = A.anchor(1, "enc.weight", (4, 4), sigma0=1.0).theta0
    torch.manual_seed(123)
    torch.rand(1000)
    b = A.anchor(1, "enc.weight", (4, 4), sigma0=1.0).theta0
    assert torch.equal(a, b)

    def model(extra):
        torch.manual_seed(5)
        layers = [nn.Linear(4, 4)] + ([nn.Linear(4, 4)] if extra else [])
        return nn.Sequential(*layers)

    m1, m2 = model(False), model(True)
    s1 = syre.attach(torch.optim.SGD(m1.parameters(), lr=0.1), m1, gamma=0.1)
    s2 = syre.attach(torch.optim.SGD(m2.parameters(), lr=0.1), m2, gamma=0.1)
    assert torch.equal(s1.anchor("0.weight").theta0, s2.anchor("0.weight").theta0)
    assert torch.equal(s1.anchor("0.weight").d, s2.anchor("0.weight").d)


def test_statistical_quality():
    """theta0/sigma0 ~ N(0, 1) and xi ~ U(-eps, eps): moments and KS tests on 2**20 draws."""
    stats = pytest.importorskip("scipy.stats")
    n = 1 << 20
    t, x = A.anchor_slice(0, "stat", 0, n, sigma0=1.0, d_spread=0.5, dtype=torch.float64)
    z = t.numpy()
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.std() - 1.0) < 5 / math.sqrt(2 * n)
    assert abs(stats.skew(z)) < 0.02 and abs(stats.kurtosis(z)) < 0.04
    assert stats.kstest(z, "norm").pvalue > 1e-3
    u = x.numpy() / 0.5
    assert u.min() >= -1 and u.max() <= 1
    assert stats.kstest(u, "uniform", args=(-1, 2)).pvalue > 1e-3
    # Different names and seeds give uncorrelated streams.
    t2, _ = A.anchor_slice(0, "stat2", 0, n, sigma0=1.0, dtype=torch.float64)
    t3, _ = A.anchor_slice(1, "stat", 0, n, sigma0=1.0, dtype=torch.float64)
    assert abs(np.corrcoef(z, t2.numpy())[0, 1]) < 5 / math.sqrt(n)
    assert abs(np.corrcoef(z, t3.numpy())[0, 1]) < 5 / math.sqrt(n)


def test_small_spread_stays_distinct_in_fp32():
    """Why syre stores xi, not D = 1 + xi: in fp32, 1 + xi quantises a small spread.

    With eps = 1e-4 (0.1 * sigma0 at sigma0 = 1e-3, as one public implementation draws it),
    ``1 + xi`` has only ~1e-4 / 2**-24 + 1e-4 / 2**-23 ~ 2500 distinct fp32 values, so most D_ii tie and the
    rotations between tied coordinates stay symmetric; stored xi keeps every entry distinct.
    """
    n = 100_000
    _, xi = A.anchor_slice(0, "w", 0, n, sigma0=0.0, d_spread=1e-4)
    assert len(torch.unique(xi)) > 0.99 * n
    assert len(torch.unique(1.0 + xi)) < 3_000


def test_sigma0_presets():
    s = A.DEFAULT_SIGMA0_SCALE  # a bare preset is that multiple of the init std
    lin = nn.Linear(64, 32)
    assert A.resolve_sigma0("lecun", "w", lin.weight, lin, "weight") == pytest.approx(s / 8)
    assert A.resolve_sigma0("kaiming", "w", lin.weight, lin, "weight") == pytest.approx(s * math.sqrt(2 / 64))
    assert A.resolve_sigma0("xavier", "w", lin.weight, lin, "weight") == pytest.approx(s * math.sqrt(2 / 96))
    assert A.resolve_sigma0("lecun", "b", lin.bias, lin, "bias") == pytest.approx(s / 8)
    conv = nn.Conv2d(3, 8, kernel_size=3)
    assert A.resolve_sigma0("lecun", "c", conv.weight, conv, "weight") == pytest.approx(s / math.sqrt(27))
    assert A.resolve_sigma0("lecun", "c", conv.bias, conv, "bias") == pytest.approx(s / math.sqrt(27))
    emb = nn.Embedding(100, 16)
    assert A.resolve_sigma0("lecun", "e", emb.weight, emb, "weight") == pytest.approx(s)
    ln = nn.LayerNorm(16)
    assert A.resolve_sigma0("lecun", "n", ln.weight, ln, "weight") == pytest.approx(s * A.UNIT_SIGMA0)
    assert A.resolve_sigma0("kaiming", "n", ln.bias, ln, "bias") == pytest.approx(s * A.UNIT_SIGMA0)
    mha = nn.MultiheadAttention(16, 2)
    assert A.resolve_sigma0("lecun", "m", mha.in_proj_bias, mha, "in_proj_bias") == pytest.approx(s / 4)
    assert A.resolve_sigma0(0.2, "x", lin.weight) == 0.2
    assert A.resolve_sigma0(lambda n, p: 0.05 * p.dim(), "x", lin.weight) == pytest.approx(0.1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(seed=-1), "seed"),
        (dict(seed=2**64), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(sigma0=-0.1), "sigma0"),
        (dict(sigma0=float("nan")), "sigma0"),
        (dict(sigma0=float("inf")), "sigma0"),
        (dict(d_spread=1.0), "d_spread"),
        (dict(d_spread=-0.1), "d_spread"),
    ],
)
def test_anchor_errors(kwargs, match):
    args = dict(seed=0, sigma0=1.0, d_spread=0.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        A.anchor(args.pop("seed"), "w", (3,), **args)


def test_sigma0_spec_errors():
    lin = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="sigma0.*'lecunn'"):
        A.resolve_sigma0("lecunn", "w", lin.weight, lin, "weight")
    with pytest.raises(ValueError, match="callable.*'w'"):
        A.resolve_sigma0(lambda n, p: -1.0, "w", lin.weight)
    with pytest.raises(TypeError, match="sigma0"):
        A.check_sigma0_spec([0.1])
