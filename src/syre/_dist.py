"""DTensor and FSDP geometry: which elements of the full parameter a rank's local shard holds.

syre's anchors are elementwise functions of the global element index, so a rank that holds a
shard of a parameter generates the anchor of that shard alone. This module answers, for a
DTensor parameter, which global indices its local tensor holds, as a ``Geometry``: per tensor
dimension, the ranges of global indices along that dimension, so that the local shard is their
product (row-major, in the local tensor's order). It follows DTensor's own split, placement by
placement from the first mesh dimension to the last: ``Shard(d)`` takes this rank's
``torch.chunk`` of what the earlier placements left of dim ``d`` (uneven last chunks and empty
chunks included, and several mesh dimensions may shard one tensor dimension); ``_StridedShard``
(what FSDP2 builds over a tensor-parallel ``Shard(0)``) takes this rank's chunk of each of its
``split_factor`` pieces; ``Replicate`` takes everything. It refuses what it cannot place: a
``Partial`` placement (the local tensor is a pending sum, not a part of the parameter), an
uneven ``_StridedShard``, unknown placements, and FSDP1's flattened parameters.

Under ``Replicate`` and ``Shard(0)`` placements (DDP-like replicas, FSDP2, HSDP) the local shard
is one contiguous slice of the flattened parameter (``Geometry.flat``), and the anchors come
from the range generator; other layouts (tensor parallelism's ``Shard(1)``, 2-D meshes) take
the index generator at ``Geometry.indices``. Both give the same values for the same index.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = ["Geometry", "dtensor_classes", "is_dtensor", "local_tensor", "place", "refuse_fsdp1", "shard_geometry"]

Ranges = Tuple[Tuple[int, int], ...]  # disjoint [start, stop) ranges, in the local tensor's order


@functools.lru_cache(maxsize=None)
def dtensor_classes():
    """``(DTensor, Shard, Replicate, _StridedShard or None)``, or None without torch.distributed."""
    if not torch.distributed.is_available():
        return None
    try:
        from torch.distributed.tensor import DTensor, Replicate, Shard
    except ImportError:  # torch < 2.4
        try:
            from torch.distributed._tensor import DTensor, Replicate, Shard
        except ImportError:
            return None
    try:
        from torch.distributed.tensor.placement_types import _StridedShard
    except ImportError:
        _StridedShard = None
    return DTensor, Shard, Replicate, _StridedShard


@dataclass(frozen=True)
class Geometry:
    """The global indices a local shard holds: the product of ``ranges[d]`` over the dimensions.

    ``shape`` is the full parameter's shape; ``ranges[d]`` the global indices along dimension
    ``d`` that the local tensor holds, in its order. ``flat`` is ``(start, stop)`` when the local
    shard is the contiguous slice ``[start, stop)`` of the flattened full parameter (always so
    under ``Replicate``/``Shard(0)``; ``(0, 0)`` for an empty shard), else None.
    """

    shape: Tuple[int, ...]
    ranges: Tuple[Ranges, ...]

    @property
    def local_shape(self) -> Tuple[int, ...]:
        return tuple(_length(r) for r in self.ranges)

    @property
    def numel(self) -> int:
        return math.prod(self.local_shape)

    @property
    def flat(self) -> Optional[Tuple[int, int]]:
        if self.numel == 0:
            return 0, 0
        k = len(self.shape) - 1
        while k >= 0 and self.ranges[k] == ((0, self.shape[k]),):
            k -= 1  # trailing dimensions held whole
        if k < 0:
            return 0, self.numel
        if len(self.ranges[k]) != 1 or any(_length(self.ranges[d]) != 1 for d in range(k)):
            return None
        stride = math.prod(self.shape[k + 1:])
        start = sum(self.ranges[d][0][0] * math.prod(self.shape[d + 1:]) for d in range(k + 1))
        return start, start + _length(self.ranges[k]) * stride

    def indices(self, lo: int, hi: int, device=None) -> torch.Tensor:
        """Global row-major (flat) indices of the local elements ``[lo, hi)`` (local row-major order), int64."""
        pos = torch.arange(lo, hi, dtype=torch.int64, device=device)
        flat = torch.zeros_like(pos)
        if pos.numel() == 0:
            return flat
        stride = 1
        for d in reversed(range(len(self.shape))):
            n = _length(self.ranges[d])
            along = torch.cat([torch.arange(a, b, dtype=torch.int64, device=device) for a, b in self.ranges[d]])
            flat += along[pos % n] * stride
            pos = pos // n
            stride *= self.shape[d]
        return flat


def _length(ranges: Ranges) -> int:
    return sum(b - a for a, b in ranges)


def _take(ranges: Ranges, lo: int, hi: int) -> Ranges:
    """Positions ``[lo, hi)`` of the concatenation of ``ranges``, as ranges."""
    out, pos = [], 0
    for a, b in ranges:
        s, e = max(a, a + lo - pos), min(b, a + hi - pos)
        if s < e:
            out.append((s, e))
        pos += b - a
    return tuple(out)


def _chunk(ranges: Ranges, k: int, c: int) -> Ranges:
    """Chunk ``c`` of ``torch.chunk`` into ``k`` pieces (size ``ceil(n / k)``; the last ones short or empty)."""
    n = _length(ranges)
    size = -(-n // k)
    return _take(ranges, min(c * size, n), min((c + 1) * size, n))


def place(name: str, shape: Sequence[int], mesh_shape: Sequence[int], coordinate: Sequence[int],
          placements: Sequence) -> Geometry:
    """The ``Geometry`` of the shard at mesh ``coordinate`` of a DTensor with these placements.

    Pure (no process group): the split DTensor applies, from the first mesh dimension to the last
    (see the module docstring). Raises ``ValueError`` for placements syre cannot place.
    """
    _, Shard, Replicate, Strided = dtensor_classes()
    shape = tuple(int(n) for n in shape)
    ranges = [((0, n),) if n else () for n in shape]
    for i, pl in enumerate(placements):
        k, c = int(mesh_shape[i]), int(coordinate[i])
        if isinstance(pl, Replicate):
            continue
        if getattr(pl, "is_partial", lambda: False)():
            raise ValueError(
                f"Parameter {name!r} is a DTensor with placements {tuple(placements)}: {pl} on mesh dimension {i} means the "
                "local tensors are terms of a pending sum, not parts of the parameter, so no local tensor has an anchor of "
                "its own. Redistribute it to Replicate or Shard placements before attaching syre (DTensor.redistribute), "
                "or exclude it (exclude=...)"
            )
        strided = Strided is not None and isinstance(pl, Strided)
        if not (strided or type(pl) is Shard) or not shape:
            raise ValueError(
                f"Parameter {name!r} is a DTensor with placements {tuple(placements)}; syre places Replicate, Shard(d) and "
                f"FSDP2's _StridedShard, not {pl!r} on mesh dimension {i}. Exclude this parameter (exclude=...)"
            )
        d = pl.dim % len(shape)
        if not strided:
            ranges[d] = _chunk(ranges[d], k, c)
            continue
        n, sf = _length(ranges[d]), int(pl.split_factor)
        if n % sf:
            raise ValueError(
                f"Parameter {name!r} is a DTensor with placements {tuple(placements)}: {pl!r} splits dim {d} of length {n} "
                f"into {sf} pieces unevenly. There DTensor's description of the shard and the layout FSDP2 builds over "
                "tensor parallelism (tensor-parallel chunks first, then FSDP's) can disagree, so syre cannot tell which "
                f"elements the local shard holds. Make dim {d} of {name!r} a multiple of {sf}, or exclude it (exclude=...)"
            )
        piece = n // sf
        ranges[d] = sum((_chunk(_take(ranges[d], j * piece, (j + 1) * piece), k, c) for j in range(sf)), ())
    return Geometry(shape, tuple(ranges))


def shard_geometry(name: str, p: torch.Tensor) -> Optional[Geometry]:
    """The ``Geometry`` of DTensor ``p``'s local shard (None when ``p`` is not a DTensor).

    Checked against the local tensor's shape, so a layout syre does not understand is an error,
    not a wrong anchor.
    """
    classes = dtensor_classes()
    if classes is None or not isinstance(p, classes[0]):
        return None
    shape, coord = tuple(p.shape), p.device_mesh.get_coordinate()
    if coord is None:  # this rank is outside the mesh: it holds nothing (a 1-D empty tensor)
        return Geometry(shape or (0,), tuple(() for _ in shape or (0,)))
    geo = place(name, shape, p.device_mesh.shape, coord, p.placements)
    local = tuple(p.to_local().shape)
    if local != geo.local_shape:
        raise ValueError(
            f"Parameter {name!r}: the local shard has shape {local}, but {geo.local_shape} was expected from the full "
            f"shape {shape} under placements {tuple(p.placements)} at mesh coordinate {tuple(coord)}; syre cannot place "
            "this shard in the full parameter"
        )
    return geo


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
