"""The advisory checks of an attached ``Syre``: is the pull measurable, and does the dtype keep it?

* ``PullProbe``: over the first ``PROBE_STEPS`` steps, each covered parameter's per-step pull
  toward its anchor, ``lr * gamma * sigma0``, is compared with the RMS of the optimizer's own
  update of that parameter (on at most ``PROBE_ELEMENTS`` of its elements); a negligible pull for
  most elements gives one ``WeakPullWarning``.
* ``PrecisionCheck``: for fp16/bf16 parameters, at the first step and every
  ``PRECISION_CHECK_EVERY`` steps, whether the pull is below half an ulp of the storage dtype for
  most elements (then rounding undoes the decay): one ``PrecisionWarning``.

Each check installs its own hooks and removes them; neither changes any number.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, Iterable, List, Tuple

import torch

from . import functional as F
from ._groups import _stacklevel
from ._plan import Entry
from ._store import anchor_dtype

__all__ = [
    "PRECISION_CHECK_EVERY",
    "PROBE_ELEMENTS",
    "PROBE_STEPS",
    "PrecisionCheck",
    "PrecisionWarning",
    "PullProbe",
    "WEAK_PULL_RATIO",
    "WEAK_PULL_SHARE",
    "WeakPullWarning",
]

PROBE_STEPS = 3
PROBE_ELEMENTS = 4096
#: Pull / update ratio below which syre's symmetry breaking is negligible (measured: docs/defaults.md).
WEAK_PULL_RATIO = 1e-4
#: Share of the covered elements that must be below WEAK_PULL_RATIO for the warning.
WEAK_PULL_SHARE = 0.5
#: Low-precision parameters are checked for a stalled pull at the first step and every this many.
PRECISION_CHECK_EVERY = 100

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class WeakPullWarning(UserWarning):
    """syre's pull toward the anchors is orders of magnitude below the optimizer's own updates."""


class PrecisionWarning(UserWarning):
    """syre's decay cannot move most elements of fp16/bf16 parameters (issued once per attach)."""


class PullProbe:
    """Measures pull / update on the first ``PROBE_STEPS`` steps, then warns once if it is negligible.

    ``probed()`` yields ``(entry, lr * gamma)`` of the parameters to look at in this step. The
    hooks are registered after syre's decay hook, so the snapshot follows the decay and the change
    seen at the post-step hook is the optimizer's own update. They stay registered (idle) until
    ``remove()``: removing a hook from inside torch's loop over the step hooks would break that
    loop for the hooks after it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, probed: Callable[[], Iterable[Tuple[Entry, float]]],
                 sizes: Callable[[], Dict[str, int]]):
        self._probed = probed
        self._sizes = sizes
        self.steps = 0
        self._snap: Dict[int, torch.Tensor] = {}
        self._ratios: Dict[str, List[float]] = {}
        self.ratio: Dict[str, float] = {}
        self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    @property
    def done(self) -> bool:
        return self.steps >= PROBE_STEPS

    @torch.no_grad()
    def _pre(self, optimizer, args, kwargs) -> None:
        if self.done:
            return
        self._snap = {
            id(e): e.local().detach().reshape(-1)[:PROBE_ELEMENTS].to(anchor_dtype(e.param), copy=True)
            for e, _ in self._probed()
        }

    @torch.no_grad()
    def _post(self, optimizer, args, kwargs) -> None:
        if self.done:
            return
        for e, weight in self._probed():
            before = self._snap.get(id(e))
            if before is None or before.numel() == 0:
                continue
            upd = e.local().detach().reshape(-1)[:PROBE_ELEMENTS].to(before.dtype) - before
            rms = float(upd.square().mean().sqrt())
            if rms > 0.0 and math.isfinite(rms):
                self._ratios.setdefault(e.name, []).append(weight * e.sigma0 / rms)
        self._snap = {}
        self.steps += 1
        if self.done:
            self._conclude(self._sizes())

    def _conclude(self, sizes: Dict[str, int]) -> None:
        for name, ratios in self._ratios.items():
            self.ratio[name] = float(sorted(ratios)[len(ratios) // 2])
        self._ratios = {}
        sizes = {n: sizes.get(n, 0) for n in self.ratio}
        total = sum(sizes.values())
        if not total:
            return
        weak = [n for n, r in self.ratio.items() if r < WEAK_PULL_RATIO]
        share = sum(sizes[n] for n in weak) / total
        if share > WEAK_PULL_SHARE:
            ratios = sorted(self.ratio.values())
            warnings.warn(
                f"syre's pull toward the anchors is negligible: for {len(weak)} of {len(self.ratio)} parameters "
                f"({share:.0%} of their elements) the per-step pull lr * gamma * sigma0 is below {WEAK_PULL_RATIO:g} x the "
                f"RMS of the optimizer's own update (median ratio {ratios[len(ratios) // 2]:.2g}), so training will be hard "
                "to tell from plain weight decay. Raise sigma0 (sigma0='lecun' is the init std) or gamma; Syre.summary() lists the "
                "ratio per parameter",
                WeakPullWarning,
                stacklevel=_stacklevel(),
            )

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._snap = {}


class PrecisionCheck:
    """Warn once when the pull is below half an ulp for most elements of fp16/bf16 parameters."""

    def __init__(self):
        self.warned = False

    def due(self, step: int) -> bool:
        return not self.warned and step % PRECISION_CHECK_EVERY == 0

    def check(self, weighted: Iterable[Tuple[Entry, float]], pair: Callable) -> None:
        """``weighted``: ``(entry, lr * gamma)`` of the entries decayed at this step; ``pair(entry)``: its anchor."""
        stalled = pulled = 0
        dtypes = set()
        for e, weight in weighted:
            if e.param.dtype not in _LOW_PRECISION:
                continue
            t, x = pair(e)
            a, b = F.stalled_pull(e.local(), t, x, weight)
            stalled, pulled = stalled + a, pulled + b
            dtypes.add(str(e.param.dtype).replace("torch.", ""))
        if pulled and stalled > pulled / 2:
            self.warned = True
            warnings.warn(
                f"syre: for {stalled / pulled:.0%} of the elements of the {'/'.join(sorted(dtypes))} parameters, the "
                "decay's pull per step lr * gamma * D * |p - theta0| is below half an ulp of the storage dtype, so "
                "rounding undoes it and the decay does nothing there. Keep fp32 master weights (fp32 parameters with "
                "torch.autocast, or FSDP2's MixedPrecisionPolicy(param_dtype=...) over fp32 sharded parameters), "
                "or raise lr * gamma. (Issued once.)",
                PrecisionWarning,
                stacklevel=_stacklevel(),
            )
