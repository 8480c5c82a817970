"""Rank metrics used by the benchmarks (temporary: replaced by ``syre.diagnostics.metrics``)."""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["numerical_rank", "effective_rank"]


@torch.no_grad()
def _svals(x: torch.Tensor, center: bool) -> torch.Tensor:
    x = x.detach().to(torch.float64)
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    return torch.linalg.svdvals(x)


@torch.no_grad()
def numerical_rank(x: torch.Tensor, *, rtol: Optional[float] = None, center: bool = False) -> int:
    """The number of singular values of ``x`` above ``rtol`` times the largest one."""
    if rtol is None:
        rtol = max(x.shape) * torch.finfo(x.dtype).eps
    s = _svals(x, center)
    if float(s[0]) == 0.0:
        return 0
    return int((s > rtol * s[0]).sum())


@torch.no_grad()
def effective_rank(x: torch.Tensor, *, center: bool = False) -> float:
    """Roy and Vetterli's effective rank: ``exp(H(s / sum(s)))``."""
    s = _svals(x, center)
    total = float(s.sum())
    if total == 0.0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * torch.log(p)).sum()))
