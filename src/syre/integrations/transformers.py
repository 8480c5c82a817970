"""Hugging Face transformers: attach syre to the ``Trainer``'s optimizer.

::

    from transformers import Trainer, TrainingArguments
    from syre.integrations.transformers import SyreCallback

    args = TrainingArguments("out", learning_rate=5e-4, weight_decay=0.05, lr_scheduler_type="cosine")
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[SyreCallback()])
    trainer.train()

In ``on_train_begin`` the callback calls ``syre.attach(optimizer, model, ...)`` on the torch
optimizer inside the Trainer's (accelerate's ``AcceleratedOptimizer`` delegates its step to
it). Every optimizer step then first applies the decoupled decay
``p <- p - lr * gamma * D * (p - theta0)`` with each param group's current ``lr``, so the
Trainer's learning-rate schedule (warmup, linear, cosine, ...) scales the decay as it scales
AdamW's weight decay. With the default ``gamma=None`` syre takes over the Trainer's
``weight_decay``, group by group: the Trainer puts biases and normalisation weights in a group
with ``weight_decay=0``, so syre leaves them alone too, and the other parameters are pulled
toward their anchors with ``gamma = TrainingArguments.weight_decay`` instead of toward 0. An
explicit ``gamma`` applies to every covered parameter (use ``exclude=...`` to leave some out)
and asks for ``weight_decay=0`` in ``TrainingArguments``.

Checkpoints: syre's state (seed, gamma, ``d_spread``, per-parameter sigma0; never anchors)
is saved in each checkpoint, inside ``optimizer.pt`` (key ``"syre"``) and in
``trainer_state.json`` (``stateful_callbacks["SyreCallback"]``; this callback is an
``ExportableState``). The Trainer loads a checkpoint's optimizer state before any callback runs,
so on ``trainer.train(resume_from_checkpoint=...)`` the callback restores syre's state from
``trainer_state.json``: the resumed run has the anchors of the saved one, whatever this callback
was constructed with. With ``TrainingArguments(restore_callback_states_from_checkpoint=True)``
the Trainer rebuilds the callback from its saved arguments; only JSON-representable arguments
are saved, so pass ``include``/``exclude`` as name patterns (strings) there.

Collapse monitoring: ``SyreCallback(monitor={"probe": batch, ...})``, or ``MonitorCallback(probe=batch,
...)`` alone for a run without syre, records a ``syre.diagnostics.Monitor`` on the fixed ``probe``
(a batch as the data collator returns it, moved to the model's device) every ``every`` optimizer
steps (default: ``logging_steps``), on the main process. A Trainer callback sees no training
batch, hence the probe. The metrics (``collapse/<layer>/<metric>``) go through ``trainer.log``, so
to every ``report_to`` integration (TensorBoard, W&B, ...) and ``trainer_state.json``, once the
callback knows the trainer: ``callback.bind(trainer)`` (it returns the callback, so
``trainer.add_callback(MonitorCallback(probe=batch).bind(trainer))`` is one line). Unbound, they go
to ``state.log_history`` (saved in ``trainer_state.json``) only, and a warning says so.

Install: ``pip install 'torch-syre[transformers]'`` (transformers and accelerate).
"""
from __future__ import annotations

import json
import math
import warnings
from typing import Any, Dict, List, Optional

import torch

from ._common import attach_all, attach_config, check_state_list, require

_tc = require("transformers.trainer_callback", "transformers", "syre.integrations.transformers")

__all__ = ["MonitorCallback", "SyreCallback"]


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class MonitorCallback(_tc.TrainerCallback):
    """Run a ``syre.diagnostics.Monitor`` on a fixed probe batch during training (see the module doc).

    Args:
        probe: the model's inputs: a dict of keyword arguments (what the data collator returns),
            a tensor or a tuple of positional arguments.
        monitor_kwargs: keyword arguments of ``Monitor`` (``every``, default ``logging_steps``;
            ``metrics``, ``path``, ``alarms``, ``reference``, ``writer``, ...).

    ``callback.monitor`` is the ``Monitor`` once training starts.
    """

    def __init__(self, probe=None, **monitor_kwargs):
        from ..diagnostics.monitor import check_callback_kwargs

        if probe is None:
            raise ValueError("Invalid probe: None; a Trainer callback sees no training batch, so MonitorCallback "
                             "needs probe= (a batch of model inputs, e.g. data_collator([dataset[i] for i in "
                             "range(64)]))")
        check_callback_kwargs(monitor_kwargs, "MonitorCallback")
        self.probe, self._kwargs = probe, monitor_kwargs
        self.monitor = None
        self.trainer = None
        self._last = None

    def bind(self, trainer) -> "MonitorCallback":
        """Log through ``trainer.log`` (every ``report_to`` integration); returns this callback."""
        if not callable(getattr(trainer, "log", None)):
            raise TypeError(f"Invalid trainer: {type(trainer).__name__}; expected a transformers.Trainer")
        self.trainer = trainer
        return self

    def _log(self, metrics, step, state):
        if self.trainer is not None:
            self.trainer.log(dict(metrics))
        else:
            state.log_history.append({**metrics, "step": step})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from ..diagnostics import Monitor

        if model is None:
            raise ValueError("MonitorCallback.on_train_begin got no model from the Trainer")
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        opts = dict(self._kwargs)
        steps = float(args.logging_steps)  # a ratio of the run's steps when below 1
        opts.setdefault("every", max(int(steps) if steps >= 1 else math.ceil(steps * max(state.max_steps, 1)), 1))
        self.monitor = Monitor(model, probe=_to_device(self.probe, device),
                               logger=lambda metrics, step: self._log(metrics, step, state), **opts)
        self._last = None
        if self.trainer is None and getattr(state, "is_world_process_zero", True):
            warnings.warn("MonitorCallback is not bound to the Trainer: its metrics go to state.log_history "
                          "(trainer_state.json) only; call callback.bind(trainer) to send them to the Trainer's "
                          "loggers (report_to)", stacklevel=2)
        self._record(state)
        return control

    def _record(self, state):
        step = int(state.global_step)
        if self.monitor is None or not getattr(state, "is_world_process_zero", True) or step == self._last \
                or step % self.monitor.every:
            return
        self._last = step
        self.monitor.record(step)

    def on_step_end(self, args, state, control, **kwargs):
        self._record(state)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
        return control


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class SyreCallback(_tc.TrainerCallback, _tc.ExportableState):
    """Attach syre to the ``Trainer``'s optimizer at the start of training (see the module doc).

    Args:
        gamma: decoupled strength, AdamW's convention (the pull per step is ``lr * gamma``).
            ``None`` (default) takes over the Trainer's ``weight_decay`` group by group.
        verbose: print ``Syre.summary()`` (on the main process) when attaching.
        monitor: ``None`` or a dict of ``MonitorCallback`` arguments (``probe`` included): record
            collapse metrics during training (see the module doc; ``bind(trainer)`` to log them
            through the Trainer).
        attach_kwargs: every other keyword of ``syre.attach`` (``sigma0``, ``d_spread``, ``seed``,
            ``mode``, ``include``, ``exclude``, ``strict``, ``foreach``, ``target``, ``rounding``),
            validated by ``syre.config.Config`` here, at construction.

    After ``on_train_begin``, ``callback.syre`` is the ``Syre`` object (the same attribute as the
    Lightning callback's) and ``callback.syres`` the list of it, as Lightning's.
    ``callback.config`` is the validated ``Config``.
    """

    def __init__(self, gamma: Optional[float] = None, *, verbose: bool = False,
                 monitor: Optional[Dict[str, Any]] = None, **attach_kwargs):
        if monitor is not None and not isinstance(monitor, dict):
            raise TypeError(f"Invalid monitor value: {monitor!r}; expected None or a dict of MonitorCallback "
                            "arguments (probe= included)")
        self.config = attach_config({"gamma": gamma, **attach_kwargs}, f"{__name__}.SyreCallback", ("verbose", "monitor"))
        self.monitor_callback = MonitorCallback(**monitor) if monitor is not None else None
        if not isinstance(verbose, bool):
            raise TypeError(f"Invalid verbose value: {verbose!r}; expected a bool")
        self.verbose = verbose
        self.syre = None
        # Set by the Trainer when it rebuilds this callback from a checkpoint (see ``state``).
        self.syre_state: Optional[List[Dict[str, Any]]] = None

    @property
    def syres(self) -> List[Any]:
        """``[callback.syre]`` once attached (the Lightning callback's attribute: one ``Syre`` per optimizer)."""
        return [] if self.syre is None else [self.syre]

    def state(self) -> Dict[str, Any]:
        """What ``trainer_state.json`` keeps: the JSON-representable arguments and syre's state."""
        args = {k: v for k, v in self.config.as_kwargs().items() if _jsonable(v)}
        args["verbose"] = self.verbose
        saved = [self.syre.state_dict()] if self.syre is not None else self.syre_state
        return {"args": args, "attributes": {"syre_state": saved}}

    def _saved_state(self, state) -> Optional[list]:
        """syre's state in the checkpoint being resumed, or None for a fresh run."""
        if not getattr(state, "global_step", 0):
            return None
        entry = (getattr(state, "stateful_callbacks", None) or {}).get(type(self).__name__)
        if isinstance(entry, list):  # several callbacks of this class: the first one is ours
            entry = entry[0] if entry else None
        saved = entry.get("attributes", {}).get("syre_state") if isinstance(entry, dict) else None
        return saved if saved is not None else self.syre_state

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.syre is not None:
            self.syre.remove()
            self.syre = None
        if model is None or optimizer is None:
            raise ValueError(
                "SyreCallback.on_train_begin got no model or no optimizer from the Trainer; "
                "it attaches to the optimizer the Trainer creates (or the one passed as optimizers=(opt, sched))"
            )
        self.syre, _ = attach_all([optimizer], model, self.config)
        saved = self._saved_state(state)
        if saved is not None:
            check_state_list(saved, 1, "trainer_state.json")
            self.syre.load_state_dict(saved[0])
        self.syre_state = None
        if self.verbose and getattr(state, "is_world_process_zero", True):
            print(self.syre.summary())
        if self.monitor_callback is not None:
            self.monitor_callback._kwargs.setdefault("syre", self.syre)  # for metrics=("anchor_distance", ...)
            self.monitor_callback.on_train_begin(args, state, control, model=model)
        return control

    def bind(self, trainer) -> "SyreCallback":
        """Send the monitor's metrics through ``trainer.log`` (see ``MonitorCallback.bind``); returns this callback."""
        if self.monitor_callback is None:
            raise ValueError("SyreCallback.bind: this callback has no monitor (pass monitor={...})")
        self.monitor_callback.bind(trainer)
        return self

    def on_step_end(self, args, state, control, **kwargs):
        if self.monitor_callback is not None:
            self.monitor_callback.on_step_end(args, state, control)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor_callback is not None:
            self.monitor_callback.on_train_end(args, state, control)
        return control
