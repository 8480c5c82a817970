"""Every experiment runs in quick mode and writes a complete run directory with its protocol."""
import json

import numpy as np
import pytest

import syre
from syre.bench import get_experiment, run_experiment
from syre.bench.arms import DECLARED_SIGMA0
from syre.bench.protocol import digest
from syre.data import fashion_mnist_dirs

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

IDS = ["e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8", "e9"]  # the sigma-sweep's quick run: test_bench_sigma_sweep.py
NEEDS_FASHION = {"e2", "e6", "e7", "e8"}
PLOTS = {"e0": {"e0_checks.png"}, "e1": {"e1_duplicated_neurons.png", "e1_tuning.png"}, "e2": {"e2_compatibility.png"},
         "e3": {"e3_dead_coefficients.png", "e3_tuning.png"}, "e4": {"e4_symmetry_control.png"},
         "e5": {"e5_gamma_sweep.png", "e5_tuning.png"}, "e6": {"e6_beta_vae.png", "e6_reconstructions.png", "e6_tuning.png"},
         "e7": {"e7_simclr.png", "e7_tuning.png"}, "e8": {"e8_permuted_fashion.png", "e8_tuning.png"},
         "e9": {"e9_ppo_plasticity.png", "e9_tuning.png"}}


def _have_fashion():
    return any((d / "train-images-idx3-ubyte.gz").is_file() or (d / "train-images-idx3-ubyte").is_file() for d in fashion_mnist_dirs())


@pytest.fixture(scope="module", params=IDS)
def quick_run(request, tmp_path_factory):
    if request.param in NEEDS_FASHION and not _have_fashion():
        pytest.skip("Fashion-MNIST files not installed")
    out = tmp_path_factory.mktemp(request.param)
    summary = run_experiment(request.param, quick=True, out=out, verbose=False)
    return request.param, out, summary


def _rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_quick_run_writes_every_file(quick_run):
    exp_id, out, summary = quick_run
    for f in ("protocol.json", "config.json", "command.txt", "environment.json", "metrics.jsonl", "summary.json", "results.md"):
        assert (out / f).is_file(), f
    assert {p.name for p in out.glob("*.png")} == set(summary["plots"]) == PLOTS[exp_id]
    assert json.loads((out / "summary.json").read_text()) == summary
    rows = _rows(out)
    assert rows and all({"phase", "arm", "seed", "point"} <= set(r) for r in rows)
    ev = [r for r in rows if r["phase"] == "evaluate"]
    assert {r["seed"] for r in ev} == set(summary["seeds"]["evaluation"])
    assert {r["seed"] for r in rows if r["phase"] == "select"} == set(summary["seeds"]["selection"])
    # every declared cell ran every evaluation seed
    cells = summary["protocol"]["declaration"]["cells"]
    assert len(ev) == len(cells) * len(summary["seeds"]["evaluation"])


def test_quick_summary_carries_its_protocol(quick_run):
    exp_id, out, summary = quick_run
    exp = get_experiment(exp_id)
    assert summary["experiment"] == exp_id and summary["claim"] == exp.claim and summary["title"] == exp.title
    assert summary["supported"] is None and summary["supported_tuned"] is None  # quick runs never decide
    pr = summary["protocol"]
    assert pr["hash"] == digest(pr["declaration"]) and pr["registered"] is False
    assert pr["declaration"]["config"] == summary["config"] == json.loads(json.dumps(exp.config(quick=True)))
    assert not set(summary["seeds"]["selection"]) & set(summary["seeds"]["evaluation"])
    assert summary["sigma0"]["library_default"] == syre.DEFAULT_SIGMA0
    if "syre" in summary["sigma0"]["arms"]:
        assert summary["sigma0"]["arms"]["syre"]["spec"] == DECLARED_SIGMA0  # the registered experiments' default
    for arm, metrics in summary["arms"].items():
        for name, d in metrics.items():
            assert set(d) == {"mean", "std", "n"} and d["n"] == len(summary["seeds"]["evaluation"]), (arm, name)
    assert summary["tests"] and all(t["passed"] in (True, False, None) and t["rule"] for t in summary["tests"])
    assert any(t["role"] == "primary" for t in summary["tests"])
    assert summary["findings"].get("headline")
    md = (out / "results.md").read_text()
    assert exp.claim in md and "## Tests" in md and pr["hash"] in md


def test_quick_metrics_are_in_range(quick_run):
    exp_id, out, summary = quick_run
    cfg = summary["config"]
    for r in _rows(out):
        if exp_id == "e1":
            assert cfg["width"] // 2 <= r["distinct_units"] <= cfg["width"] and r["test_loss"] > 0
            if r["arm"] in ("none", "wd"):
                assert r["min_separation"] == 0.0  # exact symmetry
            if r["arm"] == "perturb":
                assert r["distinct_units"] == cfg["width"]  # any noise separates the pairs
        elif exp_id == "e3":
            assert 0 <= r["dead_started_dead"] <= cfg["n_dead"] and r["excess_risk"] >= 0
        elif exp_id == "e6":
            assert 0 <= r["active_units"] <= cfg["latent"] and 0 < r["eff_rank_mu"] <= cfg["latent"] and r["recon"] > 0
            assert r["active_units"] == sum(v > cfg["active_threshold"] for v in r["mu_var_sorted"])
        elif exp_id == "e7":
            assert 0.0 <= r["lowrank_proj"] < 1.0 and 0.15 < r["probe_proj"] <= 1.0 and 1.0 <= r["eff_rank_proj"] <= cfg["proj_dim"]
        elif exp_id == "e8":
            assert len(r["task_acc"]) == cfg["tasks"] and all(0.1 < a <= 1.0 for a in r["task_acc"])
            assert r["acc_last"] == pytest.approx(np.mean(r["task_acc"][-cfg["last_tasks"]:]))
        elif exp_id == "e9":
            assert len(r["phase_final_return"]) == cfg["phases"] and all(5 <= x <= 500 for x in r["phase_final_return"])


def test_quick_runs_are_reproducible(tmp_path):
    """Two runs of the same configuration give identical per-seed numbers, tuning included."""
    a = run_experiment("e3", quick=True, out=tmp_path / "a", verbose=False, overrides={"steps": 200})
    b = run_experiment("e3", quick=True, out=tmp_path / "b", verbose=False, overrides={"steps": 200})

    def records(d):
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # wall time differs

    assert records(tmp_path / "a") == records(tmp_path / "b") and a["selection"] == b["selection"]
    assert a["protocol"]["hash"] == b["protocol"]["hash"]
