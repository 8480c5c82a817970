"""syre on a 2 x 2 mesh: FSDP2 over tensor parallelism, on 4 gloo processes.

One spawn of 4 processes (``tp_worker.world_of_4``) runs every scenario; the one-process runs
happen in this process. The model of ``tp_worker`` with hidden size 6 is parallelized colwise /
rowwise on the ``tp`` mesh dimension, then ``fully_shard`` on ``dp``: what torch builds is
``(_StridedShard(0, sf=2), Shard(0))`` for the colwise weight and bias, ``(Shard(0), Shard(1))``
for the rowwise weight, ``(Shard(0), Replicate())`` for its bias and ``(Shard(0),)`` for the
output layer, whose one row leaves an empty shard. Every rank's local shard must equal the
one-process run's slice: bitwise after a pure decay, to the fp32 tolerance of
``tp_checks.ATOL``/``RTOL`` after training; a checkpoint of the 2 x 2 mesh resumes under FSDP2
alone on a 1-D mesh of 4 and in one process, with the same anchors.
"""
from __future__ import annotations

import pytest
import torch

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)
pytest.importorskip("torch.distributed.tensor.parallel", reason="needs tensor parallelism (torch >= 2.4)")
pytest.importorskip("torch.distributed.fsdp", reason="needs FSDP2 (torch >= 2.4)")

import dist_worker as W  # noqa: E402
import tp_checks as C  # noqa: E402
import tp_worker as T  # noqa: E402

pytestmark = pytest.mark.slow  # 4 processes: ~40-60 s on 2 shared CPU cores

WORLD = 4
SPAWN_TIMEOUT_S = 420
H = T.HIDDEN_2D
NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return T.run_all(tmp_path_factory.mktemp("mesh2d"), WORLD, H, "mesh22_ckpt", SPAWN_TIMEOUT_S)


def test_torch_builds_strided_shards_with_uneven_and_empty_fsdp_shards(runs):
    placements = runs["ranks"][0]["placements"]
    assert placements["0.weight"] == placements["0.bias"] == "(_StridedShard(dim=0, sf=2), Shard(dim=0))"
    assert placements["2.weight"] == "(Shard(dim=0), Shard(dim=1))"
    assert placements["2.bias"] == "(Shard(dim=0), Replicate())"
    assert placements["4.weight"] == "(Shard(dim=0),)"
    rows = sorted(r["index"]["0.weight"].shape[0] for r in runs["ranks"])
    assert rows == [1, 1, 2, 2]  # tensor-parallel chunks of 3 rows, FSDP shards of 2 + 1
    assert sorted(tuple(r["index"]["4.weight"].shape) for r in runs["ranks"]) == [(0, 3), (0, 3), (1, 3), (1, 3)]
    # The strided shard is not a slice: rank (dp 0, tp 1) holds rows 3 and 4 of the colwise weight.
    assert torch.equal(runs["ranks"][1]["index"]["0.weight"][:, 0], torch.tensor([18, 24]))


def test_pure_decay_of_every_shard_is_bitwise_the_one_process_slice(runs):
    C.assert_pure_decay_is_the_one_process_slice(runs)


def test_training_matches_one_process_on_every_shard(runs, capsys):
    gap = C.training_gap(runs)
    with capsys.disabled():
        print(f"\n[test_mesh_2d] FSDP2 x TP on 2 x 2: max abs gap to one process {gap:.1e}")


def test_seeded_mode_equals_stored_mode(runs):
    C.assert_seeded_equals_stored(runs, NAMES)


def test_each_rank_generates_only_its_shard(runs):
    for r in runs["ranks"]:
        C.assert_generates_only_its_shard(r["gen_stored"], r["index"], runs["numel"], times=1)
        C.assert_generates_only_its_shard(r["gen_seeded"], r["index"], runs["numel"], times=W.N)


def test_anchor_returns_the_full_anchor(runs):
    C.assert_full_anchor_on_every_rank(runs)


def test_checkpoint_of_the_2x2_mesh_resumes_on_a_1d_mesh_of_4(runs):
    for r in runs["ranks"]:
        res = r["resume_fsdp4"]
        assert res["seed"] == W.SEED  # from the checkpoint, not the constructor's 999
        C.assert_anchors_equal(res["anchors"], runs["single"]["anchors"])
        C.assert_slices_close(res["2N"], runs["single"]["2N"], res["index"])
    rows = [r["resume_fsdp4"]["index"]["0.weight"].shape[0] for r in runs["ranks"]]
    assert rows == [2, 2, 2, 0]


def test_checkpoint_of_the_2x2_mesh_resumes_in_one_process(runs):
    C.assert_resumes_in_one_process(runs, NAMES, W.SEED)


def test_uneven_strided_shard_is_refused_before_anything_changes(runs):
    for r in runs["ranks"]:
        res = r["uneven_strided"]
        assert res["placements"] == "(_StridedShard(dim=0, sf=2), Shard(dim=0))"
        msg = res["error"]
        assert "'0.weight'" in msg and "_StridedShard" in msg and "length 5" in msg and "multiple of 2" in msg
        assert res["weight_decay"] == W.WD  # not taken over


def test_single_dtensor_parameters_on_the_2x2_mesh_decay_bitwise(runs):
    C.assert_direct_placements(runs["ranks"], T.DIRECT_2D)
    shapes = {spec: sorted(tuple(r["direct"][spec]["index"].shape) for r in runs["ranks"]) for spec in T.DIRECT_2D}
    assert shapes["5x4x3 S2,S2"] == [(5, 4, 0), (5, 4, 1), (5, 4, 1), (5, 4, 1)]  # uneven, one empty
    assert shapes["5x4x3 S0,S0"] == [(1, 4, 3), (1, 4, 3), (1, 4, 3), (2, 4, 3)]


def test_spawned_runs_took(runs, capsys):
    # Not a timing assertion: reports the cost of the spawned world (pytest -s shows it).
    with capsys.disabled():
        print(f"\n[test_mesh_2d] world of {WORLD}: {runs['seconds']:.1f} s")
    assert runs["seconds"] < SPAWN_TIMEOUT_S
