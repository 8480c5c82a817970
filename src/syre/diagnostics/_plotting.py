"""The one lazy matplotlib import of the diagnostics (private).

Figures are built with ``matplotlib.figure.Figure`` directly, not through ``pyplot``: no backend
is selected and no global figure state is touched, so saving a plot from a notebook or a GUI
session leaves its backend as it was.
"""
from __future__ import annotations


def figure(what: str, **kwargs):
    """A new ``matplotlib.figure.Figure(**kwargs)``; ``what`` names the caller in the install hint."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - needs matplotlib absent
        raise ImportError(f"{what} needs matplotlib: pip install 'torch-syre[plots]'") from exc
    return Figure(**kwargs)
