"""Integrations with training frameworks; each module imports its framework only when imported.

* ``syre.integrations.lightning``: ``SyreCallback`` for PyTorch Lightning
  (``pip install 'torch-syre[lightning]'``);
* ``syre.integrations.transformers``: ``SyreCallback`` for the Hugging Face ``Trainer``
  (``pip install 'torch-syre[transformers]'``);
* ``syre.integrations.deepspeed``: ``attach(engine, ...)`` for a DeepSpeed ZeRO engine, stages 0-3
  (``pip install 'torch-syre[deepspeed]'``; ``syre.attach(engine, ...)`` is the same);
* ``syre.integrations.sb3``: ``attach(model, gamma=...)`` for stable-baselines3
  (``pip install 'torch-syre[sb3]'``);
* ``syre.optax`` (beside this package): ``syre_decay``, an optax ``GradientTransformation``
  (``pip install 'torch-syre[jax]'``).

Every integration is a thin layer over ``syre.attach`` (or, for JAX, over the same anchors):
the decay rule, the anchors and the checkpoint format are the core's.
"""
