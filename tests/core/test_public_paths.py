"""Every documented name and import path resolves: ``syre.__all__``, the API reference, the docs' and README's
``syre.x.y`` names, the kept paths of the flat layout (same module object), the console script and ``python -m``."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import syre
from syre._paths import KEPT

ROOT = Path(__file__).resolve().parents[2]
SRC = str(Path(syre.__file__).resolve().parents[1])
#: Packages an optional extra installs: a path that needs one is skipped where it is missing.
OPTIONAL = ("jax", "optax", "lightning", "transformers", "stable_baselines3", "deepspeed", "matplotlib", "sklearn")


def resolve(dotted: str):
    """The object at ``dotted``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in OPTIONAL:
                pytest.skip(f"{dotted} needs {exc.name}")
            if exc.name and exc.name != ".".join(parts[:i]) and not ".".join(parts[:i]).startswith(exc.name):
                raise
            continue
        except ImportError as exc:  # an integration's own error for its missing framework names the extra
            if "is not installed: pip install 'torch-syre[" in str(exc):
                pytest.skip(f"{dotted}: {exc} (ci/integrations.sh runs it with the framework)")
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def _api_rst_names():
    text = (ROOT / "docs" / "reference" / "api.rst").read_text()
    names = set(re.findall(r"^\.\. auto(?:module|function|class):: (\S+)", text, re.M))
    for block in re.finditer(r"^\.\. automodule:: (\S+)\n((?:   :.*\n)*)", text, re.M):
        members = re.search(r":members: (.+)", block.group(2))
        if members:
            names |= {f"{block.group(1)}.{m.strip()}" for m in members.group(1).split(",")}
    for block in re.finditer(r"^\.\. autoclass:: (\S+)\n((?:   :.*\n)*)", text, re.M):
        members = re.search(r":members: (.+)", block.group(2))
        if members:
            names |= {f"{block.group(1)}.{m.strip()}" for m in members.group(1).split(",")}
    return sorted(names)


def _prose_names():
    """``syre.x.y`` in backticks in the README and docs/*.md (a call's arguments cut off)."""
    names = set()
    for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for span in re.findall(r"`([^`\n]+)`", p.read_text()):
            m = re.match(r"(syre(?:\.[A-Za-z_][A-Za-z0-9_]*)+)", span.strip())
            if m:
                names.add(m.group(1))
    return sorted(names)


@pytest.mark.parametrize("name", syre.__all__)
def test_all_names(name):
    assert getattr(syre, name) is not None
    assert name in dir(syre)


@pytest.mark.parametrize("dotted", _api_rst_names())
def test_api_reference_names(dotted):
    resolve(dotted)


@pytest.mark.parametrize("dotted", _prose_names())
def test_readme_and_docs_names(dotted):
    resolve(dotted)


@pytest.mark.parametrize("old", sorted(KEPT))
def test_kept_paths_are_the_same_module(old):
    new = importlib.import_module(KEPT[old])
    assert importlib.import_module(old) is new
    assert getattr(syre, old.split(".", 1)[1]) is new
    assert new.__spec__.name == KEPT[old] and new.__name__ == KEPT[old]  # the module keeps its own identity


def test_kept_paths_in_from_imports():
    from syre.anchors import anchor_at, anchor_many, anchor_slice
    from syre.functional import decay_, penalty
    from syre.init import InitRecord, init_record, init_values
    from syre.optim import FORMAT_VERSION, GROUP_KEY, PRECISION_CHECK_EVERY, PROBE_STEPS, WEAK_PULL_RATIO, attach

    assert attach is syre.attach and callable(decay_) and callable(penalty) and callable(init_values)
    assert anchor_slice.__module__ == "syre.rng.anchors" and anchor_at and anchor_many and init_record and InitRecord
    assert PRECISION_CHECK_EVERY == 100 and isinstance(GROUP_KEY, str) and FORMAT_VERSION and PROBE_STEPS and WEAK_PULL_RATIO
    demo, diagnose = importlib.import_module("syre.demo"), importlib.import_module("syre.diagnose")
    assert callable(demo.register) and callable(diagnose.register) and demo is syre.demo


def test_a_name_that_is_not_there_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        syre.nope
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("syre.nope")


def _run(*args):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def test_console_script_and_python_m():
    scripts = re.search(r"\[project\.scripts\]\n((?:.+\n)+)", (ROOT / "pyproject.toml").read_text()).group(1)
    target = re.search(r'^syre = "([\w.]+):(\w+)"', scripts, re.M)
    assert target, scripts
    assert callable(getattr(importlib.import_module(target.group(1)), target.group(2)))
    from syre.cli import main  # the console script of an install made before the layout

    assert main is importlib.import_module(target.group(1)).main
    for module in ("syre.cli", "syre.app.cli"):
        out = _run("-m", module, "--version")
        assert out.returncode == 0 and out.stdout.strip() == f"syre {syre.__version__}", (module, out.stderr)
    out = _run("-m", "syre.bench", "list")
    assert out.returncode == 0 and re.search(r"^e0 ", out.stdout, re.M), out.stderr


def test_a_pickle_written_before_the_layout_loads():
    """``syre.init_`` records an ``InitRecord`` on the model (a pickled model holds it by module path): an old
    pickle names ``syre.init``; it loads, as the same class, and a new one names the module's home."""
    import pickle

    import torch

    model = torch.nn.Linear(3, 2)
    syre.init_(model, seed=3)
    new = pickle.dumps(model, protocol=0)
    assert b"csyre.forms.init\nInitRecord\n" in new
    old = new.replace(b"csyre.forms.init\nInitRecord\n", b"csyre.init\nInitRecord\n")
    loaded = pickle.loads(old)
    record = syre.init.init_record(loaded)
    assert type(record) is syre.init.InitRecord and (record.seed, record.scheme) == (3, "lecun")
    assert torch.equal(loaded.weight, model.weight)
