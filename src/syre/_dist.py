"""DTensor and FSDP geometry: where a parameter's local shard sits in the full parameter.

syre's anchors are elementwise functions of the global element index, so a rank that holds a
shard of a parameter generates the anchor of that shard alone. This module answers, for a
parameter, which flat range ``[start, stop)`` of the full parameter its local tensor is, and
refuses the layouts it cannot place (FSDP1's flattened parameters, placements other than
``Replicate`` and ``Shard(0)``).
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["dtensor_classes", "is_dtensor", "local_tensor", "refuse_fsdp1", "shard_range"]


@functools.lru_cache(maxsize=None)
def dtensor_classes():
    """``(DTensor, Shard, Replicate)``, or None where torch has no torch.distributed."""
    if not torch.distributed.is_available():
        return None
    try:
        from torch.distributed.tensor import DTensor, Replicate, Shard
    except ImportError:  # torch < 2.4
        try:
            from torch.distributed._tensor import DTensor, Replicate, Shard
        except ImportError:
            return None
    return DTensor, Shard, Replicate


def shard_range(name: str, p: torch.Tensor) -> Optional[Tuple[int, int]]:
    """``(start, stop)`` of DTensor ``p``'s local shard in its flattened full parameter.

    None when ``p`` is not a DTensor. Supports ``Replicate`` and ``Shard(0)`` placements on any
    mesh dimensions (FSDP2, HSDP), with ``torch.chunk`` splitting as DTensor does: uneven last
    shards and empty shards included. Other placements (``Shard(d)`` for ``d > 0``, as in tensor
    parallelism, ``Partial``, strided shards) are refused: their local shard is not a
    contiguous slice of the flattened parameter.
    """
    classes = dtensor_classes()
    if classes is None or not isinstance(p, classes[0]):
        return None
    _, Shard, Replicate = classes
    mesh, placements = p.device_mesh, p.placements
    shape = tuple(p.shape)
    coord = mesh.get_coordinate()
    local = p.to_local()
    if coord is None:  # this rank is outside the mesh: it holds nothing
        return 0, 0
    start, length = 0, shape[0] if shape else 1
    for dim, pl in enumerate(placements):
        if isinstance(pl, Replicate):
            continue
        if type(pl) is Shard and shape and pl.dim % len(shape) == 0:
            world, rank = mesh.size(dim), coord[dim]
            chunk = -(-length // world)
            lo = min(rank * chunk, length)
            hi = min(lo + chunk, length)
            start, length = start + lo, hi - lo
            continue
        raise ValueError(
            f"Parameter {name!r} is a DTensor with placements {tuple(placements)}; syre supports Replicate and "
            "Shard(0) placements (FSDP2's fully_shard, HSDP), whose local shard is a contiguous slice of the "
            "flattened parameter. Exclude this parameter (exclude=...) or shard it on dim 0"
        )
    row = math.prod(shape[1:])
    expected = (length,) + shape[1:] if shape else ()
    if tuple(local.shape) != expected:
        raise ValueError(
            f"Parameter {name!r}: the local shard has shape {tuple(local.shape)}, but rows [{start}, {start + length}) "
            f"of the full shape {shape} under placements {tuple(placements)} were expected; syre cannot place this "
            "shard in the full parameter"
        )
    return start * row, (start + length) * row


def refuse_fsdp1(model: nn.Module) -> None:
    if not torch.distributed.is_available():
        return
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:
        return
    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        raise ValueError(
            "The model contains FullyShardedDataParallel (FSDP1) modules; their flattened, resharded parameters "
            "hide each parameter's full shape and position, so syre cannot give them topology-independent anchors. "
            "Shard with FSDP2 instead (torch.distributed.fsdp.fully_shard), which syre supports"
        )


def is_dtensor(p: torch.Tensor) -> bool:
    classes = dtensor_classes()
    return classes is not None and isinstance(p, classes[0])


def local_tensor(p: torch.Tensor) -> torch.Tensor:
    """The tensor a rank decays in place: a DTensor's local shard, else ``p`` itself."""
    return p.to_local() if is_dtensor(p) else p
