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
take (one that AMP's ``GradScaler`` skips on an inf/NaN gradient) applies no decay. Parameters
whose ``.grad`` is ``None`` at the step are left alone, as torch optimizers leave them.

Nothing is decided once and kept: at every step syre derives what it covers from the optimizer
and the model as they are (``syre._plan``), reads each group's gamma and weight decay where they
are (``syre._groups``), and keeps anchors that follow each parameter's dtype and device
(``syre._store``). One optimizer has at most one ``Syre``.

Distributed training needs no communication: anchors depend on (seed, name, element index)
only. Under FSDP2, tensor parallelism and 2-D meshes each rank decays its local shard toward the
anchor of its own elements (``syre._dist``); FSDP1 is refused.
"""
from __future__ import annotations

import operator
import weakref
from itertools import repeat
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from . import _dist
from . import functional as F
from ._checks import (  # noqa: F401  (public names of syre.optim)
    PRECISION_CHECK_EVERY,
    PROBE_ELEMENTS,
    PROBE_STEPS,
    WEAK_PULL_RATIO,
    WEAK_PULL_SHARE,
    PrecisionCheck,
    PrecisionWarning,
    PullProbe,
    WeakPullWarning,
    verdict,
)
from ._groups import GROUP_KEY, DecaySettingWarning, Groups, as_float  # noqa: F401
from ._plan import EXCLUDED, FROZEN, LAZY, UNHELD, build_plan, fingerprint  # noqa: F401
from ._report import coverage_rows, summary_text
from ._state import FORMAT_VERSION, OPTIMIZER_STATE_KEY, build_state, validate_state  # noqa: F401
from ._store import anchor_dtype, make_store
from ._validate import MODES  # noqa: F401
from .anchors import Anchor
from .config import DEFAULT_D_SPREAD, Config
from ._targets import make_target
from .select import check_rules_match, collect, unwrap_model
from .sigma0 import DEFAULT_SIGMA0

__all__ = ["DecaySettingWarning", "FORMAT_VERSION", "PrecisionWarning", "Syre", "WeakPullWarning", "attach", "attached"]

#: Every ``Syre`` ever attached, weakly (a ``Syre`` lives as long as its optimizer's hooks). Looked up
#: by identity, so optimizers and models need not be hashable.
_ALL: "weakref.WeakSet" = weakref.WeakSet()
_GRAD = operator.attrgetter("grad")


def _nonzero(w) -> bool:
    """``lr * gamma`` is not 0 (a tensor weight is taken as nonzero: reading it would sync the device)."""
    return isinstance(w, torch.Tensor) or w != 0.0


def attached(optimizer: torch.optim.Optimizer) -> Optional["Syre"]:
    """The ``Syre`` attached to ``optimizer`` (not removed), or None."""
    return next((s for s in list(_ALL) if s._optimizer is optimizer and not s._removed), None)


def on_model(model: nn.Module) -> List["Syre"]:
    """The live ``Syre`` objects attached to optimizers of ``model``."""
    model = unwrap_model(model)
    return [s for s in list(_ALL) if s._model is model and not s._removed]


def _refuse_reparametrized(model: nn.Module) -> None:
    from .reparam import AnchorShift

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


class Syre:
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
        sigma0: ``"lecun"`` (default: 1/sqrt(fan_in), the LeCun init std), ``"kaiming"``,
            ``"xavier"``, ``"lecun:0.3"`` (0.3 x the init std), an absolute float, or a callable
            ``(name, param) -> float``. See ``syre.sigma0`` and docs/defaults.md.
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
        target: the point ``theta0`` the decay pulls toward (see ``syre._targets``): ``"random"``
            (syre's anchor, the default), ``"init"`` (the initial weights: recomputed from
            ``syre.init_``'s seed and scheme, nothing stored in seeded mode; otherwise copied at
            attach), ``"pretrained"`` (the weights at attach, copied), or a mapping ``name -> tensor``
            (copied, one per covered parameter). ``D`` applies to every target; a copied target is
            kept (fp32) in every mode, and a checkpoint records its checksum.
        rounding: ``"nearest"`` (torch's rounding of the decayed value into the parameter's dtype),
            or ``"stochastic"`` for fp16/bf16 parameters: unbiased in expectation, its random bits
            from a stream keyed by (seed, name, index, step) (see ``syre._rounding``). Only syre's
            decay is rounded so; the optimizer's own update is rounded by torch.
    """

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
        self._optimizer, self._model, self._config, self._requested = optimizer, model, config, config
        self._sigma0s: Dict[str, float] = {}
        infos = list(collect(model).values())
        self._target = make_target(config.target, model, infos)
        if not self._target.random:  # the anchor's size is the target's RMS (reported as sigma0)
            self._plan_config = config.replace(sigma0=_target_scale(self._target, infos))
        else:
            self._plan_config = config
        plan = build_plan(optimizer, model, self._plan_config, self._sigma0s)
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
        self._groups = Groups(optimizer, config.gamma,
                              covers=lambda gi: gi < len(self._plan.by_group) and bool(self._plan.by_group[gi]))
        self._groups.attach(check_idle=_check_idle)  # checks, then takes over weight_decay (the first change)
        self._plan, self._fp = plan, fingerprint(optimizer)
        self._store = make_store(config.mode, config.seed, config.d_spread)
        self._store.target, self._store.rounding = (None if self._target.random else self._target), config.rounding
        self._store.sync(plan.entries)
        if not self._target.regenerable:  # a copied target is the weights as they are at attach
            for e in plan.covered():
                self._target.take(e)
        self._cache: Dict[int, tuple] = {}
        self._cache_key: Optional[tuple] = None
        self._steps = 0
        self._removed = False
        self._pending: Optional[dict] = None
        self._before_load: list = []
        self._precision = PrecisionCheck()
        self._handles = [optimizer.register_step_pre_hook(self._pre_step)]
        # Registered after _pre_step: the probe sees the optimizer's own update.
        self._probe = PullProbe(optimizer, self._probed, lambda: {e.name: e.param.numel() for e in self._plan.entries})
        if hasattr(optimizer, "register_state_dict_post_hook"):
            self._handles += [
                optimizer.register_state_dict_post_hook(self._optimizer_state_dict_hook),
                optimizer.register_load_state_dict_pre_hook(self._optimizer_load_pre_hook),
                optimizer.register_load_state_dict_post_hook(self._optimizer_load_post_hook),
            ]
        _ALL.add(self)

    # ------------------------------------------------------------------ the plan, now
    def _refresh(self):
        """The plan for the optimizer and model as they are now (rebuilt only when they changed)."""
        fp = fingerprint(self._optimizer)
        if fp != self._fp:
            self._plan = build_plan(self._optimizer, self._model, self._plan_config, self._sigma0s)
            self._store.sync(self._plan.entries)
            self._fp = fp
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

    @torch.no_grad()
    def _decay(self, optimizer) -> None:
        plan = self._refresh()
        weights = self._groups.weights()  # validated; raises before anything changes
        rows = plan.by_group
        if self._config.rounding != "stochastic" and self._precision.due(self._steps) and plan.low_precision():
            live = [[e for e in row if e.param.grad is not None] if _nonzero(weights[gi]) else [] for gi, row in enumerate(rows)]
            self._precision.check(((e, weights[gi]) for gi, row in enumerate(live) for e in row), self._store.pair)
        self._store.step = self._steps  # the stochastic-rounding stream's generation
        self._steps += 1
        if getattr(optimizer, "_syre_fusable", False) and self._store.mode == "stored":
            # syre.AdamW / syre.SGD: their step reads each group's weight and anchors in its own pass.
            from .fused import _Fused

            groups = {gi: (weights[gi], {id(e.param): (e,) + tuple(self._store.pair(e)) for e in row if e.param.grad is not None})
                      for gi, row in enumerate(rows) if row and _nonzero(weights[gi])}
            optimizer._syre_fused = _Fused(groups, lambda entries, w: self._store.decay(entries, w, self._config.foreach))
            return
        for gi, w in enumerate(weights):
            if not rows[gi] or not _nonzero(w):
                continue
            params, buckets = self._buckets(plan, gi)
            grads = list(map(_GRAD, params))
            if buckets is not None and not any(map(operator.is_, grads, repeat(None))):
                F.apply_buckets(buckets, w)  # the common case: one multi-tensor call per bucket
            else:
                live = [e for e, g in zip(rows[gi], grads) if g is not None]
                if live:
                    self._store.decay(live, w, self._config.foreach)

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
        return self._config

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

    def coverage(self) -> List[Dict[str, Any]]:
        """One row per parameter: name, shape, module type, group, covered, decayed, reason, sigma0,
        gamma, strength (``gamma * sigma0``) and the measured ``pull_ratio`` (None until measured).
        ``decayed`` is ``covered`` with a gamma above 0."""
        return coverage_rows(self._refresh(), self._groups.gamma, self._probe.ratios)

    def pull_report(self) -> Dict[str, Any]:
        """Does syre matter here? The ratios measured over the first PROBE_STEPS steps, and the verdict.

        ``{"params": {name: {"decay", "anchor", "pull"}}, "total": {...}, "verdict": str}``:
        ``decay`` is ``lr * gamma * RMS(p) / RMS(update)`` (is the decay strong enough to shape the
        weights?), ``anchor`` is ``sigma0 / RMS(p)`` (does syre differ from weight decay?), ``pull``
        their product; totals are element-weighted medians. See ``syre._checks`` for the thresholds.
        """
        self._refresh()
        total = self._probe.totals()
        return {"params": {n: dict(r) for n, r in self._probe.ratios.items()}, "total": total,
                "verdict": verdict(total["decay"], total["anchor"])}

    def pull_ratios(self) -> Dict[str, float]:
        """Measured per-step pull / optimizer update of each checked parameter (empty before step PROBE_STEPS).

        The pull is ``lr * gamma * sigma0``, the update the RMS of the optimizer's own change of the
        parameter in that step (syre's decay excluded); the median over the first PROBE_STEPS steps.
        """
        return dict(self._probe.ratio)

    def anchor_nbytes(self) -> int:
        """Bytes this ``Syre`` holds for anchors now (0 in seeded mode: nothing per parameter)."""
        self._refresh()
        return self._store.nbytes()

    def summary(self) -> str:
        """A table of what is decayed, with sigma0, gamma, the breaking strength gamma * sigma0 and,
        after the first PROBE_STEPS steps, the measured pull / update ratio."""
        return summary_text(self, self.coverage(), self._store.nbytes(), self.pull_report())

    def __repr__(self) -> str:
        c = self._config
        return (f"Syre(optimizer={type(self._optimizer).__name__}, gamma={c.gamma}, seed={c.seed}, "
                f"d_spread={c.d_spread}, mode={c.mode!r}, covered={len(self._plan.covered())})")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """Small, ``weights_only``-safe state: seed, configuration, names, shapes, sigma0; no anchors."""
        c = self._config
        params = [{"name": e.name, "shape": list(e.param.shape), "sigma0": float(e.sigma0)} for e in self._refresh().covered()]
        for e in self._plan.covered():
            if not self._target.random:
                self._store.pair(e)  # a copied target is taken when first covered: before its checksum
        return build_state(seed=c.seed, gamma=c.gamma, d_spread=c.d_spread, mode=c.mode,
                           takeover=self._groups.takeover, params=params, version=self._store.version,
                           target=self._target.state(),
                           step=self._steps if c.rounding == "stochastic" else None)

    def _validate(self, state_dict, n_groups: Optional[int] = None):
        plan = self._refresh()
        covered = {e.name: tuple(e.param.shape) for e in plan.covered()}
        idle = {e.name: (None if e.reason == LAZY else tuple(e.param.shape)) for e in plan.entries
                if e.reason in (FROZEN, LAZY)}
        n = len(self._optimizer.param_groups) if n_groups is None else n_groups
        loaded = validate_state(state_dict, covered=covered, idle=idle, n_groups=n)
        self._target.check(loaded.target)
        if (loaded.step is not None) != (self._config.rounding == "stochastic"):
            raise ValueError(
                "syre state does not match this attachment; nothing was changed. It was saved with rounding="
                f"{'stochastic' if loaded.step is not None else 'nearest'!r}, this Syre rounds {self._config.rounding!r}"
            )
        return loaded

    def check_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Check ``state_dict`` as ``load_state_dict`` does, and load nothing (a ``ValueError`` names the difference)."""
        self._validate(state_dict)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore seed, gamma, d_spread, the anchor format, the weight decay taken over and per-parameter sigma0.

        A state of version 1 keeps its format-1 anchors (and saves as version 1 again).

        Every field is checked against the model first; on any difference a ``ValueError`` names
        it and nothing changes. The current ``mode`` is kept (it does not change the numbers).
        """
        loaded = self._validate(state_dict)
        self._config = self._config.replace(seed=loaded.seed, d_spread=loaded.d_spread, gamma=loaded.gamma)
        self._groups.gamma_default = loaded.gamma
        self._groups.takeover = dict(loaded.takeover)
        self._sigma0s.update(loaded.sigma0s)
        for e in self._plan.entries:
            if e.name in loaded.sigma0s:
                e.sigma0 = loaded.sigma0s[e.name]
        self._target.adopt(loaded.target)
        if loaded.step is not None:
            self._steps = self._store.step = loaded.step
        self._store.configure(loaded.seed, loaded.d_spread, loaded.version)
        self._store.sync(self._plan.entries)

    def _optimizer_state_dict_hook(self, optimizer, state_dict):
        state_dict[OPTIMIZER_STATE_KEY] = self.state_dict()
        return state_dict

    def _optimizer_load_pre_hook(self, optimizer, state_dict):
        self._pending, self._before_load = None, self._groups.snapshot()  # nothing left from a failed load
        if OPTIMIZER_STATE_KEY not in state_dict:
            return None
        state_dict = dict(state_dict)
        pending = state_dict.pop(OPTIMIZER_STATE_KEY)
        groups = state_dict.get("param_groups")
        self._validate(pending, len(groups) if isinstance(groups, list) else None)  # before torch changes anything
        self._pending = pending
        return state_dict

    def _optimizer_load_post_hook(self, optimizer) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self.load_state_dict(pending)
        self._groups.after_load(self._before_load, self._groups.takeover if pending is not None else None)
        self._before_load = []

    def remove(self) -> None:
        """Detach the hooks, give back the weight decay taken over, and free the anchors."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._probe.remove()
        self._groups.restore()
        self._store.clear()
        self._removed = True


def attach(optimizer, model: Optional[nn.Module] = None, **kwargs):
    """Attach syre to ``optimizer``: one added line. Returns the ``Syre`` object.

    ``syre.attach(opt, model, gamma=0.1)`` makes every ``opt.step()`` first apply
    ``p <- p - lr * gamma * D * (p - theta0)`` (AdamW's decoupled convention). See ``Syre``.
    Attaching again to an optimizer that has syre (a re-run notebook cell) returns the ``Syre``
    already there when the model and every argument are the same, and is refused otherwise.

    A list of optimizers over one model (Muon for the matrices, AdamW for the rest) gives one
    ``MultiSyre``: the same anchors, each parameter decayed by the optimizer that holds it, the
    model covered exactly once (see ``syre._multi``).

    A ``deepspeed.DeepSpeedEngine`` (``syre.attach(engine, ...)``, no model) goes to
    ``syre.integrations.deepspeed.attach``.
    """
    if type(optimizer).__module__.startswith("deepspeed.") and not isinstance(optimizer, torch.optim.Optimizer):
        from .integrations.deepspeed import attach_engine

        return attach_engine(optimizer, model, kwargs)
    if model is None:
        raise TypeError("syre.attach(optimizer, model, ...) needs the model whose parameters the optimizer holds")
    if isinstance(optimizer, (list, tuple)):
        from ._multi import MultiSyre

        return MultiSyre(optimizer, model, **kwargs)
    existing = attached(optimizer) if isinstance(optimizer, torch.optim.Optimizer) else None
    if existing is not None and isinstance(model, nn.Module) and unwrap_model(model) is existing._model:
        if Config.from_kwargs(kwargs) == existing._requested:
            return existing
    return Syre(optimizer, model, **kwargs)
