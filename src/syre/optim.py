"""Attach syre to any torch optimizer: decoupled decay toward a fixed random anchor.

``syre.attach(optimizer, model, gamma=...)`` registers hooks on the user's optimizer (it stays
the user's object, of the user's class) so that every ``optimizer.step()`` first applies, to
each covered parameter ``p`` that has a gradient::

    p <- p - lr * gamma * D * (p - theta0)

with ``lr`` the parameter group's current learning rate (schedulers apply) and ``gamma`` the
group's syre strength. This is the **decoupled** convention of ``torch.optim.AdamW``: with
``sigma0 = 0`` and ``d_spread = 0`` it is bitwise AdamW's ``p.mul_(1 - lr * weight_decay)``,
applied before the optimizer's own update as AdamW does. It equals the coupled (paper)
objective ``l(p) + gamma_c ||p - theta0||_D^2`` only for plain SGD without momentum, and there
with ``gamma = 2 * gamma_c`` (the gradient of ``gamma_c ||x||^2`` is ``2 gamma_c x``).

With ``optimizer.step(closure)`` (LBFGS, PyTorch Lightning's automatic optimization) the
gradients are computed inside the step: the decay then runs once, right after the first
evaluation of the closure and before the optimizer's own update.

A step the optimizer does not take (for example one that AMP's ``GradScaler`` skips on an
inf/NaN gradient) applies no decay: the hook runs inside ``optimizer.step()``. Parameters whose
``.grad`` is ``None`` at the step are left alone, as torch optimizers leave them.

Distributed training needs no communication: anchors depend on (seed, name, element index)
only. Under FSDP2 (``torch.distributed.fsdp.fully_shard``) a parameter is a DTensor sharded on
dim 0; each rank generates the anchor of its local shard alone, from the shard's offset in the
flattened full parameter, and decays ``p.to_local()`` in place. The older
``FullyShardedDataParallel`` is refused (its flat parameters hide the full shapes).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from . import functional as F
from ._version import __version__
from . import anchors as _anchors
from .anchors import (
    DEFAULT_D_SPREAD,
    DEFAULT_SIGMA0,
    Anchor,
    _check_seed,
    anchor_like,
    anchor_slice,
    check_d_spread,
    check_nonneg_float,
    UNIT_SIGMA0,
    check_sigma0_spec,
    parse_sigma0,
    resolve_sigma0,
)
from .select import ParamInfo, check_rule, collect, is_selected, unwrap_model

__all__ = ["Syre", "attach", "FORMAT_VERSION", "PrecisionWarning", "WeakPullWarning"]

#: Version of the format of ``Syre.state_dict()``; loading a newer one is refused.
FORMAT_VERSION = 1
MODES = ("stored", "seeded")
#: Param-group key that sets syre's gamma for that group (overrides ``attach(gamma=...)``).
GROUP_KEY = "syre_gamma"
#: ``coverage()`` reason of a lazily initialised parameter not yet materialised.
LAZY = "lazy (not yet initialised)"
#: Key under which syre's state rides along in ``optimizer.state_dict()``.
OPTIMIZER_STATE_KEY = "syre"
#: Low-precision parameters are checked for a stalled pull at the first step and every this many.
PRECISION_CHECK_EVERY = 100


_LOW_PRECISION = (torch.float16, torch.bfloat16)


class PrecisionWarning(UserWarning):
    """syre's decay cannot move most elements of fp16/bf16 parameters (issued once per attach)."""


#: The pull check: over the first PROBE_STEPS steps, each covered parameter's per-step pull toward
#: its anchor, ``lr * gamma * sigma0``, is compared with the RMS of the optimizer's own update of
#: that parameter, measured on at most PROBE_ELEMENTS of its elements.
PROBE_STEPS = 3
PROBE_ELEMENTS = 4096
#: Pull / update ratio below which syre's symmetry breaking is negligible (measured: docs/defaults.md).
WEAK_PULL_RATIO = 1e-4
#: Share of the covered elements that must be below WEAK_PULL_RATIO for the warning.
WEAK_PULL_SHARE = 0.5


class WeakPullWarning(UserWarning):
    """syre's pull toward the anchors is orders of magnitude below the optimizer's own updates."""


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside syre and torch (the ``optimizer.step()`` line)."""
    import os
    import sys

    skip = tuple(os.path.dirname(m.__file__) for m in (torch, sys.modules[__package__]))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level


class _Entry:
    """One parameter the optimizer holds, and what syre does with it."""

    __slots__ = ("name", "param", "group", "info", "sigma0", "covered", "reason", "theta0", "xi", "shard")

    def __init__(self, info: ParamInfo, group: int, covered: bool, reason: str, sigma0: float):
        self.name = info.name
        self.param = info.param
        self.info = info
        self.group = group
        self.covered = covered
        self.reason = reason
        self.sigma0 = sigma0
        self.theta0: Optional[torch.Tensor] = None
        self.xi: Optional[torch.Tensor] = None
        #: (start, stop) of a DTensor parameter's local shard in the flattened full parameter.
        self.shard: Optional[Tuple[int, int]] = None

    def local(self) -> torch.Tensor:
        """The tensor the decay writes to: the local shard of a DTensor, else the parameter."""
        return self.param if self.shard is None else self.param.to_local()


def _as_float(x) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def _is_decoupled(optimizer: torch.optim.Optimizer, group: dict) -> bool:
    if isinstance(optimizer, torch.optim.AdamW) or group.get("decoupled_weight_decay") is True:
        return True
    # Plain SGD without momentum: coupled and decoupled decay are the same update.
    return (
        type(optimizer) is torch.optim.SGD
        and not group.get("momentum", 0)
        and not group.get("nesterov", False)
    )


def _describe_sigma0(spec) -> str:
    """``lecun (1 x lecun init std; 1-D without fan-in: 0.01)``, ``0.1 (absolute)``, ``callable``."""
    if callable(spec):
        return "callable"
    if isinstance(spec, str):
        preset, scale = parse_sigma0(spec)
        return f"{spec} ({scale:g} x {preset} init std; 1-D without fan-in: {scale * UNIT_SIGMA0:g})"
    return f"{spec:g} (absolute)"


def _anchor_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def _dtensor_classes():
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


def _shard_range(name: str, p: torch.Tensor) -> Optional[Tuple[int, int]]:
    """``(start, stop)`` of DTensor ``p``'s local shard in its flattened full parameter.

    None when ``p`` is not a DTensor. Supports ``Replicate`` and ``Shard(0)`` placements on any
    mesh dimensions (FSDP2, HSDP), with ``torch.chunk`` splitting as DTensor does: uneven last
    shards and empty shards included. Other placements (``Shard(d)`` for ``d > 0``, as in tensor
    parallelism, ``Partial``, strided shards) are refused: their local shard is not a
    contiguous slice of the flattened parameter.
    """
    classes = _dtensor_classes()
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


def _refuse_fsdp1(model: nn.Module) -> None:
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


class Syre:
    """syre attached to a torch optimizer (see the module docstring for the update rule).

    Args:
        optimizer: any ``torch.optim.Optimizer`` (SGD, Adam, AdamW, RMSprop, Adagrad, or a class
            syre has never seen); it stays the user's object.
        model: the ``nn.Module`` whose parameters the optimizer holds (bare, or wrapped by DDP,
            DataParallel or ``torch.compile``: the anchors are the same).
        gamma: decoupled strength (AdamW's ``weight_decay`` convention: the pull per step is
            ``lr * gamma``). ``None`` takes over each group's ``weight_decay`` and sets it to 0
            there, exact for decoupled optimizers (AdamW, ``decoupled_weight_decay=True``) and
            plain SGD; refused for coupled ones (Adam, RMSprop, SGD with momentum, ...), whose
            ``weight_decay`` acts through the adaptive update and has no decoupled equal. A
            group key ``syre_gamma`` sets gamma for that group.
        sigma0: ``"lecun"`` (default: 1/sqrt(fan_in), the LeCun init std), ``"kaiming"``,
            ``"xavier"`` (those init stds), a preset with its own scale such as ``"lecun:0.3"``
            (0.3 x the init std), an absolute float, or a callable
            ``(name, param) -> float``. See ``syre.anchors.resolve_sigma0`` and docs/defaults.md.
        d_spread: eps of ``D_ii ~ Uniform(1 - eps, 1 + eps)``; 0 is basic syre.
        seed: the anchors' seed (an int in [0, 2**64)); never the global RNG.
        mode: ``"stored"`` keeps theta0 (and xi) in fp32 (or fp64 for fp64 parameters);
            ``"seeded"`` regenerates them at every step and keeps nothing per parameter. Both give
            identical parameters.
        include, exclude: rules choosing parameters (see ``syre.select``).
        strict: a trainable parameter of the model that the optimizer does not hold is an error
            (``False``: it is listed in ``summary()`` and left alone).
        foreach: ``None`` (multi-tensor kernels when there is more than one tensor), or a bool.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        *,
        gamma: Optional[float] = None,
        sigma0=DEFAULT_SIGMA0,
        d_spread: float = DEFAULT_D_SPREAD,
        seed: int = 0,
        mode: str = "stored",
        include=None,
        exclude=None,
        strict: bool = True,
        foreach: Optional[bool] = None,
    ):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Invalid optimizer: {type(optimizer).__name__}; expected a torch.optim.Optimizer")
        self._model = unwrap_model(model)
        self._gamma = None if gamma is None else check_nonneg_float("gamma", gamma)
        check_sigma0_spec(sigma0)
        self._d_spread = check_d_spread(d_spread)
        _check_seed(seed)
        if mode not in MODES:
            raise ValueError(f"Invalid mode value: {mode!r}; expected one of {MODES}")
        check_rule("include", include)
        check_rule("exclude", exclude)
        if not isinstance(strict, bool):
            raise TypeError(f"Invalid strict value: {strict!r}; expected a bool")
        if foreach is not None and not isinstance(foreach, bool):
            raise TypeError(f"Invalid foreach value: {foreach!r}; expected None or a bool")
        self._optimizer = optimizer
        self._sigma0_spec = sigma0
        self._seed = seed
        self._mode = mode
        self._include = include
        self._exclude = exclude
        self._strict = strict
        self._foreach = foreach
        self._entries: List[_Entry] = []
        self._by_group: List[List[_Entry]] = []
        self._unheld: List[str] = []
        self._takeover: Dict[int, float] = {}
        self._handles: list = []
        self._layout: tuple = ()
        self._pending: Optional[dict] = None
        self._steps = 0
        self._precision_warned = False
        # Everything is checked before anything is changed.
        entries, by_group, unheld = self._plan()
        takeover = self._plan_takeover(range(len(optimizer.param_groups)))
        self._apply_takeover(takeover)
        self._install(entries, by_group, unheld)
        self._handles.append(optimizer.register_step_pre_hook(self._pre_step))
        # The pull check: registered after _pre_step, so the snapshot follows syre's decay and the
        # difference at the post-step hook is the optimizer's own update.
        self._probe_steps = 0
        self._probe_snap: Dict[int, torch.Tensor] = {}
        self._probe_ratios: Dict[str, List[float]] = {}
        self._pull_ratio: Dict[str, float] = {}
        self._probe_handles = [
            optimizer.register_step_pre_hook(self._probe_pre),
            optimizer.register_step_post_hook(self._probe_post),
        ]
        if hasattr(optimizer, "register_state_dict_post_hook"):
            self._handles.append(optimizer.register_state_dict_post_hook(self._optimizer_state_dict_hook))
            self._handles.append(optimizer.register_load_state_dict_pre_hook(self._optimizer_load_pre_hook))
            self._handles.append(optimizer.register_load_state_dict_post_hook(self._optimizer_load_post_hook))

    # ------------------------------------------------------------------ planning
    def _plan(self):
        _refuse_fsdp1(self._model)
        infos = collect(self._model)
        opt = self._optimizer
        entries: List[_Entry] = []
        by_group: List[List[_Entry]] = []
        held = set()
        for gi, group in enumerate(opt.param_groups):
            if "lr" not in group:
                raise ValueError(f"Invalid param group {gi} of {type(opt).__name__}: it has no 'lr'; syre's decay is lr * gamma")
            _as_float(group["lr"])
            if GROUP_KEY in group:
                check_nonneg_float(f"param_groups[{gi}]['{GROUP_KEY}']", group[GROUP_KEY])
            row: List[_Entry] = []
            for pi, p in enumerate(group["params"]):
                info = infos.get(id(p))
                if info is None:
                    raise ValueError(
                        f"Parameter {pi} of param group {gi} (shape {tuple(p.shape)}, dtype {p.dtype}) is held by the optimizer "
                        f"but is not a parameter of the model {type(self._model).__name__}; pass the model that owns it"
                    )
                held.add(id(p))
                row.append(self._make_entry(info, gi))
            by_group.append(row)
            entries.extend(row)
        unheld = [i.name for pid, i in infos.items() if pid not in held and i.param.requires_grad]
        if unheld and self._strict:
            shown = ", ".join(repr(n) for n in unheld[:8]) + (" ..." if len(unheld) > 8 else "")
            raise ValueError(
                f"{len(unheld)} trainable parameter(s) of the model are not held by the optimizer: {shown}; "
                "add them to the optimizer, freeze them (requires_grad=False), or pass strict=False to leave them alone"
            )
        return entries, by_group, unheld

    def _make_entry(self, info: ParamInfo, gi: int) -> _Entry:
        p = info.param
        if is_lazy(p):
            # nn.LazyLinear & co.: shape unknown until the first forward; resolved at the first
            # step (or state_dict/anchor/coverage call) after the module materialises it.
            return _Entry(info, gi, False, LAZY, 0.0)
        if p.is_meta:
            raise ValueError(
                f"Parameter {info.name!r} is on the meta device (no values); materialise the model first "
                "(model.to_empty(device=...) and its initialisation), then create the optimizer and attach syre"
            )
        if p.is_sparse or p.layout != torch.strided:
            raise ValueError(f"Parameter {info.name!r} has layout {p.layout}; syre supports dense (strided) parameters only")
        if p.is_complex() or not p.is_floating_point():
            raise ValueError(f"Parameter {info.name!r} has dtype {p.dtype}; syre supports real floating-point parameters only")
        if not p.requires_grad:
            return _Entry(info, gi, False, "frozen", 0.0)
        if not is_selected(info, self._include, self._exclude):
            return _Entry(info, gi, False, "excluded", 0.0)
        sigma0 = resolve_sigma0(self._sigma0_spec, info.name, p, info.module, info.attr)
        e = _Entry(info, gi, True, "", sigma0)
        e.shard = _shard_range(info.name, p)
        return e

    def _plan_takeover(self, group_indices) -> Dict[int, float]:
        """Which groups' weight_decay gamma=None takes over (checked, not yet applied)."""
        opt = self._optimizer
        plan: Dict[int, float] = {}
        for gi in group_indices:
            group = opt.param_groups[gi]
            if GROUP_KEY in group:
                continue
            wd = group.get("weight_decay", None)
            if self._gamma is not None:
                if wd:
                    warnings.warn(
                        f"param group {gi} of {type(opt).__name__} still applies weight_decay={wd} on top of syre's "
                        f"gamma={self._gamma}; set weight_decay=0 there, or attach with gamma=None to take it over",
                        stacklevel=4,
                    )
                continue
            if wd is None:
                raise ValueError(
                    f"gamma=None takes over each param group's weight_decay, but param group {gi} of "
                    f"{type(opt).__name__} has none; pass gamma=... explicitly"
                )
            wd = check_nonneg_float(f"param_groups[{gi}]['weight_decay']", _as_float(wd))
            if wd and not _is_decoupled(opt, group):
                raise ValueError(
                    f"gamma=None cannot take over weight_decay={wd} of param group {gi}: {type(opt).__name__} applies it "
                    "coupled (added to the gradient, then through momentum or the adaptive update), which no decoupled "
                    "decay equals. Pass gamma=... explicitly (syre's decay is decoupled, as AdamW's), set weight_decay=0, "
                    "or use syre.Penalty for the coupled form"
                )
            plan[gi] = wd
        return plan

    def _apply_takeover(self, plan: Dict[int, float]) -> None:
        for gi, wd in plan.items():
            group = self._optimizer.param_groups[gi]
            group[GROUP_KEY] = wd
            if "weight_decay" in group:
                group["weight_decay"] = 0.0 if not isinstance(group["weight_decay"], torch.Tensor) else group["weight_decay"].zero_()
            self._takeover[gi] = wd

    def _install(self, entries, by_group, unheld) -> None:
        self._entries, self._by_group, self._unheld = entries, by_group, unheld
        self._lazy = [e for e in entries if e.reason == LAZY]
        self._layout = self._current_layout()
        if self._mode == "stored":
            for e in entries:
                self._materialise(e)

    def _current_layout(self) -> tuple:
        return tuple(len(g["params"]) for g in self._optimizer.param_groups)

    def _generate(self, e: _Entry):
        """``(theta0, xi)`` shaped like ``e.local()``: the local shard's slice for a DTensor."""
        if not e.covered or (e.sigma0 == 0.0 and self._d_spread == 0.0):
            return None, None
        if e.shard is None:
            return anchor_like(self._seed, e.name, e.param, sigma0=e.sigma0, d_spread=self._d_spread)
        local = e.local()
        dtype = _anchor_dtype(local)
        start, stop = e.shard
        out = anchor_slice(self._seed, e.name, start, stop, sigma0=e.sigma0, d_spread=self._d_spread,
                           device=local.device, dtype=dtype)
        return tuple(None if t is None else torch.empty_like(local, dtype=dtype).copy_(t.view(local.shape)) for t in out)

    def _generate_full(self, e: _Entry, dtype, device):
        """``(theta0, xi)`` of the full parameter (``Syre.anchor`` of a DTensor), or Nones."""
        if e.sigma0 == 0.0 and self._d_spread == 0.0:
            return None, None
        shape = e.param.shape
        out = anchor_slice(self._seed, e.name, 0, shape.numel(), sigma0=e.sigma0, d_spread=self._d_spread,
                           device=device, dtype=dtype)
        return tuple(None if t is None else t.view(shape) for t in out)

    def _materialise(self, e: _Entry) -> None:
        e.theta0, e.xi = self._generate(e)

    # ------------------------------------------------------------------ the step
    def _sync_new_params(self) -> None:
        """Pick up parameters added with ``optimizer.add_param_group`` since the last step."""
        opt = self._optimizer
        old_groups = len(self._by_group)
        infos = collect(self._model)
        for gi in range(len(opt.param_groups)):
            group = opt.param_groups[gi]
            row = self._by_group[gi] if gi < old_groups else []
            known = {id(e.param) for e in row}
            for p in group["params"]:
                if id(p) in known:
                    continue
                info = infos.get(id(p))
                if info is None:
                    raise ValueError(
                        f"A parameter added to param group {gi} (shape {tuple(p.shape)}) is not a parameter of the model "
                        f"{type(self._model).__name__}"
                    )
                e = self._make_entry(info, gi)
                if self._mode == "stored":
                    self._materialise(e)
                if e.reason == LAZY:
                    self._lazy.append(e)
                row.append(e)
                self._entries.append(e)
                if info.name in self._unheld:
                    self._unheld.remove(info.name)
            if gi >= old_groups:
                self._by_group.append(row)
        if len(opt.param_groups) > old_groups:
            self._apply_takeover(self._plan_takeover(range(old_groups, len(opt.param_groups))))
        self._layout = self._current_layout()

    def group_gamma(self, group_index: int) -> float:
        """The gamma syre applies to param group ``group_index`` now."""
        group = self._optimizer.param_groups[group_index]
        g = group.get(GROUP_KEY, self._gamma)
        return 0.0 if g is None else _as_float(g)

    @torch.compiler.disable
    def _pre_step(self, optimizer, args, kwargs):
        # ``args`` starts with the optimizer itself (torch passes ``step``'s own arguments).
        closure = kwargs.get("closure") if "closure" in kwargs else (args[1] if len(args) > 1 else None)
        if closure is None:
            self._decay(optimizer)
            return None
        # ``step(closure)`` computes the gradients inside the step, after this hook: decay once,
        # right after the first evaluation of the closure (as AdamW decays after it), so that the
        # parameters that get a gradient in this step are decayed in this step.
        done = []

        def closure_then_decay():
            loss = closure()
            if not done:
                done.append(True)
                self._decay(optimizer)
            return loss

        if "closure" in kwargs:
            return args, dict(kwargs, closure=closure_then_decay)
        return (args[0], closure_then_decay) + tuple(args[2:]), kwargs

    # Eager under torch.compile: a compiled step would otherwise guard on lr * gamma (a Python
    # float) and on syre's step count, and recompile whenever the learning rate changes.
    @torch.compiler.disable
    @torch.no_grad()
    def _decay(self, optimizer) -> None:
        if self._current_layout() != self._layout:
            self._sync_new_params()
        self._resolve_lazy()
        if not self._precision_warned and self._steps % PRECISION_CHECK_EVERY == 0:
            self._check_precision()
        self._steps += 1
        seeded = self._mode == "seeded"
        covered = self._covered_by_group()
        for gi, group in enumerate(optimizer.param_groups):
            entries = covered[gi]
            if not entries:
                continue
            gamma = self.group_gamma(gi)
            if gamma == 0.0:
                continue
            weight = _as_float(group["lr"]) * gamma
            live = [e for e in entries if e.param.grad is not None]
            if seeded:
                self._seeded_decay(live, weight)
            elif live:
                F.decay_([e.local() for e in live], [e.theta0 for e in live], [e.xi for e in live],
                         weight=weight, foreach=self._foreach)

    def _resolve_lazy(self) -> None:
        """Give anchors to lazily initialised parameters that have been materialised since."""
        if not self._lazy:
            return
        still = []
        for e in self._lazy:
            if is_lazy(e.param):
                still.append(e)
                continue
            fresh = self._make_entry(e.info, e.group)
            e.covered, e.reason, e.sigma0, e.shard = fresh.covered, fresh.reason, fresh.sigma0, fresh.shard
            if self._mode == "stored":
                self._materialise(e)
        self._lazy = still
        self._covered_cache = None

    def _covered_by_group(self) -> List[List[_Entry]]:
        """The covered entries of each param group, rebuilt only when the layout changes."""
        cache = getattr(self, "_covered_cache", None)
        if cache is None or cache[0] != self._layout or cache[1] is not self._by_group:
            cache = (self._layout, self._by_group, [[e for e in row if e.covered] for row in self._by_group])
            self._covered_cache = cache
        return cache[2]

    def _seeded_decay(self, entries: List[_Entry], weight: float) -> None:
        """Seeded mode: regenerate each anchor block by block (in cache) and decay that block.

        Nothing per parameter outlives the step; the scratch is a few buffers of one block (2**18
        elements). Each block gets the same elementwise operations as in stored mode, so both modes
        agree bitwise. A DTensor's local shard generates its own slice [start, stop) only. Tensors
        with another layout or a tensor subclass take the whole anchor at once.
        """
        plain: List[torch.Tensor] = []
        for e in entries:
            local = e.local()
            if e.sigma0 == 0.0 and self._d_spread == 0.0:
                plain.append(local)  # the origin with D = I: AdamW's decay
            elif type(local.data) is torch.Tensor and local.is_contiguous():
                start, stop = e.shard if e.shard is not None else (0, local.numel())
                flat = local.detach().view(-1)
                blocks = _anchors._blocks(self._seed, e.name, start, stop, e.sigma0, self._d_spread, _anchor_dtype(local), local.device)
                for lo, hi, t, x in blocks:
                    F.decay_([flat[lo - start : hi - start]], [t], [x], weight=weight, foreach=False)
            else:
                t, x = self._generate(e)
                F.decay_([local], [t], [x], weight=weight, foreach=False)
        if plain:
            F.decay_(plain, [None] * len(plain), [None] * len(plain), weight=weight, foreach=self._foreach)

    # ------------------------------------------------------------------ the pull check
    def _probed(self):
        """(entry, weight = lr * gamma) of the parameters the pull check looks at this step."""
        for gi, group in enumerate(self._optimizer.param_groups):
            if gi >= len(self._by_group):
                continue
            gamma = self.group_gamma(gi)
            if gamma == 0.0:
                continue
            weight = _as_float(group["lr"]) * gamma
            for e in self._by_group[gi]:
                if e.covered and e.sigma0 > 0.0 and e.param.grad is not None:
                    yield e, weight

    @torch.no_grad()
    def _probe_pre(self, optimizer, args, kwargs) -> None:
        if self._probe_steps >= PROBE_STEPS:
            return
        self._probe_snap = {
            id(e): e.local().detach().reshape(-1)[:PROBE_ELEMENTS].to(_anchor_dtype(e.param), copy=True)
            for e, _ in self._probed()
        }

    @torch.no_grad()
    def _probe_post(self, optimizer, args, kwargs) -> None:
        """Measure pull / update on the first PROBE_STEPS steps; then warn once if it is negligible.

        The hooks stay registered (a return at the top) until ``remove()``: removing a hook from
        inside torch's loop over the step hooks would break that loop for the hooks after it.
        """
        if self._probe_steps >= PROBE_STEPS:
            return
        for e, weight in self._probed():
            before = self._probe_snap.get(id(e))
            if before is None or before.numel() == 0:
                continue
            upd = e.local().detach().reshape(-1)[:PROBE_ELEMENTS].to(before.dtype) - before
            rms = float(upd.square().mean().sqrt())
            if rms > 0.0 and math.isfinite(rms):
                self._probe_ratios.setdefault(e.name, []).append(weight * e.sigma0 / rms)
        self._probe_snap = {}
        self._probe_steps += 1
        if self._probe_steps >= PROBE_STEPS:
            self._check_pull()

    def _stop_probe(self) -> None:
        for h in self._probe_handles:
            h.remove()
        self._probe_handles = []
        self._probe_snap = {}

    def _check_pull(self) -> None:
        for name, ratios in self._probe_ratios.items():
            self._pull_ratio[name] = float(sorted(ratios)[len(ratios) // 2])
        self._probe_ratios = {}
        sizes = {e.name: e.param.numel() for e in self._entries if e.name in self._pull_ratio}
        total = sum(sizes.values())
        if not total:
            return
        weak = [n for n, r in self._pull_ratio.items() if r < WEAK_PULL_RATIO]
        share = sum(sizes[n] for n in weak) / total
        if share > WEAK_PULL_SHARE:
            ratios = sorted(self._pull_ratio.values())
            warnings.warn(
                f"syre's pull toward the anchors is negligible: for {len(weak)} of {len(self._pull_ratio)} parameters "
                f"({share:.0%} of their elements) the per-step pull lr * gamma * sigma0 is below {WEAK_PULL_RATIO:g} x the "
                f"RMS of the optimizer's own update (median ratio {ratios[len(ratios) // 2]:.2g}), so training will be hard "
                "to tell from plain weight decay. Raise sigma0 (sigma0='lecun' is the init std) or gamma; Syre.summary() lists the "
                "ratio per parameter",
                WeakPullWarning,
                stacklevel=_user_stacklevel(),
            )

    def pull_ratios(self) -> Dict[str, float]:
        """Measured per-step pull / optimizer update of each checked parameter (empty before step PROBE_STEPS).

        The pull is ``lr * gamma * sigma0``, the update the RMS of the optimizer's own change of the
        parameter in that step (syre's decay excluded); the median over the first PROBE_STEPS steps.
        """
        return dict(self._pull_ratio)

    def _check_precision(self) -> None:
        """Warn once when the pull is below half an ulp for most elements of fp16/bf16 parameters."""
        stalled = pulled = 0
        dtypes = set()
        for gi, group in enumerate(self._optimizer.param_groups):
            weight = _as_float(group["lr"]) * self.group_gamma(gi)
            if weight == 0.0:
                continue
            for e in self._by_group[gi]:
                if not e.covered or e.param.grad is None or e.param.dtype not in _LOW_PRECISION:
                    continue
                t, x = (e.theta0, e.xi) if self._mode == "stored" else self._generate(e)
                a, b = F.stalled_pull(e.local(), t, x, weight)
                stalled, pulled = stalled + a, pulled + b
                dtypes.add(str(e.param.dtype).replace("torch.", ""))
        if pulled and stalled > pulled / 2:
            self._precision_warned = True
            warnings.warn(
                f"syre: for {stalled / pulled:.0%} of the elements of the {'/'.join(sorted(dtypes))} parameters, the "
                "decay's pull per step lr * gamma * D * |p - theta0| is below half an ulp of the storage dtype, so "
                "rounding undoes it and the decay does nothing there. Keep fp32 master weights (fp32 parameters with "
                "torch.autocast, or FSDP2's MixedPrecisionPolicy(param_dtype=...) over fp32 sharded parameters), "
                "or raise lr * gamma. (Issued once.)",
                PrecisionWarning,
                stacklevel=5,
            )

    # ------------------------------------------------------------------ public API
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def d_spread(self) -> float:
        return self._d_spread

    @property
    def mode(self) -> str:
        return self._mode

    def names(self) -> List[str]:
        """Canonical names of the covered parameters."""
        self._resolve_lazy()
        return [e.name for e in self._entries if e.covered]

    def _entry(self, name: str) -> _Entry:
        for e in self._entries:
            if e.name == name:
                return e
        known = [e.name for e in self._entries]
        raise KeyError(f"Unknown parameter name {name!r}; syre knows {known[:10]}{' ...' if len(known) > 10 else ''}")

    def anchor(self, name: str) -> Anchor:
        """``Anchor(theta0, d)`` of parameter ``name``: fp32 (fp64 for fp64 parameters), full shape.

        For a parameter syre does not cover, theta0 is 0 and d is 1 (no decay toward anything).
        For a DTensor (FSDP2) parameter it is the full anchor, on the local shard's device,
        generated for this call (the step only ever generates the local shard's slice).
        """
        self._resolve_lazy()
        e = self._entry(name)
        p = e.param
        dtype = _anchor_dtype(p)
        device = p.device
        if e.shard is not None:
            device = e.local().device
            t, x = self._generate_full(e, dtype, device)
        else:
            t, x = (e.theta0, e.xi) if self._mode == "stored" else self._generate(e)
        theta0 = torch.zeros(p.shape, dtype=dtype, device=device) if t is None else t.detach().clone().contiguous()
        d = torch.ones(p.shape, dtype=dtype, device=device) if x is None else (1.0 + x).contiguous()
        return Anchor(theta0, d)

    def coverage(self) -> List[Dict[str, Any]]:
        """One row per parameter: name, shape, module type, group, covered, reason, sigma0, gamma, strength.

        ``strength`` is the breaking strength ``gamma * sigma0``; ``pull_ratio`` the measured pull /
        update of ``pull_ratios()`` (None until measured).
        """
        self._resolve_lazy()
        rows = []
        for e in self._entries:
            gamma = self.group_gamma(e.group) if e.covered else 0.0
            lazy = is_lazy(e.param)
            rows.append(
                {
                    "name": e.name,
                    "shape": None if lazy else list(e.param.shape),
                    "numel": 0 if lazy else e.param.numel(),
                    "module": e.info.module_type,
                    "group": e.group,
                    "covered": e.covered,
                    "reason": e.reason,
                    "sigma0": e.sigma0,
                    "gamma": gamma,
                    "strength": gamma * e.sigma0,
                    "pull_ratio": self._pull_ratio.get(e.name),
                }
            )
        for name in self._unheld:
            rows.append({"name": name, "shape": None, "numel": 0, "module": "", "group": None, "covered": False,
                         "reason": "not in optimizer", "sigma0": 0.0, "gamma": 0.0, "strength": 0.0,
                         "pull_ratio": None})
        return rows

    def summary(self) -> str:
        """A table of what is covered, with sigma0, gamma, the breaking strength gamma * sigma0 and,
        after the first PROBE_STEPS steps, the measured pull / update ratio."""
        rows = self.coverage()
        head = ("parameter", "shape", "module", "group", "syre", "sigma0", "gamma", "gamma*sigma0", "pull/update")
        body = []
        for r in rows:
            body.append((
                r["name"],
                "x".join(map(str, r["shape"])) if r["shape"] is not None else "-",
                r["module"],
                "-" if r["group"] is None else str(r["group"]),
                "yes" if r["covered"] else f"no ({r['reason']})",
                f"{r['sigma0']:.3g}" if r["covered"] else "-",
                f"{r['gamma']:.3g}" if r["covered"] else "-",
                f"{r['strength']:.3g}" if r["covered"] else "-",
                f"{r['pull_ratio']:.2g}" if r["pull_ratio"] is not None else "-",
            ))
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        covered = [r for r in rows if r["covered"]]
        n_cov = sum(r["numel"] for r in covered)
        n_all = sum(r["numel"] for r in rows)
        lines = [
            f"syre {__version__}: seed={self._seed} mode={self._mode} d_spread={self._d_spread:g} "
            f"sigma0={_describe_sigma0(self._sigma0_spec)}",
            f"covers {len(covered)}/{len(rows)} parameters ({n_cov:,}/{n_all:,} elements)",
            fmt.format(*head),
            fmt.format(*("-" * w for w in widths)),
        ]
        lines += [fmt.format(*b) for b in body]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"Syre(optimizer={type(self._optimizer).__name__}, gamma={self._gamma}, seed={self._seed}, "
                f"d_spread={self._d_spread}, mode={self._mode!r}, covered={len(self.names())})")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """Small, ``weights_only``-safe state: seed, configuration, names, shapes, sigma0; no anchors."""
        self._resolve_lazy()
        return {
            "format": "syre",
            "version": FORMAT_VERSION,
            "library_version": __version__,
            "seed": self._seed,
            "gamma": self._gamma,
            "d_spread": self._d_spread,
            "mode": self._mode,
            "takeover": {int(k): float(v) for k, v in self._takeover.items()},
            "params": [
                {"name": e.name, "shape": list(e.param.shape), "sigma0": float(e.sigma0)}
                for e in self._entries
                if e.covered
            ],
        }

    def _validate_state(self, sd) -> Dict[str, Any]:
        if not isinstance(sd, dict):
            raise TypeError(f"Invalid syre state: expected a dict from Syre.state_dict(), got {type(sd).__name__}")
        if sd.get("format") != "syre":
            raise ValueError(f"Invalid syre state: 'format' is {sd.get('format')!r}, expected 'syre'; this is not a Syre.state_dict()")
        version = sd.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"Invalid syre state: 'version' is {version!r}; expected an int")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"syre state has format version {version}, newer than this syre {__version__} reads "
                f"(<= {FORMAT_VERSION}); upgrade torch-syre to load it"
            )
        for key in ("seed", "d_spread", "params", "takeover", "gamma"):
            if key not in sd:
                raise ValueError(f"Invalid syre state: missing key {key!r} (truncated or corrupted)")
        _check_seed(sd["seed"])
        check_d_spread(sd["d_spread"])
        if sd["gamma"] is not None:
            check_nonneg_float("gamma", sd["gamma"])
        if not isinstance(sd["params"], list) or not isinstance(sd["takeover"], dict):
            raise ValueError("Invalid syre state: 'params' must be a list and 'takeover' a dict (corrupted)")
        saved = {}
        for item in sd["params"]:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("shape"), list)):
                raise ValueError(f"Invalid syre state: bad parameter record {item!r} (corrupted)")
            check_nonneg_float(f"sigma0 of {item['name']!r}", item.get("sigma0"))
            saved[item["name"]] = item
        mine = {e.name: e for e in self._entries if e.covered}
        missing = sorted(set(mine) - set(saved))
        unexpected = sorted(set(saved) - set(mine))
        shapes = [
            f"{n}: saved {tuple(saved[n]['shape'])}, model {tuple(mine[n].param.shape)}"
            for n in sorted(set(mine) & set(saved))
            if list(saved[n]["shape"]) != list(mine[n].param.shape)
        ]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"covered here but not in the saved state: {missing}")
            if unexpected:
                parts.append(f"in the saved state but not covered here: {unexpected}")
            if shapes:
                parts.append(f"shape mismatch: {shapes}")
            raise ValueError("syre state does not match this model; nothing was changed. " + "; ".join(parts))
        return saved

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore seed, gamma, d_spread and per-parameter sigma0 (the anchors follow).

        Names and shapes must match the covered parameters exactly; otherwise a ``ValueError``
        names the differences and nothing changes. The current ``mode`` is kept (it does not
        change the numbers).
        """
        saved = self._validate_state(state_dict)
        self._seed = int(state_dict["seed"])
        self._d_spread = float(state_dict["d_spread"])
        self._gamma = None if state_dict["gamma"] is None else float(state_dict["gamma"])
        self._takeover = {int(k): float(v) for k, v in state_dict["takeover"].items()}
        for e in self._entries:
            if e.covered:
                e.sigma0 = float(saved[e.name]["sigma0"])
                if self._mode == "stored":
                    self._materialise(e)

    def _optimizer_state_dict_hook(self, optimizer, state_dict):
        state_dict[OPTIMIZER_STATE_KEY] = self.state_dict()
        return state_dict

    def _optimizer_load_pre_hook(self, optimizer, state_dict):
        if OPTIMIZER_STATE_KEY not in state_dict:
            return None
        state_dict = dict(state_dict)
        pending = state_dict.pop(OPTIMIZER_STATE_KEY)
        self._validate_state(pending)
        self._pending = pending
        return state_dict

    def _optimizer_load_post_hook(self, optimizer) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.load_state_dict(pending)

    def remove(self) -> None:
        """Detach the hooks, give back the weight decay taken over, and free the anchors."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._stop_probe()
        for gi, wd in self._takeover.items():
            if gi < len(self._optimizer.param_groups):
                group = self._optimizer.param_groups[gi]
                group.pop(GROUP_KEY, None)
                if "weight_decay" in group:
                    group["weight_decay"] = wd
        self._takeover = {}
        for e in self._entries:
            e.theta0 = e.xi = None


def attach(optimizer: torch.optim.Optimizer, model: nn.Module, **kwargs) -> Syre:
    """Attach syre to ``optimizer``: one added line. Returns the ``Syre`` object.

    ``syre.attach(opt, model, gamma=0.1)`` makes every ``opt.step()`` first apply
    ``p <- p - lr * gamma * D * (p - theta0)`` (AdamW's decoupled convention). See ``Syre``.
    """
    return Syre(optimizer, model, **kwargs)
