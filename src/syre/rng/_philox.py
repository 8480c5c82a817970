"""Philox4x32-10 and the per-parameter key: the counter-based stream behind every anchor.

Philox4x32-``R`` (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3",
SC 2011; the generator of cuRAND's, JAX's and Triton's counter-based streams) maps a 128-bit
counter ``(c0, c1, c2, c3)`` and a 64-bit key ``(k0, k1)`` to four 32-bit words. syre keys each
parameter by ``blake2b(seed || name)`` (``stream_key``), so the anchors of one parameter depend on
nothing else; both anchor formats read this one stream (``syre.rng._format1``, ``syre.rng._format2``).

``philox4x32`` works on int64 tensors holding 32-bit unsigned values (exact on every device:
products of two 32-bit words wrap modulo 2**64, whose halves are Philox's ``mulhi``/``mullo``);
``philox4x32_rk`` is that arithmetic with the round keys as a tensor (``round_keys``), for
compiled kernels (one graph for every key); ``philox4x32_i32`` is the same function on int32 bit
patterns with 16-bit limbs, for compiled kernels whose vector units lack 64-bit multiplies.
"""
from __future__ import annotations

import hashlib
from typing import Optional, Tuple

import torch

from .._validate import check_seed

__all__ = ["MASK32", "PHILOX_M0", "PHILOX_M1", "PHILOX_W0", "PHILOX_W1", "philox4x32", "philox4x32_i32", "philox4x32_rk",
           "round_keys", "stream_key"]

MASK32 = 0xFFFFFFFF
#: Philox4x32's multipliers and Weyl key increments (Salmon et al. 2011), shared with ``syre.optax``.
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85


def stream_key(seed: int, name: str) -> Tuple[int, int]:
    """The Philox key (two 32-bit words) of parameter ``name`` under ``seed``.

    ``blake2b(seed as 8 little-endian bytes || utf-8 name)``; stable across processes, Python
    versions and platforms (unlike ``hash``). The same key serves both anchor formats.
    """
    seed = check_seed(seed)
    if not isinstance(name, str):
        raise TypeError(f"Invalid name: {name!r}; expected a str (a parameter name)")
    digest = hashlib.blake2b(
        seed.to_bytes(8, "little") + name.encode("utf-8"), digest_size=8, person=b"syre-anchor-v1"
    ).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


def philox4x32(
    c0: torch.Tensor,
    c1: torch.Tensor,
    key: Tuple[int, int],
    rounds: int = 10,
    c2: Optional[torch.Tensor] = None,
    c3: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-``rounds`` on counters ``(c0, c1, c2, c3)`` (``c2 = c3 = 0`` by default).

    ``c0`` and ``c1`` are int64 tensors holding 32-bit unsigned values; ``c2``/``c3`` tensors or
    None. The key words are ints or int64 tensors (one key per element). Returns four int64
    tensors of 32-bit words.
    """
    k0, k1 = key
    z = torch.zeros_like(c0)
    x0, x1 = c0, c1
    x2 = z if c2 is None else c2
    x3 = z if c3 is None else c3
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        p0 = x0 * PHILOX_M0
        p1 = x2 * PHILOX_M1
        hi0 = (p0 >> 32) & MASK32
        hi1 = (p1 >> 32) & MASK32
        x0, x1, x2, x3 = (hi1 ^ x1) ^ k0, p1 & MASK32, (hi0 ^ x3) ^ k1, p0 & MASK32
    return x0, x1, x2, x3


def as_i32(v: int) -> int:
    """The int32 value with the bit pattern of the 32-bit word ``v``."""
    v &= MASK32
    return v - (1 << 32) if v >= 1 << 31 else v


def lsr32(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int32 bit patterns by a constant ``0 < s < 32``."""
    return (x >> s) & ((1 << (32 - s)) - 1)


def _mulhilo_i32(a: torch.Tensor, m: int):
    """``(hi, lo)`` words of ``a * m`` (``a`` int32 bit patterns, ``m`` a 32-bit constant), 16-bit limbs.

    Every limb product is below 2**32 and every sum below 2**32 + 2**18, so with wrapping int32
    arithmetic the bit patterns are those of the exact unsigned result.
    """
    m_lo, m_hi = m & 0xFFFF, m >> 16
    a_lo, a_hi = a & 0xFFFF, lsr32(a, 16)
    ll, lh, hl, hh = a_lo * m_lo, a_lo * m_hi, a_hi * m_lo, a_hi * m_hi
    mid = lsr32(ll, 16) + (lh & 0xFFFF) + (hl & 0xFFFF)
    hi = hh + lsr32(lh, 16) + lsr32(hl, 16) + lsr32(mid, 16)
    return hi, a * as_i32(m)


def round_keys(key: Tuple[int, int], rounds: int = 10) -> list:
    """The key words of every round, ``[k0_0 .. k0_{R-1}, k1_0 .. k1_{R-1}]``, as int32 values.

    Computed here exactly, so that a compiled kernel reads them and never adds key words itself.
    """
    k0, k1 = key
    return [as_i32(k0 + r * PHILOX_W0) for r in range(rounds)] + [as_i32(k1 + r * PHILOX_W1) for r in range(rounds)]


def philox4x32_rk(c0, c1, c2, c3, rk: torch.Tensor, rounds: int = 10):
    """``philox4x32`` on int64 tensors of 32-bit words with ``rk`` the ``round_keys`` as int64 words.

    ``rk = torch.tensor(round_keys(key), dtype=torch.int64) & MASK32``. The product of two words
    below 2**32 wraps in int64, but its low 64 bits are exact, so ``(prod >> 32) & MASK32`` and
    ``prod & MASK32`` are Philox's ``mulhi``/``mullo``: the bits of ``philox4x32``.
    """
    for r in range(rounds):
        p0 = c0 * PHILOX_M0
        p1 = c2 * PHILOX_M1
        hi0 = (p0 >> 32) & MASK32
        hi1 = (p1 >> 32) & MASK32
        c0, c1, c2, c3 = (hi1 ^ c1) ^ rk[r], p1 & MASK32, (hi0 ^ c3) ^ rk[rounds + r], p0 & MASK32
    return c0, c1, c2, c3


def philox4x32_i32(c0, c1, c2, c3, rk: torch.Tensor, rounds: int = 10):
    """``philox4x32`` on int32 bit patterns (wrapping arithmetic); ``rk`` the int32 ``round_keys``.

    Only for compiled kernels (whose vector lanes wrap): eager torch's int32 multiply may not, so
    the eager generators use ``philox4x32``.
    """
    for r in range(rounds):
        hi0, lo0 = _mulhilo_i32(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo_i32(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ rk[r], lo1, hi0 ^ c3 ^ rk[rounds + r], lo0
    return c0, c1, c2, c3
