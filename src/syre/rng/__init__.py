"""The anchor and stream generator: every random number syre uses, as a pure function of
(seed, name, element index), the same bits on every device and process.

Public faces: ``syre.rng.anchors`` (theta0 and D of a parameter, of a slice, at indices; also
``syre.anchors``) and ``syre.rng.jax`` (the same generator in ``jax.numpy``, for ``syre.optax``).
Inside: ``_philox`` (Philox4x32-10), ``_format1`` (Box-Muller, the first anchor format),
``_format2`` (the integer-only normal, the default), ``_normal_table`` (format 2's quantile
table), ``_streams`` (the counter streams of ``syre.init_`` and stochastic rounding) and
``_triton`` (format 2 as a Triton kernel).

Imports nothing above the configuration (``syre.config``, ``syre.sigma0``) and the compile helper.
"""
