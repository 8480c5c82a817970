"""docs/diagnostics.md shows exactly what examples/diagnose_collapse.py prints."""
import pytest

from repo import ROOT, load_script


def _example():
    return load_script("examples/diagnose_collapse.py", "diagnose_collapse_example")


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
