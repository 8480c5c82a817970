"""syre: remove parameter symmetries from neural-network training.

Decay toward a fixed random anchor instead of toward the origin::

    syre = syre.attach(optimizer, model, gamma=0.1)   # one added line

See ``syre.attach`` (decoupled, any optimizer), ``syre.Penalty`` (coupled loss term) and
``syre.reparametrize`` (the paper's literal ``theta + theta0`` form). The subpackages
``syre.data``, ``syre.diagnostics``, ``syre.bench`` and ``syre.integrations`` load on first use
(``import syre`` then ``syre.diagnostics.audit(...)`` works); ``syre.optax`` needs JAX and is
imported explicitly.
"""
from ._version import __version__
from ._groups import equivalent_gamma
from ._multi import MultiSyre
from ._state import plain_state_dict
from .anchors import DEFAULT_D_SPREAD, DEFAULT_SIGMA0, Anchor, anchor
from .config import Config
from .fused import AdamW, SGD
from .init import init_, reset_units_, shrink_perturb_
from .optim import AnchorScaleWarning, DecaySettingWarning, PrecisionWarning, Syre, WeakPullWarning, attach, attached
from .penalty import Penalty
from .reparam import Reparametrization, reparametrize
from .select import NORM_TYPES

__all__ = [
    "AdamW",
    "Anchor",
    "AnchorScaleWarning",
    "Config",
    "DEFAULT_D_SPREAD",
    "DEFAULT_SIGMA0",
    "DecaySettingWarning",
    "MultiSyre",
    "NORM_TYPES",
    "Penalty",
    "PrecisionWarning",
    "Reparametrization",
    "SGD",
    "Syre",
    "WeakPullWarning",
    "__version__",
    "anchor",
    "attach",
    "attached",
    "equivalent_gamma",
    "init_",
    "plain_state_dict",
    "reparametrize",
    "reset_units_",
    "shrink_perturb_",
]

#: Submodules imported on first attribute access (PEP 562); none of them imports an optional dependency.
_LAZY = ("bench", "cli", "data", "demo", "diagnose", "diagnostics", "integrations")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
