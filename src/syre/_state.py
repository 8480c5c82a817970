"""syre's checkpoint state: its format, its validation, and the way back to a plain optimizer.

``Syre.state_dict()`` is small and ``torch.load(weights_only=True)``-safe: the seed, gamma,
``d_spread``, mode, the weight decay taken over per group, and each covered parameter's name,
shape and resolved sigma0 -- never the anchors, which the seed regenerates. ``validate`` checks
every field of a saved state against the model before anything is assigned, so a bad or foreign
state changes nothing.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ._groups import GROUP_KEY
from ._validate import MODES, check_d_spread, check_nonneg_float, check_seed
from ._version import __version__

__all__ = ["FORMAT_VERSION", "Loaded", "OPTIMIZER_STATE_KEY", "build_state", "plain_state_dict", "validate_state"]

#: Version of the format of ``Syre.state_dict()``; loading a newer one is refused.
FORMAT_VERSION = 1
#: Key under which syre's state rides along in ``optimizer.state_dict()``.
OPTIMIZER_STATE_KEY = "syre"


@dataclass(frozen=True)
class Loaded:
    """A validated saved state, ready to assign."""

    seed: int
    d_spread: float
    gamma: Optional[float]
    takeover: Dict[int, float]
    sigma0s: Dict[str, float]


def build_state(*, seed: int, gamma: Optional[float], d_spread: float, mode: str, takeover: Dict[int, float],
                params: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {
        "format": "syre",
        "version": FORMAT_VERSION,
        "library_version": __version__,
        "seed": seed,
        "gamma": gamma,
        "d_spread": d_spread,
        "mode": mode,
        "takeover": {int(k): float(v) for k, v in takeover.items()},
        "params": params,
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
    return Loaded(seed, d_spread, gamma, takeover, {n: float(item["sigma0"]) for n, item in saved.items()})


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
        raise TypeError(f"Invalid state_dict: expected an optimizer.state_dict() (a dict with 'param_groups'), got {type(state_dict).__name__}")
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
