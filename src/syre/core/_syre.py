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
evaluation of the closure and before the optimizer's own update. A step the optimizer does not
take (one that AMP's ``GradScaler`` skips on an inf/NaN gradient) applies no decay, also for
optimizers that handle the scaling themselves (``fused=True``: syre reads ``found_inf`` where
``GradScaler`` passes it). Parameters
whose ``.grad`` is ``None`` at the step are left alone, as torch optimizers leave them.

Nothing is decided once and kept: at every step syre derives what it covers from the optimizer
and the model as they are (``syre.core._plan``), reads each group's gamma and weight decay where they
are (``syre.core._groups``), and keeps anchors that follow each parameter's dtype and device
(``syre.core._store``). What the user asked (the validated ``Config``) and what changes while training
(the step count, the weight decay taken over, the anchor format, each parameter's resolved sigma0)
are held once, in the attachment's ``syre.core._state.Runtime``, which plan, groups and store read.
One optimizer has at most one ``Syre``.

Distributed training needs no communication: anchors depend on (seed, name, element index)
only. Under FSDP2, tensor parallelism and 2-D meshes each rank decays its local shard toward the
anchor of its own elements (``syre._dist``); FSDP1 is refused.
"""
from __future__ import annotations

import operator
from itertools import repeat
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .. import _dist
from .._compile import no_grad
from .._live import attached, register
from ..config import DEFAULT_D_SPREAD, Config, refuse_unknown_keywords
from ..forms._scale_check import AnchorScaleCheck
from ..kernels import functional
from ..kernels.fused import FUSABLE, Work
from ..rng.anchors import Anchor
from ..select import check_rules_match, collect, unwrap_model
from ..sigma0 import DEFAULT_SIGMA0
from ._checks import PrecisionCheck, PullProbe
from ._groups import Groups, as_float
from ._plan import EXCLUDED, LAZY, build_plan, fingerprint
from ._report import Reporting
from ._state import Checkpointing, Runtime
from ._steady import OneCall
from ._store import anchor_dtype, make_store
from ._targets import make_target

__all__ = ["Syre", "attach_syre"]

_GRAD = operator.attrgetter("grad")


def _nonzero(w) -> bool:
    """``lr * gamma`` is not 0 (a tensor weight is taken as nonzero: reading it would sync the device)."""
    return isinstance(w, torch.Tensor) or w != 0.0


def _amp_skipped(optimizer) -> bool:
    """Whether ``GradScaler`` found inf/NaN gradients for this step of an optimizer that handles AMP itself.

    For an optimizer with ``_step_supports_amp_scaling`` (torch's ``fused=True`` Adam, AdamW, SGD,
    Adagrad, and syre's subclasses) ``GradScaler.step`` always calls ``step`` and passes ``found_inf``
    as an attribute; the optimizer skips its update where it is nonzero. Reading it here is one host
    synchronisation per step on an accelerator (as ``GradScaler`` makes for every other optimizer).
    """
    found_inf = getattr(optimizer, "found_inf", None)
    return isinstance(found_inf, torch.Tensor) and bool(getattr(optimizer, "_step_supports_amp_scaling", False)) \
        and bool(found_inf.item())


def _refuse_reparametrized(model: nn.Module) -> None:
    from ..forms.reparam import AnchorShift

    for name, module in model.named_modules():
        for attr, plist in getattr(module, "parametrizations", {}).items():
            if any(isinstance(p, AnchorShift) for p in plist):
                raise ValueError(
                    f"The model is reparametrized by syre.reparametrize ({name + '.' if name else ''}{attr} is theta + "
                    "theta0): attach would decay theta toward a second anchor. Use one form: decay theta with the "
                    "optimizer's weight_decay (or h.penalty(gamma)), or h.remove() and then syre.attach"
                )


def _target_scale(target, infos):
    """sigma0 as a callable for a target: the RMS of the target tensor (the anchor's size)."""
    by_name = {i.name: i for i in infos}

    def scale(name, param):
        if target.kind == "mapping" and name not in target._mapping:
            raise ValueError(f"Invalid target mapping: it has no tensor for the covered parameter {name!r}; give one "
                             "for every parameter syre decays (or exclude it)")
        return target.scale_of(by_name[name])

    return scale


class Syre(Checkpointing, Reporting):
    """syre attached to a torch optimizer (see the module docstring for the update rule).

    Args:
        optimizer: any ``torch.optim.Optimizer``; it stays the user's object.
        model: the ``nn.Module`` whose parameters the optimizer holds (bare, or wrapped by DDP,
            DataParallel or ``torch.compile``: the anchors are the same).
        gamma: decoupled strength (AdamW's ``weight_decay`` convention: the pull per step is
            ``lr * gamma``; ``lr * gamma`` must stay <= 1). ``None`` takes over each group's
            ``weight_decay`` and sets it to 0 there, where the optimizer applies it decoupled
            (AdamW, Muon, Adafactor, ``decoupled_weight_decay=True``, plain SGD); refused for
            coupled ones (Adam, RMSprop, SGD with momentum, ...) and when every group's weight decay
            is 0. A group key ``syre_gamma`` sets gamma for that group.
        sigma0: ``"match"`` (default: each tensor's own RMS when first covered, saved in the
            checkpoint), ``"match:0.3"`` (0.3 x it), ``"lecun"`` (1/sqrt(fan_in), the LeCun init
            std), ``"kaiming"``, ``"xavier"``, ``"lecun:0.3"`` (0.3 x the init std), an absolute
            float, or a callable ``(name, param) -> float``. See ``syre.sigma0`` and docs/defaults.md.
        d_spread: eps of ``D_ii ~ Uniform(1 - eps, 1 + eps)``; 0 is basic syre.
        seed: the anchors' seed (an int in [0, 2**64)); never the global RNG.
        mode: ``"stored"`` keeps theta0 (and xi) in fp32 (fp64 for fp64 parameters);
            ``"seeded"`` regenerates them at every step and keeps nothing per parameter. Both give
            identical parameters.
        include, exclude: rules choosing parameters (see ``syre.select``); a pattern that matches
            no parameter is an error.
        strict: a trainable parameter of the model that the optimizer does not hold is an error
            (``False``: it is listed in ``summary()`` and left alone).
        foreach: ``None`` (multi-tensor kernels when there is more than one tensor), or a bool.
        target: the point ``theta0`` the decay pulls toward (see ``syre.core._targets``): ``"random"``
            (syre's anchor, the default), ``"init"`` (the initial weights: recomputed from
            ``syre.init_``'s seed and scheme, nothing stored in seeded mode; otherwise copied at
            attach), ``"pretrained"`` (the weights at attach, copied), or a mapping ``name -> tensor``
            (copied, one per covered parameter). ``D`` applies to every target; a copied target is
            kept (fp32) in every mode, and a checkpoint records its checksum.
        rounding: ``"nearest"`` (torch's rounding of the decayed value into the parameter's dtype),
            or ``"stochastic"`` for fp16/bf16 parameters: unbiased in expectation, its random bits
            from a stream keyed by (seed, name, index, step) (see ``syre.core._rounding``). Only syre's
            decay is rounded so; the optimizer's own update is rounded by torch.
    """

    @refuse_unknown_keywords("syre.Syre")
    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, *, gamma: Optional[float] = None,
                 sigma0=DEFAULT_SIGMA0, d_spread: float = DEFAULT_D_SPREAD, seed: int = 0, mode: str = "stored",
                 include=None, exclude=None, strict: bool = True, foreach: Optional[bool] = None,
                 target="random", rounding: str = "nearest", _check_idle: bool = True):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Invalid optimizer: {type(optimizer).__name__}; expected a torch.optim.Optimizer")
        config = Config(gamma=gamma, sigma0=sigma0, d_spread=d_spread, seed=seed, mode=mode, include=include,
                        exclude=exclude, strict=strict, foreach=foreach, target=target, rounding=rounding)
        model = unwrap_model(model)
        # Everything is checked before anything is changed.
        if attached(optimizer) is not None:
            raise ValueError(
                f"This {type(optimizer).__name__} already has syre attached ({attached(optimizer)!r}); a second Syre would "
                "decay every parameter twice. Use the attached one (syre.attached(optimizer)), or call its "
                ".remove() first"
            )
        _dist.refuse_fsdp1(model)
        _refuse_reparametrized(model)
        self._optimizer, self._model = optimizer, model
        #: The configuration and what changes while training, each held once (``syre.core._state.Runtime``).
        self._rt = Runtime(config)
        infos = list(collect(model).values())
        self._target = make_target(config.target, model, infos)
        # A target's size (its RMS) is reported as the anchor's sigma0.
        self._scale = None if self._target.random else _target_scale(self._target, infos)
        plan = build_plan(optimizer, model, config, self._rt.sigma0s, sigma0=self._scale)
        check_rules_match(infos, config.include, config.exclude)
        trainable = [i for i in infos if i.param.requires_grad]
        if trainable and not plan.covered() and not any(e.reason == LAZY for e in plan.entries) \
                and any(e.reason == EXCLUDED for e in plan.entries):
            raise ValueError("The include/exclude rules leave no trainable parameter for syre to decay; nothing was changed")
        if plan.unheld and config.strict:
            shown = ", ".join(repr(n) for n in plan.unheld[:8]) + (" ..." if len(plan.unheld) > 8 else "")
            raise ValueError(
                f"{len(plan.unheld)} trainable parameter(s) of the model are not held by the optimizer: {shown}; "
                "add them to the optimizer, freeze them (requires_grad=False), or pass strict=False to leave them alone"
            )
        self._plan = plan
        self._groups = Groups(optimizer, self._rt,
                              covers=lambda gi: gi < len(self._plan.by_group) and bool(self._plan.by_group[gi]))
        self._groups.attach(check_idle=_check_idle)  # checks, then takes over weight_decay (the first change)
        self._plan, self._fp = plan, fingerprint(optimizer)
        self._store = make_store(self._rt, None if self._target.random else self._target)
        self._store.sync(plan.entries)
        if not self._target.regenerable:  # a copied target is the weights as they are at attach
            for e in plan.covered():
                self._target.take(e)
        self._cache: Dict[int, tuple] = {}
        self._cache_key: Optional[tuple] = None
        self._one_call = OneCall()  # the step's check in one call, while nothing changed (syre.core._steady)
        self._removed = False
        self._pending: Optional[dict] = None
        self._work: Optional[Work] = None
        self._ids: dict = {}  # group -> {id(param): entry} of the plan keyed by _ids_key (the fused path's lookups)
        self._ids_key = None
        self._held = None  # syre.core._multi._Held of a MultiSyre
        self._before_load: list = []
        self._precision = PrecisionCheck()
        self._handles = [optimizer.register_step_pre_hook(self._pre_step)]
        # Registered after _pre_step: the probe sees the optimizer's own update.
        self._probe = PullProbe(optimizer, self._probed, lambda: {e.name: e.param.numel() for e in self._plan.entries},
                                self._rt)
        if hasattr(optimizer, "register_state_dict_post_hook"):
            self._handles += [
                optimizer.register_state_dict_post_hook(self._optimizer_state_dict_hook),
                optimizer.register_load_state_dict_pre_hook(self._optimizer_load_pre_hook),
                optimizer.register_load_state_dict_post_hook(self._optimizer_load_post_hook),
            ]
        register(self)
        self._far = AnchorScaleCheck(enabled=self._target.random)  # anchors far from their tensors: warned once
        self._far.check_entries(plan.covered(), config.sigma0)

    # ------------------------------------------------------------------ the plan, now
    def _refresh(self):
        """The plan for the optimizer and model as they are now (rebuilt only when they changed)."""
        fp = fingerprint(self._optimizer)
        if fp != self._fp:
            self._plan = build_plan(self._optimizer, self._model, self._config, self._rt.sigma0s, at_step=True,
                                    sigma0=self._scale)
            self._store.sync(self._plan.entries)
            self._fp = fp
            self._far.check_entries(self._plan.covered(), self._config.sigma0)
        return self._plan

    def _buckets(self, plan, gi: int):
        """``(params, buckets)`` of group ``gi``: the decay's calls, decided once per plan and store state."""
        key = (id(plan), self._store.generation)
        if self._cache_key != key:
            self._cache, self._cache_key = {}, key
        got = self._cache.get(gi)
        if got is None:
            row = plan.by_group[gi]
            got = self._cache[gi] = ([e.param for e in row], self._store.buckets(row, self._config.foreach))
        return got

    def _by_id(self, plan, gi: int) -> dict:
        """``{id(param): entry}`` of group ``gi``'s entries, made once per plan (and store state, as ``_buckets``)."""
        key = (id(plan), self._store.generation)
        if self._ids_key != key:
            self._ids, self._ids_key = {}, key
        got = self._ids.get(gi)
        if got is None:
            got = self._ids[gi] = {id(e.param): e for e in plan.by_group[gi]}
        return got

    # ------------------------------------------------------------------ the step
    # The one compiler boundary: eager under torch.compile (a compiled step would otherwise guard on
    # lr * gamma, a Python float, and on syre's step count, and recompile whenever the lr changes).
    @torch.compiler.disable
    def _pre_step(self, optimizer, args, kwargs):
        # ``args`` starts with the optimizer itself (torch passes ``step``'s own arguments).
        closure = kwargs.get("closure") if "closure" in kwargs else (args[1] if len(args) > 1 else None)
        if closure is None:
            self._decay(optimizer)
            return None
        # ``step(closure)`` computes the gradients inside the step, after this hook: decay once,
        # right after the first evaluation of the closure (as AdamW decays after it).
        done = []

        def closure_then_decay():
            loss = closure()
            if not done:
                done.append(True)
                torch.compiler.disable(self._decay)(optimizer)
            return loss

        if "closure" in kwargs:
            return args, dict(kwargs, closure=closure_then_decay)
        return (args[0], closure_then_decay) + tuple(args[2:]), kwargs

    @no_grad
    def _decay(self, optimizer) -> None:
        self._work = None
        if self._held is not None:
            self._held.at_step()  # MultiSyre: each parameter held by one optimizer, as the groups are now
        # None where something changed since the last step checked in Python: this one checks in Python too
        steady = None if self._held is not None else self._one_call.get(optimizer, self._plan, self._store.generation)
        plan = self._plan if steady is not None else self._refresh()  # steady: the fingerprint is as it was
        if plan.orphans:
            plan.check_orphans(self._model)
        weights = self._groups.weights()  # validated; raises before anything changes
        if _amp_skipped(optimizer):
            return  # GradScaler found inf/NaN: the optimizer skips this step, and so does syre
        rows = plan.by_group
        if self._config.rounding != "stochastic" and self._precision.due(self._rt.step) and plan.low_precision():
            live = [[e for e in row if e.param.grad is not None] if _nonzero(weights[gi]) else [] for gi, row in enumerate(rows)]
            self._precision.check(((e, weights[gi]) for gi, row in enumerate(live) for e in row), self._store.pair)
        self._rt.step += 1  # the one step count (the store's rounding stream reads step - 1 during the step)
        if isinstance(optimizer, FUSABLE):
            # syre.AdamW / syre.SGD: their step asks for this (``_take_work``) and decays in its own pass.
            # (the optimizer's pass walks the parameters that have a gradient: the entries are looked up by id)
            groups = {gi: (weights[gi], self._by_id(plan, gi)) for gi, row in enumerate(rows) if row and _nonzero(weights[gi])}
            self._work = Work(groups, self._store, self._config.foreach)
            return
        if steady is not None:
            # every decayed parameter has its gradient (and the native batches their storage): the buckets, as below
            for gi in steady.runs:
                if _nonzero(weights[gi]):
                    steady.run(gi, weights[gi])
            return
        for gi, w in enumerate(weights):
            if not rows[gi] or not _nonzero(w):
                continue
            params, buckets = self._buckets(plan, gi)
            grads = list(map(_GRAD, params))
            if buckets is not None and not any(map(operator.is_, grads, repeat(None))):
                functional.apply_buckets(buckets, w)  # the common case: one multi-tensor call per bucket
            else:
                live = [e for e, g in zip(rows[gi], grads) if g is not None]
                if live:
                    self._store.decay(live, w, self._config.foreach)
        if self._held is None:
            self._one_call.rebuild(optimizer, plan, self._store.generation, lambda gi: self._buckets(plan, gi)[1])

    def _take_work(self) -> Optional["Work"]:
        """The decay this step hands ``syre.AdamW`` / ``syre.SGD`` (made by the step pre-hook; None: none)."""
        work, self._work = self._work, None
        return work

    def _probed(self):
        """(entry, lr * gamma) of the parameters the pull check looks at this step."""
        plan = self._refresh()
        for gi, row in enumerate(plan.by_group):
            gamma = self._groups.gamma(gi)
            if gamma == 0.0:
                continue
            weight = as_float(self._optimizer.param_groups[gi]["lr"]) * gamma
            for e in row:
                if e.param.grad is not None:
                    yield e, weight

    # ------------------------------------------------------------------ public API
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer

    @property
    def config(self) -> Config:
        """The configuration (validated; seed, gamma and d_spread as restored from a checkpoint)."""
        return self._rt.config

    @property
    def _config(self) -> Config:
        return self._rt.config

    @property
    def seed(self) -> int:
        return self._config.seed

    @property
    def d_spread(self) -> float:
        return self._config.d_spread

    @property
    def mode(self) -> str:
        return self._config.mode

    def names(self) -> List[str]:
        """Canonical names of the covered parameters."""
        return [e.name for e in self._refresh().covered()]

    def group_gamma(self, group_index: int) -> float:
        """The gamma syre applies to param group ``group_index`` now."""
        return self._groups.gamma(group_index)

    def anchor(self, name: str) -> Anchor:
        """``Anchor(theta0, d)`` of parameter ``name``: fp32 (fp64 for fp64 parameters), full shape.

        For a parameter syre does not cover, theta0 is 0 and d is 1 (no decay toward anything).
        For a DTensor (FSDP2, tensor-parallel) parameter it is the full anchor, on the local shard's
        device, generated for this call (the step only ever generates the local shard's elements).
        """
        e = self._refresh().entry(name)
        p = e.param
        dtype, device = anchor_dtype(p), p.device
        if e.shard is not None:
            device = e.local().device
            t, x = self._store.full(e, dtype, device)
        else:
            t, x = self._store.pair(e) if e.covered else (None, None)
        theta0 = torch.zeros(p.shape, dtype=dtype, device=device) if t is None else t.detach().clone().contiguous()
        d = torch.ones(p.shape, dtype=dtype, device=device) if x is None else (1.0 + x).contiguous()
        return Anchor(theta0, d)

    def anchor_nbytes(self) -> int:
        """Bytes this ``Syre`` holds for anchors now (0 in seeded mode: nothing per parameter)."""
        self._refresh()
        return self._store.nbytes()

    def __repr__(self) -> str:
        c = self._config
        return (f"Syre(optimizer={type(self._optimizer).__name__}, gamma={c.gamma}, seed={c.seed}, "
                f"d_spread={c.d_spread}, mode={c.mode!r}, covered={len(self._plan.covered())})")

    def remove(self) -> None:
        """Detach the hooks, give back the weight decay taken over, and free the anchors."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._probe.remove()
        self._groups.restore()
        self._store.clear()
        self._removed = True


def attach_syre(optimizer: torch.optim.Optimizer, model: nn.Module, kwargs: Dict[str, Any]) -> "Syre":
    """One torch optimizer: the ``Syre`` already there when the model and every argument are those of its
    configuration now (a re-run notebook cell), a new ``Syre`` otherwise (which refuses a second one)."""
    existing = attached(optimizer) if isinstance(optimizer, torch.optim.Optimizer) else None
    if existing is not None and isinstance(model, nn.Module) and unwrap_model(model) is existing._model:
        if Config.from_kwargs(kwargs) == existing.config:
            return existing
    return Syre(optimizer, model, **kwargs)
