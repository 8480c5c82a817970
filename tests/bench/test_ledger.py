"""The ledger keeps runs: every attempt of a registered version, with its revision, anchor format, start, end and outcome."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from syre.bench import Design, Experiment, Test, cell, ledger as L, run_experiment
from syre.bench.arms import arms

pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[2]


def _trial(cfg, arm, seed):
    if cfg["fail"]:
        raise RuntimeError("trial broke")
    return {"score": float(np.random.default_rng(seed).normal(0, 0.1)) + (1.0 if arm.decay == "syre" else 0.0)}


def _design(cfg):
    return Design(arms=arms(["wd", "syre"]), cells=[cell("wd"), cell("syre")],
                  tests=[Test("syre beats wd", "score", cell("syre"), cell("wd"))])


TOY = Experiment(id="toy-ledger", title="toy", claim="syre scores higher", trial=_trial, design=_design,
                 defaults={"fail": False, "gamma": 1.0}, n_min=3, n_max=3)


def test_a_registered_run_appends_its_attempt_and_closes_it(tmp_path):
    ledger = tmp_path / "protocols.json"
    s = run_experiment(TOY, out=tmp_path / "a", verbose=False, ledger=ledger)
    runs = L.read_ledger(ledger)["toy-ledger"]["1"]["runs"]
    assert len(runs) == 1
    r = runs[0]
    assert r["outcome"] == "completed" and r["kind"] == "run" and r["started"] and r["ended"] >= r["started"]
    assert r["revision"] == s["environment"]["git_revision"] and r["anchor_format"] == s["anchor_format"]
    assert r["wall_time_s"] == s["wall_time_s"]
    run_experiment(TOY, out=tmp_path / "b", verbose=False, ledger=ledger)  # a rerun of the same version is a second attempt
    assert [x["outcome"] for x in L.read_ledger(ledger)["toy-ledger"]["1"]["runs"]] == ["completed", "completed"]
    assert L.last_completed(L.read_ledger(ledger), "toy-ledger", 1)["out"] == str(tmp_path / "b")


def test_a_failed_attempt_stays_in_the_ledger(tmp_path):
    ledger = tmp_path / "protocols.json"

    def design(cfg):
        return _design(cfg)

    broken = Experiment(id="toy-ledger", title="toy", claim="syre scores higher", trial=_trial, design=design,
                        defaults={"fail": True, "gamma": 1.0}, n_min=3, n_max=3)
    with pytest.raises(RuntimeError, match="trial broke"):
        run_experiment(broken, out=tmp_path / "a", verbose=False, ledger=ledger)
    (r,) = L.read_ledger(ledger)["toy-ledger"]["1"]["runs"]
    assert r["outcome"] == "failed: RuntimeError: trial broke" and r["ended"]
    assert L.last_completed(L.read_ledger(ledger), "toy-ledger", 1) is None


def test_unregistered_versions_have_no_runs_to_record(tmp_path):
    with pytest.raises(ValueError, match="e42 version 1 is not registered"):
        L.add_run(tmp_path / "none.json", "e42", 1, {"outcome": "completed"})


def _have_history(rev):
    try:
        return subprocess.run(["git", "cat-file", "-e", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True).returncode == 0
    except OSError:
        return False


def test_anchor_format_at_reads_the_format_of_that_revision():
    # E12 ran before anchor format 2 existed; E9 after it (the summaries' revisions)
    old, new = "5628c600826b07018494fac36ee58e71d8a815e8", "887b0171400fa1ea83358eb315a423566ce2e654"
    if not (_have_history(old) and _have_history(new)):
        pytest.skip("the git history of the committed runs is not here (a shallow clone)")
    assert L.anchor_format_at(old, ROOT) == 1 and L.anchor_format_at(new, ROOT) == 2
    assert L.anchor_format_at("0" * 40, ROOT) is None


def test_backfill_restores_the_committed_runs_from_the_summaries(tmp_path):
    committed = json.loads((ROOT / "benchmarks" / "protocols.json").read_text())
    stripped = json.loads(json.dumps(committed))
    for versions in stripped.values():
        for entry in versions.values():
            entry["runs"] = [r for r in entry.get("runs", []) if not r.get("backfilled")]
    path = tmp_path / "protocols.json"
    path.write_text(json.dumps(stripped))
    if not _have_history("5628c600826b07018494fac36ee58e71d8a815e8"):
        pytest.skip("the git history of the committed runs is not here (a shallow clone)")
    L.backfill(path, ROOT)
    again = L.read_ledger(path)
    keys = ("revision", "anchor_format", "outcome", "summary", "wall_time_s")
    for exp, versions in committed.items():
        for v, entry in versions.items():
            want = [{k: r.get(k) for k in keys} for r in entry["runs"] if r.get("backfilled")]
            got = [{k: r.get(k) for k in keys} for r in again[exp][v]["runs"] if r.get("backfilled")]
            assert got == want, (exp, v)
    assert L.backfill(path, ROOT) == []  # nothing twice
