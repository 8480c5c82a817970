"""The cost table of benchmarks/perf.md (the report docs/cost.md points to) is the one benchmarks/perf_table.py
renders from the committed benchmarks/results/perf.json (regenerate with ``python benchmarks/perf_table.py``)."""
import json

from repo import load_script


def _module():
    return load_script("benchmarks/perf_table.py", "perf_table")


def test_the_reports_cost_table_matches_the_committed_json():
    pt = _module()
    res = json.loads(pt.JSON.read_text())
    table = pt.readme_table(res)
    assert table in pt.REPORT.read_text()
    assert pt.main(["--check"]) == 0
    assert "syre.AdamW" in table and all(s in table for s in res["sizes"])
    for _, key in pt.ROWS:  # every row is a measured variant, at every size
        assert all(key in res["sizes"][s]["ratio"] for s in res["sizes"])
