"""syre under torch.distributed: DDP, FSDP2 and distributed checkpoints across world sizes.

One spawn of 2 gloo processes on CPU (``dist_worker.worker``) runs every world-of-2 scenario;
the world-of-1 runs happen in this process. Reference and distributed runs see the same global
batches, so they agree up to the rounding of the gradient average: ``ATOL``/``RTOL`` below
(fp32; the measured gap is ~1e-7).
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)
pytest.importorskip("torch.distributed.fsdp", reason="needs FSDP2 (torch >= 2.4)")

import dist_worker as W  # noqa: E402
import syre  # noqa: E402
from spawn import spawn  # noqa: E402

WORLD = 2
SPAWN_TIMEOUT_S = 180
ATOL, RTOL = 2e-6, 1e-5  # fp32: a distributed run vs one process on the same global batches
NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias", "5.weight", "5.bias"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*single process.*")  # DCP without a process group
        single = W.single(out)
        seconds = spawn(W.worker, WORLD, (str(out),), SPAWN_TIMEOUT_S)
        ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
        resume21 = W.resume_single(out / "ckpt2")
    return {"single": single, "ranks": ranks, "resume21": resume21, "seconds": seconds}


def _assert_close(got: dict, want: dict):
    assert list(got) == list(want)
    for n in want:
        torch.testing.assert_close(got[n], want[n], atol=ATOL, rtol=RTOL, msg=lambda m: f"{n}: {m}")


def _assert_anchors_equal(got: dict, want: dict):
    assert list(got) == list(want) == NAMES
    for n in want:
        assert torch.equal(got[n][0], want[n][0]) and torch.equal(got[n][1], want[n][1]), n


def test_reference_run_moves_the_weights_far_beyond_the_tolerance(runs):
    # Guards the tests below: a wrong anchor or a missed decay must show up above ATOL.
    start = W.full_params(W.make_model(0))
    moved = min((runs["single"]["N"][n] - start[n]).abs().max().item() for n in NAMES)
    assert moved > 1000 * ATOL
    t = runs["single"]["anchors"]["0.weight"][0]
    assert 0.2 < t.std().item() < 0.4  # sigma0 = 0.3: the anchor is far from the origin


# ----------------------------------------------------------------------------- DDP
def test_ddp_names_are_the_bare_models(runs):
    for r in runs["ranks"]:
        assert r["ddp"]["names"] == NAMES  # no "module." prefix


def test_ddp_anchors_identical_on_every_rank_despite_seed_plus_rank(runs):
    a, b = (r["ddp"]["anchors"] for r in runs["ranks"])
    _assert_anchors_equal(a, b)
    _assert_anchors_equal(a, runs["single"]["anchors"])


def test_ddp_params_stay_bitwise_equal_across_ranks_and_match_one_process(runs):
    a, b = (r["ddp"]["params"] for r in runs["ranks"])
    for n in NAMES:
        assert torch.equal(a[n], b[n]), n
    _assert_close(a, runs["single"]["N"])


# ----------------------------------------------------------------------------- FSDP2
def test_fsdp2_shards_are_uneven_and_one_is_empty(runs):
    local = [r["fsdp2"]["local"] for r in runs["ranks"]]
    assert local[0]["0.weight"] == (3, 6) and local[1]["0.weight"] == (2, 6)
    assert local[0]["5.weight"] == (1, 3) and local[1]["5.weight"] == (0, 3)


def test_fsdp2_each_rank_generates_only_its_slice(runs):
    shapes = dict(W.full_params(W.make_model(0)))
    for key in ("fill_stored", "fill_seeded"):
        ranges = {n: [] for n in NAMES}
        for rank, r in enumerate(runs["ranks"]):
            seen = {}
            for name, start, stop in r["fsdp2"][key]:
                local = math.prod(r["fsdp2"]["local"][name])
                assert stop - start == local, (key, rank, name, start, stop)  # never the full tensor
                seen.setdefault(name, (start, stop))
                assert seen[name] == (start, stop)  # the same slice at every step
            for name, rng in seen.items():
                ranges[name].append(rng)
        for name, rngs in ranges.items():
            rngs = sorted(rngs)
            # The ranks' slices tile the flattened parameter (an empty shard may generate nothing).
            nonempty = [x for x in rngs if x[1] > x[0]]
            assert nonempty[0][0] == 0 and nonempty[-1][1] == shapes[name].numel(), (key, name, rngs)
            assert all(a[1] == b[0] for a, b in zip(nonempty, nonempty[1:])), (key, name, rngs)
    seeded_calls = len(runs["ranks"][0]["fsdp2"]["fill_seeded"])
    assert seeded_calls == W.N * len(NAMES)  # regenerated at each step, one slice per parameter


def test_fsdp2_gathered_params_match_one_process(runs):
    for r in runs["ranks"]:
        _assert_close(r["fsdp2"]["N"], runs["single"]["N"])
        _assert_close(r["fsdp2"]["2N"], runs["single"]["2N"])


def test_hsdp_two_dimensional_mesh_matches_one_process(runs):
    for r in runs["ranks"]:
        assert r["fsdp2"]["hsdp_placements"] == "(Replicate(), Shard(dim=0))"
        _assert_close(r["fsdp2"]["hsdp_N"], runs["single"]["N"])


def test_fsdp2_seeded_mode_equals_stored_mode(runs):
    for r in runs["ranks"]:
        for n in NAMES:
            assert torch.equal(r["fsdp2"]["seeded_N"][n], r["fsdp2"]["N"][n]), n


def test_fsdp2_anchor_returns_the_full_anchor(runs):
    for r in runs["ranks"]:
        _assert_anchors_equal(r["fsdp2"]["anchors"], runs["single"]["anchors"])
    sigma0 = {n: W.SIGMA0 for n in NAMES}
    for n in NAMES:
        shape = runs["single"]["2N"][n].shape
        want = syre.anchor(W.SEED, n, shape, sigma0=sigma0[n], d_spread=W.D_SPREAD)
        assert torch.equal(runs["ranks"][1]["fsdp2"]["anchors"][n][0], want.theta0)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_saved_on_2_resumes_on_1(runs):
    res = runs["resume21"]
    assert res["seed"] == W.SEED  # from the checkpoint, not the constructor's 999
    _assert_anchors_equal(res["anchors"], runs["single"]["anchors"])
    _assert_close(res["2N"], runs["single"]["2N"])
    _assert_close(res["2N"], runs["ranks"][0]["fsdp2"]["2N"])


def test_checkpoint_saved_on_1_resumes_on_2(runs):
    for r in runs["ranks"]:
        assert r["fsdp2"]["resume12_seed"] == W.SEED
        _assert_anchors_equal(r["fsdp2"]["resume12_anchors"], runs["single"]["anchors"])
        _assert_close(r["fsdp2"]["resume12_2N"], runs["single"]["2N"])


# ----------------------------------------------------------------------------- placements
def test_replicated_dtensor_gets_the_full_anchor(runs):
    want = syre.anchor(3, "weight", (6, 4), sigma0=0.3, d_spread=syre.DEFAULT_D_SPREAD)
    for r in runs["ranks"]:
        got = r["placements"]["replicate_anchor"]
        assert torch.equal(got[0], want.theta0) and torch.equal(got[1], want.d)


def test_unsupported_placements_and_fsdp1_are_refused(runs):
    for r in runs["ranks"]:
        msg = r["placements"]["partial_error"]
        assert "'weight'" in msg and "Partial(sum)" in msg and "pending sum" in msg and "redistribute" in msg.lower()
        assert "fully_shard" in r["placements"]["fsdp1_error"]


def test_spawned_runs_took(runs, capsys):
    # Not a timing assertion: reports the cost of the spawned world of 2 (pytest -s shows it).
    with capsys.disabled():
        print(f"\n[test_distributed] world of {WORLD}: {runs['seconds']:.1f} s")
    assert runs["seconds"] < SPAWN_TIMEOUT_S
