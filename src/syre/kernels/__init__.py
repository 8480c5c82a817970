"""The decay kernels: ``functional`` (the pure functions: for-loop reference first, then the
multi-tensor and compiled paths), ``fused`` (``syre.AdamW`` and ``syre.SGD``, the decay inside the
optimizer's own pass), ``_native`` (the decay and the fused steps as C loops on CPU, built with the system
compiler on first use; their source in ``_native_source``), ``_seeded`` (seeded mode's decay on CPU, the anchor generated in the same
compiled pass) and ``_triton`` (the decay and fused steps as Triton kernels).

Imports the generator (``syre.rng``) and nothing of the step machinery above it.
"""
