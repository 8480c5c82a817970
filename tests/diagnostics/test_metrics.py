"""Collapse metrics at their analytic extremes, on constructed spectra, and their input errors."""
import math

import pytest
import torch

from syre.diagnostics import _spectral as S, metrics as M


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def gaussian(n, d, seed=0, dtype=torch.float32):
    return torch.randn(n, d, generator=gen(seed), dtype=dtype)


def orthonormal(n, k, seed):
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=gen(seed), dtype=torch.float64))
    return q


def with_spectrum(n, d, svals, seed=0):
    """An [n, d] matrix whose singular values are exactly ``svals`` (the rest zero)."""
    k = len(svals)
    u, v = orthonormal(n, k, seed), orthonormal(d, k, seed + 1)
    return u @ torch.diag(torch.tensor(svals, dtype=torch.float64)) @ v.T


# ---------------------------------------------------------------- full collapse
def test_zero_matrix_is_full_collapse():
    z = torch.zeros(50, 16)
    assert M.numerical_rank(z) == 0
    assert M.effective_rank(z) == 0.0
    assert M.rankme(z) == 0.0
    assert M.low_rank_fraction(z) == 1.0
    assert M.embedding_std(z) == 0.0


def test_constant_representations():
    row = torch.randn(1, 32, generator=gen(1))
    x = row.repeat(200, 1)
    assert M.numerical_rank(x) == 1  # uncentred: one direction
    assert M.numerical_rank(x, center=True) == 0  # no spread around the mean
    assert M.effective_rank(x) == pytest.approx(1.0, abs=1e-6)
    assert M.effective_rank(x, center=True) == 0.0
    assert M.rankme(x) == pytest.approx(1.0, abs=1e-4)
    assert M.low_rank_fraction(x) == 1.0
    assert M.embedding_std(x) == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------- no collapse
def test_isotropic_gaussian_is_near_full_rank():
    n, d = 3200, 64
    x = gaussian(n, d)
    assert M.numerical_rank(x) == d
    assert M.effective_rank(x) > 0.97 * d
    assert M.rankme(x) > 0.97 * d
    assert M.low_rank_fraction(x) == 0.0
    assert M.embedding_std(x) == pytest.approx(1 / math.sqrt(d), rel=0.03)


def test_wide_gaussian_weight_matrix_full_rank():
    w = gaussian(40, 300, seed=3)
    assert M.numerical_rank(w) == 40
    assert M.numerical_rank(w.T) == 40


# ---------------------------------------------------------------- rank k
@pytest.mark.parametrize("k", [1, 3, 10])
def test_rank_k_matrix(k):
    n, d = 500, 32
    x = (gaussian(n, k, seed=k) @ gaussian(k, d, seed=100 + k)).float()
    assert M.numerical_rank(x) == k
    assert 1.0 <= M.effective_rank(x) <= k + 1e-3  # float32 round-off adds a trace
    assert M.low_rank_fraction(x) == pytest.approx((d - k) / d)


@pytest.mark.parametrize("k", [1, 4, 12])
def test_equal_singular_values_give_exact_effective_rank(k):
    x = with_spectrum(300, 40, [2.5] * k)
    assert M.numerical_rank(x) == k
    assert M.effective_rank(x) == pytest.approx(k, rel=1e-9)
    assert M.rankme(x) == pytest.approx(k, rel=1e-4)


def test_effective_rank_of_known_spectrum():
    s = [4.0, 2.0, 1.0, 1.0]
    p = torch.tensor(s, dtype=torch.float64) / sum(s)
    expected = float(torch.exp(-(p * p.log()).sum()))
    x = with_spectrum(100, 20, s, seed=5)
    assert M.effective_rank(x) == pytest.approx(expected, rel=1e-10)
    sv = M.singular_values(x)
    assert sv.dtype == torch.float64 and sv.shape == (20,)
    assert torch.allclose(sv[:4], torch.tensor(s, dtype=torch.float64), atol=1e-12)


def test_effective_rank_is_scale_invariant_and_below_numerical_rank():
    x = gaussian(200, 30, seed=7) * torch.linspace(0.01, 3.0, 30)
    e = M.effective_rank(x)
    assert M.effective_rank(1e3 * x) == pytest.approx(e, rel=1e-8)
    assert 1.0 < e < M.numerical_rank(x)


def test_numerical_rank_rtol():
    x = with_spectrum(100, 10, [1.0, 1e-2, 1e-5])
    assert M.numerical_rank(x) == 3  # float64 input: eps-level default
    assert M.numerical_rank(x, rtol=1e-3) == 2
    assert M.numerical_rank(x, rtol=0.5) == 1
    # the same matrix stored in float32 is judged at float32 resolution
    y = with_spectrum(100, 10, [1.0, 1e-2, 1e-8]).float()
    assert M.numerical_rank(y) == 2


def test_low_rank_fraction_threshold():
    d = 10
    # covariance eigenvalues proportional to s**2: 1, 1e-2, 1e-4, 1e-6, zeros
    x = with_spectrum(400, d, [1.0, 1e-1, 1e-2, 1e-3], seed=9)
    x = x - x.mean(0)  # already centred up to round-off; keep the spectrum exact
    assert M.low_rank_fraction(x) == pytest.approx((d - 2) / d)  # 1e-4 < 1e-3
    assert M.low_rank_fraction(x, threshold=1e-5) == pytest.approx((d - 3) / d)
    assert M.low_rank_fraction(x, threshold=0.5) == pytest.approx((d - 1) / d)
    assert M.low_rank_fraction(x) == M.low_rank_fraction(1e-4 * x)


def test_low_rank_fraction_counts_missing_directions_of_a_small_batch():
    x = gaussian(9, 32, seed=2)  # 8 centred directions at most
    assert M.low_rank_fraction(x) == pytest.approx((32 - 8) / 32)


def test_embedding_std_ignores_scale_of_rows():
    x = gaussian(500, 16, seed=4)
    scales = torch.rand(500, 1, generator=gen(5)) * 10 + 0.1
    assert M.embedding_std(x * scales) == pytest.approx(M.embedding_std(x), rel=1e-9)


def test_float16_and_bfloat16_inputs():
    x = gaussian(256, 8, seed=6)
    for dt in (torch.float16, torch.bfloat16):
        assert M.numerical_rank(x.to(dt)) == 8
        assert M.effective_rank(x.to(dt)) == pytest.approx(M.effective_rank(x), rel=1e-2)


def test_metrics_do_not_touch_autograd_or_the_input():
    x = gaussian(64, 8, seed=8).requires_grad_()
    before = x.detach().clone()
    M.effective_rank(x), M.rankme(x), M.low_rank_fraction(x), M.embedding_std(x), M.numerical_rank(x)
    assert x.grad is None and torch.equal(x.detach(), before)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("fn", [M.numerical_rank, M.effective_rank, M.rankme, M.low_rank_fraction, M.embedding_std])
def test_input_errors(fn):
    with pytest.raises(ValueError, match="4-D.*flatten"):
        fn(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="1-D"):
        fn(torch.zeros(5))
    with pytest.raises(TypeError, match="dtype.*int64"):
        fn(torch.zeros(5, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="empty"):
        fn(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="non-finite"):
        fn(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


def test_argument_errors():
    x = gaussian(10, 3)
    with pytest.raises(ValueError, match="rtol"):
        M.numerical_rank(x, rtol=-1.0)
    with pytest.raises(ValueError, match="threshold"):
        M.low_rank_fraction(x, threshold=0.0)
    with pytest.raises(ValueError, match="threshold"):
        M.low_rank_fraction(x, threshold=2)
    with pytest.raises(ValueError, match="eps"):
        M.rankme(x, eps=-1e-3)
    with pytest.raises(TypeError, match="center"):
        M.effective_rank(x, center="yes")
    with pytest.raises(ValueError, match="at least 2 rows"):
        M.low_rank_fraction(x[:1])


# ---------------------------------------------------------------- the audit's fast path
@pytest.mark.parametrize("shape", [(600, 48), (40, 90)])
def test_gram_spectra_match_svd(shape):
    """The audit and the monitor take singular values from one Gram matrix; they must agree with
    svdvals far below the thresholds they are judged at (1e-6 on eigenvalues)."""
    x = gaussian(*shape, seed=11) * torch.linspace(1e-3, 3.0, shape[1]) + 4.0  # a large mean, a wide spectrum
    s, sc = S.gram_spectra(x)
    k = min(shape)
    ref, refc = M.singular_values(x), M.singular_values(x, center=True)
    assert torch.allclose(s[:k], ref, rtol=0, atol=1e-7 * float(ref[0]))
    assert torch.allclose(sc[:k], refc, rtol=0, atol=1e-7 * float(refc[0]))
    assert torch.allclose(S.fast_singular_values(x, center=True)[:k], refc, rtol=0, atol=1e-7 * float(refc[0]))
    assert S.rank_from_sv(s, shape, x.dtype, None) == M.numerical_rank(x)
    assert S.entropy_rank(s, 0.0) == pytest.approx(M.effective_rank(x), rel=1e-9)
    if shape[0] > shape[1]:
        for t in (1e-3, 1e-6):
            assert S.low_rank_from_sv(sc, shape[1], t) == M.low_rank_fraction(x, threshold=t)
