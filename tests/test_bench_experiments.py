"""Every experiment runs in quick mode and writes a complete run directory."""
import json

import pytest

from syre.bench import get_experiment, run_experiment
from syre.data import fashion_mnist_dirs

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

IDS = ["e0", "e1", "e2", "e3", "e4", "e5"]
NEEDS_FASHION = {"e2"}


def _have_fashion():
    return any((d / "train-images-idx3-ubyte.gz").is_file() or (d / "train-images-idx3-ubyte").is_file() for d in fashion_mnist_dirs())


@pytest.fixture(scope="module", params=IDS)
def quick_run(request, tmp_path_factory):
    if request.param in NEEDS_FASHION and not _have_fashion():
        pytest.skip("Fashion-MNIST files not installed")
    out = tmp_path_factory.mktemp(request.param)
    summary = run_experiment(request.param, quick=True, out=out, verbose=False)
    return request.param, out, summary


def test_quick_run_writes_every_file(quick_run):
    exp_id, out, summary = quick_run
    for f in ("config.json", "command.txt", "environment.json", "metrics.jsonl", "summary.json", "results.md"):
        assert (out / f).is_file(), f
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs and pngs == sorted(summary["plots"])
    assert json.loads((out / "summary.json").read_text()) == summary
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows and all({"arm", "seed", "point"} <= set(r) for r in rows)
    assert {r["seed"] for r in rows} == set(summary["seeds"]) == {0, 1}


def test_quick_summary_fields(quick_run):
    exp_id, out, summary = quick_run
    exp = get_experiment(exp_id)
    assert summary["experiment"] == exp_id and summary["claim"] == exp.claim and summary["title"] == exp.title
    assert summary["supported"] is None  # quick runs never decide
    assert summary["quick"] is True and summary["config"] == exp.config(quick=True)
    assert summary["arms"], "no arms summarised"
    for arm, metrics in summary["arms"].items():
        assert metrics, arm
        for name, d in metrics.items():
            assert set(d) == {"mean", "std", "n"} and d["n"] >= 1, (arm, name)
    assert summary["tests"] and all(t["passed"] in (True, False, None) and t["rule"] for t in summary["tests"])
    assert summary["rule"] and summary["gamma_convention"] and summary["findings"].get("headline")
    md = (out / "results.md").read_text()
    assert exp.claim in md and "## Tests" in md


def test_quick_runs_are_reproducible(tmp_path):
    """Two runs of the same configuration give identical per-seed numbers."""
    a = run_experiment("e3", quick=True, out=tmp_path / "a", verbose=False, overrides={"steps": 200})
    b = run_experiment("e3", quick=True, out=tmp_path / "b", verbose=False, overrides={"steps": 200})

    def records(d):
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # wall time differs

    assert records(tmp_path / "a") == records(tmp_path / "b")
    assert len(records(tmp_path / "a")) == 6
