"""Collapse instruments: metrics of weights and representations, and unit detectors.

``syre.diagnostics.metrics`` holds the pure metrics (``numerical_rank``, ``effective_rank``,
``rankme``, ``low_rank_fraction``, ``embedding_std``), each documented with its value at full
collapse and at none. ``syre.diagnostics.neurons`` finds duplicated and dead units and measures
the distance of a layer to its permutation, sign-flip, rescaling and rotation mirrors.
``audit(model, inputs, syre=None)`` walks any model, finds its mirror families and reports per
layer which collapsed states it sits in, judged against what the layer could have (its structural
maximum and the same layer freshly initialised; thresholds ``RANK_SHARE``, ``REFERENCE_MARGIN``, ``EXACT_SHARE``,
``INACTIVE_SHARE``, ``INACTIVE_Z``). ``Monitor`` records chosen metrics every k steps of a training
loop to CSV or JSON lines, TensorBoard or any logger, and raises alarms (``ALARMS``,
``CollapseWarning``) on drops against the run's own history and the fresh-init value.
"""
from .audit import EXACT_SHARE, INACTIVE_SHARE, INACTIVE_Z, RANK_SHARE, REFERENCE_MARGIN, LayerReport, Report, audit
from .metrics import (
    DEFAULT_LOW_RANK_THRESHOLD,
    effective_rank,
    embedding_std,
    low_rank_fraction,
    numerical_rank,
    rankme,
    singular_values,
)
from .monitor import ALARMS, METRICS, CollapseWarning, Monitor, plot_log, read_log
from .neurons import (
    MirrorScan,
    activation_families,
    dead_units,
    duplicate_units,
    inactive_units,
    permutation_mirrors,
    rescaling_mirrors,
    rotation_mirrors,
    sign_flip_mirrors,
    unit_matrix,
    zero_units,
)

__all__ = [
    "ALARMS",
    "CollapseWarning",
    "EXACT_SHARE",
    "INACTIVE_SHARE",
    "INACTIVE_Z",
    "RANK_SHARE",
    "REFERENCE_MARGIN",
    "LayerReport",
    "METRICS",
    "Monitor",
    "plot_log",
    "read_log",
    "Report",
    "audit",
    "DEFAULT_LOW_RANK_THRESHOLD",
    "MirrorScan",
    "activation_families",
    "dead_units",
    "duplicate_units",
    "inactive_units",
    "permutation_mirrors",
    "rescaling_mirrors",
    "rotation_mirrors",
    "sign_flip_mirrors",
    "unit_matrix",
    "zero_units",
    "effective_rank",
    "embedding_std",
    "low_rank_fraction",
    "numerical_rank",
    "rankme",
    "singular_values",
]
