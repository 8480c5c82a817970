"""The paper's equations as slow, obvious code: the test oracle. Not used by the library (no module of
syre imports it: ``tests/test_layers.py``); the tests compare every fast path with it.

* ``philox4x32_10``: Philox4x32-10 on Python ints, written from Salmon et al. (2011).
* ``anchor``: theta0 and D from it in format 1, one element at a time (numpy float64).
* ``normal_v2``/``anchor_v2``: format 2 from its definition, on Python ints and one float rounding.
* ``decay``: one decoupled syre step ``p - lr * gamma * D * (p - theta0)`` in float64.
* ``penalty``/``penalty_grad``: the coupled term and its gradient ``2 gamma D (p - theta0)``.
* ``adamw_step``/``sgd_momentum_step``: syre's decay, then the optimizer's update, from the equations
  (float64): the oracle of the fused ``syre.AdamW`` / ``syre.SGD``.
"""
from __future__ import annotations

import math

import numpy as np

from .rng._normal_table import FRACTION_BITS, ROW, table
from .rng._philox import stream_key

M = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    c = list(ctr)
    k0, k1 = key
    for r in range(10):
        if r:
            k0 = (k0 + 0x9E3779B9) & M
            k1 = (k1 + 0xBB67AE85) & M
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & M, p1 & M, ((p0 >> 32) ^ c[3] ^ k1) & M, p0 & M]
    return tuple(c)


def anchor(seed: int, name: str, numel: int, sigma0: float, d_spread: float):
    """(theta0, d) as float64 numpy arrays, element by element."""
    key = stream_key(seed, name)
    theta0 = np.zeros(numel)
    d = np.ones(numel)
    for i in range(numel):
        x0, x1, x2, _ = philox4x32_10((i & M, i >> 32, 0, 0), key)
        u1 = (x0 + 1) / 2.0**32
        u2 = x1 / 2.0**32
        theta0[i] = sigma0 * (math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2))
        d[i] = 1.0 + d_spread * (2.0 * (x2 + 0.5) / 2.0**32 - 1.0)
    return theta0, d


def decay(p, theta0, d, lr: float, gamma: float):
    p = np.asarray(p, dtype=np.float64)
    return p - lr * gamma * d * (p - theta0)


def adamw_step(p, g, m, v, t: int, theta0, d, *, lr, gamma, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Step ``t`` (1-based) of AdamW after syre's decay; returns new ``(p, m, v)`` (float64 arrays)."""
    p, g, m, v = (np.asarray(a, dtype=np.float64) for a in (p, g, m, v))
    p = decay(p, theta0, d, lr, gamma) * (1.0 - lr * weight_decay)
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    m_hat, v_hat = m / (1.0 - beta1**t), v / (1.0 - beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def sgd_momentum_step(p, g, b, theta0, d, *, lr, gamma, momentum, dampening=0.0):
    """One SGD-with-momentum step after syre's decay (``b`` the buffer, None at the first step)."""
    p, g = np.asarray(p, dtype=np.float64), np.asarray(g, dtype=np.float64)
    p = decay(p, theta0, d, lr, gamma)
    b = g.copy() if b is None else momentum * np.asarray(b, dtype=np.float64) + (1.0 - dampening) * g
    return p - lr * b, b


def penalty(p, theta0, d, gamma: float) -> float:
    p = np.asarray(p, dtype=np.float64)
    return float(gamma * np.sum(d * (p - theta0) ** 2))


def penalty_grad(p, theta0, d, gamma: float):
    p = np.asarray(p, dtype=np.float64)
    return 2.0 * gamma * d * (p - theta0)


_TABLE = table()


def normal_v2(w: int, tab=None) -> int:
    """Format 2's fixed-point normal ``N`` of the 32-bit word ``w`` (``Z = N / 2**21``)."""
    tab = _TABLE if tab is None else tab
    v = w | 1
    k = 32 - v.bit_length()  # leading zeros of a 32-bit word
    m = (v << k) & M
    i, f = (m >> 24) & 127, (m >> 8) & 0xFFFF
    a, b = tab[k * ROW + i], tab[k * ROW + i + 1]
    z = a - (((a - b) * (2 * f + 1)) >> 17)
    return -z if w & 1 else z


def element_v2(seed: int, name: str, i: int, sigma0: float, d_spread: float, dtype=np.float32):
    """(theta0, xi) of element ``i`` in format 2, in ``dtype`` (float32 or float64)."""
    key = stream_key(seed, name)
    j, lane = i >> 2, i & 3
    wt = philox4x32_10((j & M, j >> 32, 0, 0), key)[lane]
    wx = philox4x32_10((j & M, j >> 32, 1, 0), key)[lane]
    z = dtype(normal_v2(wt) * 2.0**-FRACTION_BITS)  # exact
    u = dtype((2 * (wx >> 8) + 1 - 2**24) * 2.0**-24)  # exact
    return z * dtype(sigma0), u * dtype(d_spread)


def anchor_v2(seed: int, name: str, numel: int, sigma0: float, d_spread: float, dtype=np.float32):
    """(theta0, xi) of format 2 as numpy arrays of ``dtype``, element by element."""
    pairs = [element_v2(seed, name, i, sigma0, d_spread, dtype) for i in range(numel)]
    return np.array([p[0] for p in pairs], dtype=dtype), np.array([p[1] for p in pairs], dtype=dtype)
