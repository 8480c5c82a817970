"""The anchor generators of ``syre.rng.anchors`` in ``jax.numpy`` (``uint32`` operations, inside ``jit``).

Format 2 (``syre.rng._format2``; every new ``syre_decay``): integer-only, so float32 JAX gives
torch's anchors bitwise without ``jax_enable_x64``. Format 1 (``syre.rng._format1``,
``format_version=1``): Box-Muller; bitwise torch with ``jax_enable_x64``, within a few float32
ulps without it.

The public face ``syre.optax`` uses: ``generate`` (and ``generate_jit``, compiled once per shape),
``check_size`` and ``x64_enabled``.
"""
from __future__ import annotations

import math

from ._format2 import SCALE, XI_SCALE
from ._normal_table import ROW, table
from ._philox import PHILOX_M0 as _M0, PHILOX_M1 as _M1, PHILOX_W0 as _W0, PHILOX_W1 as _W1

__all__ = ["check_size", "generate", "generate_jit", "x64_enabled"]


def _import():
    try:
        import jax
        import jax.numpy as jnp
        import numpy as np
    except ImportError as exc:
        raise ImportError("syre.optax needs JAX, which is not installed: pip install 'torch-syre[jax]'") from exc
    return jax, jnp, np


def _mulhilo(a, b: int):
    """High and low 32-bit words of ``a * b`` (``a`` uint32 array, ``b`` a 32-bit constant)."""
    _, jnp, np = _import()
    lo16 = np.uint32(0xFFFF)
    s16 = np.uint32(16)
    b_lo, b_hi = np.uint32(b & 0xFFFF), np.uint32(b >> 16)
    a_lo, a_hi = a & lo16, a >> s16
    ll, lh, hl, hh = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    mid = (ll >> s16) + (lh & lo16) + (hl & lo16)
    hi = hh + (lh >> s16) + (hl >> s16) + (mid >> s16)
    return hi, a * np.uint32(b)


def _philox(c0, k0, k1, rounds: int = 10, c2: int = 0):
    """Philox4x32-``rounds`` on counters ``(c0, 0, c2, 0)``; ``k0``, ``k1`` uint32 scalars (may be traced)."""
    _, jnp, np = _import()
    z = jnp.zeros_like(c0)
    x0, x1, x2, x3 = c0, z, z + np.uint32(c2), z
    for r in range(rounds):
        if r:
            k0 = k0 + np.uint32(_W0)
            k1 = k1 + np.uint32(_W1)
        hi0, lo0 = _mulhilo(x0, _M0)
        hi1, lo1 = _mulhilo(x2, _M1)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return x0, x1, x2, x3


def _normal_f32(x0, x1):
    """Box-Muller ``sqrt(-2 ln u1) cos(2 pi u2)`` in float32, as close as float32 allows to float64."""
    _, jnp, np = _import()
    f32 = jnp.float32
    two_m32 = f32(2.0**-32)
    # ln(u1), u1 = (x0 + 1) / 2**32: directly below 1/2; as log1p(-(2**32 - 1 - x0) / 2**32) above,
    # where u1 rounds to 1 in float32.
    small = x0 < np.uint32(2**31)
    ln_low = jnp.log((jnp.where(small, x0, np.uint32(0)) + np.uint32(1)).astype(f32) * two_m32)
    ln_high = jnp.log1p(-((~x0).astype(f32) * two_m32))
    r = jnp.sqrt(f32(-2.0) * jnp.where(small, ln_low, ln_high))
    # cos(2 pi u2), u2 = x1 / 2**32 = t + dt with t = (x1 >> 8) / 2**24 (exact) and dt < 2**-24.
    # Write 4t = q + f with q the nearest integer: cos(2 pi u2) = cos(q pi/2 + a), |a| <= pi/4 + tiny.
    t4 = (x1 >> np.uint32(8)).astype(f32) * f32(2.0**-22)  # 4t, exact
    q = jnp.round(t4)
    f = (t4 - q) * f32(0.25) + (x1 & np.uint32(0xFF)).astype(f32) * two_m32
    a = f32(2.0 * math.pi) * f
    c, s = jnp.cos(a), jnp.sin(a)
    qi = q.astype(jnp.int32) & 3
    cos = jnp.where(qi == 0, c, jnp.where(qi == 1, -s, jnp.where(qi == 2, -c, s)))
    return r * cos


def _unit_xi_f32(x2):
    """``2 u3 - 1`` in float32, ``u3 = (x2 + 0.5) / 2**32``: it is ``(s + 0.5) / 2**31`` with ``s = x2 - 2**31``."""
    jax, jnp, np = _import()
    s = jax.lax.bitcast_convert_type(x2 ^ np.uint32(0x80000000), jnp.int32)
    return (s.astype(jnp.float32) + jnp.float32(0.5)) * jnp.float32(2.0**-31)


def x64_enabled() -> bool:
    jax, _, _ = _import()
    return bool(jax.config.jax_enable_x64)


def _unit_draws(c0, k0, k1, normal: bool, spread: bool, wide: bool):
    """Unit normals ``z`` and ``2 u3 - 1`` (``None`` where not asked) at counters ``c0`` under keys ``(k0, k1)``.

    The keys are scalars or arrays shaped like ``c0`` (several parameters drawn at once). ``wide``:
    float64, the same operations as ``syre.anchors``; else the float32 path.
    """
    _, jnp, _ = _import()
    x0, x1, x2, _ = _philox(c0, k0, k1)
    z = u = None
    if wide:
        f64 = jnp.float64
        if normal:
            u1 = (x0.astype(f64) + 1.0) * 2.0**-32
            u2 = x1.astype(f64) * 2.0**-32
            z = jnp.sqrt(-2.0 * jnp.log(u1)) * jnp.cos((2.0 * math.pi) * u2)
        if spread:
            u = 2.0 * ((x2.astype(f64) + 0.5) * 2.0**-32) - 1.0
    else:
        if normal:
            z = _normal_f32(x0, x1)
        if spread:
            u = _unit_xi_f32(x2)
    return z, u


def _scale(z, u, sigma0: float, d_spread: float):
    """``(theta0, xi) = (sigma0 * z, d_spread * u)`` in the draws' precision (``None`` where off)."""
    theta0 = None if (z is None or sigma0 == 0.0) else z * z.dtype.type(sigma0)
    xi = None if (u is None or d_spread == 0.0) else u * u.dtype.type(d_spread)
    return theta0, xi


def check_size(name: str, n: int) -> None:
    if n >= 2**32:
        raise ValueError(f"Parameter {name!r} has {n} elements; syre.optax supports fewer than 2**32 per parameter")


_TABLE = []


def _table():
    if not _TABLE:
        _, jnp, np = _import()
        _TABLE.append(np.asarray(table(), dtype=np.int32))
    return _TABLE[0]


def _normal_v2(w):
    """Format 2's fixed-point normal ``N`` (int32) of uint32 words ``w`` (see ``syre.rng._format2``)."""
    jax, jnp, np = _import()
    v = w | np.uint32(1)
    k = jax.lax.clz(v)
    m = v << k
    base = k.astype(jnp.int32) * ROW + ((m >> np.uint32(24)) & np.uint32(127)).astype(jnp.int32)
    f = ((m >> np.uint32(8)) & np.uint32(0xFFFF)).astype(jnp.int32)
    tab = jnp.asarray(_table())
    a, b = tab[base], tab[base + 1]
    z = a - (((a - b) * (2 * f + 1)) >> 17)
    return jnp.where((w & np.uint32(1)) == 1, -z, z)


def _generate_v2(key, n: int, sigma0: float, d_spread: float, wide: bool):
    """Format 2: one Philox block per four elements; float64 anchors when ``wide`` (float64 params)."""
    _, jnp, np = _import()
    dt = jnp.float64 if wide else jnp.float32
    nb = -(-n // 4)
    c0 = jnp.arange(nb, dtype=jnp.uint32)

    def lanes(stream):
        return jnp.stack(_philox(c0, key[0], key[1], c2=stream), axis=1).reshape(-1)[:n]

    theta0 = xi = None
    if sigma0 != 0.0:
        theta0 = (_normal_v2(lanes(0)).astype(dt) * dt(SCALE)) * dt(sigma0)
    if d_spread != 0.0:
        u = (2 * (lanes(1) >> np.uint32(8)).astype(jnp.int32) + (1 - (1 << 24))).astype(dt) * dt(XI_SCALE)
        xi = u * dt(d_spread)
    return theta0, xi


def generate(key, n: int, sigma0: float, d_spread: float, wide: bool, version: int = 2):
    """Flat ``(theta0, xi)`` (``None`` where off) of ``n`` elements under Philox ``key`` (uint32[2]).

    ``wide``: format 2, float64 anchors; format 1, the float64 Box-Muller path.
    """
    _, jnp, _ = _import()
    if sigma0 == 0.0 and d_spread == 0.0:
        return None, None
    if version == 2:
        return _generate_v2(key, n, sigma0, d_spread, wide)
    z, u = _unit_draws(jnp.arange(n, dtype=jnp.uint32), key[0], key[1], sigma0 != 0.0, d_spread != 0.0, wide)
    return _scale(z, u, sigma0, d_spread)


_GENERATE_JIT = []


def generate_jit():
    """``generate`` compiled once per (size, sigma0, d_spread, precision, format): far faster than op by op."""
    if not _GENERATE_JIT:
        jax, _, _ = _import()
        _GENERATE_JIT.append(jax.jit(generate, static_argnums=(1, 2, 3, 4, 5)))
    return _GENERATE_JIT[0]


