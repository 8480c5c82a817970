"""docs/diagnostics.md shows exactly what examples/diagnose_collapse.py prints."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _example():
    spec = importlib.util.spec_from_file_location("diagnose_collapse_example", ROOT / "examples" / "diagnose_collapse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_documented_audits_are_the_examples_output():
    pytest.importorskip("sklearn")
    ex = _example()
    text = ex.run()
    assert "collapse found:" in text and "no collapse found" in text  # a collapsed model and a healthy one
    assert "rank W (max, init)" in text and "rep rank (max, init)" in text  # the columns of the verdict
    assert set(ex.blocks()) == {ROOT / "docs" / "diagnostics.md"}
    for path, (tag, make) in ex.blocks().items():
        assert ex.shown(path, tag), f"{path}: the output markers are missing"
        assert ex.shown(path, tag) == make(text), (
            f"{path.relative_to(ROOT)} does not show what examples/diagnose_collapse.py prints; "
            "run: python examples/diagnose_collapse.py --update-docs")
