"""Spectral helpers shared by the metrics, the audit and the monitor (private).

Everything here takes a 2-D tensor or its singular values and returns plain numbers. The public
metrics in ``metrics`` are thin, validated wrappers around these; the audit and the monitor call
them directly on tensors they have already checked, and take both the uncentred and the centred
spectrum of a representation from one Gram matrix (``gram_spectra``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def check_matrix(x, arg: str = "x") -> torch.Tensor:
    """Validate a 2-D floating tensor and return it detached, in float64."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Invalid {arg}: {type(x).__name__}; expected a torch.Tensor of shape [N, D]")
    if x.dim() != 2:
        hint = " (flatten it first, e.g. x.flatten(1))" if x.dim() > 2 else ""
        raise ValueError(f"Invalid {arg}: a {x.dim()}-D tensor of shape {tuple(x.shape)}; expected a 2-D tensor [N, D]{hint}")
    if not x.is_floating_point():
        raise TypeError(f"Invalid {arg} dtype: {x.dtype}; expected a floating-point tensor (float16/bfloat16/float32/float64)")
    if x.numel() == 0:
        raise ValueError(f"Invalid {arg}: empty tensor of shape {tuple(x.shape)}; expected at least one row and one column")
    x = x.detach()
    if x.device.type == "mps":
        x = x.cpu()
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"Invalid {arg}: {bad} non-finite entries (NaN or inf); the metrics need finite values")
    return x


def default_rtol(shape, dtype) -> float:
    """``max(N, D) * eps`` of ``dtype`` (numpy's ``matrix_rank`` convention), capped at 1e-2."""
    return min(max(shape[0], shape[-1]) * torch.finfo(dtype).eps, 1e-2)


def rank_from_sv(s: torch.Tensor, shape, dtype, rtol: Optional[float]) -> int:
    """``numerical_rank`` from singular values ``s`` of a matrix of ``shape`` stored in ``dtype``."""
    if rtol is None:
        rtol = default_rtol(shape, dtype)
    return count_above(s, rtol)


def count_above(s: torch.Tensor, rtol: float) -> int:
    """The number of singular values at least ``rtol`` times the largest (0 for a zero spectrum)."""
    smax = float(s.max()) if s.numel() else 0.0
    if smax == 0.0:
        return 0
    return int((s > rtol * smax).sum()) if rtol > 0 else int((s > 0).sum())


#: Centred singular values below this share of the uncentred top one are round-off of the Gram
#: matrix (float32 data, float64 Gram): a batch whose rows are equal to that precision has
#: centred rank 0, not a rank counted in noise.
CENTRED_FLOOR = 1e-6


def centred_rank(s: torch.Tensor, sc: torch.Tensor, rtol: float) -> int:
    """Centred directions above ``rtol`` of the top one (``sc``), 0 when ``sc`` is round-off next to ``s``."""
    top = float(sc.max()) if sc.numel() else 0.0
    smax = float(s.max()) if s.numel() else 0.0
    if top <= CENTRED_FLOOR * smax:
        return 0
    return count_above(sc, rtol)


def low_rank_from_sv(s_centered: torch.Tensor, d: int, threshold: float) -> float:
    """``low_rank_fraction`` from the singular values of the centred ``[N, d]`` batch."""
    ev = s_centered * s_centered
    top = float(ev.max()) if ev.numel() else 0.0
    if top == 0.0:
        return 1.0
    return (d - int((ev >= threshold * top).sum())) / d


def entropy_rank(s: torch.Tensor, eps: float) -> float:
    """``exp(H(p))``, ``p = s / sum(s) + eps``: the effective rank (eps = 0) or RankMe."""
    total = float(s.sum())
    if total == 0.0:
        return 0.0
    p = s / total + eps
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))


def fast_singular_values(x: torch.Tensor, center: bool = False) -> torch.Tensor:
    """Singular values (float64, descending) from the eigenvalues of the smaller Gram matrix.

    Three to five times faster than ``svdvals`` on large matrices; values below about ``1e-8``
    of the largest are round-off (the Gram matrix squares them). The audit and the monitor judge
    float32 weights and representations at ``1e-4`` of the largest singular value or coarser.
    """
    x = check_matrix(x)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    g = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    ev = torch.linalg.eigvalsh(g).clamp_min(0.0)
    return ev.flip(0).sqrt()


def gram_spectra(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(fast_singular_values(x), fast_singular_values(x, center=True))`` from one Gram matrix."""
    x = check_matrix(x)
    n, d = x.shape
    if n >= d:
        g = x.T @ x
        mu = x.mean(dim=0)
        gc = g - n * torch.outer(mu, mu)
    else:
        g = x @ x.T
        r = g.mean(dim=1, keepdim=True)
        gc = g - r - r.T + g.mean()
    out = []
    for m in (g, gc):
        m = (m + m.T) / 2
        out.append(torch.linalg.eigvalsh(m).clamp_min(0.0).flip(0).sqrt())
    return out[0], out[1]


def matrix_ranks(rows: torch.Tensor, rtol: float) -> Tuple[int, int]:
    """(uncentred rank, centred rank) of ``rows`` ``[N, D]`` at ``rtol`` of the top singular value."""
    s, sc = gram_spectra(rows)
    return count_above(s, rtol), centred_rank(s, sc, rtol)


def weight_matrix(w: torch.Tensor) -> torch.Tensor:
    """A weight as ``[out, in]``: a convolution flattened past dim 0, a vector as one column."""
    w = w.detach()
    return w.flatten(1) if w.dim() > 1 else w[:, None]
