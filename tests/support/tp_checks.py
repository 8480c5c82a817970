"""Assertions shared by test_tensor_parallel.py and test_mesh_2d.py (over ``tp_worker.run_all``'s ``runs``).

A rank's result for parameter ``name`` is its local shard; ``index[name]`` (torch's own layout,
see ``tp_worker.local_indices``) says which global elements it holds, so the one-process value
of that shard is ``full.reshape(-1)[index[name]]``.
"""
from __future__ import annotations

from collections import defaultdict

import torch

ATOL, RTOL = 2e-6, 1e-5  # fp32: a distributed run vs one process (as in test_distributed.py)


def slice_of(full: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return full.reshape(-1)[index]


def assert_slices_equal(local: dict, full: dict, index: dict) -> None:
    assert sorted(local) == sorted(full)
    for n in full:
        assert local[n].shape == index[n].shape, n
        assert torch.equal(local[n], slice_of(full[n], index[n])), n


def assert_slices_close(local: dict, full: dict, index: dict) -> float:
    """``local`` equals the slices of ``full`` to ATOL/RTOL; returns the largest absolute gap."""
    assert sorted(local) == sorted(full)
    gap = 0.0
    for n in full:
        want = slice_of(full[n], index[n])
        torch.testing.assert_close(local[n], want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{n}: {m}")
        if want.numel():
            gap = max(gap, (local[n] - want).abs().max().item())
    return gap


def assert_anchors_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for n in want:
        assert torch.equal(got[n][0], want[n][0]) and torch.equal(got[n][1], want[n][1]), n


def assert_pure_decay_is_the_one_process_slice(runs: dict) -> None:
    """One pure decay of every shard, stored and seeded, is bitwise the one-process slice."""
    for r in runs["ranks"]:
        for mode in ("stored", "seeded"):
            assert_slices_equal(r["decay"][mode], runs["single"]["decay"], r["index"])


def training_gap(runs: dict) -> float:
    """Training (N and 2N steps) matches one process on every shard; the largest absolute gap."""
    gap = 0.0
    for r in runs["ranks"]:
        gap = max(gap, assert_slices_close(r["N"], runs["single"]["N"], r["index"]))
        gap = max(gap, assert_slices_close(r["2N"], runs["single"]["2N"], r["index"]))
    return gap


def assert_seeded_equals_stored(runs: dict, names) -> None:
    for r in runs["ranks"]:
        for n in names:
            assert torch.equal(r["seeded_N"][n], r["N"][n]), n


def assert_full_anchor_on_every_rank(runs: dict) -> None:
    for r in runs["ranks"]:
        assert_anchors_equal(r["anchors"], runs["single"]["anchors"])


def assert_resumes_in_one_process(runs: dict, names, seed: int) -> None:
    """The world's checkpoint resumed in one process: its seed, the full anchors, and the one-process run."""
    res = runs["resume_single"]
    assert res["seed"] == seed
    assert_anchors_equal(res["anchors"], runs["single"]["anchors"])
    for n in names:
        torch.testing.assert_close(res["2N"][n], runs["single"]["2N"][n], atol=ATOL, rtol=RTOL)


def assert_generates_only_its_shard(calls, index: dict, full_numel: dict, times: int) -> None:
    """For the parameters in ``index``: every generation names elements of this rank's shard only,
    and each element is generated ``times`` times (once at attach in stored mode, once a step in
    seeded mode)."""
    by_name = defaultdict(list)
    for name, idx in calls:
        if name in index and idx.numel():  # an empty shard may make an empty call
            by_name[name].append(idx)
    assert sorted(by_name) == sorted(n for n in index if index[n].numel()), sorted(by_name)
    for name, parts in by_name.items():
        mine = index[name].reshape(-1)
        got = torch.cat(parts)
        assert got.numel() == times * mine.numel(), (name, got.numel(), mine.numel())
        counts = torch.bincount(got, minlength=full_numel[name])
        want = torch.zeros(full_numel[name], dtype=torch.int64)
        want[mine] = times
        assert torch.equal(counts, want), name
        if mine.numel() < full_numel[name]:
            assert max(p.numel() for p in parts) < full_numel[name], name  # never the full anchor


def assert_direct_placements(ranks, specs) -> None:
    """The single DTensor parameters of ``tp_worker.direct_placements_run``: each rank's shard after
    one pure decay is bitwise the one-process decay's slice, in both modes; the shards tile the
    parameter (once per replica)."""
    import tp_worker as T

    for spec in specs:
        shape = T.direct_shape(spec)
        want = T.decay_once(T.holder(T.direct_value(shape)), "stored")["w"]
        held = torch.zeros(want.numel(), dtype=torch.int64)
        for r in ranks:
            row = r["direct"][spec]
            for mode in ("stored", "seeded"):
                assert torch.equal(row[mode], slice_of(want, row["index"])), (spec, mode)
            held.index_add_(0, row["index"].reshape(-1), torch.ones(row["index"].numel(), dtype=torch.int64))
        assert held.min() == held.max() > 0, spec  # every element, as often as any other
