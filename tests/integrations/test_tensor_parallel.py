"""syre under tensor parallelism: ColwiseParallel and RowwiseParallel on 2 gloo processes.

One spawn of 2 processes (``tp_worker.world_of_2``) runs every scenario; the one-process runs
happen in this process. The first layer's weight and bias are ``Shard(0)``, the second's weight
``Shard(1)`` (columns: no slice of the flattened parameter) and its bias ``Replicate``; the
output layer is a plain tensor on both ranks. Single DTensor parameters cover ``Shard(d)`` for
every ``d``, uneven and empty shards. Every rank's local shard must
equal the one-process run's slice: bitwise after a pure decay, to the fp32 tolerance of
``tp_checks.ATOL``/``RTOL`` after training (the gradients are reduced in another order).
"""
from __future__ import annotations

import math
import re

import pytest
import torch

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)
pytest.importorskip("torch.distributed.tensor.parallel", reason="needs tensor parallelism (torch >= 2.4)")

import dist_worker as W  # noqa: E402
import tp_checks as C  # noqa: E402
import tp_worker as T  # noqa: E402

WORLD = 2
SPAWN_TIMEOUT_S = 240
H = T.HIDDEN_1D
NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
SHARDED = ["0.weight", "0.bias", "2.weight"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return T.run_all(tmp_path_factory.mktemp("tp"), WORLD, H, "tp2_ckpt", SPAWN_TIMEOUT_S)


def test_reference_run_moves_the_weights_far_beyond_the_tolerance(runs):
    start = W.full_params(T.make_model(0, H))
    assert min((runs["single"]["N"][n] - start[n]).abs().max().item() for n in NAMES) > 1000 * C.ATOL
    decayed = runs["single"]["decay"]
    assert min((decayed[n] - start[n]).abs().max().item() for n in NAMES) > 1000 * C.ATOL


def test_layout_is_colwise_then_rowwise_with_uneven_shards(runs):
    placements = runs["ranks"][0]["placements"]
    assert placements["0.weight"] == placements["0.bias"] == "(Shard(dim=0),)"
    assert placements["2.weight"] == "(Shard(dim=1),)" and placements["2.bias"] == "(Replicate(),)"
    assert placements["4.weight"] == "plain"
    shapes = [{n: tuple(t.shape) for n, t in r["index"].items()} for r in runs["ranks"]]
    assert shapes[0]["0.weight"] == shapes[1]["0.weight"] == (2, 6)
    assert shapes[0]["2.weight"] == shapes[1]["2.weight"] == (3, 2)


def test_single_dtensor_parameters_on_every_dim_decay_bitwise(runs):
    C.assert_direct_placements(runs["ranks"], T.DIRECT_1D)
    shapes = {spec: [tuple(r["direct"][spec]["index"].shape) for r in runs["ranks"]] for spec in T.DIRECT_1D}
    assert shapes["5x4x3 S0"] == [(3, 4, 3), (2, 4, 3)] and shapes["5x4x3 S2"] == [(5, 4, 2), (5, 4, 1)]
    assert shapes["1x4x3 S0"] == [(1, 4, 3), (0, 4, 3)]  # an empty shard


def test_pure_decay_of_every_shard_is_bitwise_the_one_process_slice(runs):
    C.assert_pure_decay_is_the_one_process_slice(runs)


def test_training_matches_one_process_on_every_shard(runs, capsys):
    gap = C.training_gap(runs)
    with capsys.disabled():
        print(f"\n[test_tensor_parallel] TP over 2 ranks: max abs gap to one process {gap:.1e}")


def test_seeded_mode_equals_stored_mode(runs):
    C.assert_seeded_equals_stored(runs, NAMES)


def test_each_rank_generates_only_its_shard(runs):
    for r in runs["ranks"]:
        index = {n: r["index"][n] for n in SHARDED}
        C.assert_generates_only_its_shard(r["gen_stored"], index, runs["numel"], times=1)
        C.assert_generates_only_its_shard(r["gen_seeded"], index, runs["numel"], times=W.N)


def test_anchor_returns_the_full_anchor(runs):
    C.assert_full_anchor_on_every_rank(runs)


def test_checkpoint_saved_under_tp_resumes_in_one_process(runs):
    C.assert_resumes_in_one_process(runs, NAMES, W.SEED)


def test_checkpoint_of_one_process_resumes_under_tp(runs):
    for r in runs["ranks"]:
        res = r["resume"]
        assert res["seed"] == W.SEED
        C.assert_anchors_equal(res["anchors"], runs["single"]["anchors"])
        C.assert_slices_close(res["2N"], runs["single"]["2N"], res["index"])


def test_match_sigma0_is_the_full_tensors_rms_on_every_rank(runs):
    import syre

    plain = T.make_model(0, H)
    s = syre.attach(torch.optim.SGD(plain.parameters(), lr=0.1), plain, gamma=0.1, sigma0="match", seed=W.SEED)
    want = {r["name"]: r["sigma0"] for r in s.coverage()}
    for r in runs["ranks"]:
        got = r["match"]
        assert set(got) == set(want)
        for n in want:  # float64 reductions of the same values in another order: a few ulps
            assert got[n] == pytest.approx(want[n], rel=1e-12), n
    assert runs["ranks"][0]["match"] == runs["ranks"][1]["match"]  # bitwise the same on every rank


def test_match_of_a_zero_initialised_sharded_layer_is_its_full_fans_lecun_std(runs):
    import syre

    plain = T.zeroed(T.make_model(0, H), "0")
    s = syre.attach(torch.optim.SGD(plain.parameters(), lr=0.1), plain, gamma=0.1, sigma0="match", seed=W.SEED)
    want = {r["name"]: r["sigma0"] for r in s.coverage()}
    fan_in = plain[0].weight.shape[1]
    assert want["0.weight"] == want["0.bias"] == pytest.approx(1 / math.sqrt(fan_in))  # the full tensor's fans
    for r in runs["ranks"]:
        assert r["match_zero"] == pytest.approx(want, rel=1e-12)


def test_the_anchor_scale_warning_reads_full_tensors_the_same_on_every_rank(runs):
    import syre

    plain = T.make_model(0, H)
    with pytest.warns(syre.AnchorScaleWarning) as rec:
        syre.attach(torch.optim.SGD(plain.parameters(), lr=0.1), plain, gamma=0.1, sigma0=1e-5, seed=W.SEED)
    want = [str(w.message) for w in rec if issubclass(w.category, syre.AnchorScaleWarning)]
    assert len(want) == 1
    ratios = lambda msg: [float(x) for x in re.findall(r"\(([0-9.e+-]+)x\)", msg)]  # noqa: E731
    for r in runs["ranks"]:
        assert len(r["far"]) == 1
        assert r["far"][0].split(":")[1:2] == want[0].split(":")[1:2]
        assert ratios(r["far"][0]) == pytest.approx(ratios(want[0]), rel=1e-2)


def test_spawned_runs_took(runs, capsys):
    # Not a timing assertion: reports the cost of the spawned world (pytest -s shows it).
    with capsys.disabled():
        print(f"\n[test_tensor_parallel] world of {WORLD}: {runs['seconds']:.1f} s")
    assert math.isfinite(runs["seconds"]) and runs["seconds"] < SPAWN_TIMEOUT_S
