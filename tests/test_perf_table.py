"""The cost table of benchmarks/perf.md (the report docs/cost.md points to) is the one benchmarks/perf_table.py
renders from the committed benchmarks/results/perf.json (regenerate with ``python benchmarks/perf_table.py``)."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("perf_table", ROOT / "benchmarks" / "perf_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_reports_cost_table_matches_the_committed_json():
    pt = _module()
    res = json.loads(pt.JSON.read_text())
    table = pt.readme_table(res)
    assert table in pt.REPORT.read_text()
    assert pt.main(["--check"]) == 0
    assert "syre.AdamW" in table and all(s in table for s in res["sizes"])
    for _, key in pt.ROWS:  # every row is a measured variant, at every size
        assert all(key in res["sizes"][s]["ratio"] for s in res["sizes"])
