"""Every registered experiment runs in quick mode and writes a complete run directory with its protocol.

One body over ``experiment_ids()``: an experiment added to the registry is run here without a line added. The
studies' own records (sigma-sweep, default-scale) are read from the same runs by their files."""
import json

import numpy as np
import pytest

import syre
from quick_runs import overrides, quick_run, records
from syre.bench import get_experiment, run_experiment
from syre.bench.arms import DECLARED_SIGMA0
from syre.bench.protocol import digest
from syre.bench.registry import experiment_ids

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

#: The plots each experiment writes (an experiment not listed: the plots its summary names).
PLOTS = {"e0": {"e0_checks.png"}, "e1": {"e1_duplicated_neurons.png", "e1_tuning.png"}, "e2": {"e2_compatibility.png"},
         "e3": {"e3_dead_coefficients.png", "e3_tuning.png"}, "e4": {"e4_symmetry_control.png"},
         "e5": {"e5_gamma_sweep.png", "e5_tuning.png"}, "e6": {"e6_beta_vae.png", "e6_reconstructions.png", "e6_tuning.png"},
         "e7": {"e7_simclr.png", "e7_tuning.png"}, "e8": {"e8_permuted_fashion.png", "e8_tuning.png"},
         "e9": {"e9_ppo_plasticity.png", "e9_tuning.png"},
         "e10": {"e10_rank_vs_gamma.png", "e10_tuning.png"}, "e11": {"e11_rank_vs_gamma.png", "e11_tuning.png"},
         "e12": {"e12_rank_vs_gamma.png", "e12_tuning.png"}, "e13": {"e13_barriers.png"},
         "sigma-sweep": {"sigma_sweep.png", "sigma_sweep_pull.png"}}
#: The experiments whose arm ``syre`` was declared at ``arms.DECLARED_SIGMA0`` (their protocols hash it); a later one
#: declares its own.
DECLARED_AT_LECUN = {f"e{i}" for i in range(14)}
#: The rank-vs-gamma studies: they find what collapsed and what syre cost, and record the pull numbers.
RANK_STUDIES = {"e10", "e11", "e12"}


@pytest.fixture(scope="module", params=experiment_ids())
def run(request, tmp_path_factory):
    return quick_run(request.param, tmp_path_factory)


def test_quick_run_writes_every_file(run):
    exp_id, out, summary = run
    for f in ("protocol.json", "config.json", "command.txt", "environment.json", "metrics.jsonl", "summary.json", "results.md"):
        assert (out / f).is_file(), f
    assert {p.name for p in out.glob("*.png")} == set(summary["plots"]) == PLOTS.get(exp_id, set(summary["plots"]))
    assert json.loads((out / "summary.json").read_text()) == summary
    rows = records(out)
    assert rows and all({"phase", "arm", "seed", "point"} <= set(r) for r in rows)
    ev = [r for r in rows if r["phase"] == "evaluate"]
    assert {r["seed"] for r in ev} == set(summary["seeds"]["evaluation"])
    assert {r["seed"] for r in rows if r["phase"] == "select"} == set(summary["seeds"]["selection"])
    # every declared cell ran every evaluation seed
    cells = summary["protocol"]["declaration"]["cells"]
    assert len(ev) == len(cells) * len(summary["seeds"]["evaluation"])


def test_quick_summary_carries_its_protocol(run):
    exp_id, out, summary = run
    exp = get_experiment(exp_id)
    assert summary["experiment"] == exp_id and summary["claim"] == exp.claim and summary["title"] == exp.title
    assert summary["supported"] is None and summary["supported_tuned"] is None  # quick runs never decide
    pr = summary["protocol"]
    assert pr["hash"] == digest(pr["declaration"]) and pr["registered"] is False
    declared = exp.config(quick=True, overrides=overrides(exp_id) or None)
    assert pr["declaration"]["config"] == summary["config"] == json.loads(json.dumps(declared))
    assert not set(summary["seeds"]["selection"]) & set(summary["seeds"]["evaluation"])
    assert summary["sigma0"]["library_default"] == syre.DEFAULT_SIGMA0
    if "syre" in summary["sigma0"]["arms"] and exp_id in DECLARED_AT_LECUN:
        assert summary["sigma0"]["arms"]["syre"]["spec"] == DECLARED_SIGMA0  # the registered experiments' default
    for arm, metrics in summary["arms"].items():
        for name, d in metrics.items():
            assert set(d) == {"mean", "std", "n"} and d["n"] == len(summary["seeds"]["evaluation"]), (arm, name)
    assert summary["tests"] and all(t["passed"] in (True, False, None) and t["rule"] for t in summary["tests"])
    assert any(t["role"] == "primary" for t in summary["tests"])
    assert summary["findings"].get("headline")
    md = (out / "results.md").read_text()
    assert exp.claim in md and "## Tests" in md and pr["hash"] in md


def test_quick_run_judges_the_default_where_it_is_held_out(run):
    """An experiment that judges the library default (``heldout``) says whether it survives; the rank studies also
    say what collapsed and what syre cost, and test syre at 'match' against the default on held-out seeds."""
    exp_id, out, summary = run
    assert ("default_survives" in summary) == get_experiment(exp_id).heldout
    if exp_id in RANK_STUDIES:
        assert summary["findings"]["collapse"] and summary["findings"]["cost"]
        assert any(t["family"] == "heldout" and "syre_match better than the default" in t["name"] for t in summary["tests"])


def test_quick_pull_numbers_where_recorded(run):
    """The pull numbers, where an experiment records them: weight decay has no anchor, syre at the default has one,
    no decay has no pull."""
    exp_id, out, summary = run
    ev = [r for r in records(out) if r["phase"] == "evaluate"]
    if exp_id in RANK_STUDIES:
        assert all("pull_anchor" in r for r in ev)
    for r in (r for r in ev if "pull_anchor" in r):
        if r["arm"] == "wd":
            assert r["pull_anchor"] == 0.0 and r["pull_decay"] > 0
        elif r["arm"] == "syre":
            assert r["pull_anchor"] > 0.0
        elif r["arm"] == "none":
            assert r["pull_decay"] is None


def test_quick_metrics_are_in_range(run):
    exp_id, out, summary = run
    cfg = summary["config"]
    for r in records(out):
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
        elif exp_id == "e10":
            hd = cfg["n_embd"] // cfg["n_head"]
            assert 1.0 <= r["qk_rank"] <= hd + 1e-9 and 1.0 <= r["vo_rank"] <= hd + 1e-9 and r["val_loss"] > 0
            assert len(r["resid_rank"]) == cfg["n_layer"] and 0 <= r["mlp_dead"] <= 1
        elif exp_id == "e11":
            assert 0.0 <= r["test_acc"] <= 1.0 and 1.0 <= r["rank_last"] <= cfg["width"] * 2 ** (cfg["stages"] - 1)
            assert 0.0 <= r["dead_channels"] <= 1.0
        elif exp_id == "e12":
            assert r["equiv_error"] < cfg["equiv_tol"] and 1.0 <= r["emb_rank"] <= cfg["width"]
        elif exp_id == "e13":
            assert r["perm_error"] < cfg["perm_tol"] and r["match_gain"] >= 0.0 and r["barrier"] >= 0.0 and r["barrier_aligned"] >= 0.0
            assert len(r["path_loss"]) == cfg["n_t"] and r["path_loss"][0] == pytest.approx(r["path_loss_aligned"][0])


def test_quick_runs_are_reproducible(tmp_path):
    """Two runs of the same configuration give identical per-seed numbers, tuning included."""
    a = run_experiment("e3", quick=True, out=tmp_path / "a", verbose=False, overrides={"steps": 200})
    b = run_experiment("e3", quick=True, out=tmp_path / "b", verbose=False, overrides={"steps": 200})

    def recs(d):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in records(d)]  # wall time differs

    assert recs(tmp_path / "a") == recs(tmp_path / "b") and a["selection"] == b["selection"]
    assert a["protocol"]["hash"] == b["protocol"]["hash"]
