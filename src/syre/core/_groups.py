"""syre's settings per param group: gamma, the takeover of ``weight_decay``, and their rules.

All per-group state lives where torch keeps hyperparameters, in ``optimizer.param_groups``:
``group["syre_gamma"]`` is the gamma syre applies to that group (``attach(gamma=...)`` when the
key is absent). ``gamma=None`` *takes over* a group's ``weight_decay``: it moves the value to
``syre_gamma`` and sets ``weight_decay`` to 0, where the optimizer applies it decoupled with the
group's lr (so syre's ``p - lr * gamma * D * (p - theta0)`` with ``sigma0 = 0`` is the optimizer's
own decay); syre remembers what it took over (``takeover``) to give it back on ``remove()``.

``Groups.weights()`` reads every group as it is at the step, validates what it reads, and keeps
the rules (each broken rule is an error or a one-time warning naming the group and the remedy):

* ``syre_gamma`` must be a finite float >= 0 (it may have been written after attach);
* a ``weight_decay`` written into a taken-over group after the takeover (a weight-decay schedule,
  as in DINO or MAE; 0 included, which turns syre's decay off there) becomes syre's gamma for that
  group, and ``weight_decay`` goes back to 0 (warned once); syre writes its own 0.0 object there, so
  a write of 0 is seen too; a non-zero ``weight_decay`` beside an explicit gamma is decay toward the origin on
  top of syre (warned once);
* ``lr * gamma`` above 1 moves each element past its anchor: refused at attach; at a step
  (a schedule) warned once when in (1, 2], refused above 2, where the decay diverges.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional

import torch

from .._validate import check_nonneg_float, stacklevel

__all__ = ["DecaySettingWarning", "GROUP_KEY", "Groups", "as_float", "equivalent_gamma", "is_decoupled"]

#: Param-group key that sets syre's gamma for that group (overrides ``attach(gamma=...)``).
GROUP_KEY = "syre_gamma"
#: ``lr * gamma`` above this overshoots the anchor (refused at attach, warned at a step).
OVERSHOOT = 1.0
#: ``lr * gamma`` above this diverges (refused at a step).
DIVERGES = 2.0
#: A device (non-CPU) tensor ``lr`` is read back to check ``lr * gamma`` this often (steps).
DEVICE_LR_CHECK_EVERY = 100

_DEFAULT = object()  # no GROUP_KEY in a group


class DecaySettingWarning(UserWarning):
    """A param group's settings conflict with syre's decay, or changed under it (issued once per case)."""


def as_float(x) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def _decoupled_classes() -> tuple:
    """Optimizers whose ``weight_decay`` is ``p.mul_(1 - lr * weight_decay)`` with the group's lr."""
    return tuple(getattr(torch.optim, n) for n in ("AdamW", "Muon", "Adafactor") if hasattr(torch.optim, n))


def is_decoupled(optimizer: torch.optim.Optimizer, group: dict) -> bool:
    """Whether ``group``'s ``weight_decay`` is decoupled with the group's lr (so syre can take it over).

    AdamW, Muon and Adafactor (torch's own), any group with ``decoupled_weight_decay=True`` (Adam,
    NAdam, RAdam), and plain SGD without momentum (where coupled and decoupled are the same update).
    """
    if isinstance(optimizer, _decoupled_classes()) or group.get("decoupled_weight_decay") is True:
        return True
    return type(optimizer) is torch.optim.SGD and not group.get("momentum", 0) and not group.get("nesterov", False)


def equivalent_gamma(optimizer: torch.optim.Optimizer) -> List[Optional[float]]:
    """Per param group, the decoupled gamma whose decay shrinks the weights as the group's coupled weight decay does.

    * SGD with momentum ``mu`` (dampening ``d``): ``weight_decay * (1 - d) / (1 - mu)``, the steady
      state of the pull through the momentum buffer (``weight_decay / (1 - mu)`` with Nesterov);
    * Adam, AdamW-style optimizers without decoupling, RMSprop, Adagrad (an L2 ``weight_decay``
      divided by the adaptive denominator ``sqrt(v) + eps``): the gamma that shrinks the squared
      norm of the weights at the same rate, ``weight_decay * sum(p^2 / (sqrt(v) + eps)) / sum(p^2)``,
      from the optimizer's state now (so call it after some steps of training); the per-element
      rates ``weight_decay / (sqrt(v) + eps)`` differ, and no single gamma reproduces each of them;
    * groups whose decay is already decoupled, or without weight decay: their ``weight_decay``.

    None for a group whose optimizer has no state yet or that syre does not know.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"Invalid optimizer: {optimizer!r} ({type(optimizer).__name__}); expected a torch.optim.Optimizer")
    out: List[Optional[float]] = []
    name = type(optimizer).__name__
    for group in optimizer.param_groups:
        wd = as_float(group.get("weight_decay", 0.0) or 0.0)
        if not wd or is_decoupled(optimizer, group):
            out.append(wd)
        elif isinstance(optimizer, torch.optim.SGD):
            mu, damp = as_float(group.get("momentum", 0) or 0), as_float(group.get("dampening", 0) or 0)
            out.append(wd / (1.0 - mu) if group.get("nesterov") else wd * (1.0 - damp) / (1.0 - mu))
        else:
            key = "exp_avg_sq" if "Adam" in name or name == "NAdam" else ("square_avg" if name == "RMSprop" else "sum")
            num = den = 0.0
            for p in group["params"]:
                v = optimizer.state.get(p, {}).get(key)
                if v is None:
                    continue
                step = optimizer.state[p].get("step")
                v = v.detach().float()
                if key == "exp_avg_sq" and step is not None:  # Adam's bias correction of v
                    v = v / (1.0 - group["betas"][1] ** as_float(step))
                w = p.detach().float().square()
                num += float((w / (v.sqrt() + group.get("eps", 1e-8))).sum())
                den += float(w.sum())
            out.append(wd * num / den if den > 0.0 else None)
    return out


def _coupled_advice(optimizer, group) -> str:
    name = type(optimizer).__name__
    momentum = as_float(group.get("momentum", 0) or 0)
    if isinstance(optimizer, torch.optim.SGD) and momentum:
        damp = as_float(group.get("dampening", 0) or 0)
        factor = (1.0 - damp) / (1.0 - momentum) if not group.get("nesterov") else 1.0 / (1.0 - momentum)
        wd = as_float(group["weight_decay"])
        return (f"{name} with momentum {momentum:g} adds weight_decay * p to the gradient, and the momentum buffer "
                f"multiplies its steady-state pull by {factor:g}: the decoupled gamma with the same pull per step is "
                f"weight_decay x {factor:g} = {wd * factor:.3g} (see docs/guide.md, 'Choosing gamma')")
    if "Adam" in name or name in ("RMSprop", "Adagrad", "Adadelta", "Adamax"):
        return (f"{name} adds weight_decay * p to the gradient and then divides it by the adaptive denominator, so "
                "the decay differs per element and over time and no single decoupled gamma equals it; after some steps "
                "of training syre.equivalent_gamma(optimizer) gives the gamma that shrinks the weights' norm at the same "
                "rate, or start from the weight decay an AdamW run would use (see docs/guide.md, 'Choosing gamma')")
    return f"{name} adds weight_decay * p to the gradient and passes it through its update rule"


class Groups:
    """The per-group rules of one ``Syre`` (see the module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, runtime, covers=None):
        self.optimizer = optimizer
        #: The attachment's ``syre.core._state.Runtime``: gamma from its config, the takeover and the step count kept there.
        self.runtime = runtime
        #: ``covers(gi)``: whether syre decays anything in group ``gi`` now (a group it covers nothing in keeps its
        #: weight_decay, the user's choice for what they excluded, without a warning).
        self.covers = covers or (lambda gi: True)
        self._known = 0  # groups seen so far; later ones are new (add_param_group)
        self._warned: set = set()
        self._zeros: Dict[int, float] = {}  # group index -> the 0.0 syre wrote into its weight_decay

    @property
    def gamma_default(self) -> Optional[float]:
        """``attach(gamma=...)`` (None: take over the groups' weight decay)."""
        return self.runtime.config.gamma

    @property
    def takeover(self) -> Dict[int, float]:
        """Group index -> the weight decay syre took over (given back by ``restore``)."""
        return self.runtime.takeover

    # ------------------------------------------------------------------ reading
    def gamma(self, gi: int) -> float:
        """The gamma syre applies to group ``gi`` now, validated where it is read."""
        group = self.optimizer.param_groups[gi]
        if GROUP_KEY not in group:
            return 0.0 if self.gamma_default is None else self.gamma_default
        g = group[GROUP_KEY]
        if type(g) is float and 0.0 <= g < math.inf:  # the common case, read at every step
            return g
        try:
            return check_nonneg_float(f"param_groups[{gi}]['{GROUP_KEY}']", g)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{exc}; syre reads it at every step (set it to a finite float >= 0, or delete the key "
                            "to use attach(gamma=...))") from None

    # ------------------------------------------------------------------ takeover
    def takeover_due(self, indices) -> Dict[int, float]:
        """Which groups' ``weight_decay`` gamma=None takes over (checked, nothing applied yet)."""
        opt = self.optimizer
        due: Dict[int, float] = {}
        for gi in indices:
            group = opt.param_groups[gi]
            if GROUP_KEY in group:
                continue
            wd = group.get("weight_decay", None)
            if self.gamma_default is not None:
                if wd and self.covers(gi):
                    self._warn_origin(gi, wd, stacklevel=5)
                continue
            if wd is None:
                raise ValueError(
                    f"gamma=None takes over each param group's weight_decay, but param group {gi} of "
                    f"{type(opt).__name__} has none; pass gamma=... explicitly"
                )
            wd = check_nonneg_float(f"param_groups[{gi}]['weight_decay']", wd)
            if wd and not is_decoupled(opt, group):
                raise ValueError(
                    f"gamma=None cannot take over weight_decay={wd:g} of param group {gi}: {type(opt).__name__} applies it "
                    f"coupled, not as a decoupled decay. {_coupled_advice(opt, group)}. "
                    "Pass gamma=... explicitly (syre's decay is decoupled, as AdamW's), set weight_decay=0, or use "
                    "syre.Penalty for the coupled form"
                )
            due[gi] = wd
        return due

    def check_not_idle(self, due: Dict[int, float], indices) -> None:
        """Refuse gamma=None when no group has a weight decay to take over: syre would do nothing."""
        groups = self.optimizer.param_groups
        if self.gamma_default is not None or any(due.values()) or any(GROUP_KEY in groups[gi] for gi in indices):
            return
        raise ValueError(
            f"gamma=None takes over the groups' weight_decay, but every param group of {type(self.optimizer).__name__} has "
            "weight_decay=0, so syre would decay nothing. Pass gamma=... (the weight decay you would use), set the "
            "optimizer's weight_decay (TrainingArguments(weight_decay=...) under the transformers Trainer), or set "
            "param_groups[i]['syre_gamma']"
        )

    def apply_takeover(self, due: Dict[int, float]) -> None:
        for gi, wd in due.items():
            group = self.optimizer.param_groups[gi]
            group[GROUP_KEY] = wd
            self._zero_weight_decay(gi, group)
            self.takeover[gi] = wd

    def _zero_weight_decay(self, gi: int, group: dict) -> None:
        """Set a taken-over group's ``weight_decay`` to 0: a float object of syre's own, so that any value written
        there later, 0 included, is seen as written (``_written``)."""
        if "weight_decay" in group:
            wd = group["weight_decay"]
            if isinstance(wd, torch.Tensor):
                group["weight_decay"] = wd.zero_()
            else:
                group["weight_decay"] = self._zeros[gi] = float("0")  # a new object, not the shared constant 0.0

    def adopt_zeros(self) -> None:
        """Take the 0 in each taken-over group's ``weight_decay`` as syre's own (a takeover restored from a
        checkpoint: the groups were loaded before it); a nonzero value stays a write, read at the next step."""
        for gi in self.takeover:
            if gi < len(self.optimizer.param_groups):
                group = self.optimizer.param_groups[gi]
                wd = group.get("weight_decay")
                if wd is not None and not isinstance(wd, torch.Tensor) and wd == 0 and wd is not self._zeros.get(gi):
                    self._zero_weight_decay(gi, group)

    def _written(self, gi: int, group: dict) -> bool:
        """Whether ``weight_decay`` of taken-over group ``gi`` was written since syre set it to 0 (a schedule)."""
        wd = group.get("weight_decay")
        if wd is None:
            return False
        if isinstance(wd, torch.Tensor):  # zeroed in place: a write shows as a nonzero value only
            return as_float(wd) != 0.0
        return wd is not self._zeros.get(gi)

    def attach(self, check_idle: bool = True) -> None:
        """At attach: decide, check and apply the takeover of every group; check lr * gamma."""
        indices = range(len(self.optimizer.param_groups))
        due = self.takeover_due(indices)
        if check_idle:
            self.check_not_idle(due, indices)
        for gi in indices:
            gamma = due.get(gi, None)
            gamma = self.gamma(gi) if gamma is None else gamma
            lr = as_float(self.optimizer.param_groups[gi]["lr"])
            if lr * gamma > OVERSHOOT:
                raise ValueError(
                    f"Invalid gamma for param group {gi}: lr * gamma = {lr:g} * {gamma:g} = {lr * gamma:g} > 1, so each "
                    "step would move the weights past their anchors (above 2 the decay diverges); syre's gamma is "
                    "decoupled, as AdamW's weight_decay (the pull per step is lr * gamma): choose gamma <= 1 / lr"
                )
        self.apply_takeover(due)
        self._known = len(self.optimizer.param_groups)

    # ------------------------------------------------------------------ the step
    def weights(self) -> List[float]:
        """``lr * gamma`` of every group at this step, after the rules; raises before anything changes.

        A float per group, or a 0-d tensor on the lr's device where ``lr`` is a non-CPU tensor.
        """
        groups = self.optimizer.param_groups
        known = self._known
        new = range(known, len(groups))  # add_param_group since the last step
        due = self.takeover_due(new) if len(new) else {}
        out, rescheduled = [], {}
        takeover, zeros, default = self.takeover, self._zeros, self.gamma_default
        for gi, group in enumerate(groups):
            wd = group.get("weight_decay")
            lr = group["lr"]
            # The common case first, with the same result as the rules below: a known group, a float lr, its
            # weight_decay as syre left it (its own 0 where taken over, else 0 or absent), a valid float gamma,
            # lr * gamma <= 1.
            if gi < known and type(lr) is float and (wd is None or type(wd) is float or type(wd) is int) \
                    and ((wd is not None and wd is zeros.get(gi)) if gi in takeover else not wd):
                gamma = group.get(GROUP_KEY, _DEFAULT)
                if gamma is _DEFAULT:
                    gamma = 0.0 if default is None else default
                if type(gamma) is float and 0.0 <= gamma < math.inf and lr * gamma <= OVERSHOOT:
                    out.append(lr * gamma)
                    continue
            wd = 0.0 if wd is None else as_float(wd)
            if gi in self.takeover and self._written(gi, group):
                # A weight-decay schedule wrote the group's weight_decay (0 included): it becomes syre's gamma.
                gamma = rescheduled[gi] = check_nonneg_float(f"param_groups[{gi}]['weight_decay']", wd)
            else:
                gamma = due[gi] if gi in due else self.gamma(gi)
                if wd != 0.0 and gamma > 0.0 and gi not in due and self.covers(gi):
                    self._warn_origin(gi, wd, stacklevel=stacklevel())
            if isinstance(lr, torch.Tensor) and lr.device.type != "cpu":
                # A device lr (CUDA graphs, capturable optimizers): lr * gamma stays on the device, so
                # the step makes no host sync; its value is checked at the first step and every
                # DEVICE_LR_CHECK_EVERY steps (each check is one sync).
                out.append(lr.detach() * gamma)
                if self.runtime.step % DEVICE_LR_CHECK_EVERY:
                    continue
                w = as_float(lr) * gamma
            else:
                w = as_float(lr) * gamma
            if w > DIVERGES:
                raise ValueError(
                    f"syre refuses this step: param group {gi} has lr * gamma = {w:g} > 2, where the decay toward the "
                    "anchors diverges (each step more than doubles the distance). Lower the learning rate schedule's "
                    f"peak or the group's '{GROUP_KEY}'; nothing was changed"
                )
            if w > OVERSHOOT and ("overshoot", gi) not in self._warned:
                self._warned.add(("overshoot", gi))
                warnings.warn(
                    f"param group {gi}: lr * gamma = {w:g} > 1 at this step (a schedule raised it), so the decay moves "
                    "the weights past their anchors and oscillates around them; keep lr * gamma <= 1. (Issued once.)",
                    DecaySettingWarning, stacklevel=stacklevel(),
                )
            if not (isinstance(lr, torch.Tensor) and lr.device.type != "cpu"):
                out.append(w)
        self.apply_takeover(due)
        self._known = len(groups)
        for gi, wd in rescheduled.items():
            self._reschedule(gi, wd)
        return out

    def _reschedule(self, gi: int, wd: float) -> None:
        group = self.optimizer.param_groups[gi]
        if ("schedule", gi) not in self._warned:
            self._warned.add(("schedule", gi))
            warnings.warn(
                f"param group {gi}: weight_decay was set to {wd:g} after syre took it over (a weight-decay "
                f"schedule?); syre uses it as the group's gamma from this step on and sets weight_decay back to 0, "
                f"so there is no decay toward the origin on top of syre. To schedule syre directly, write "
                f"param_groups[{gi}]['{GROUP_KEY}']. (Issued once per group.)",
                DecaySettingWarning, stacklevel=stacklevel(),
            )
        group[GROUP_KEY] = wd
        self.takeover[gi] = wd
        self._zero_weight_decay(gi, group)

    def _warn_origin(self, gi: int, wd, stacklevel: int) -> None:
        if ("origin", gi) in self._warned:
            return
        self._warned.add(("origin", gi))
        warnings.warn(
            f"param group {gi} of {type(self.optimizer).__name__} still applies weight_decay={as_float(wd):g} on top of "
            f"syre's gamma={self.gamma(gi):g}: a decay toward the origin beside the decay toward the anchors. Set weight_decay=0 "
            "there, or attach with gamma=None to take it over. (Issued once per group.)",
            DecaySettingWarning, stacklevel=stacklevel,
        )

    # ------------------------------------------------------------------ checkpoints and removal
    def snapshot(self) -> List[Optional[object]]:
        """Each group's ``syre_gamma`` before ``optimizer.load_state_dict`` replaces the groups."""
        return [g.get(GROUP_KEY) for g in self.optimizer.param_groups]

    def after_load(self, before: List[Optional[object]], takeover: Optional[Dict[int, float]]) -> None:
        """Reconcile the groups ``load_state_dict`` put in place with syre's gamma and takeover.

        ``takeover`` is the loaded syre state's (None: the checkpoint had no syre state, e.g. a
        plain optimizer checkpoint). Groups that lost their ``syre_gamma`` get syre's gamma back;
        taken-over groups get ``weight_decay`` 0 again, with a warning when the loaded value
        differs from the gamma syre keeps.
        """
        if takeover is not None and takeover is not self.takeover:
            self.takeover.clear()
            self.takeover.update(takeover)
        for gi, group in enumerate(self.optimizer.param_groups):
            prev = before[gi] if gi < len(before) else None
            if GROUP_KEY not in group and prev is not None:
                group[GROUP_KEY] = prev
            if gi not in self.takeover:
                continue
            if GROUP_KEY not in group:
                group[GROUP_KEY] = self.takeover[gi]
            wd = as_float(group.get("weight_decay", 0.0) or 0.0)
            keep = self.gamma(gi)
            if wd != 0.0 and wd != keep:
                warnings.warn(
                    f"param group {gi}: the loaded optimizer state sets weight_decay={wd:g}, which syre had taken "
                    f"over as gamma={keep:g}; syre keeps gamma={keep:g} and sets weight_decay to 0. Write "
                    f"param_groups[{gi}]['{GROUP_KEY}'] = {wd:g} to use the loaded value instead.",
                    DecaySettingWarning, stacklevel=stacklevel(),
                )
            self._zero_weight_decay(gi, group)
        self._known = len(self.optimizer.param_groups)

    def restore(self) -> None:
        """Give back the weight decay taken over (``remove()``) and drop syre's group keys."""
        for gi, wd in self.takeover.items():
            if gi < len(self.optimizer.param_groups):
                group = self.optimizer.param_groups[gi]
                group.pop(GROUP_KEY, None)
                if "weight_decay" in group:
                    group["weight_decay"] = wd
        self.takeover.clear()
