"""What the decay pulls toward: a random anchor, the initial weights, the pretrained weights, or given tensors.

``attach(..., target=...)`` chooses the point ``theta0`` of ``p <- p - lr * gamma * D * (p - theta0)``;
``D`` (AR's spread, ``d_spread``) applies to every target and is always drawn from the anchor
stream. The family of published methods this covers is in docs/guide.md ("One decay, many
targets").

* ``"random"`` (the default): syre's fixed random anchor, ``N(0, sigma0^2)`` from the anchor stream.
* ``"init"``: the initial weights (L2-Init, "regenerative regularisation"). When the model was
  initialised by ``syre.init_`` and still holds those weights, they are recomputed from its seed
  and scheme: nothing is stored in ``mode="seeded"``. Otherwise the weights when a parameter is
  first covered are copied (4 bytes per element).
* ``"pretrained"``: the weights when a parameter is first covered, copied once (L2-SP and
  fine-tuning regularisers).
* a mapping ``name -> tensor``: those tensors, copied (fp32) at attach, every one it names (frozen
  parameters too, so a tensor the caller changes later changes nothing), one per covered parameter.

A copied target cannot be recomputed from a seed: a checkpoint records its checksum, and
resuming requires attaching to the same target (for ``"pretrained"``: attach after loading the
pretrained weights and before loading the training checkpoint, or pass the pretrained weights as
a mapping); a different one is refused. A saved ``"init"`` or ``"pretrained"`` target resumes from a
mapping of the run's starting weights (what a framework callback needs: it attaches after the
framework restored the trained weights): the mapping's tensors for the saved parameters must give
the saved checksum (or, for ``syre.init_``'s stream, its values), and later checkpoints record the
saved kind again.
"""
from __future__ import annotations

import hashlib
from typing import Any, Dict, Mapping, Optional

import torch

from ._plan import Entry

__all__ = ["KINDS", "Target", "make_target"]

KINDS = ("random", "init", "pretrained", "mapping")


def _local(p: torch.Tensor) -> torch.Tensor:
    from .. import _dist

    return _dist.local_tensor(p)


def _anchor_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class Target:
    """The point the decay pulls each parameter toward (see the module docstring)."""

    def __init__(self, kind: str, *, record=None, mapping: Optional[Mapping[str, torch.Tensor]] = None, infos=None):
        self.kind = kind
        self.record = record  # syre.init.InitRecord: the initial weights are recomputed from it
        self._mapping = mapping
        self._infos = infos or []
        self._copies: Dict[str, torch.Tensor] = {}
        self._checksum: Optional[str] = None
        #: The kind checkpoints record: a mapping that resumed a saved 'init' / 'pretrained' target records that
        #: kind again, so the run can be resumed either way.
        self._saved_as = kind

    @property
    def random(self) -> bool:
        return self.kind == "random"

    @property
    def regenerable(self) -> bool:
        """Whether theta0 is recomputed from a seed (nothing stored in seeded mode)."""
        return self.kind == "random" or self.record is not None

    def describe(self) -> str:
        if self.kind == "random":
            return "random (syre's anchor)"
        if self.record is not None:
            return (f"init (recomputed from syre.init_(seed={self.record.seed}, scheme={self.record.scheme!r}); nothing "
                    "stored in seeded mode)")
        what = {"init": "the weights when first covered", "pretrained": "the weights when first covered",
                "mapping": "the given tensors"}[self.kind]
        return f"{self.kind} ({what}, a stored fp32 copy: 4 bytes per element)"

    # ------------------------------------------------------------------ values
    def take(self, e: Entry) -> torch.Tensor:
        """The copied target of ``e`` (taken now if this is its first covering)."""
        return self._copy(e)

    def _copy(self, e: Entry) -> torch.Tensor:
        got = self._copies.get(e.name)
        local = e.local()
        if got is None:
            src = local if self.kind != "mapping" else self._mapping[e.name]
            if self.kind == "mapping" and e.shard is not None:
                raise ValueError(f"target mapping for {e.name!r}: a sharded (DTensor) parameter takes its target as "
                                 "target='pretrained' (copied from the shard) rather than a full tensor")
            got = src.detach().to(device=local.device, dtype=_anchor_dtype(local), copy=True)
            self._copies[e.name] = got
            self._checksum = None
        return got

    def theta0(self, e: Entry) -> torch.Tensor:
        """theta0 shaped like ``e.local()`` (anchor dtype, its device)."""
        local = e.local()
        if self.record is not None:
            from ..forms.init import _values_for

            values = _values_for(e.info, self._infos, self.record.seed, self.record.scheme, 0)
            return values.to(device=local.device, dtype=_anchor_dtype(local))
        got = self._copy(e)
        return got.to(device=local.device, dtype=_anchor_dtype(local))

    def full(self, e: Entry, dtype, device) -> torch.Tensor:
        """theta0 of the full parameter (``Syre.anchor`` of a DTensor): recomputed, or refused for a copy."""
        if self.record is None:
            raise ValueError(f"Parameter {e.name!r} is sharded and its {self.kind!r} target is a copy of the local shard: "
                             "the full target is on no single rank (use the shards, or target='init' after syre.init_)")
        from ..forms.init import init_values

        idx = torch.arange(e.param.shape.numel(), dtype=torch.int64, device=device)
        return init_values(e.info, idx, seed=self.record.seed, scheme=self.record.scheme, dtype=dtype).view(e.param.shape)

    def copies(self):
        return self._copies.values()

    def scale_of(self, info) -> float:
        """The RMS of ``info``'s target (reported as its sigma0: the anchor's size), without copying anything."""
        from .. import _dist

        if self.record is not None:
            from ..forms.init import _values_for

            t = _values_for(info, self._infos, self.record.seed, self.record.scheme, 0)
        elif self.kind == "mapping":
            t = self._mapping[info.name]
        else:
            t = _dist.local_tensor(info.param)
        return _rms(t, f"Invalid target {self.kind!r}: parameter {info.name!r}")

    # ------------------------------------------------------------------ checkpoints
    def checksum(self, names=None) -> str:
        """blake2b of the copied targets (name, shape, fp32 bytes), for a checkpoint to check on resume.

        ``names``: only those copies (a mapping's tensors checked against a saved target that covered ``names``)."""
        if names is not None:
            return _checksum({n: self._copies[n] for n in names if n in self._copies})
        if self._checksum is None:
            self._checksum = _checksum(self._copies)
        return self._checksum

    def state(self) -> Optional[Dict[str, Any]]:
        """What a checkpoint records of the target (None for the default, keeping the state unchanged)."""
        if self.kind == "random":
            return None
        if self.record is not None:
            return {"kind": self._saved_as, "init_seed": self.record.seed, "init_scheme": self.record.scheme}
        return {"kind": self._saved_as, "checksum": self.checksum()}

    def check(self, saved: Optional[Dict[str, Any]], names=()) -> None:
        """Refuse a saved target that is not this one (before anything is assigned).

        ``names``: the parameters the saved state covered. A saved ``'init'`` or ``'pretrained'`` target resumes
        from a mapping that holds the same tensors for them (a framework callback attaches after the framework
        restored the trained weights, so ``'pretrained'`` would copy those): equal checksum, or for ``syre.init_``'s
        stream, equal to its values."""
        saved_kind = (saved or {}).get("kind", "random")
        if self.kind == "mapping" and saved_kind in ("init", "pretrained"):
            return self._check_mapping(saved, sorted(names))
        mine = self.state()
        if saved_kind == self.kind == "init" and "init_seed" in saved and self.record is None:
            return  # the checkpoint names the init_ stream: adopted (recomputed, the copy dropped)
        if saved_kind == self.kind == "init" and "checksum" in saved and self.record is not None:
            raise ValueError(
                "syre state does not match this attachment; nothing was changed. It was saved with target 'init' as a "
                "stored copy of the initial weights, this Syre recomputes them from syre.init_(seed="
                f"{self.record.seed}). Attach to a model that syre.init_ did not initialise, or pass the run's initial "
                "weights as target={name: tensor}"
            )
        if saved_kind != self.kind:
            raise ValueError(
                f"syre state does not match this attachment; nothing was changed. It was saved with target "
                f"{(saved or {}).get('kind', 'random')!r}, this Syre decays toward target {self.kind!r}"
            )
        if mine is not None and "checksum" in mine and saved.get("checksum") != mine["checksum"]:
            raise ValueError(
                f"syre state does not match this attachment; nothing was changed. Its {self.kind!r} target differs from "
                "the tensors this Syre copied (checksum). Attach after loading the weights the run started from and "
                "before loading the training checkpoint, or pass those weights as target={name: tensor}"
            )

    def _check_mapping(self, saved: Dict[str, Any], names) -> None:
        kind, missing = saved["kind"], [n for n in names if n not in self._copies]
        what = (f"syre state does not match this attachment; nothing was changed. It was saved with target {kind!r}, "
                "this Syre decays toward the target mapping, ")
        if missing:
            raise ValueError(what + f"which has no tensor for the saved parameters {missing}. Give one for each")
        if "checksum" in saved:
            if self.checksum(names) != saved["checksum"]:
                raise ValueError(what + f"whose tensors differ from the saved {kind!r} target (checksum over {names}). "
                                 f"Pass the weights the run started from (the {kind!r} weights of the saved run)")
            return
        from ..forms.init import _values_for

        infos = {i.name: i for i in self._infos}
        for n in names:
            want = _values_for(infos[n], self._infos, int(saved["init_seed"]), str(saved["init_scheme"]), 0)
            if not torch.equal(self._copies[n].cpu(), want.to(self._copies[n].dtype).cpu()):
                raise ValueError(what + f"whose tensor for {n!r} is not the value syre.init_(seed={saved['init_seed']}, "
                                 f"scheme={saved['init_scheme']!r}) gives it. Pass the initial weights (those of a "
                                 "fresh model after that syre.init_)")

    def adopt(self, saved: Optional[Dict[str, Any]]) -> None:
        """Take a checked saved target's recomputable parts (the init stream's seed and scheme)."""
        if saved and self.kind == "mapping" and saved.get("kind") in ("init", "pretrained"):
            self._saved_as = saved["kind"]  # the same tensors: later checkpoints record the run's target again
        if saved and "init_seed" in saved:
            from ..forms.init import InitRecord

            self.record = InitRecord(int(saved["init_seed"]), str(saved["init_scheme"]))
            self._copies.clear()
            self._checksum = None


def _checksum(copies: Dict[str, torch.Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16, person=b"syre-target-v1")
    for name in sorted(copies):
        t = copies[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode() + repr(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


#: Elements per block of ``_rms``: its float64 scratch is one block (8 MiB), never the whole tensor.
_RMS_BLOCK = 1 << 20


def _rms(t: torch.Tensor, what: str) -> float:
    """sqrt(mean(t^2)) accumulated in float64 block by block; a NaN or inf in ``t`` is a ``ValueError`` naming ``what``."""
    flat = t.detach().reshape(-1)
    if not flat.numel():
        return 0.0
    total = torch.zeros((), dtype=torch.float64, device=flat.device)
    for lo in range(0, flat.numel(), _RMS_BLOCK):
        total += flat[lo:lo + _RMS_BLOCK].to(torch.float64).square().sum()
    total = float(total)
    if total != total or total == float("inf"):
        raise ValueError(f"{what} holds NaN or inf; the decay would pull the weights toward it. Give finite values")
    return (total / flat.numel()) ** 0.5


def make_target(spec, model, infos) -> Target:
    """The ``Target`` for ``attach(..., target=spec)`` on ``model`` (checked; nothing is copied yet)."""
    from ..forms.init import _values_for, init_record

    if isinstance(spec, str):
        if spec not in KINDS[:3]:
            raise ValueError(f"Invalid target value: {spec!r}; expected 'random', 'init', 'pretrained' or a mapping name -> tensor")
        record = init_record(model) if spec == "init" else None
        if record is not None:
            # The record describes the weights only while the model still holds them.
            for info in infos:
                if info.param.requires_grad and not torch.equal(
                        _values_for(info, infos, record.seed, record.scheme, 0).to(info.param.dtype), info.param.detach()):
                    raise ValueError(
                        f"target='init': parameter {info.name!r} no longer holds the value syre.init_(seed={record.seed}, "
                        f"scheme={record.scheme!r}) gave it (it was trained or loaded since). Attach right after "
                        "syre.init_, or use target='pretrained' for the weights as they are now; resuming a run (a framework "
                        "restored the trained weights before attach), pass its initial weights as target={name: tensor} "
                        "(those of a fresh model after the same syre.init_)"
                    )
        return Target(spec, record=record, infos=infos)
    if isinstance(spec, Mapping):
        names = {i.name: i for i in infos}
        unknown = sorted(set(spec) - set(names))
        if unknown:
            raise ValueError(f"Invalid target mapping: {unknown} are not parameters of the model")
        for n, t in spec.items():
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(names[n].param.shape):
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"Invalid target mapping: {n!r} is {got}, the parameter is {tuple(names[n].param.shape)}")
        # Copied now, every tensor it names (frozen parameters too): the user's tensors may change after attach.
        copies = {}
        for n, t in spec.items():
            _rms(t, f"Invalid target mapping: {n!r}")
            p = names[n].param
            copies[n] = t.detach().to(device=_local(p).device, dtype=_anchor_dtype(p), copy=True)
        target = Target("mapping", mapping=copies, infos=infos)
        target._copies.update((n, c) for n, c in copies.items() if _local(names[n].param) is names[n].param)
        return target
    raise TypeError(f"Invalid target value: {spec!r}; expected 'random', 'init', 'pretrained' or a mapping name -> tensor")
