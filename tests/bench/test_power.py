"""Power where verdicts are decided: every primary t-test states its power at the seed count it ran with."""
import json
from pathlib import Path

import pytest

from syre.bench import fmt
from syre.bench.power import TARGET_POWER, annotate, n_needed, pilot_of, power_t

pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[2]
SUMMARIES = sorted(p for p in (ROOT / "benchmarks" / "results").glob("*/summary.json") if "protocol" in json.loads(p.read_text()))


def test_n_needed_is_the_smallest_n_that_reaches_the_target():
    for eff, sd in ((0.021, 0.059), (1.0, 1.0), (0.3, 2.0)):
        n = n_needed(eff, sd)
        assert power_t(eff, sd, n) >= TARGET_POWER > power_t(eff, sd, n - 1)
    assert n_needed(-0.1, 1.0) is None and n_needed(1e-6, 1.0) is None  # against H1; beyond the cap


def _t(name, a, b, **kw):
    return {"name": name, "role": "primary", "family": kw.pop("family", "shared"), "kind": "t", "metric": "acc", "metric_b": None, "a": a,
            "b": b, "ratio": 1.0, "threshold": 0.0, "direction": "greater", "n": 5, **kw}


def test_the_pilot_comes_from_the_test_its_cells_or_the_selection_seeds():
    tests = [_t("shared: syre above wd", "syre[gamma=10]", "wd[gamma=10]"),
             _t("held-out: same cells", "syre[gamma=10]", "wd[gamma=10]", family="heldout"),
             _t("tuned: syre above wd", "syre@tuned", "wd@tuned", family="tuned"),
             _t("tuned: syre above none", "syre@tuned", "none", family="tuned")]
    pilot = {"seeds": [900, 901, 902], "tests": {"shared: syre above wd": {"mean": 0.5, "sd": 1.0, "n": 3}}}
    selection = {"all": {"syre": {"grid": [{"gamma": 1.0, "sigma0": "lecun", "mean": 0.9, "std": 0.03, "n": 2}],
                                  "chosen": {"gamma": 1.0, "sigma0": "lecun"}},
                         "wd": {"grid": [{"gamma": 0.1, "sigma0": None, "mean": 0.8, "std": 0.04, "n": 2}],
                                "chosen": {"gamma": 0.1, "sigma0": None}}}}
    assert pilot_of(tests[0], tests, pilot, selection)["source"].startswith("pilot, seeds")
    assert "same cells" in pilot_of(tests[1], tests, pilot, selection)["source"]
    p = pilot_of(tests[2], tests, pilot, selection)
    assert p["mean"] == pytest.approx(0.1) and p["sd"] == pytest.approx(0.05) and "selection seeds" in p["source"]
    assert pilot_of(tests[3], tests, pilot, selection) is None
    rows = annotate({"tests": tests, "selection": selection}, pilot)
    assert [r["power"] is None for r in rows] == [False, False, False, True]
    assert tests[0]["power"] == pytest.approx(power_t(0.5, 1.0, 5)) and tests[0]["n_needed"] == n_needed(0.5, 1.0)
    assert "underpowered" in fmt.test_result(tests[0]) and "underpowered" not in fmt.test_result(tests[2])


@pytest.mark.parametrize("path", SUMMARIES, ids=[p.parent.name for p in SUMMARIES])
def test_every_committed_primary_test_states_its_power(path):
    s = json.loads(path.read_text())
    assert s["power_check"]["note"]
    for t in s["tests"]:
        if t["role"] == "primary" and t["kind"] == "t":
            assert {"power", "n_needed", "power_source"} <= set(t), t["name"]
            if t["power"] is not None and t["power"] < TARGET_POWER:
                assert "underpowered" in fmt.test_result(t)
