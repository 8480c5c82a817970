"""Collapse metrics of a 2-D tensor: a weight matrix or a batch of representations ``[N, D]``.

Every function here is pure: it reads its input under ``torch.no_grad``, computes in float64
with ``torch.linalg.svdvals`` (on the input's device; MPS, which lacks float64, falls back to
the CPU) and returns a Python number. A convolution weight ``[out, in, kh, kw]`` is passed as
``w.flatten(1)``; a batch of feature maps ``[N, C, H, W]`` as ``x.flatten(1)`` (or pooled first).

Reference values, for ``x`` of shape ``[N, D]`` with ``K = min(N, D)``:

=====================  ==================================  ==============================
metric                 full collapse                       none (isotropic, N >> D)
=====================  ==================================  ==============================
numerical_rank         0 (zero matrix); 1 (constant rows)  K
effective_rank         0 (zero matrix); 1 (rank one)       close to K
rankme                 0 (zero matrix); 1 (rank one)       close to K
low_rank_fraction      1.0 (all rows equal)                0.0 (when N >= 1.2 D)
embedding_std          0.0 (all rows equal)                1 / sqrt(D)
=====================  ==================================  ==============================

``numerical_rank``, ``effective_rank`` and ``rankme`` look at the matrix as given (uncentred,
which is the convention of RankMe and of weight ranks); pass ``center=True`` to measure the
spread of a batch around its mean instead. ``low_rank_fraction`` always centres: it is a
statement about the covariance of the embedding.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ._spectral import (
    check_matrix as _check_matrix,
    entropy_rank as _entropy_rank,
    low_rank_from_sv as _low_rank_from_sv,
    rank_from_sv as _rank_from_sv,
)

__all__ = [
    "DEFAULT_LOW_RANK_THRESHOLD",
    "RANKME_EPS",
    "effective_rank",
    "embedding_std",
    "low_rank_fraction",
    "numerical_rank",
    "rankme",
    "singular_values",
]

#: Default of ``low_rank_fraction``: an eigenvalue of the embedding covariance counts as
#: near zero when it is below this fraction of the largest one (see ``low_rank_fraction``).
DEFAULT_LOW_RANK_THRESHOLD = 1e-3
#: The smoothing constant of RankMe (Garrido et al., 2023).
RANKME_EPS = 1e-7


def _check_bool(value, arg: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"Invalid {arg}: {value!r}; expected True or False")
    return value


@torch.no_grad()
def singular_values(x: torch.Tensor, *, center: bool = False) -> torch.Tensor:
    """The singular values of ``x`` (optionally of ``x`` minus its row mean), float64, descending.

    Has ``min(N, D)`` entries. Full collapse: all zero (zero matrix, or ``center=True`` with equal
    rows). None: for an isotropic Gaussian ``[N, D]`` with ``N >> D``, all close to ``sqrt(N)``.
    """
    x = _check_matrix(x)
    if _check_bool(center, "center"):
        x = x - x.mean(dim=0, keepdim=True)
    return torch.linalg.svdvals(x)


@torch.no_grad()
def numerical_rank(x: torch.Tensor, *, rtol: Optional[float] = None, center: bool = False) -> int:
    """The number of singular values of ``x`` above ``rtol`` times the largest one.

    ``rtol=None`` takes ``max(N, D) * eps`` of ``x``'s own dtype (the convention of
    ``numpy.linalg.matrix_rank`` and ``torch.linalg.matrix_rank``), so a float32 tensor is judged
    at float32 resolution even though the SVD runs in float64; the default is capped at
    ``1e-2`` so that a float16/bfloat16 batch of many rows is not judged rank 0.

    Full collapse: 0 for a zero matrix (and for equal rows with ``center=True``); 1 for a batch
    of equal, non-zero rows. None: ``min(N, D)``. An exactly rank-k matrix gives k.
    """
    if rtol is not None:
        if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not (0.0 <= rtol < 1.0) or math.isnan(rtol):
            raise ValueError(f"Invalid rtol: {rtol!r}; expected a float with 0 <= rtol < 1, or None")
    s = singular_values(x, center=center)
    return _rank_from_sv(s, tuple(x.shape), x.dtype, rtol)


@torch.no_grad()
def effective_rank(x: torch.Tensor, *, center: bool = False) -> float:
    """Roy and Vetterli's effective rank: ``exp(H(p))`` with ``p = s / sum(s)``, ``s`` the singular values.

    (O. Roy and M. Vetterli, "The effective rank: a measure of effective dimensionality",
    EUSIPCO 2007.) A continuous count of the directions ``x`` spreads over: it equals k for a
    matrix with k equal non-zero singular values and lies between 1 and ``numerical_rank(x)``
    otherwise. Scale invariant.

    Full collapse: 0.0 for a zero matrix (no direction at all; ``center=True`` and equal rows
    also give 0.0), 1.0 for any rank-one matrix (e.g. equal non-zero rows). None: close to
    ``min(N, D)``; an isotropic Gaussian ``[N, D]`` with ``N = 50 D`` gives about ``0.997 D``.
    """
    return _entropy_rank(singular_values(x, center=center), 0.0)


@torch.no_grad()
def rankme(x: torch.Tensor, *, eps: float = RANKME_EPS) -> float:
    """RankMe (Garrido, Balestriero, Najman and LeCun, ICML 2023): ``exp(-sum p_k log p_k)``,
    ``p_k = s_k / ||s||_1 + eps``, on the uncentred embeddings ``x`` ``[N, D]``.

    The effective rank with the paper's smoothing ``eps`` (1e-7), so it agrees with published
    RankMe values. Full collapse: 0.0 for all-zero embeddings (taken as 0 rather than the
    formula's 0/0), about 1.0 for equal non-zero rows. None: close to ``min(N, D)``.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0.0 <= eps < 1.0):
        raise ValueError(f"Invalid eps: {eps!r}; expected a float with 0 <= eps < 1")
    return _entropy_rank(singular_values(x), float(eps))


@torch.no_grad()
def low_rank_fraction(x: torch.Tensor, *, threshold: float = DEFAULT_LOW_RANK_THRESHOLD) -> float:
    """The share of the ``D`` eigenvalues of the covariance of ``x`` ``[N, D]`` below
    ``threshold`` times the largest eigenvalue.

    This is the "share of near-zero eigenvalues of the embedding covariance" that the syre
    paper reports for SimCLR (70% -> 0% in the last layer). The covariance is ``D x D``; its
    eigenvalues are ``s**2 / (N - 1)`` for the singular values ``s`` of the centred batch, plus
    ``D - min(N - 1, D)`` exact zeros when ``N - 1 < D`` (a batch smaller than the width cannot
    show more than ``N - 1`` directions, so use ``N`` well above ``D``).

    Why ``threshold = 1e-3`` (relative, on eigenvalues, i.e. ``0.032`` on standard deviations):
    it has to sit above the float32 noise floor and below any non-degenerate spectrum.
    Directions a network has collapsed carry variance at float32 round-off, ``1e-7`` to ``1e-5``
    of the top eigenvalue (collapsed spectra in the self-supervised literature drop by many
    orders of magnitude). A healthy spectrum does not come close: even for an isotropic Gaussian
    batch the smallest/largest eigenvalue ratio is about ``((1 - r) / (1 + r))**2`` with
    ``r = sqrt(D / N)`` (Marchenko-Pastur), which stays above ``1e-3`` for ``N >= 1.14 D``.
    The paper does not state its threshold; a relative one, unlike an absolute one, does not
    change when the embedding is rescaled (e.g. by weight decay), so the number measures the shape
    of the spectrum, not its size.

    Full collapse: 1.0 (all rows equal: every eigenvalue is zero, all count as near zero).
    None: 0.0 (isotropic Gaussian with ``N >= 1.2 D``). A batch spanning k directions gives
    ``(D - k) / D``.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (0.0 < threshold < 1.0):
        raise ValueError(f"Invalid threshold: {threshold!r}; expected a float with 0 < threshold < 1 (relative to the largest eigenvalue)")
    xt = _check_matrix(x)
    n, d = xt.shape
    if n < 2:
        raise ValueError(f"Invalid x: a batch of {n} row; the covariance needs at least 2 rows (and N well above D={d})")
    return _low_rank_from_sv(singular_values(xt, center=True), d, threshold)


@torch.no_grad()
def embedding_std(x: torch.Tensor) -> float:
    """The standard deviation of the l2-normalised embeddings, averaged over dimensions.

    Each row of ``x`` ``[N, D]`` is scaled to unit length, then the per-dimension standard
    deviation over the batch is averaged over the ``D`` dimensions (the collapse monitor of
    SimSiam, Chen and He, CVPR 2021). Full collapse: 0.0 (all rows equal, or all zero).
    None: ``1 / sqrt(D)`` for isotropic Gaussian embeddings; multiply by ``sqrt(D)`` to compare
    layers of different widths.
    """
    xt = _check_matrix(x)
    if xt.shape[0] < 2:
        raise ValueError(f"Invalid x: a batch of {xt.shape[0]} row; the standard deviation needs at least 2 rows")
    norms = xt.norm(dim=1, keepdim=True)
    z = torch.where(norms > 0, xt / norms.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(xt))
    return float(z.std(dim=0, unbiased=True).mean())
