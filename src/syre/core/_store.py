"""Where the anchors live: kept (``"stored"``) or regenerated at every step (``"seeded"``).

Both stores answer the same questions for a plan entry -- its anchor pair ``(theta0, xi)``
shaped like the tensor the decay writes to (the local shard of a DTensor), the full anchor, the
decay of a list of entries -- so ``mode`` is decided once, here. The values are the same in both
(the generator is a pure function of seed, name and element index); only memory and time differ.

An anchor follows its parameter: its dtype is fp32 (fp64 for fp64 parameters) and its device
the parameter's; when the model moves (``model.double()``, ``model.to(device)``) or a checkpoint
changes the seed or a sigma0, ``sync`` regenerates what no longer matches. The store keeps no copy
of the configuration: seed, d_spread, rounding, the anchor format and the step are read from the
attachment's ``syre.core._state.Runtime``.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch

from ..kernels import _seeded, functional
from ..rng import anchors
from ._plan import Entry

__all__ = ["AnchorStore", "SeededStore", "StoredStore", "anchor_dtype", "make_store"]

Pair = Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]
_INDEX_BLOCK = 1 << 18  # elements per block of a shard generated at its indices (bounds the int64 scratch)


def anchor_dtype(p: torch.Tensor) -> torch.dtype:
    """fp64 for fp64 parameters, fp32 otherwise (the decay arithmetic of fp16/bf16 stays in fp32)."""
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class AnchorStore:
    """The interface (see the module docstring). Seed, d_spread, rounding, the anchor format and the step
    are read from the attachment's ``Runtime`` (``syre.core._state``), never copied here."""

    mode = ""

    def __init__(self, runtime, target=None):
        self.runtime = runtime
        self.generation = 0  # counts sync() calls: what callers derived from the anchors is stale after one
        self.target = target  # syre.core._targets.Target; None: the random anchor

    @property
    def seed(self) -> int:
        return self.runtime.config.seed

    @property
    def d_spread(self) -> float:
        return self.runtime.config.d_spread

    @property
    def version(self) -> int:
        """The anchor format (``syre.anchors.FORMATS``)."""
        return self.runtime.version

    @property
    def rounding(self) -> str:
        return self.runtime.config.rounding

    @property
    def step(self) -> int:
        """The step whose stochastic-rounding bits the decay reads (the one under way)."""
        return self.runtime.step - 1

    @property
    def random(self) -> bool:
        return self.target is None or self.target.random

    def off(self, e: Entry) -> bool:
        """The anchor is the origin with D = I: the decay is plain weight decay."""
        return self.random and e.sigma0 == 0.0 and self.d_spread == 0.0

    def has_theta0(self, e: Entry) -> bool:
        """Whether ``pair(e)`` has a theta0 (the decay is toward a point other than the origin)."""
        return e.covered and not self.off(e) and (not self.random or e.sigma0 != 0.0)

    def rounds(self, e: Entry) -> bool:
        """Whether ``e``'s decayed values are rounded stochastically (fp16/bf16 storage)."""
        return self.rounding == "stochastic" and e.param.dtype in (torch.float16, torch.bfloat16)

    def generate(self, e: Entry) -> Pair:
        """``(theta0, xi)`` shaped like ``e.local()``: the local shard's slice for a DTensor."""
        if not e.covered or self.off(e):
            return None, None
        if not self.random:  # theta0 from the target; D from the anchor stream
            return self.target.theta0(e), self._draw(e, 0.0)[1]
        return self._draw(e, e.sigma0)

    def _draw(self, e: Entry, sigma0: float) -> Pair:
        """``(theta0, xi)`` from the anchor stream at ``sigma0`` (None where off), shaped like ``e.local()``."""
        if sigma0 == 0.0 and self.d_spread == 0.0:
            return None, None
        if e.shard is None:
            return anchors.anchor_like(self.seed, e.name, e.param, sigma0=sigma0, d_spread=self.d_spread, version=self.version)
        local = e.local()
        if e.shard.flat is not None:  # Replicate / Shard(0): one slice of the flattened parameter
            start, stop = e.shard.flat
            out = anchors.anchor_slice(self.seed, e.name, start, stop, sigma0=sigma0, d_spread=self.d_spread,
                                 device=local.device, dtype=anchor_dtype(local), version=self.version)
        else:  # tensor parallelism, 2-D meshes: the product of per-dimension index ranges
            out = self._indexed(e, anchor_dtype(local), local.device, sigma0)
        return tuple(None if t is None else torch.empty_like(local, dtype=t.dtype).copy_(t.view(local.shape)) for t in out)

    def _indexed_blocks(self, e: Entry, dtype: torch.dtype, device, sigma0: Optional[float] = None):
        """Yield ``(lo, hi, theta0, xi)`` for blocks ``[lo, hi)`` of the local shard (local row-major
        positions), each generated at the block's global indices (``e.shard.indices``)."""
        n = e.shard.numel
        sigma0 = e.sigma0 if sigma0 is None else sigma0
        for lo in range(0, n, _INDEX_BLOCK):
            hi = min(lo + _INDEX_BLOCK, n)
            yield (lo, hi) + anchors.anchor_at(self.seed, e.name, e.shard.indices(lo, hi, device), sigma0=sigma0,
                                         d_spread=self.d_spread, dtype=dtype, device=device, version=self.version)

    def _indexed(self, e: Entry, dtype: torch.dtype, device, sigma0: Optional[float] = None) -> Pair:
        """Flat ``(theta0, xi)`` of the whole local shard, from ``_indexed_blocks``."""
        n = e.shard.numel
        sigma0 = e.sigma0 if sigma0 is None else sigma0
        theta0 = torch.empty(n, dtype=dtype, device=device) if sigma0 != 0.0 else None
        xi = torch.empty(n, dtype=dtype, device=device) if self.d_spread != 0.0 else None
        for lo, hi, t, x in self._indexed_blocks(e, dtype, device, sigma0):
            if theta0 is not None:
                theta0[lo:hi] = t
            if xi is not None:
                xi[lo:hi] = x
        return theta0, xi

    def full(self, e: Entry, dtype: torch.dtype, device) -> Pair:
        """``(theta0, xi)`` of the full parameter, generated for this call (``Syre.anchor`` of a DTensor)."""
        if not e.covered or self.off(e):
            return None, None
        if not self.random:
            return self.target.full(e, dtype, device), self._full_xi(e, dtype, device)
        shape = e.param.shape
        out = anchors.anchor_slice(self.seed, e.name, 0, shape.numel(), sigma0=e.sigma0, d_spread=self.d_spread,
                             device=device, dtype=dtype, version=self.version)
        return tuple(None if t is None else t.view(shape) for t in out)

    def _full_xi(self, e: Entry, dtype, device) -> Optional[torch.Tensor]:
        if self.d_spread == 0.0:
            return None
        _, x = anchors.anchor_slice(self.seed, e.name, 0, e.param.shape.numel(), sigma0=0.0, d_spread=self.d_spread,
                              device=device, dtype=dtype, version=self.version)
        return x.view(e.param.shape)

    def buckets(self, entries: List[Entry], foreach: Optional[bool]):
        """The decay's calls for ``entries`` decided once (``functional.buckets``), or None (decided per step)."""
        return None

    def decay_rounded(self, entries: List[Entry], weight: float) -> None:
        """The decay of fp16/bf16 entries rounded stochastically: fp32 arithmetic, then ``syre.core._rounding``."""
        from ._rounding import stochastic_round_

        for e in entries:
            local = e.local()
            t, x = self.pair(e)
            work = local.detach().to(torch.float32 if t is None else t.dtype)
            functional.decay_([work], [t], [x], weight=weight, foreach=False)
            stochastic_round_(local, work, self.seed, e.name, self.step, e.shard)

    def split_rounded(self, entries: List[Entry]):
        """``(plain, rounded)``: the entries of the usual decay, and those rounded stochastically."""
        if self.rounding != "stochastic":
            return entries, []
        return [e for e in entries if not self.rounds(e)], [e for e in entries if self.rounds(e)]

    # Overridden:
    def sync(self, entries: List[Entry]) -> None:
        """Make the store match the plan's entries (called after every plan rebuild or state load)."""
        self.generation += 1

    def pair(self, e: Entry) -> Pair:
        raise NotImplementedError

    def decay(self, entries: List[Entry], weight: float, foreach: Optional[bool]) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        """Free everything held."""

    def _target_tensors(self):
        return [] if self.target is None else list(self.target.copies())

    def nbytes(self) -> int:
        """Bytes held for anchors (targets' copies included)."""
        return _unique_bytes(self._target_tensors())


class StoredStore(AnchorStore):
    """theta0 (and xi) kept per covered parameter: 4 bytes per element (8 with AR), fp32."""

    mode = "stored"

    def __init__(self, runtime, target=None):
        super().__init__(runtime, target)
        self._anchors: Dict[str, Tuple[tuple, Pair]] = {}

    def _key(self, e: Entry) -> tuple:
        local = e.local()
        return (self.version, self.seed, self.d_spread, e.sigma0, e.shard, anchor_dtype(local), local.device,
                tuple(local.shape), tuple(local.stride()), None if self.target is None else id(self.target))

    def sync(self, entries: List[Entry]) -> None:
        super().sync(entries)
        names = {e.name for e in entries}
        for name in [n for n in self._anchors if n not in names]:
            del self._anchors[name]  # the parameter left the optimizer or the model
        todo = [e for e in entries if e.covered and self._anchors.get(e.name, ((),))[0] != self._key(e)]
        batched: Dict[tuple, List[Entry]] = defaultdict(list)
        for e in todo:
            local = e.local()
            if self.random and e.shard is None and local.is_contiguous() and type(local.data) is torch.Tensor and not self.off(e):
                batched[(anchor_dtype(local), local.device)].append(e)
            else:
                self._anchors[e.name] = (self._key(e), self.generate(e))
        for (dtype, device), group in batched.items():
            pairs = anchors.anchor_many(self.seed, [(e.name, e.param.numel(), e.sigma0) for e in group],
                                  d_spread=self.d_spread, device=device, dtype=dtype, version=self.version)
            for e, (t, x) in zip(group, pairs):
                shape = e.param.shape
                self._anchors[e.name] = (self._key(e), (None if t is None else t.view(shape), None if x is None else x.view(shape)))

    def pair(self, e: Entry) -> Pair:
        got = self._anchors.get(e.name)
        return (None, None) if got is None else got[1]

    def buckets(self, entries: List[Entry], foreach: Optional[bool]):
        if any(self.rounds(e) for e in entries):
            return None  # stochastic rounding: per step, in decay()
        pairs = [self.pair(e) for e in entries]
        return functional.buckets([e.local() for e in entries], [p[0] for p in pairs], [p[1] for p in pairs], foreach)

    def decay(self, entries: List[Entry], weight: float, foreach: Optional[bool]) -> None:
        entries, rounded = self.split_rounded(entries)
        if rounded:
            self.decay_rounded(rounded, weight)
        pairs = [self.pair(e) for e in entries]
        functional.decay_([e.local() for e in entries], [p[0] for p in pairs], [p[1] for p in pairs], weight=weight, foreach=foreach)

    def clear(self) -> None:
        self._anchors = {}
        self.generation += 1

    def nbytes(self) -> int:
        return _unique_bytes([t for _, pair in self._anchors.values() for t in pair] + self._target_tensors())


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
        entries, rounded = self.split_rounded(entries)
        if rounded:
            self.decay_rounded(rounded, weight)
        plain: List[torch.Tensor] = []
        for e in entries:
            local = e.local()
            if not self.random:  # a target: theta0 recomputed (syre.init_) or copied, D from the stream
                t, x = self.generate(e)
                functional.decay_([local], [t], [x], weight=weight, foreach=False)
            elif self.off(e):
                plain.append(local)  # the origin with D = I: AdamW's decay
            elif e.shard is not None and e.shard.flat is None and type(local.data) is torch.Tensor and local.is_contiguous():
                flat = local.detach().view(-1)  # a shard that is no slice: generated at its global indices
                for lo, hi, t, x in self._indexed_blocks(e, anchor_dtype(local), local.device):
                    functional.decay_([flat[lo:hi]], [t], [x], weight=weight, foreach=False)
            elif type(local.data) is torch.Tensor and local.is_contiguous():
                start, stop = e.shard.flat if e.shard is not None else (0, local.numel())
                flat = local.detach().view(-1)
                if _triton_seeded(self.version, local, weight):
                    from ..kernels import _triton

                    _triton.seeded_decay(flat, anchors.stream_key(self.seed, e.name), start, e.sigma0, self.d_spread, weight)
                    continue
                if self.version == 2 and local.device.type == "cpu" and _seeded.seeded_decay(
                        flat, anchors.stream_key(self.seed, e.name), start, e.sigma0, self.d_spread, weight):
                    continue  # one compiled pass (the same bits as the blocks below)
                for lo, hi, t, x in anchors._blocks(self.seed, e.name, start, stop, e.sigma0, self.d_spread,
                                              anchor_dtype(local), local.device, self.version):
                    functional.decay_([flat[lo - start : hi - start]], [t], [x], weight=weight, foreach=False)
            else:
                t, x = self.generate(e)
                functional.decay_([local], [t], [x], weight=weight, foreach=False)
        if plain:
            functional.decay_(plain, [None] * len(plain), [None] * len(plain), weight=weight, foreach=foreach)


def _unique_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is not None and t.untyped_storage().data_ptr() not in seen:
            seen.add(t.untyped_storage().data_ptr())
            total += t.untyped_storage().nbytes()
    return total


def _triton_seeded(version: int, local: torch.Tensor, weight) -> bool:
    """Seeded decay in one Triton pass: CUDA fp32/fp64 tensors, format 2, a float weight."""
    if version != 2 or local.device.type != "cuda" or local.dtype not in (torch.float32, torch.float64) \
            or isinstance(weight, torch.Tensor):
        return False
    from ..kernels import _triton

    return _triton.available()


def make_store(runtime, target=None) -> AnchorStore:
    """The store of ``runtime.config.mode``; ``target`` a ``syre.core._targets.Target`` (None: the random anchor)."""
    return {"stored": StoredStore, "seeded": SeededStore}[runtime.config.mode](runtime, target)
