"""The step machinery behind ``syre.attach``: one noun per module.

``_syre`` (the ``Syre`` attachment: hooks and public methods), ``_plan`` (what is covered, derived
from the optimizer and model as they are), ``_groups`` (each param group's gamma and the weight
decay taken over), ``_store`` (the anchors: stored or regenerated), ``_targets`` (what the decay
pulls toward), ``_rounding`` (stochastic rounding), ``_checks`` (the pull measured at the first
steps, precision), ``_state`` (checkpoints and the runtime record), ``_report`` (coverage and
summary), ``_multi`` (several optimizers over one model).

``syre.attach`` (``syre._attach``) picks which attachment to build; nothing here imports it.
"""
