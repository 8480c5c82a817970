"""PyTorch Lightning: attach syre to the optimizers a ``LightningModule`` configures.

::

    import lightning.pytorch as pl
    from syre.integrations.lightning import SyreCallback

    trainer = pl.Trainer(max_epochs=10, callbacks=[SyreCallback(gamma=0.05)])
    trainer.fit(module)                      # module.configure_optimizers() is unchanged

The callback calls ``syre.attach(optimizer, pl_module, ...)`` on each optimizer of
``trainer.optimizers`` in ``on_fit_start``, that is after ``configure_optimizers`` and before a
checkpoint's optimizer states are restored. Every ``optimizer.step()`` then first applies the
decoupled decay ``p <- p - lr * gamma * D * (p - theta0)`` with the param group's current ``lr``,
so learning-rate schedulers apply to the decay as they do to the update. Parameter names are
those of ``pl_module.named_parameters()`` (for example ``net.0.weight``).

Checkpoints: syre's state (seed, gamma, ``d_spread``, per-parameter sigma0; never the anchors)
is saved twice by Lightning's own checkpointing: inside each optimizer's state dict (key
``"syre"``, see ``syre.attach``) and as this callback's state (``checkpoint["callbacks"]``),
which also covers strategies that save optimizer states their own way. Resuming with
``trainer.fit(module, ckpt_path=...)`` restores the saved configuration, whatever this callback
was constructed with, so the anchors of the resumed run are those of the saved one.

The callback derives from ``lightning.pytorch.Callback`` (from ``pytorch_lightning.Callback``
where only that older package is installed) and works with the ``Trainer`` of either package.
Install: ``pip install 'torch-syre[lightning]'``.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional

from ..anchors import DEFAULT_D_SPREAD, DEFAULT_SIGMA0
from ._common import attach_all, check_attach_kwargs, check_state_list


def _import_lightning():
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(
        "syre.integrations.lightning needs PyTorch Lightning, which is not installed: "
        "pip install 'torch-syre[lightning]'"
    )


pl = _import_lightning()

__all__ = ["SyreCallback"]


class SyreCallback(pl.Callback):
    """Attach syre to every optimizer the ``LightningModule`` configures (see the module doc).

    Args:
        gamma: decoupled strength, AdamW's convention (the pull per step is ``lr * gamma``).
            ``None`` (default) takes over each param group's ``weight_decay`` (AdamW, or SGD
            without momentum) and sets it to 0 there.
        sigma0, d_spread, seed, mode, include, exclude, strict, foreach: as ``syre.attach``.
            With several optimizers, ``strict`` asks that every trainable parameter is held by
            one of them.
        verbose: print ``Syre.summary()`` of each optimizer (on the global-zero rank) when
            attaching.

    After ``on_fit_start``, ``callback.syres`` holds the ``Syre`` objects, one per optimizer,
    in the order of ``trainer.optimizers``.
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
        super().__init__()
        self._kwargs: Dict[str, Any] = check_attach_kwargs(dict(
            gamma=gamma, sigma0=sigma0, d_spread=d_spread, seed=seed, mode=mode,
            include=include, exclude=exclude, strict=strict, foreach=foreach,
        ))
        if not isinstance(verbose, bool):
            raise TypeError(f"Invalid verbose value: {verbose!r}; expected a bool")
        self.verbose = verbose
        self.syres: List[Any] = []
        self._pending: Optional[list] = None

    def _detach(self) -> None:
        for s in self.syres:
            s.remove()
        self.syres = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self._detach()
        optimizers = list(trainer.optimizers)
        if not optimizers:
            raise ValueError(
                "SyreCallback found no optimizer: the LightningModule's configure_optimizers() returned none; "
                "syre decays parameters at each optimizer step"
            )
        self.syres = attach_all(optimizers, pl_module, self._kwargs)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._load(pending)
        if self.verbose and trainer.is_global_zero:
            for i, s in enumerate(self.syres):
                print(f"[optimizer {i}] {s.summary()}")

    def _load(self, states: list) -> None:
        check_state_list(states, len(self.syres), "the checkpoint")
        for s, sd in zip(self.syres, states):
            s.check_state_dict(sd)  # all checked before any is loaded
        for s, sd in zip(self.syres, states):
            s.load_state_dict(sd)

    def state_dict(self) -> Dict[str, Any]:
        """``{"syre": [Syre.state_dict() per optimizer]}`` (small; ``weights_only``-safe)."""
        if self.syres:
            return {"syre": [s.state_dict() for s in self.syres]}
        return {"syre": self._pending} if self._pending is not None else {}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore the saved syre state (now when attached, else when ``on_fit_start`` attaches)."""
        states = state_dict.get("syre") if isinstance(state_dict, dict) else None
        if states is None:
            return
        if self.syres:
            self._load(states)
        else:
            self._pending = states
