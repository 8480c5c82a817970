"""Importing an optional framework: the error names the extra that installs it.

Below every integration (the DeepSpeed attachment, which ``syre.attach`` builds, included).
"""
from __future__ import annotations

import importlib


def require(module: str, extra: str, what: str):
    """Import ``module`` or raise an ``ImportError`` that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{what} needs the '{module.split('.')[0]}' package, which is not installed: "
            f"pip install 'torch-syre[{extra}]'"
        ) from exc
