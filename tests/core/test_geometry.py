"""The DTensor geometry (``syre._dist``) against DTensor's own split, without processes.

The oracle is torch's: a tensor of global indices split placement by placement with each
placement's ``_split_tensor`` (what ``distribute_tensor`` does on every rank), from the first mesh
dimension to the last. ``place`` must name exactly the elements that split leaves on every mesh
coordinate, in the same order, and say "contiguous" only when they are one slice.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

if not torch.distributed.is_available():
    pytest.skip("needs torch.distributed", allow_module_level=True)
pytest.importorskip("torch.distributed.tensor")

from torch.distributed.tensor import Partial, Replicate, Shard  # noqa: E402
from torch.distributed.tensor.placement_types import _StridedShard  # noqa: E402

from syre import _dist, anchors as A  # noqa: E402


def torch_split(shape, mesh_shape, coord, placements) -> torch.Tensor:
    """The global flat indices a rank at ``coord`` holds, split by DTensor's placements themselves."""
    t = torch.arange(math.prod(shape), dtype=torch.int64).view(shape)
    for i, pl in enumerate(placements):
        if isinstance(pl, Replicate):
            continue
        shards, _ = pl._split_tensor(t, mesh_shape[i], with_padding=False, contiguous=True)
        t = shards[coord[i]]
    return t


def check(shape, mesh_shape, placements):
    seen = torch.zeros(math.prod(shape), dtype=torch.int64)
    replicas = math.prod(k for k, pl in zip(mesh_shape, placements) if isinstance(pl, Replicate))
    for coord in itertools.product(*(range(k) for k in mesh_shape)):
        want = torch_split(shape, mesh_shape, coord, placements)
        geo = _dist.place("w", shape, mesh_shape, coord, placements)
        assert geo.local_shape == tuple(want.shape), (shape, mesh_shape, placements, coord)
        got = geo.indices(0, geo.numel).view(geo.local_shape)
        assert torch.equal(got, want), (shape, mesh_shape, placements, coord)
        # Blocks of the local shard give the same indices as the whole.
        if geo.numel > 2:
            cut = geo.numel // 3
            assert torch.equal(torch.cat([geo.indices(0, cut), geo.indices(cut, geo.numel)]), want.reshape(-1))
        flat = geo.flat
        if flat is not None:
            assert torch.equal(torch.arange(*flat), want.reshape(-1)) or geo.numel == 0
        else:
            assert not torch.equal(want.reshape(-1), torch.arange(int(want.min()), int(want.min()) + want.numel()))
        seen.index_add_(0, want.reshape(-1), torch.ones(want.numel(), dtype=torch.int64))
    assert bool((seen == replicas).all())  # every element is held exactly once per replica


SHAPES = [(5, 3), (3, 7), (1, 4), (2, 3, 5), (7,), (4, 0)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("k", [2, 3, 4])
def test_one_mesh_dimension_every_shard_dim(shape, k):
    for d in range(len(shape)):
        check(shape, (k,), [Shard(d)])
    check(shape, (k,), [Replicate()])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("mesh_shape", [(2, 2), (2, 3), (3, 2)], ids=str)
def test_two_mesh_dimensions_every_pair_of_placements(shape, mesh_shape):
    options = [Replicate()] + [Shard(d) for d in range(len(shape))]
    for placements in itertools.product(options, repeat=2):
        check(shape, mesh_shape, list(placements))  # includes two mesh dims on one tensor dim


def test_strided_shard_of_fsdp2_over_tensor_parallelism():
    # What fully_shard builds over a ColwiseParallel weight: (_StridedShard(0, sf=tp), Shard(0)).
    for rows, (dp, tp) in itertools.product([2, 4, 6, 8, 12], [(2, 2), (3, 2), (2, 3), (4, 2)]):
        if rows % tp == 0:
            check((rows, 3), (dp, tp), [_StridedShard(0, split_factor=tp), Shard(0)])
    check((4, 6), (2, 3), [_StridedShard(1, split_factor=3), Shard(1)])
    check((2, 6), (4, 3), [_StridedShard(1, split_factor=3), Shard(1)])  # empty FSDP shards
    check((4, 6), (2, 2), [Shard(1), _StridedShard(0, split_factor=2)])


def test_negative_shard_dim_is_the_dimension_from_the_end():
    got = _dist.place("w", (3, 5), (2,), (1,), [Shard(-1)])
    assert got == _dist.place("w", (3, 5), (2,), (1,), [Shard(1)])


def test_replicate_and_shard0_stay_one_contiguous_slice():
    # The fast path (the range generator) is kept for FSDP2 and HSDP layouts.
    assert _dist.place("w", (5, 3), (2,), (0,), [Shard(0)]).flat == (0, 9)
    assert _dist.place("w", (5, 3), (2,), (1,), [Shard(0)]).flat == (9, 15)
    assert _dist.place("w", (5, 3), (2, 2), (1, 1), [Replicate(), Shard(0)]).flat == (9, 15)
    assert _dist.place("w", (5, 3), (2, 2), (1, 0), [Shard(0), Shard(0)]).flat == (9, 12)
    assert _dist.place("w", (1, 6), (2,), (1,), [Shard(1)]).flat == (3, 6)  # one row: still a slice
    assert _dist.place("w", (4, 6), (2,), (1,), [Shard(1)]).flat is None
    assert _dist.place("w", (1, 3), (2,), (1,), [Shard(0)]).flat == (0, 0)  # the empty shard


def test_partial_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"'w'.*Partial.*pending sum.*redistribute.*exclude") as err:
        _dist.place("w", (4, 4), (2,), (0,), [Partial()])
    assert "Replicate or Shard" in str(err.value)


def test_uneven_strided_shard_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"'w'.*_StridedShard.*dim 0 of length 5.*2 pieces unevenly.*multiple of 2"):
        _dist.place("w", (5, 3), (2, 2), (0, 0), [_StridedShard(0, split_factor=2), Shard(0)])


def test_unknown_placement_is_refused():
    class Odd(Replicate.__mro__[1]):  # a Placement that is neither Replicate, Shard nor Partial
        def is_partial(self):
            return False

    with pytest.raises(ValueError, match=r"'w'.*syre places Replicate, Shard\(d\)"):
        _dist.place("w", (4, 4), (2,), (0,), [Odd()])


# ----------------------------------------------------------------------------- anchor_at
def test_anchor_at_equals_the_slice_generator_elementwise(monkeypatch):
    monkeypatch.setattr(A, "_CHUNK", 7)  # many chunk boundaries in both generators
    full_t, full_x = A.anchor_slice(3, "w", 0, 300, sigma0=0.7, d_spread=0.4)
    idx = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:120].view(4, 30)
    t, x = A.anchor_at(3, "w", idx, sigma0=0.7, d_spread=0.4)
    assert t.shape == x.shape == (4, 30)
    assert torch.equal(t, full_t[idx]) and torch.equal(x, full_x[idx])


def test_anchor_at_equals_anchor_in_float64_and_at_high_indices():
    theta0, d = A.anchor(5, "layer.weight", (6, 7), sigma0=0.3, d_spread=0.2, dtype=torch.float64)
    geo = _dist.place("layer.weight", (6, 7), (2, 3), (1, 2), [Shard(1), Shard(0)])
    idx = geo.indices(0, geo.numel).view(geo.local_shape)
    t, x = A.anchor_at(5, "layer.weight", idx, sigma0=0.3, d_spread=0.2, dtype=torch.float64)
    assert torch.equal(t, theta0.reshape(-1)[idx]) and torch.equal(1.0 + x, d.reshape(-1)[idx])
    hi = torch.tensor([2**32 + 5, 2**40 + 1])
    want = [A.anchor_slice(0, "w", int(i), int(i) + 1, sigma0=1.0)[0] for i in hi]
    assert torch.equal(A.anchor_at(0, "w", hi, sigma0=1.0)[0], torch.cat(want))


def test_anchor_at_off_and_errors():
    idx = torch.arange(4)
    assert A.anchor_at(0, "w", idx, sigma0=0.0) == (None, None)
    t, x = A.anchor_at(0, "w", idx, sigma0=0.0, d_spread=0.1)
    assert t is None and x.shape == (4,)
    empty = A.anchor_at(0, "w", torch.zeros(0, dtype=torch.int64), sigma0=1.0)[0]
    assert empty.shape == (0,)
    with pytest.raises(TypeError, match="int64"):
        A.anchor_at(0, "w", idx.int(), sigma0=1.0)
    with pytest.raises(ValueError, match="-1"):
        A.anchor_at(0, "w", torch.tensor([3, -1]), sigma0=1.0)
    with pytest.raises(ValueError, match="sigma0"):
        A.anchor_at(0, "w", idx, sigma0=-1.0)
