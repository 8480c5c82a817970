"""README.md and docs/diagnostics.md show exactly what examples/diagnose_collapse.py prints."""
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
    for path, (tag, make) in ex.blocks().items():
        assert ex.shown(path, tag) == make(text), (
            f"{path.relative_to(ROOT)} does not show what examples/diagnose_collapse.py prints; "
            "run: python examples/diagnose_collapse.py --update-docs")


def test_excerpt_keeps_headlines_tables_and_findings():
    ex = _example()
    text = (ROOT / "docs" / "diagnostics.md").read_text()
    assert ex.shown(ROOT / "docs" / "diagnostics.md", "")  # the markers are there
    full = ex.shown(ROOT / "docs" / "diagnostics.md", "")
    short = ex.excerpt(full)
    assert "notes:" not in short and "mirror families" not in short and "syre audit of" not in short
    assert short.count("===") == full.count("===") == 4
    assert [l for l in full.splitlines() if l.startswith("0 ")] == [l for l in short.splitlines() if l.startswith("0 ")]
    assert "output of examples/diagnose_collapse.py" in text
