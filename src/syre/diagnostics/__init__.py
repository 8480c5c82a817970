"""Collapse instruments: metrics of weights and representations.

``syre.diagnostics.metrics`` holds the pure metrics (``numerical_rank``, ``effective_rank``,
``rankme``, ``low_rank_fraction``, ``embedding_std``), each documented with its value at full
collapse and at none.
"""
from .metrics import (
    DEFAULT_LOW_RANK_THRESHOLD,
    effective_rank,
    embedding_std,
    low_rank_fraction,
    numerical_rank,
    rankme,
    singular_values,
)

__all__ = [
    "DEFAULT_LOW_RANK_THRESHOLD",
    "effective_rank",
    "embedding_std",
    "low_rank_fraction",
    "numerical_rank",
    "rankme",
    "singular_values",
]
