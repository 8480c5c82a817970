"""The anchor's other forms and the initial weights: ``penalty`` (the coupled loss term),
``reparam`` (the paper's literal ``theta + theta0``), ``init`` (``syre.init_``,
``shrink_perturb_``, ``reset_units_``: weights regenerable from a seed) and ``_scale_check``
(anchors far from their weights, warned once; shared with ``syre.attach``).

Imports the generator and the kernels; the step machinery (``syre.core``) builds on it.
"""
