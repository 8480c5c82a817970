"""syre's checkpoint state: its format, its validation, and the way back to a plain optimizer.

``Syre.state_dict()`` is small and ``torch.load(weights_only=True)``-safe: its format version (which
is also the anchor format, ``syre.anchors.FORMATS``: a state of version 1 keeps its format-1
anchors, new attachments write version 2), the seed, gamma,
``d_spread``, mode, the weight decay taken over per group, and each covered parameter's name,
shape and resolved sigma0 -- never the anchors, which the seed regenerates. ``validate`` checks
every field of a saved state against the model before anything is assigned, so a bad or foreign
state changes nothing.

``Runtime`` is the one holder of an attachment's configuration and of what changes while it
trains; ``Checkpointing`` is ``Syre``'s ``state_dict`` / ``load_state_dict`` and the optimizer hooks
that carry that state inside ``optimizer.state_dict()``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .._validate import MODES, check_d_spread, check_nonneg_float, check_seed
from .._version import __version__
from ._groups import GROUP_KEY
from ._plan import FROZEN, LAZY

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Checkpointing", "FORMAT_VERSION", "FORMAT_VERSIONS", "Loaded", "OPTIMIZER_STATE_KEY", "Runtime", "build_state",
           "plain_state_dict", "validate_state"]

#: Version of the format of ``Syre.state_dict()`` written by new attachments; it names the anchor
#: generator (``syre.anchors.FORMAT``). Versions 1 and 2 load; a newer one is refused.
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)
#: Key under which syre's state rides along in ``optimizer.state_dict()``.
OPTIMIZER_STATE_KEY = "syre"


@dataclass
class Runtime:
    """One attachment's configuration and what changes while it trains, each held once.

    The plan, the param-group rules (``syre.core._groups``) and the anchor store (``syre.core._store``) read
    this object and keep no copy of it. ``config`` is the validated ``Config`` (replaced whole when a
    checkpoint restores seed, gamma and d_spread); the rest is exactly what ``Syre.state_dict()``
    saves beside it.
    """

    config: "Config"
    #: Steps taken (a step ``GradScaler`` skips is not one): the stochastic-rounding stream's generation is
    #: ``step - 1`` during a step, and the device-lr and precision checks run on multiples of it.
    step: int = 0
    #: Param-group index -> the ``weight_decay`` syre took over (given back by ``remove()``).
    takeover: Dict[int, float] = field(default_factory=dict)
    #: The anchor format (``syre.anchors.FORMATS``): 1 for a state restored from version 1.
    version: int = FORMAT_VERSION
    #: Parameter name -> sigma0, resolved the first time it is covered (or restored from a checkpoint).
    sigma0s: Dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Loaded:
    """A validated saved state, ready to assign."""

    seed: int
    d_spread: float
    gamma: Optional[float]
    takeover: Dict[int, float]
    sigma0s: Dict[str, float]
    version: int = FORMAT_VERSION
    target: Optional[Dict[str, Any]] = None  # None: the random anchor
    step: Optional[int] = None  # stochastic rounding's next step; None: rounding to nearest


def build_state(*, seed: int, gamma: Optional[float], d_spread: float, mode: str, takeover: Dict[int, float],
                params: List[Dict[str, Any]], version: int = FORMAT_VERSION, target: Optional[Dict[str, Any]] = None,
                step: Optional[int] = None) -> Dict[str, Any]:
    """The state dict; ``target`` and ``step`` appear only when not the defaults (the random anchor, rounding
    to nearest), so a default attachment's state is unchanged."""
    extra: Dict[str, Any] = {}
    if target is not None:
        extra["target"] = dict(target)
    if step is not None:
        extra["rounding"] = "stochastic"
        extra["step"] = int(step)
    return {
        "format": "syre",
        "version": version,
        "library_version": __version__,
        "seed": seed,
        "gamma": gamma,
        "d_spread": d_spread,
        "mode": mode,
        "takeover": {int(k): float(v) for k, v in takeover.items()},
        "params": params,
        **extra,
    }


def _bad(msg: str) -> ValueError:
    return ValueError(f"Invalid syre state: {msg}; nothing was changed")


def _group_index(k, n_groups: Optional[int]) -> int:
    try:
        gi = int(k) if isinstance(k, (int, str)) and not isinstance(k, bool) else None
    except ValueError:
        gi = None
    if gi is None or gi < 0 or (n_groups is not None and gi >= n_groups):
        allowed = f"0 <= index < {n_groups}" if n_groups is not None else "an index >= 0"
        raise _bad(f"'takeover' has the key {k!r}; expected a param-group index ({allowed})")
    return gi


def validate_state(sd, *, covered: Dict[str, tuple], idle: Dict[str, tuple], n_groups: Optional[int]) -> Loaded:
    """Check every field of ``sd`` (a ``Syre.state_dict()``) against the parameters; assign nothing.

    ``covered``: name -> shape of the parameters syre covers now; each must be in the state, with
    its shape. ``idle``: name -> shape of parameters syre would cover but does not now (frozen,
    not yet materialised): the state may hold them too. ``n_groups``: the optimizer's number of
    param groups (None: not checked).
    """
    if not isinstance(sd, dict):
        raise TypeError(f"Invalid syre state: expected a dict from Syre.state_dict(), got {type(sd).__name__}")
    if sd.get("format") != "syre":
        raise ValueError(f"Invalid syre state: 'format' is {sd.get('format')!r}, expected 'syre'; this is not a Syre.state_dict()")
    version = sd.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _bad(f"'version' is {version!r}; expected an int >= 1")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"syre state has format version {version}, newer than this syre {__version__} reads "
            f"(<= {FORMAT_VERSION}); upgrade torch-syre to load it"
        )
    known_keys = {"format", "version", "library_version", "seed", "gamma", "d_spread", "mode", "takeover", "params",
                  "target", "rounding", "step"}
    unknown = sorted(set(sd) - known_keys)
    if unknown:
        raise _bad(f"unknown fields {unknown} (saved by a newer syre?); upgrade torch-syre to load it")
    target = _check_target(sd.get("target"))
    step = None
    if "rounding" in sd or "step" in sd:
        if sd.get("rounding") != "stochastic" or isinstance(sd.get("step"), bool) or not isinstance(sd.get("step"), int) \
                or sd["step"] < 0:
            raise _bad(f"'rounding' is {sd.get('rounding')!r} and 'step' {sd.get('step')!r}; expected 'stochastic' and an int >= 0")
        step = sd["step"]
    for key in ("seed", "d_spread", "params", "takeover", "gamma"):
        if key not in sd:
            raise ValueError(f"Invalid syre state: missing key {key!r} (truncated or corrupted)")
    seed = check_seed(sd["seed"])
    d_spread = check_d_spread(sd["d_spread"])
    gamma = None if sd["gamma"] is None else check_nonneg_float("gamma", sd["gamma"])
    if "mode" in sd and sd["mode"] not in MODES:
        raise _bad(f"'mode' is {sd['mode']!r}; expected one of {MODES}")
    if not isinstance(sd["params"], list) or not isinstance(sd["takeover"], dict):
        raise ValueError("Invalid syre state: 'params' must be a list and 'takeover' a dict (corrupted)")
    takeover = {}
    for k, v in sd["takeover"].items():
        takeover[_group_index(k, n_groups)] = check_nonneg_float(f"takeover[{k!r}] (a weight decay)", v)
    saved: Dict[str, Dict[str, Any]] = {}
    for item in sd["params"]:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("shape"), list)
                and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in item["shape"])):
            raise ValueError(f"Invalid syre state: bad parameter record {item!r} (corrupted)")
        check_nonneg_float(f"sigma0 of {item['name']!r}", item.get("sigma0"))
        if item["name"] in saved:
            raise _bad(f"the parameter {item['name']!r} appears twice")
        saved[item["name"]] = item
    known = dict(idle, **covered)
    missing = sorted(set(covered) - set(saved))
    unexpected = sorted(set(saved) - set(known))
    shapes = [
        f"{n}: saved {tuple(saved[n]['shape'])}, model {tuple(known[n])}"
        for n in sorted(set(known) & set(saved))
        if tuple(saved[n]["shape"]) != tuple(known[n]) and known[n] is not None
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
    return Loaded(seed, d_spread, gamma, takeover, {n: float(item["sigma0"]) for n, item in saved.items()}, version,
                  target, step)


def _check_target(t) -> Optional[Dict[str, Any]]:
    """A saved target record: ``{"kind", "init_seed", "init_scheme"}`` or ``{"kind", "checksum"}``, or None."""
    if t is None:
        return None
    ok = isinstance(t, dict) and t.get("kind") in ("init", "pretrained", "mapping")
    if ok and "init_seed" in t:
        ok = t["kind"] == "init" and isinstance(t.get("init_scheme"), str) and set(t) == {"kind", "init_seed", "init_scheme"}
        if ok:
            check_seed(t["init_seed"])
    elif ok:
        ok = isinstance(t.get("checksum"), str) and set(t) == {"kind", "checksum"}
    if not ok:
        raise _bad(f"'target' is {t!r}; expected {{'kind', 'init_seed', 'init_scheme'}} or {{'kind', 'checksum'}}")
    return dict(t)


def plain_state_dict(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """The optimizer state a plain optimizer (no syre) should load from a syre-attached one.

    ``optimizer.state_dict()`` under syre has, in each group whose ``weight_decay`` syre took over,
    ``weight_decay = 0`` and the decay in ``syre_gamma``: a plain optimizer loading it would train
    with no decay at all. This returns a copy with those groups' ``weight_decay`` set back to their
    ``syre_gamma`` (decay toward the origin, the optimizer's own), the ``syre_gamma`` keys and the
    ``"syre"`` entry removed::

        plain_opt.load_state_dict(syre.plain_state_dict(checkpoint["optimizer"]))
    """
    if not isinstance(state_dict, dict) or not isinstance(state_dict.get("param_groups"), list):
        raise TypeError("Invalid state_dict: expected an optimizer.state_dict() (a dict with 'param_groups'), "
                        f"got {type(state_dict).__name__}")
    out = dict(state_dict)
    saved = out.pop(OPTIMIZER_STATE_KEY, None)
    takeover = saved.get("takeover", {}) if isinstance(saved, dict) else {}
    taken = {int(k) for k in takeover}
    groups = []
    for gi, group in enumerate(state_dict["param_groups"]):
        group = copy.copy(group)
        gamma = group.pop(GROUP_KEY, None)
        if gi in taken and "weight_decay" in group:
            group["weight_decay"] = float(gamma) if gamma is not None else float(takeover.get(gi, takeover.get(str(gi), 0.0)))
        groups.append(group)
    out["param_groups"] = groups
    return out


class OptimizerStateHooks:
    """The hooks that carry an attachment's state in ``optimizer.state_dict()`` (``Syre``, and ``ZeroSyre``
    under DeepSpeed): the state is validated before torch replaces the optimizer's, and assigned after.

    The owner provides ``state_dict()``, ``load_state_dict()``, ``_validate(state, n_groups)``, ``_groups``
    and ``_rt``; ``_after_optimizer_load(optimizer)`` runs last (nothing by default).
    """

    _pending = None
    _before_load: list = []

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
        self._groups.after_load(self._before_load, self._rt.takeover if pending is not None else None)
        self._before_load = []
        self._after_optimizer_load(optimizer)

    def _after_optimizer_load(self, optimizer) -> None:
        pass


class Checkpointing(OptimizerStateHooks):
    """``Syre``'s checkpoint methods: its own state, and the hooks that carry it in ``optimizer.state_dict()``."""

    def state_dict(self) -> Dict[str, Any]:
        """Small, ``weights_only``-safe state: seed, configuration, names, shapes, sigma0; no anchors."""
        c = self._config
        params = [{"name": e.name, "shape": list(e.param.shape), "sigma0": float(e.sigma0)} for e in self._refresh().covered()]
        for e in self._plan.covered():
            if not self._target.random:
                self._store.pair(e)  # a copied target is taken when first covered: before its checksum
        return build_state(seed=c.seed, gamma=c.gamma, d_spread=c.d_spread, mode=c.mode,
                           takeover=self._rt.takeover, params=params, version=self._rt.version,
                           target=self._target.state(),
                           step=self._rt.step if c.rounding == "stochastic" else None)

    def _validate(self, state_dict, n_groups: Optional[int] = None):
        plan = self._refresh()
        covered = {e.name: tuple(e.param.shape) for e in plan.covered()}
        idle = {e.name: (None if e.reason == LAZY else tuple(e.param.shape)) for e in plan.entries
                if e.reason in (FROZEN, LAZY)}
        n = len(self._optimizer.param_groups) if n_groups is None else n_groups
        loaded = validate_state(state_dict, covered=covered, idle=idle, n_groups=n)
        self._target.check(loaded.target, names=loaded.sigma0s)
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
        rt = self._rt
        rt.config = rt.config.replace(seed=loaded.seed, d_spread=loaded.d_spread, gamma=loaded.gamma)
        rt.takeover.clear()
        rt.takeover.update(loaded.takeover)
        self._groups.adopt_zeros()
        rt.sigma0s.update(loaded.sigma0s)
        rt.version = loaded.version
        for e in self._plan.entries:
            if e.name in loaded.sigma0s:
                e.sigma0 = loaded.sigma0s[e.name]
        self._target.adopt(loaded.target)
        if loaded.step is not None:
            rt.step = loaded.step
        self._store.sync(self._plan.entries)

