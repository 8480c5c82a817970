"""Re-judged protocol versions: new roles or claims over an earlier version's trials, without retraining."""
import json
from pathlib import Path

import pytest

from syre.bench import Design, Experiment, Test, build_protocol, cell, get_experiment
from syre.bench.arms import arms
from syre.bench.protocol import digest, read_ledger
from syre.bench.rejudge import Rejudge, rejudge

pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
LEDGER = read_ledger(ROOT / "benchmarks" / "protocols.json")
REJUDGED = sorted(p.parent.name for p in RESULTS.glob("*/summary.json") if "rejudged" in json.loads(p.read_text()))


@pytest.mark.parametrize("exp_id,version", [(e, int(v)) for e, vs in LEDGER.items() for v in vs])
def test_the_code_still_declares_every_registered_version_hash_for_hash(exp_id, version):
    entry = LEDGER[exp_id][str(version)]
    assert digest(entry["declaration"]) == entry["hash"]
    try:
        exp = get_experiment(exp_id)
    except ValueError:
        pytest.skip(f"{exp_id} is not an experiment of this checkout")
    assert build_protocol(exp, exp.config(), version=version).hash() == entry["hash"]


def test_the_rejudged_versions_are_those_named():
    assert REJUDGED == sorted(["e0", "e1", "e3", "e7", "e10", "e11", "e13"])


@pytest.mark.parametrize("exp_id", REJUDGED)
def test_a_rejudged_summary_holds_its_source_numbers_under_the_new_roles(exp_id):
    new = json.loads((RESULTS / exp_id / "summary.json").read_text())
    r = new["rejudged"]
    old = json.loads((RESULTS / exp_id / f"v{r['from']}" / "summary.json").read_text())
    assert old["protocol"]["version"] == r["from"] and old["protocol"]["hash"] == r["from_hash"]
    assert "no retraining" in new["notes"][0] and "no retraining" in new["protocol"]["changes"]
    assert new["arms"] == old["arms"] and new["seeds"] == old["seeds"] and new["environment"] == old["environment"]
    declared = {t["name"]: t for t in new["protocol"]["declaration"]["tests"]}
    before = {t["name"]: t for t in old["tests"]}
    assert list(declared) == [t["name"] for t in new["tests"]] == list(before)
    for t in new["tests"]:
        assert t["role"] == declared[t["name"]]["role"]
        judged = ("role", "why", "power", "n_needed", "power_source", "power_effect", "power_sd")  # the power is added later
        keep = {k: v for k, v in t.items() if k not in judged}
        assert keep == {k: v for k, v in before[t["name"]].items() if k not in judged}, t["name"]
    changed = [t["name"] for t in new["tests"] if t["role"] != before[t["name"]]["role"]]
    assert changed or new["claim"] != old["claim"]


def _toy(version, claim="c1", rj=None):
    def design(cfg):
        tests = [Test("syre beats wd", "score", cell("syre"), cell("wd")),
                 Test("syre beats none", "score", cell("syre"), cell("none"), role="secondary")]
        return Design(arms=arms(["none", "wd", "syre"]), cells=[cell("none"), cell("wd"), cell("syre")], tests=tests)

    def trial(cfg, arm, seed):
        return {"score": {"none": 0.0, "wd": 1.0, "syre": 0.5}[arm.name] + 0.01 * ((seed * 7) % 5)}

    return Experiment(id="toy-rj", title="t", claim=claim, trial=trial, design=design, defaults={}, n_min=3, n_max=3, version=version,
                      changes="first pre-registered version" if version == 1 else "v2, re-judged", rejudge=rj)


def test_a_rejudgement_decides_the_source_trials_again_and_refuses_a_test_they_did_not_have(tmp_path, monkeypatch):
    from syre.bench import registry, run_experiment

    root = tmp_path
    (root / "benchmarks" / "results").mkdir(parents=True)
    v1 = run_experiment(_toy(1), out=root / "benchmarks" / "results" / "toy-rj", verbose=False,
                        ledger=root / "benchmarks" / "protocols.json")
    assert v1["supported"] is False  # syre (0.5) does not beat wd (1.0)
    demote = Rejudge(2, 1, "c1", "first pre-registered version",
                     lambda t, cfg: ("secondary", "") if t.name == "syre beats wd"
                     else ("primary", "") if t.name == "syre beats none" else None)
    monkeypatch.setitem(registry._LOADED, "toy-rj", _toy(2, claim="c2", rj=demote))
    path = root / "benchmarks" / "results" / "toy-rj" / "summary.json"
    path.write_text(json.dumps({**v1, "tests": v1["tests"][:1]}))  # trials that lack a test the new version judges
    with pytest.raises(ValueError, match="'syre beats none' is not one of version 1's"):
        rejudge("toy-rj", root, verbose=False)
    path.write_text(json.dumps(v1))
    v2 = rejudge("toy-rj", root, verbose=False)
    assert v2["supported"] is True and v2["claim"] == "c2" and v2["protocol"]["version"] == 2  # syre (0.5) beats none (0.0)
    assert json.loads((root / "benchmarks" / "results" / "toy-rj" / "v1" / "summary.json").read_text()) == v1
    runs = read_ledger(root / "benchmarks" / "protocols.json")["toy-rj"]
    assert runs["1"]["runs"][0]["summary"].endswith("toy-rj/v1/summary.json")
    (run,) = runs["2"]["runs"]
    assert run["kind"] == "rejudged" and run["from"] == 1 and "no retraining" in run["note"]
    assert run["trials_revision"] == v1["environment"]["git_revision"]
    with pytest.raises(ValueError, match="version 2 of toy-rj is already in the ledger"):
        rejudge("toy-rj", root, verbose=False)
    with pytest.raises(ValueError, match="Invalid version for toy-rj: 3"):
        build_protocol(_toy(2, rj=demote), {}, version=3)
    with pytest.raises(ValueError, match="declares no re-judged version"):
        rejudge("e12", root, verbose=False)
