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

Install: ``pip install 'torch-syre[transformers]'`` (transformers and accelerate).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from ..anchors import DEFAULT_D_SPREAD, DEFAULT_SIGMA0
from ._common import attach_all, check_attach_kwargs, check_state_list, require

_tc = require("transformers.trainer_callback", "transformers", "syre.integrations.transformers")

__all__ = ["SyreCallback"]


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
        sigma0, d_spread, seed, mode, include, exclude, strict, foreach: as ``syre.attach``.
        verbose: print ``Syre.summary()`` (on the main process) when attaching.

    After ``on_train_begin``, ``callback.syre`` is the ``Syre`` object.
    """

    def __init__(
        self,
        gamma: Optional[float] = None,
        *,
        sigma0=DEFAULT_SIGMA0,
        d_spread: float = DEFAULT_D_SPREAD,
        seed: int = 0,
        mode: str = "stored",
        include=None,
        exclude=None,
        strict: bool = True,
        foreach: Optional[bool] = None,
        verbose: bool = False,
    ):
        self._kwargs: Dict[str, Any] = check_attach_kwargs(dict(
            gamma=gamma, sigma0=sigma0, d_spread=d_spread, seed=seed, mode=mode,
            include=include, exclude=exclude, strict=strict, foreach=foreach,
        ))
        if not isinstance(verbose, bool):
            raise TypeError(f"Invalid verbose value: {verbose!r}; expected a bool")
        self.verbose = verbose
        self.syre = None
        # Set by the Trainer when it rebuilds this callback from a checkpoint (see ``state``).
        self.syre_state: Optional[List[Dict[str, Any]]] = None

    def state(self) -> Dict[str, Any]:
        """What ``trainer_state.json`` keeps: the JSON-representable arguments and syre's state."""
        args = {k: v for k, v in self._kwargs.items() if _jsonable(v)}
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
        (self.syre,) = attach_all([optimizer], model, self._kwargs)
        saved = self._saved_state(state)
        if saved is not None:
            check_state_list(saved, 1, "trainer_state.json")
            self.syre.load_state_dict(saved[0])
        self.syre_state = None
        if self.verbose and getattr(state, "is_world_process_zero", True):
            print(self.syre.summary())
        return control
