"""What a run records about where it ran: the environment (git revision, versions, machine), the anchor format, JSON-safe values."""
from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

import syre

__all__ = ["json_safe", "environment"]


def json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "item") and callable(x.item):
        try:
            return json_safe(x.item())
        except (ValueError, RuntimeError):
            pass
    return x if isinstance(x, (str, int, bool)) or x is None else str(x)


def environment() -> Dict[str, Any]:
    """The git revision, library versions and machine of this run."""
    import numpy
    import torch

    env: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
                           "syre": syre.__version__, "platform": platform.platform(),
                           "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                           "torch_threads": torch.get_num_threads()}
    for mod in ("scipy", "matplotlib", "sklearn"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        # dirty: uncommitted changes outside benchmarks/ (the results and the ledger are what runs write)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(exclude,top)benchmarks"],
                               cwd=here, capture_output=True, text=True, timeout=10)
        env["git_revision"] = rev.stdout.strip() or None
        env["git_dirty"] = bool(dirty.stdout.strip()) if rev.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        env["git_revision"], env["git_dirty"] = None, None
    return env


def _anchor_format() -> Optional[int]:
    """The anchor format of new attachments in this syre (``syre.anchors.FORMAT``)."""
    try:
        from syre import anchors

        return int(anchors.FORMAT)
    except (ImportError, AttributeError):
        return None


