"""Import paths of the flat layout, kept: ``syre.functional`` is ``syre.kernels.functional``, and so on.

Each kept path names the very module object of its new home (``import syre.anchors``,
``from syre.init import init_values``, ``syre.optim.PRECISION_CHECK_EVERY``, a monkeypatch, a
pickle of a class: all the same module), without a second file: a finder on ``sys.meta_path``
answers each old name by importing the new one. ``python -m syre.cli`` runs ``syre.app.cli``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

#: Old path -> module. Public paths only (documented, or importable by users before the layout).
KEPT = {
    "syre.anchors": "syre.rng.anchors",
    "syre.functional": "syre.kernels.functional",
    "syre.fused": "syre.kernels.fused",
    "syre.init": "syre.forms.init",
    "syre.penalty": "syre.forms.penalty",
    "syre.reparam": "syre.forms.reparam",
    "syre.optim": "syre._attach",
    "syre.cli": "syre.app.cli",
    "syre.data": "syre.app.data",
    "syre.demo": "syre.app.demo",
    "syre.diagnose": "syre.app.diagnose",
}


class _Kept(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finder and loader of the kept paths: the module is the one at its new home."""

    def find_spec(self, name, path=None, target=None):
        if name not in KEPT:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        module = importlib.import_module(KEPT[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # The import system has just set the old name's spec on the module: it keeps its own.
        module.__spec__ = module.__spec__.loader_state

    def get_code(self, name):
        """``python -m <kept path>``: run the new module as ``__main__``."""
        return compile(f"import runpy; runpy.run_module({KEPT[name]!r}, run_name='__main__', alter_sys=True)",
                       f"<{name}>", "exec")


def install() -> None:
    if not any(isinstance(f, _Kept) for f in sys.meta_path):
        sys.meta_path.append(_Kept())
