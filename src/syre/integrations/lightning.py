"""PyTorch Lightning: attach syre to the optimizers a ``LightningModule`` configures.

::

    import lightning.pytorch as pl
    from syre.integrations.lightning import SyreCallback

    trainer = pl.Trainer(max_epochs=10, callbacks=[SyreCallback(gamma=0.05)])   # any syre.attach keyword
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

Collapse monitoring: ``SyreCallback(monitor={...})``, or ``MonitorCallback(...)`` alone for a run
without syre (a weight-decay baseline), records a ``syre.diagnostics.Monitor`` every ``every``
optimizer steps on the training batch (``inputs(batch)`` picks the model's inputs; default: the
batch itself, or its first element for a tuple or list) or on a fixed ``probe``, before that
step's update, on the global-zero rank, and logs ``collapse/<layer>/<metric>`` to every logger of
the trainer (``trainer.loggers``: TensorBoard, CSV, W&B...) at ``trainer.global_step``.

The callbacks derive from ``lightning.pytorch.Callback`` (from ``pytorch_lightning.Callback``
where only that older package is installed) and work with the ``Trainer`` of either package.
Install: ``pip install 'torch-syre[lightning]'``.
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional

from ._common import attach_all, attach_config, check_state_list


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

__all__ = ["MonitorCallback", "SyreCallback"]


def _first(batch):
    return batch[0] if isinstance(batch, (tuple, list)) else batch


class _Prefixed:
    """A ``Syre``'s anchors seen from a submodule: ``anchor(name)`` of ``prefix + name``."""

    def __init__(self, syre, prefix: str):
        self.syre, self.prefix = syre, prefix

    def anchor(self, name: str):
        return self.syre.anchor(self.prefix + name)


class MonitorCallback(pl.Callback):
    """Run a ``syre.diagnostics.Monitor`` during ``fit`` and log its metrics to the trainer's loggers.

    Args:
        inputs: ``inputs(batch)`` gives the model's inputs for a training batch (a tensor, a tuple
            of positional arguments or a dict of keyword arguments); default: the batch, or its
            first element when it is a tuple or list. Not used with ``probe=``.
        module: the name of the submodule to run and measure (``pl_module.get_submodule(module)``,
            e.g. ``"net"``); default: the ``LightningModule`` itself, which then needs a ``forward``.
        monitor_kwargs: keyword arguments of ``Monitor`` (``every``, ``metrics``, ``probe``, ``path``,
            ``alarms``, ``reference``, ``writer``, ...); ``logger`` is set by this callback.

    ``callback.monitor`` is the ``Monitor`` once fitting starts.
    """

    def __init__(self, *, inputs=None, module: Optional[str] = None, **monitor_kwargs):
        super().__init__()
        if inputs is not None and not callable(inputs):
            raise TypeError(f"Invalid inputs value: {inputs!r}; expected a callable batch -> model inputs")
        if module is not None and not isinstance(module, str):
            raise TypeError(f"Invalid module value: {module!r}; expected the name of a submodule, e.g. 'net'")
        self.module = module
        from ..diagnostics.monitor import Monitor, check_callback_kwargs

        check_callback_kwargs(monitor_kwargs, "MonitorCallback")

        self._Monitor, self._kwargs, self._inputs = Monitor, monitor_kwargs, inputs or _first
        self.monitor = None
        self._last = None

    def on_fit_start(self, trainer, pl_module) -> None:
        def log(metrics, step):
            for lg in trainer.loggers:
                lg.log_metrics(metrics, step=step)

        if self.module is not None:
            try:
                model = pl_module.get_submodule(self.module)
            except AttributeError as exc:
                raise ValueError(f"Invalid module: {self.module!r} is not a submodule of {type(pl_module).__name__}; "
                                 f"its children: {[n for n, _ in pl_module.named_children()]}") from exc
        elif type(pl_module).forward is pl.LightningModule.forward:
            raise ValueError(f"MonitorCallback: {type(pl_module).__name__} defines no forward(), so the monitor cannot "
                             f"run it; pass module= one of {[n for n, _ in pl_module.named_children()]}")
        else:
            model = pl_module
        kwargs = dict(self._kwargs)
        if self.module is not None and kwargs.get("syre") is not None:  # syre names parameters from pl_module
            kwargs["syre"] = _Prefixed(kwargs["syre"], self.module + ".")
        self.monitor = self._Monitor(model, logger=log, **kwargs)
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.monitor is None or not trainer.is_global_zero or step == self._last or step % self.monitor.every:
            return
        self._last = step
        self.monitor.record(step, batch=None if self.monitor.probe is not None else self._inputs(batch))

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor is not None:
            self.monitor.close()


class SyreCallback(pl.Callback):
    """Attach syre to every optimizer the ``LightningModule`` configures (see the module doc).

    Args:
        gamma: decoupled strength, AdamW's convention (the pull per step is ``lr * gamma``).
            ``None`` (default) takes over each param group's ``weight_decay`` (AdamW, or SGD
            without momentum) and sets it to 0 there.
        verbose: print ``Syre.summary()`` of each optimizer (on the global-zero rank) when
            attaching.
        monitor: ``None``, ``True`` or a dict of ``MonitorCallback`` arguments: record collapse
            metrics during fit and log them to the trainer's loggers (see the module doc).
        attach_kwargs: every other keyword of ``syre.attach`` (``sigma0``, ``d_spread``, ``seed``,
            ``mode``, ``include``, ``exclude``, ``strict``, ``foreach``, ``target``, ``rounding``),
            validated by ``syre.config.Config`` here, at construction. With several optimizers,
            ``strict`` asks that every trainable parameter is held by one of them.

    After ``on_fit_start``, ``callback.syre`` is what ``syre.attach`` returned (a ``Syre``, or a
    ``MultiSyre`` over several optimizers; the same attribute as the transformers callback's) and
    ``callback.syres`` the ``Syre`` of each optimizer, in the order of ``trainer.optimizers``.
    ``callback.config`` is the validated ``Config``.
    """

    def __init__(self, gamma: Optional[float] = None, *, verbose: bool = False, monitor=None, **attach_kwargs):
        super().__init__()
        if monitor is not None and monitor is not True and not isinstance(monitor, dict):
            raise TypeError(f"Invalid monitor value: {monitor!r}; expected None, True or a dict of MonitorCallback "
                            "arguments")
        self.config = attach_config({"gamma": gamma, **attach_kwargs}, f"{__name__}.SyreCallback", ("verbose", "monitor"))
        self._monitor_kwargs = None if monitor is None else ({} if monitor is True else dict(monitor))
        self.monitor_callback: Optional[MonitorCallback] = None
        if not isinstance(verbose, bool):
            raise TypeError(f"Invalid verbose value: {verbose!r}; expected a bool")
        self.verbose = verbose
        self.syre: Any = None
        self.syres: List[Any] = []
        self._pending: Optional[list] = None

    def _detach(self) -> None:
        if self.syre is not None:
            self.syre.remove()
        self.syre, self.syres = None, []

    def on_fit_start(self, trainer, pl_module) -> None:
        self._detach()
        optimizers = list(trainer.optimizers)
        if not optimizers:
            raise ValueError(
                "SyreCallback found no optimizer: the LightningModule's configure_optimizers() returned none; "
                "syre decays parameters at each optimizer step"
            )
        self.syre, self.syres = attach_all(optimizers, pl_module, self.config)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._load(pending)
        if self.verbose and trainer.is_global_zero:
            for i, s in enumerate(self.syres):
                print(f"[optimizer {i}] {s.summary()}")
        if self._monitor_kwargs is not None:
            kwargs = dict(self._monitor_kwargs)
            if len(self.syres) == 1:
                kwargs.setdefault("syre", self.syres[0])  # for metrics=("anchor_distance", ...)
            self.monitor_callback = MonitorCallback(**kwargs)
            self.monitor_callback.on_fit_start(trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.monitor_callback is not None:
            self.monitor_callback.on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.monitor_callback is not None:
            self.monitor_callback.on_fit_end(trainer, pl_module)

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
