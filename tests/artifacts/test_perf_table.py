"""benchmarks/perf.md (the cost tables docs/cost.md links to) is the report benchmarks/perf_table.py
renders from the committed benchmarks/results/perf.json, as is docs/cost.md's block (regenerate with ``python
benchmarks/perf_table.py``), and its target lines follow from the numbers."""
import json
import sys

from repo import ROOT, load_script


def _module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    return load_script("benchmarks/perf_table.py", "perf_table")


def test_perf_md_is_the_report_of_the_committed_json():
    pt = _module()
    res = json.loads(pt.JSON.read_text())
    assert pt.MD.read_text() == pt.report(res, pt.gpu_results())
    # docs/cost.md's block: the summary table and the targets, from the same JSON
    assert pt.COST.read_text() == pt.with_cost_block(pt.COST.read_text(), res)
    assert pt.cost_block(res) in pt.COST.read_text()
    table = pt.readme_table(res)
    assert "syre.AdamW" in table and all(s in table for s in res["sizes"])
    for _, key in pt.ROWS:  # every row is a measured variant, at every size
        assert all(key in res["sizes"][s]["ratio"] for s in res["sizes"])


def test_targets_are_judged_from_the_numbers():
    pt = _module()
    res = json.loads(pt.JSON.read_text())
    got = {name: ok for name, _, ok in pt.targets(res)}
    r = res["sizes"]["10M"]["ratio"]
    assert got["syre.AdamW basic <= 1.25x fused AdamW at 10M"] == (r["fused path: syre.AdamW basic"] <= 1.25)
    assert got["seeded mode (basic) <= 8x fused AdamW at 10M"] == (r["seeded v2: AdamW basic"] <= 8.0)
    worse = json.loads(json.dumps(res))
    worse["sizes"]["10M"]["ratio"]["fused path: syre.AdamW basic"] = 9.0
    assert dict((n, ok) for n, _, ok in pt.targets(worse))["syre.AdamW basic <= 1.25x fused AdamW at 10M"] is False


def test_the_changelog_states_the_committed_numbers():
    """The changelog's cost entry quotes the committed run: each ratio and the hook's added microseconds."""
    pt = _module()
    res = json.loads(pt.JSON.read_text())
    text = " ".join((ROOT / "CHANGELOG.md").read_text().split())
    entry = text[text.index("Measured side by side (`benchmarks/perf.py`"):]
    entry = entry[: entry.index("###")]
    for key, label in (("fused path: syre.AdamW basic", "basic"), ("fused path: syre.AdamW ar", "AR"),
                       ("fused path: syre.SGD momentum basic", "`syre.SGD`")):
        quoted = " / ".join(f"{res['sizes'][s]['ratio'][key]:.2f}x" for s in ("1M", "10M", "50M"))
        assert f"{label} {quoted}" in entry, (label, quoted)
    h = res["hook_vs_adamw"]
    assert f"{h['basic']['overhead_us']:.0f} us basic, {h['ar']['overhead_us']:.0f} us AR" in entry
    assert f"{h['basic']['python_check_us']:.0f} and {h['ar']['python_check_us']:.0f} us with its checks in Python" in entry
    assert f"adds {h['basic']['kernel_only_us']:.0f} and {h['ar']['kernel_only_us']:.0f} us on this machine" in entry
