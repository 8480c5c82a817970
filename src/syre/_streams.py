"""Counter-based random numbers for everything syre draws besides the anchors.

Each purpose has its own key per parameter, ``blake2b(seed || name)`` personalised by the purpose
(``syre-init-v1``, ``syre-round-v1``; the anchors' is ``syre-anchor-v1``), so the streams are
independent of each other and of the anchors, and -- like the anchors -- pure functions of
(seed, name, element index): the same on every rank, world size and restart, and computable for
any shard from its global indices alone. A second counter word ``c3`` selects a *generation* (an
initialisation, a perturbation at a step, the rounding of a step).

The words are Philox4x32-10 (``syre._philox``), four elements per block (element ``i`` reads lane
``i mod 4`` of block ``i // 4``), and become numbers with the integer-only maps of anchor format 2
(``syre._gen_v2``): a standard normal is ``N * 2**-21`` with the fixed-point inverse-CDF ``N``; a
uniform on (-1, 1) is ``(2 (w >> 8) + 1 - 2**24) * 2**-24``; a uniform on [0, 1) is
``(w >> 8) * 2**-24``. All exact, so the values are bitwise the same on every device.
"""
from __future__ import annotations

import hashlib
from typing import Tuple

import torch

from . import _gen_v2 as V2
from ._philox import MASK32, philox4x32
from ._validate import check_seed

__all__ = ["PURPOSES", "key", "normal", "uniform01", "uniform_pm1", "words"]

PURPOSES = ("init", "round")


def key(seed: int, name: str, purpose: str) -> Tuple[int, int]:
    """The Philox key of parameter ``name`` under ``seed`` for ``purpose`` (one of ``PURPOSES``)."""
    seed = check_seed(seed)
    if purpose not in PURPOSES:
        raise ValueError(f"Invalid purpose: {purpose!r}; expected one of {PURPOSES}")
    digest = hashlib.blake2b(seed.to_bytes(8, "little") + name.encode("utf-8"), digest_size=8,
                             person=f"syre-{purpose}-v1".encode()).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


def words(k: Tuple[int, int], idx: torch.Tensor, generation: int = 0) -> torch.Tensor:
    """The 32-bit words (int64) at global flat element indices ``idx`` under key ``k`` and ``generation``."""
    if not 0 <= generation < 2**32:
        raise ValueError(f"Invalid generation: {generation!r}; expected an int in [0, 2**32)")
    j = idx >> 2
    x = philox4x32(j & MASK32, j >> 32, k, c2=torch.zeros_like(j), c3=torch.full_like(j, generation))
    return torch.stack(x, dim=0).gather(0, (idx & 3).unsqueeze(0))[0]


def normal(w: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Standard normals from words ``w`` (format 2's fixed-point map; exact in float32)."""
    return V2.normal_fixed(w, V2.table(w.device)).to(dtype) * V2.SCALE


def uniform_pm1(w: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Uniforms on 2**24 odd points of (-1, 1) from words ``w`` (exact in float32)."""
    return V2.unit_xi_int(w).to(dtype) * V2.XI_SCALE


def uniform01(w: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Uniforms on 2**24 points of [0, 1) from words ``w`` (exact in float32)."""
    return (w >> 8).to(dtype) * 2.0**-24
