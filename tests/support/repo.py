"""Where the repository's files are, and how a test loads a script that is not part of the package
(``examples/*.py``, ``benchmarks/*.py``) as a module."""
import importlib.util
from pathlib import Path
from types import ModuleType

#: The repository root (this file is ``tests/support/repo.py``).
ROOT = Path(__file__).resolve().parents[2]
#: The folder of the helper modules and subprocess scripts (on ``sys.path`` through pytest's ``pythonpath``).
SUPPORT = Path(__file__).resolve().parent
#: Committed fixtures (``state_dicts_v*.json``, ``ckpt_v1.pt``).
DATA = ROOT / "tests" / "data"


def load_script(relpath: str, name: str) -> ModuleType:
    """Import ``ROOT / relpath`` (a script outside the package) as a fresh module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_env() -> dict:
    """``os.environ`` for a child process, without what torch's inductor set in this one for itself (its cache
    directory and the address of a function of this process): a child starts as a user's process would."""
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("_TORCHINDUCTOR", "TORCHINDUCTOR_CACHE_DIR"))}
