"""Where the anchors live: kept (``"stored"``) or regenerated at every step (``"seeded"``).

Both stores answer the same questions for a plan entry -- its anchor pair ``(theta0, xi)``
shaped like the tensor the decay writes to (the local shard of a DTensor), the full anchor, the
decay of a list of entries -- so ``mode`` is decided once, here. The values are the same in both
(the generator is a pure function of seed, name and element index); only memory and time differ.

An anchor follows its parameter: its dtype is fp32 (fp64 for fp64 parameters) and its device
the parameter's; when the model moves (``model.double()``, ``model.to(device)``) or a checkpoint
changes the seed or a sigma0, ``sync`` regenerates what no longer matches.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch

from . import anchors as A
from . import functional as F
from ._plan import Entry

__all__ = ["AnchorStore", "SeededStore", "StoredStore", "anchor_dtype", "make_store"]

Pair = Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]
_INDEX_BLOCK = 1 << 18  # elements per block of a shard generated at its indices (bounds the int64 scratch)


def anchor_dtype(p: torch.Tensor) -> torch.dtype:
    """fp64 for fp64 parameters, fp32 otherwise (the decay arithmetic of fp16/bf16 stays in fp32)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class AnchorStore:
    """The interface (see the module docstring); ``seed`` and ``d_spread`` are set by the owner."""

    mode = ""

    def __init__(self, seed: int, d_spread: float):
        self.seed = seed
        self.d_spread = d_spread

    def configure(self, seed: int, d_spread: float) -> None:
        self.seed, self.d_spread = seed, d_spread

    def off(self, e: Entry) -> bool:
        """The anchor is the origin with D = I: the decay is plain weight decay."""
        return e.sigma0 == 0.0 and self.d_spread == 0.0

    def generate(self, e: Entry) -> Pair:
        """``(theta0, xi)`` shaped like ``e.local()``: the local shard's slice for a DTensor."""
        if not e.covered or self.off(e):
            return None, None
        if e.shard is None:
            return A.anchor_like(self.seed, e.name, e.param, sigma0=e.sigma0, d_spread=self.d_spread)
        local = e.local()
        if e.shard.flat is not None:  # Replicate / Shard(0): one slice of the flattened parameter
            start, stop = e.shard.flat
            out = A.anchor_slice(self.seed, e.name, start, stop, sigma0=e.sigma0, d_spread=self.d_spread,
                                 device=local.device, dtype=anchor_dtype(local))
        else:  # tensor parallelism, 2-D meshes: the product of per-dimension index ranges
            out = self._indexed(e, anchor_dtype(local), local.device)
        return tuple(None if t is None else torch.empty_like(local, dtype=t.dtype).copy_(t.view(local.shape)) for t in out)

    def _indexed_blocks(self, e: Entry, dtype: torch.dtype, device):
        """Yield ``(lo, hi, theta0, xi)`` for blocks ``[lo, hi)`` of the local shard (local row-major
        positions), each generated at the block's global indices (``e.shard.indices``)."""
        n = e.shard.numel
        for lo in range(0, n, _INDEX_BLOCK):
            hi = min(lo + _INDEX_BLOCK, n)
            yield (lo, hi) + A.anchor_at(self.seed, e.name, e.shard.indices(lo, hi, device), sigma0=e.sigma0,
                                         d_spread=self.d_spread, dtype=dtype, device=device)

    def _indexed(self, e: Entry, dtype: torch.dtype, device) -> Pair:
        """Flat ``(theta0, xi)`` of the whole local shard, from ``_indexed_blocks``."""
        n = e.shard.numel
        theta0 = torch.empty(n, dtype=dtype, device=device) if e.sigma0 != 0.0 else None
        xi = torch.empty(n, dtype=dtype, device=device) if self.d_spread != 0.0 else None
        for lo, hi, t, x in self._indexed_blocks(e, dtype, device):
            if theta0 is not None:
                theta0[lo:hi] = t
            if xi is not None:
                xi[lo:hi] = x
        return theta0, xi

    def full(self, e: Entry, dtype: torch.dtype, device) -> Pair:
        """``(theta0, xi)`` of the full parameter, generated for this call (``Syre.anchor`` of a DTensor)."""
        if not e.covered or self.off(e):
            return None, None
        shape = e.param.shape
        out = A.anchor_slice(self.seed, e.name, 0, shape.numel(), sigma0=e.sigma0, d_spread=self.d_spread,
                             device=device, dtype=dtype)
        return tuple(None if t is None else t.view(shape) for t in out)

    # Overridden:
    def sync(self, entries: List[Entry]) -> None:
        """Make the store match the plan's entries (called after every plan rebuild or state load)."""

    def pair(self, e: Entry) -> Pair:
        raise NotImplementedError

    def decay(self, entries: List[Entry], weight: float, foreach: Optional[bool]) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        """Free everything held."""

    def nbytes(self) -> int:
        """Bytes held for anchors."""
        return 0


class StoredStore(AnchorStore):
    """theta0 (and xi) kept per covered parameter: 4 bytes per element (8 with AR), fp32."""

    mode = "stored"

    def __init__(self, seed: int, d_spread: float):
        super().__init__(seed, d_spread)
        self._anchors: Dict[str, Tuple[tuple, Pair]] = {}

    def _key(self, e: Entry) -> tuple:
        local = e.local()
        return (self.seed, self.d_spread, e.sigma0, e.shard, anchor_dtype(local), local.device,
                tuple(local.shape), tuple(local.stride()))

    def sync(self, entries: List[Entry]) -> None:
        names = {e.name for e in entries}
        for name in [n for n in self._anchors if n not in names]:
            del self._anchors[name]  # the parameter left the optimizer or the model
        todo = [e for e in entries if e.covered and self._anchors.get(e.name, ((),))[0] != self._key(e)]
        batched: Dict[tuple, List[Entry]] = defaultdict(list)
        for e in todo:
            local = e.local()
            if e.shard is None and local.is_contiguous() and type(local.data) is torch.Tensor and not self.off(e):
                batched[(anchor_dtype(local), local.device)].append(e)
            else:
                self._anchors[e.name] = (self._key(e), self.generate(e))
        for (dtype, device), group in batched.items():
            pairs = A.anchor_many(self.seed, [(e.name, e.param.numel(), e.sigma0) for e in group],
                                  d_spread=self.d_spread, device=device, dtype=dtype)
            for e, (t, x) in zip(group, pairs):
                shape = e.param.shape
                self._anchors[e.name] = (self._key(e), (None if t is None else t.view(shape), None if x is None else x.view(shape)))

    def pair(self, e: Entry) -> Pair:
        got = self._anchors.get(e.name)
        return (None, None) if got is None else got[1]

    def decay(self, entries: List[Entry], weight: float, foreach: Optional[bool]) -> None:
        pairs = [self.pair(e) for e in entries]
        F.decay_([e.local() for e in entries], [p[0] for p in pairs], [p[1] for p in pairs], weight=weight, foreach=foreach)

    def clear(self) -> None:
        self._anchors = {}

    def nbytes(self) -> int:
        seen, total = set(), 0
        for _, pair in self._anchors.values():
            for t in pair:
                if t is not None and t.untyped_storage().data_ptr() not in seen:
                    seen.add(t.untyped_storage().data_ptr())
                    total += t.untyped_storage().nbytes()
        return total


class SeededStore(AnchorStore):
    """Nothing kept per parameter: each anchor is regenerated block by block inside the step.

    The scratch is a few buffers of one block (2**18 elements). Each block gets the same
    elementwise operations as in stored mode, so both modes agree bitwise. A DTensor's local
    shard generates its own elements only (its slice, or its global indices under tensor
    parallelism); tensors with another layout or a tensor subclass take their whole anchor at once.
    """

    mode = "seeded"

    def pair(self, e: Entry) -> Pair:
        return self.generate(e)

    def decay(self, entries: List[Entry], weight: float, foreach: Optional[bool]) -> None:
        plain: List[torch.Tensor] = []
        for e in entries:
            local = e.local()
            if self.off(e):
                plain.append(local)  # the origin with D = I: AdamW's decay
            elif e.shard is not None and e.shard.flat is None and type(local.data) is torch.Tensor and local.is_contiguous():
                flat = local.detach().view(-1)  # a shard that is no slice: generated at its global indices
                for lo, hi, t, x in self._indexed_blocks(e, anchor_dtype(local), local.device):
                    F.decay_([flat[lo:hi]], [t], [x], weight=weight, foreach=False)
            elif type(local.data) is torch.Tensor and local.is_contiguous():
                start, stop = e.shard.flat if e.shard is not None else (0, local.numel())
                flat = local.detach().view(-1)
                for lo, hi, t, x in A._blocks(self.seed, e.name, start, stop, e.sigma0, self.d_spread,
                                              anchor_dtype(local), local.device):
                    F.decay_([flat[lo - start : hi - start]], [t], [x], weight=weight, foreach=False)
            else:
                t, x = self.generate(e)
                F.decay_([local], [t], [x], weight=weight, foreach=False)
        if plain:
            F.decay_(plain, [None] * len(plain), [None] * len(plain), weight=weight, foreach=foreach)


def make_store(mode: str, seed: int, d_spread: float) -> AnchorStore:
    return {"stored": StoredStore, "seeded": SeededStore}[mode](seed, d_spread)
