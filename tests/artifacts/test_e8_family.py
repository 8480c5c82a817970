"""E8's L2-Init and Shrink-and-Perturb arms run through the library (target="init", syre.shrink_perturb_):
the committed rerun agrees with the committed E8 results by the script's fixed rule."""
import json

from repo import ROOT

CHECK = ROOT / "benchmarks" / "results" / "e8-family" / "e8_family.json"
E8 = ROOT / "benchmarks" / "results" / "e8" / "summary.json"


def test_the_rerun_compares_against_the_committed_e8_and_agrees():
    check, e8 = json.loads(CHECK.read_text()), json.loads(E8.read_text())
    assert check["seeds"] == e8["seeds"]["evaluation"] and check["gamma"] == e8["config"]["gamma"]
    for arm, rows in check["rows"].items():
        for metric, row in rows.items():
            assert row["committed"] == e8["arms"][arm][metric]  # compared with what is committed, not a copy
            assert row["agrees"] == (abs(row["t"]) < 2.0)
    assert check["agree"] and all(r["agrees"] for rows in check["rows"].values() for r in rows.values())


def test_l2init_through_the_library_is_the_same_arithmetic():
    rows = json.loads(CHECK.read_text())["rows"]["l2init"]
    for metric, row in rows.items():
        assert abs(row["new"]["mean"] - row["committed"]["mean"]) <= 1e-12 * max(1.0, abs(row["committed"]["mean"])), metric
