"""syre under DeepSpeed ZeRO (stages 0 to 3): ``attach(engine, **attach_kwargs)``.

ZeRO hands the client optimizer flat fp32 partitions without names: each rank's optimizer holds,
per param group (ZeRO-3: per sub-group), one flat tensor that concatenates *fragments* of the
model's parameters, the last rank's ending in padding. syre's anchors are a pure function of
(seed, name, element index), so each rank decays its fragments toward the matching slices of the
one-process anchors (``syre.anchors.anchor_slice``) and nothing per element is communicated::

    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(...), config=ds_config)
    s = syre.integrations.deepspeed.attach(engine, sigma0="lecun", seed=0)   # every rank

Where a fragment comes from is read from DeepSpeed's own bookkeeping (private; hence the pinned
``TESTED`` versions):

* ZeRO-1 and 2: each parameter ``p`` of ``bit16_groups[i]`` that this rank holds part of has
  ``p._hp_mapping``; its ``lp_fragment_address`` (start, numel) is the fragment's place in the
  flattened parameter, its ``hp_fragment_address`` the place in ``single_partition_of_fp32_groups[i]``,
  the tensor the client optimizer steps for group ``i``;
* ZeRO-3: ``grad_position[get_param_id(p)]`` is ``(sub-group, offset, partition size)`` of ``p``'s
  partition in ``fp32_partitioned_groups_flat[sub-group]``; this rank's partition of ``p`` starts at
  ``rank * partition size`` of the flattened parameter (``rank`` in ``p.ds_process_group``) and
  holds ``min(partition size, numel - start)`` elements of it (the rest is padding);
* stage 0 (no ZeRO, fp32): the client optimizer holds the model's own parameters, and ``attach``
  is ``syre.attach(engine.optimizer, engine.module, ...)``.

The decay runs in a ``register_step_pre_hook`` of the client optimizer, which ZeRO calls once per
(sub-)group in ``engine.step()``: before the optimizer's update, with that group's lr and gamma,
as ``syre.attach`` does in one process (the same arithmetic, so a ZeRO run equals a one-process run
bitwise on the same global batch). A client step outside ``engine.step()`` (a synthetic step at
initialisation) decays nothing, nor does a step whose flat partition has no gradient.

syre's state rides in DeepSpeed's checkpoint inside the client optimizer's ``state_dict()`` (under
the key ``"syre"``, on every rank) and is restored, validated first, by ``engine.load_checkpoint``.

What this module does not support is refused, with the reason, before anything changes: other
DeepSpeed versions, pipeline parallelism, MoE, MiCS and hpZ, NVMe and partial optimizer offload,
fp16 / bf16 / torch-autocast training, elastic checkpoints, DeepSpeed's own optimizers (FusedAdam,
DeepSpeedCPUAdam; pass a ``torch.optim`` optimizer), ``target`` other than ``"random"`` and
``rounding="stochastic"`` at ZeRO stages 1-3.
"""
from __future__ import annotations

import warnings
import weakref
from typing import Any, Dict, List, Optional, Tuple

import torch

from .._live import attached
from ..config import Config
from ..core._groups import Groups
from ..core._state import OptimizerStateHooks, Runtime, build_state, validate_state
from ..core._syre import attach_syre
from ..kernels import functional
from ..rng import anchors
from ..select import check_rules_match, collect, is_selected
from ..sigma0 import resolve_sigma0_of
from ._deepspeed_checks import TESTED, check_engine, engine_of, inconsistent, refuse
from ._optional import require

__all__ = ["TESTED", "ZeroSyre", "attach", "attach_engine", "engine_of"]

#: client optimizer -> its ZeroSyre (one per optimizer: a second would decay every fragment twice).
_ATTACHED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

# A fragment: (name, global start, global stop, the fp32 view the decay writes to).
Fragment = Tuple[str, int, int, torch.Tensor]


class ZeroSyre(OptimizerStateHooks):
    """syre on a DeepSpeed ZeRO-1/2/3 engine (see the module docstring); made by ``attach``."""

    def __init__(self, engine, config: Config, stage: int):
        import torch.distributed as dist

        self._engine, self._stage = engine, stage
        self._rt = Runtime(config)  # the one configuration, the takeover, the anchor format and each sigma0
        self._removed = False
        zo = engine.optimizer
        self._client = client = zo.optimizer
        model = engine.module
        infos = collect(model)
        check_rules_match(list(infos.values()), config.include, config.exclude)
        # (lp parameter, group index, flat fp32 tensor, offset in it, global start, count) per local fragment
        if stage in (1, 2):
            raw, held = self._fragments_12(zo)
        else:
            raw, held = self._fragments_3(zo, dist)
        for p, _, flat, *_ in raw:
            if id(p) not in infos:
                raise inconsistent(f"a partitioned tensor of shape {tuple(flat.shape)} is not a parameter of engine.module")
        all_flats = zo.single_partition_of_fp32_groups if stage in (1, 2) else zo.fp32_partitioned_groups_flat
        flats = {id(f) for f in all_flats}
        for gi, group in enumerate(client.param_groups):
            if any(id(t) not in flats for t in group["params"]):
                raise inconsistent(f"param group {gi} of the client optimizer holds a tensor no fragment maps to")
        self._shapes = {infos[id(p)].name: tuple(getattr(p, "ds_shape", p.shape)) for p in held}
        trainable = [i for i in infos.values() if i.param.requires_grad]
        unheld = [i.name for i in trainable if i.name not in self._shapes]
        if unheld and config.strict:
            raise ValueError(f"{len(unheld)} trainable parameter(s) of the model are not held by the optimizer: "
                             f"{unheld[:8]}; add them, freeze them, or pass strict=False")
        covered = {infos[id(p)].name for p in held
                   if p.requires_grad and is_selected(infos[id(p)], config.include, config.exclude)}
        if trainable and not covered:
            raise ValueError("The include/exclude rules leave no trainable parameter for syre to decay; nothing was changed")
        self._rt.sigma0s.update(self._resolve_sigma0s([i for i in infos.values() if i.name in covered], stage))
        self._group_of = self._global_groups(infos)
        self._covered_groups = {self._group_of[n] for n in covered}
        self._groups = Groups(client, self._rt, covers=lambda gi: gi in self._covered_groups)
        self._groups.attach()  # checks, then takes over weight_decay (the first change)
        self._frags: Dict[int, List[Fragment]] = {}  # id(flat fp32 tensor) -> its covered fragments
        for p, gi, flat, offset, start, count in raw:
            name = infos[id(p)].name
            if name in covered and count:
                self._frags.setdefault(id(flat), []).append((name, start, start + count, flat.narrow(0, offset, count)))
        self._flats = {id(f): f for f in all_flats}  # a partition may hold no covered fragment (then no decay)
        self._anchors: Dict[tuple, tuple] = {}
        self._full = client.param_groups
        self._weights: Optional[list] = None
        self._weights_at = None
        self._pending = None
        self._before_load: list = []
        self._handles = [
            client.register_step_pre_hook(self._pre_step),
            client.register_state_dict_post_hook(self._optimizer_state_dict_hook),
            client.register_load_state_dict_pre_hook(self._optimizer_load_pre_hook),
            client.register_load_state_dict_post_hook(self._optimizer_load_post_hook),
        ]
        _ATTACHED[client] = self

    @property
    def _config(self) -> Config:
        return self._rt.config

    @property
    def _version(self) -> int:
        return self._rt.version

    @property
    def _sigma0s(self) -> Dict[str, float]:
        return self._rt.sigma0s

    # ------------------------------------------------------------------ the bookkeeping
    def _group_params(self, zo) -> List[list]:
        return zo.bit16_groups if self._stage in (1, 2) else zo.fp16_groups

    @staticmethod
    def _fragments_12(zo):
        raw, held = [], []
        if len(zo.bit16_groups) != len(zo.optimizer.param_groups):
            raise inconsistent("bit16_groups and the client's param groups differ in number")
        for gi, group in enumerate(zo.bit16_groups):
            flat = zo.single_partition_of_fp32_groups[gi]
            if not any(t is flat for t in zo.optimizer.param_groups[gi]["params"]):
                raise inconsistent(f"single_partition_of_fp32_groups[{gi}] is not what the client optimizer steps")
            for p in group:
                held.append(p)
                m = getattr(p, "_hp_mapping", None)
                if m is None:
                    continue  # no element of p on this rank
                lp, hp = m.lp_fragment_address, m.hp_fragment_address
                if lp.numel != hp.numel or lp.start + lp.numel > p.numel() or hp.start + hp.numel > flat.numel():
                    raise inconsistent(f"a fragment address {lp} / {hp} lies outside its tensors")
                raw.append((p, gi, flat, int(hp.start), int(lp.start), int(lp.numel)))
        return raw, held

    @staticmethod
    def _fragments_3(zo, dist):
        raw, held = [], []
        for sub, group in enumerate(zo.fp16_groups):
            flat = zo.fp32_partitioned_groups_flat[sub]
            gi = int(zo.sub_group_to_group_id[sub])
            end = 0
            for p in group:
                held.append(p)
                g, offset, size = zo.grad_position[zo.get_param_id(p)]
                if g != sub or size != p.ds_tensor.ds_numel or offset != end:
                    raise inconsistent(f"grad_position {zo.grad_position[zo.get_param_id(p)]} of sub-group {sub}")
                end = offset + size
                start = dist.get_rank(group=p.ds_process_group) * size
                raw.append((p, gi, flat, int(offset), int(start), int(max(0, min(size, p.ds_numel - start)))))
            if flat is None or end != flat.numel():
                raise inconsistent(f"fp32_partitioned_groups_flat[{sub}] is not the concatenation of its partitions")
        return raw, held

    def _global_groups(self, infos) -> Dict[str, int]:
        """name -> param group of every held parameter, the same on every rank (a rank may hold no fragment of one)."""
        zo = self._engine.optimizer
        out = {}
        for sub, group in enumerate(self._group_params(zo)):
            gi = sub if self._stage in (1, 2) else int(zo.sub_group_to_group_id[sub])
            for p in group:
                out[infos[id(p)].name] = gi
        return out

    def _resolve_sigma0s(self, infos, stage: int) -> Dict[str, float]:
        """sigma0 of each covered parameter from the full parameter (ZeRO-3 gathers one module at a time)."""
        out: Dict[str, float] = {}
        if stage != 3:
            for i in infos:
                out[i.name] = resolve_sigma0_of(self._config.sigma0, i)
            return out
        import deepspeed

        by_module: Dict[int, list] = {}
        for i in infos:
            by_module.setdefault(id(i.module), []).append(i)
        for rows in by_module.values():
            module = rows[0].module
            with deepspeed.zero.GatheredParameters(list(module.parameters(recurse=False))):
                for i in rows:
                    out[i.name] = resolve_sigma0_of(self._config.sigma0, i)
        return out

    # ------------------------------------------------------------------ anchors
    def _pair(self, name: str, start: int, stop: int, view: torch.Tensor):
        key = (name, start, stop)
        got = self._anchors.get(key)
        if got is None:
            got = anchors.anchor_slice(self._config.seed, name, start, stop, sigma0=self._sigma0s[name],
                                 d_spread=self._config.d_spread, device=view.device, dtype=view.dtype, version=self._version)
            if self._config.mode == "stored":
                self._anchors[key] = got
        return got

    # ------------------------------------------------------------------ the step
    def _stepped(self, optimizer) -> List[Tuple[int, torch.Tensor]]:
        """``(group index, flat tensor)`` the client steps now (ZeRO-1/2: one group; ZeRO-3: one sub-group)."""
        cur = optimizer.param_groups
        if cur is not self._full and not all(any(g is h for h in self._full) for g in cur):
            raise ValueError("syre: the client optimizer's param groups were replaced outside load_state_dict; "
                             "syre cannot tell which partitions it steps. Attach syre again to the engine")
        out = []
        for g in cur:
            gi = next(i for i, h in enumerate(self._full) if h is g)
            for t in g["params"]:
                if id(t) not in self._flats:
                    raise inconsistent(f"param group {gi} steps a tensor of shape {tuple(t.shape)} that no fragment maps to")
                out.append((gi, t))
        return out

    @torch.no_grad()
    def _pre_step(self, optimizer, args, kwargs):
        if not getattr(self._engine, "_running_engine_step", False):
            return None  # a step outside engine.step(): synthetic (initialisation), no decay
        stepped = self._stepped(optimizer)
        at = self._engine.global_steps
        if self._weights_at != at:  # once per engine step: read and validate every group
            cur = optimizer.param_groups
            optimizer.param_groups = self._full  # ZeRO-1/2 show the client one group at a time
            try:
                self._weights = self._groups.weights()
            finally:
                optimizer.param_groups = cur
            self._weights_at = at
        for gi, flat in stepped:
            w = self._weights[gi]
            frags = self._frags.get(id(flat))
            if not frags or flat.grad is None or (not isinstance(w, torch.Tensor) and w == 0.0):
                continue
            pairs = [self._pair(n, a, b, v) for n, a, b, v in frags]
            functional.decay_([v for *_, v in frags], [p[0] for p in pairs], [p[1] for p in pairs], weight=w,
                     foreach=self._config.foreach)
        return None

    # ------------------------------------------------------------------ public
    @property
    def config(self) -> Config:
        return self._config

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The client optimizer (the one whose step is hooked)."""
        return self._client

    def names(self) -> List[str]:
        """Canonical names of the covered parameters (the same on every rank)."""
        return [n for n in self._shapes if n in self._sigma0s]

    def group_gamma(self, group_index: int) -> float:
        return self._groups.gamma(group_index)

    def local_fragments(self) -> List[Tuple[str, int, int]]:
        """``(name, start, stop)`` of the flattened parameters' elements this rank decays."""
        return [(n, a, b) for frags in self._frags.values() for n, a, b, _ in frags]

    def anchor(self, name: str) -> anchors.Anchor:
        """``Anchor(theta0, d)`` of covered parameter ``name``: full shape, fp32, generated for this call."""
        if name not in self._sigma0s:
            raise KeyError(f"Unknown parameter name {name!r}; syre covers {self.names()[:10]}")
        shape = self._shapes[name]
        n = int(torch.Size(shape).numel())
        t, x = anchors.anchor_slice(self._config.seed, name, 0, n, sigma0=self._sigma0s[name],
                              d_spread=self._config.d_spread, version=self._version)
        theta0 = torch.zeros(shape) if t is None else t.view(shape)
        return anchors.Anchor(theta0, torch.ones(shape) if x is None else (1.0 + x).view(shape))

    def summary(self) -> str:
        """What is decayed: one line per parameter (shape, param group, sigma0, gamma), and this rank's share."""
        mine = sum(b - a for _, a, b in self.local_fragments())
        total = sum(int(torch.Size(self._shapes[n]).numel()) for n in self.names())
        lines = [f"syre on DeepSpeed ZeRO stage {self._stage}: seed {self._config.seed}, d_spread {self._config.d_spread}, "
                 f"mode {self._config.mode}; this rank decays {mine:,} of {total:,} covered elements"]
        for n in self.names():
            gi = self._group_of[n]
            lines.append(f"  {n}  {'x'.join(map(str, self._shapes[n]))}  group {gi}  sigma0 {self._sigma0s[n]:.4g}  "
                         f"gamma {self._groups.gamma(gi):.4g}")
        return "\n".join(lines)

    def state_dict(self) -> Dict[str, Any]:
        """The same state as ``Syre.state_dict()`` (global: equal on every rank)."""
        c = self._config
        params = [{"name": n, "shape": list(self._shapes[n]), "sigma0": float(self._sigma0s[n])} for n in self.names()]
        return build_state(seed=c.seed, gamma=c.gamma, d_spread=c.d_spread, mode=c.mode,
                           takeover=self._rt.takeover, params=params, version=self._version)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore seed, gamma, d_spread, the anchor format, the weight decay taken over and each sigma0."""
        loaded = self._validate(state_dict, None)
        rt = self._rt
        rt.config = rt.config.replace(seed=loaded.seed, d_spread=loaded.d_spread, gamma=loaded.gamma)
        rt.takeover = dict(loaded.takeover)
        rt.sigma0s.update({n: s for n, s in loaded.sigma0s.items() if n in rt.sigma0s})
        rt.version = loaded.version
        self._groups.adopt_zeros()  # the groups may have been loaded before (a universal checkpoint): their 0 is syre's
        self._anchors = {}

    def _validate(self, state_dict, n_groups):
        covered = {n: self._shapes[n] for n in self._sigma0s}
        loaded = validate_state(state_dict, covered=covered, idle={}, n_groups=n_groups)
        if loaded.target is not None or loaded.step is not None:
            raise ValueError("syre state does not match this attachment; nothing was changed. It was saved with a "
                             "target or stochastic rounding, which syre does not support under DeepSpeed ZeRO")
        return loaded

    def _after_optimizer_load(self, optimizer) -> None:
        self._full = optimizer.param_groups  # torch puts new group dicts in place
        self._weights_at = None

    def remove(self) -> None:
        """Detach the hooks, give back the weight decay taken over, and free the anchors."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._groups.restore()
        self._anchors = {}
        self._removed = True

    def __repr__(self) -> str:
        c = self._config
        return (f"ZeroSyre(stage={self._stage}, gamma={c.gamma}, seed={c.seed}, d_spread={c.d_spread}, "
                f"mode={c.mode!r}, covered={len(self._sigma0s)})")


def attach(engine, **attach_kwargs):
    """Attach syre to a ``deepspeed.DeepSpeedEngine`` (call it on every rank, after ``deepspeed.initialize``).

    Takes ``syre.attach``'s keyword arguments (validated by ``syre.config.Config``); the model is
    ``engine.module``, with the bare model's names. Stage 0 returns ``syre.attach(engine.optimizer,
    engine.module, ...)``; stages 1-3 a ``ZeroSyre`` whose hook decays this rank's fp32 master
    fragments (see the module docstring). Refusals (``ValueError``) happen before anything changes.
    """
    ds = require("deepspeed", "deepspeed", "syre.integrations.deepspeed")
    config = Config.from_kwargs(attach_kwargs, where="syre.integrations.deepspeed.attach")
    stage = check_engine(engine, ds, config)
    if stage == 0:
        if not isinstance(engine.optimizer, torch.optim.Optimizer):
            raise refuse(f"at stage 0 the engine's optimizer is {type(engine.optimizer).__name__}, not a torch optimizer",
                          "Pass a torch.optim optimizer to deepspeed.initialize")
        return attach_syre(engine.optimizer, engine.module, attach_kwargs)
    client = engine.optimizer.optimizer
    existing = _ATTACHED.get(client)
    if existing is not None and not existing._removed:
        if existing._config == config:
            return existing  # attach again with the same arguments (a re-run notebook cell): the one there
        raise ValueError(f"This engine already has syre attached ({existing!r}); a second one would decay every fragment "
                         "twice. Use the attached one, or call its .remove() first")
    if attached(client) is not None:
        raise ValueError("The engine's client optimizer already has a Syre from syre.attach(optimizer, model); "
                         "call its .remove() first")
    s = ZeroSyre(engine, config, stage)
    if engine.load_universal_checkpoint():
        warnings.warn(
            "This engine loads universal checkpoints (checkpoint.load_universal), which restore the optimizer's state "
            "without the client optimizer's load_state_dict, so syre's state does not come back with them: save it in "
            "client_state (engine.save_checkpoint(path, client_state={'syre': s.state_dict(), ...})) and restore it "
            "after loading (_, client = engine.load_checkpoint(path); s.load_state_dict(client['syre'])); "
            "see docs/distributed.md", UserWarning, stacklevel=2)
    return s


def attach_engine(engine, model, kwargs: Dict[str, Any]):
    """``syre.attach(engine, ...)``: a model, when given, must be the engine's own (or the engine)."""
    ds = require("deepspeed", "deepspeed", "syre.integrations.deepspeed")
    if isinstance(engine, ds.DeepSpeedEngine) and model is not None and model is not engine \
            and model is not getattr(engine, "module", None):
        raise ValueError("syre.attach(engine, model): the model must be engine.module (or left out: "
                         "syre.attach(engine, ...) decays engine.module's parameters)")
    return attach(engine, **kwargs)
