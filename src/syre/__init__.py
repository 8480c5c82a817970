"""syre: remove parameter symmetries from neural-network training.

Decay toward a fixed random anchor instead of toward the origin::

    syre = syre.attach(optimizer, model, gamma=0.1)   # one added line

See ``syre.attach`` (decoupled, any optimizer), ``syre.Penalty`` (coupled loss term) and
``syre.reparametrize`` (the paper's literal ``theta + theta0`` form). The subpackages
``syre.data``, ``syre.diagnostics``, ``syre.bench`` and ``syre.integrations`` load on first use
(``import syre`` then ``syre.diagnostics.audit(...)`` works); ``syre.optax`` needs JAX and is
imported explicitly.

The rooms, lowest layer first (``tests/test_layers.py`` holds the order): ``config`` and ``sigma0``
(the request), ``rng`` (the generator; ``syre.anchors`` is ``syre.rng.anchors``), ``kernels`` (the
decay kernels, ``syre.AdamW``/``syre.SGD``), ``forms`` (``Penalty``, ``reparametrize``, ``init_``),
``core`` (the step machinery: ``Syre``, ``MultiSyre``), ``_attach`` (``syre.attach``, which picks
one; ``syre.optim`` is this module), then ``integrations``, ``optax``, ``diagnostics``, ``app``
(``cli``, ``demo``, ``diagnose``, ``data``) and ``bench``. The import paths of the flat layout keep
working (``syre._paths``).
"""
from . import _paths
from ._attach import AnchorScaleWarning, DecaySettingWarning, PrecisionWarning, WeakPullWarning, attach, attached
from ._version import __version__
from .config import Config
from .core._groups import equivalent_gamma
from .core._multi import MultiSyre
from .core._state import plain_state_dict
from .core._syre import Syre
from .forms.init import init_, reset_units_, shrink_perturb_
from .forms.penalty import Penalty
from .forms.reparam import Reparametrization, reparametrize
from .kernels.fused import SGD, AdamW
from .rng.anchors import DEFAULT_D_SPREAD, DEFAULT_SIGMA0, Anchor, anchor
from .select import NORM_TYPES

_paths.install()  # syre.anchors, syre.functional, syre.optim, syre.demo ...: the paths of the flat layout

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

#: Submodules imported on first attribute access (PEP 562), with the kept paths ``syre.cli``, ``syre.data``,
#: ``syre.demo``, ``syre.diagnose`` ...; none of them imports an optional dependency.
_LAZY = ("bench", "diagnostics", "integrations")


def __getattr__(name: str):
    if name in _LAZY or f"{__name__}.{name}" in _paths.KEPT:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {path.split(".", 1)[1] for path in _paths.KEPT})
