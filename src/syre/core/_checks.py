"""The advisory checks of an attached ``Syre``: does syre matter here, and does the dtype keep the pull?

* ``PullProbe``: over the first ``PROBE_STEPS`` steps it measures, per covered parameter, on at
  most ``PROBE_ELEMENTS`` elements and against the RMS of the optimizer's own update in the step
  (syre's decay excluded), the medians of

  - ``decay``: ``lr * gamma * RMS(p) / RMS(update)`` -- is the decay strong enough to shape the
    weights at all? (weight decay's per-step pull; syre's is of the same size);
  - ``anchor``: ``sigma0 / RMS(p)`` -- does syre differ from weight decay? (the anchor's size
    against the weights'; near 0 the anchor is the origin and syre is weight decay);
  - ``pull``: ``lr * gamma * sigma0 / RMS(update)`` = decay x anchor, syre's force off a mirror.

  The element-weighted medians over the parameters give the totals and a one-line verdict
  (``verdict``), with thresholds measured in the benchmarks (``benchmarks/pull_numbers.py``,
  docs/defaults.md): below ``DECAY_WEAK`` weight decay changed nothing measurable, so neither does
  syre; with a stronger decay, below ``ANCHOR_SMALL`` syre undid under 10% of weight decay's loss
  of rank (it is weight decay there), and above it more, growing with the anchor and the decay.
  ``WeakPullWarning`` is issued once exactly when the verdict is "close to weight decay": the
  decay is strong and the anchor is small.
* ``AnchorScaleCheck`` (``syre.forms._scale_check``, shared with ``syre.Penalty`` and
  ``syre.reparametrize``): anchors far from their weights, warned once.
* ``PrecisionCheck``: for fp16/bf16 parameters, at the first step and every
  ``PRECISION_CHECK_EVERY`` steps, whether the pull is below half an ulp of the storage dtype for
  most elements (then rounding undoes the decay): one ``PrecisionWarning``.

Each check installs its own hooks and removes them; neither changes any number.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch

from .._compile import no_grad
from .._validate import stacklevel
from ..kernels import functional
from ._plan import Entry
from ._store import anchor_dtype

__all__ = [
    "PRECISION_CHECK_EVERY",
    "PROBE_ELEMENTS",
    "PROBE_STEPS",
    "ANCHOR_SMALL",
    "DECAY_WEAK",
    "PrecisionCheck",
    "PrecisionWarning",
    "PullProbe",
    "WEAK_PULL_RATIO",
    "WEAK_PULL_SHARE",
    "WeakPullWarning",
    "verdict",
]

PROBE_STEPS = 3
PROBE_ELEMENTS = 4096
#: decay / update below which weight decay changed nothing measurable in the benchmarks: neither
#: can syre (``benchmarks/results/pull-numbers/pull_numbers.json``; a test checks these against it).
DECAY_WEAK = 0.05
#: anchor / weights below which syre undid less than 10% of weight decay's loss of rank: it is
#: close to weight decay there.
ANCHOR_SMALL = 0.3
#: The pull (decay x anchor) of a strong decay with the smallest anchor that differs from weight decay.
WEAK_PULL_RATIO = DECAY_WEAK * ANCHOR_SMALL
#: Share of the covered elements on which a verdict must hold for the warning.
WEAK_PULL_SHARE = 0.5
#: Low-precision parameters are checked for a stalled pull at the first step and every this many.
PRECISION_CHECK_EVERY = 100

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class WeakPullWarning(UserWarning):
    """syre's pull toward the anchors is orders of magnitude below the optimizer's own updates."""


class PrecisionWarning(UserWarning):
    """syre's decay cannot move most elements of fp16/bf16 parameters (issued once per attach)."""


def verdict(decay: Optional[float], anchor: Optional[float]) -> str:
    """The one-line answer to "does syre matter here?" for decay / update and anchor / weights."""
    if decay is None or anchor is None:
        return f"not measured yet (the first {PROBE_STEPS} steps measure it)"
    if decay < DECAY_WEAK:
        return (f"decay too weak to collapse anything (decay/update {decay:.2g} < {DECAY_WEAK:g}): syre and weight "
                "decay both do nearly nothing here")
    if anchor < ANCHOR_SMALL:
        return (f"decay strong, anchor small (anchor/weights {anchor:.2g} < {ANCHOR_SMALL:g}): syre is close to weight "
                "decay here; raise sigma0 (sigma0='match' is the weights' own scale)")
    return (f"decay strong, anchor comparable to the weights (anchor/weights {anchor:.2g} >= {ANCHOR_SMALL:g}): syre "
            "differs from weight decay here; how much of a collapse it undoes grows with the anchor and the decay "
            "(docs/defaults.md)")


def _weighted_median(values: Dict[str, float], sizes: Dict[str, int]) -> Optional[float]:
    items = sorted((v, sizes.get(n, 0)) for n, v in values.items())
    total = sum(w for _, w in items)
    if not items or not total:
        return None
    acc = 0
    for v, w in items:
        acc += w
        if acc * 2 >= total:
            return float(v)
    return float(items[-1][0])


class PullProbe:
    """Measures decay, anchor and pull ratios on the first ``PROBE_STEPS`` steps (see the module doc).

    ``probed()`` yields ``(entry, lr * gamma)`` of the parameters to look at in this step. The
    hooks are registered after syre's decay hook, so the snapshot follows the decay and the change
    seen at the post-step hook is the optimizer's own update. They stay registered (idle) until
    ``remove()``: removing a hook from inside torch's loop over the step hooks would break that
    loop for the hooks after it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, probed: Callable[[], Iterable[Tuple[Entry, float]]],
                 sizes: Callable[[], Dict[str, int]], runtime):
        self._probed = probed
        self._sizes = sizes
        #: The attachment's ``syre.core._state.Runtime``: its ``step`` is the one step count (a step GradScaler skips
        #: is not one); the probe keeps only where it began (``runtime.step`` before its first step).
        self._rt = runtime
        self._start: Optional[int] = None
        self._concluded = False
        self._snap: Dict[int, torch.Tensor] = {}
        self._seen: Dict[str, Dict[str, List[float]]] = {}
        #: name -> {"decay", "anchor", "pull"}: the medians over the probe steps.
        self.ratios: Dict[str, Dict[str, float]] = {}
        self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    @property
    def steps_since_attach(self) -> int:
        """Optimizer steps taken since the probe's first (it measured the first ``PROBE_STEPS`` of them)."""
        return 0 if self._start is None else max(self._rt.step - self._start, 0)

    @property
    def steps(self) -> int:
        """The probe steps taken so far (at most ``PROBE_STEPS``)."""
        return PROBE_STEPS if self._concluded else min(self.steps_since_attach, PROBE_STEPS)

    @property
    def done(self) -> bool:
        return self._concluded

    @property
    def ratio(self) -> Dict[str, float]:
        """name -> pull / update (the breaking force) of the parameters with an anchor (sigma0 > 0)."""
        return {n: r["pull"] for n, r in self.ratios.items() if r["anchor"] > 0.0}

    def _pre(self, optimizer, args, kwargs) -> None:
        if not self.done:  # idle after the probe steps (the hook stays registered: see the class doc)
            self._take_snapshot()

    @no_grad
    def _take_snapshot(self) -> None:
        self._snap = {
            id(e): e.local().detach().reshape(-1)[:PROBE_ELEMENTS].to(anchor_dtype(e.param), copy=True)
            for e, _ in self._probed()
        }

    def _post(self, optimizer, args, kwargs) -> None:
        if not self._concluded:
            self._measure()

    @no_grad
    def _measure(self) -> None:
        if self._start is None:  # read here, after the step counted itself (the decay may run inside a closure)
            self._start = self._rt.step - 1
        for e, weight in self._probed():
            before = self._snap.get(id(e))
            if before is None or before.numel() == 0:
                continue
            upd = e.local().detach().reshape(-1)[:PROBE_ELEMENTS].to(before.dtype) - before
            rms = float(upd.square().mean().sqrt())
            size = float(before.square().mean().sqrt())
            if rms > 0.0 and math.isfinite(rms) and size > 0.0 and math.isfinite(size):
                seen = self._seen.setdefault(e.name, {"decay": [], "anchor": [], "pull": []})
                seen["decay"].append(weight * size / rms)
                seen["anchor"].append(e.sigma0 / size)
                seen["pull"].append(weight * e.sigma0 / rms)
        self._snap = {}
        if self.steps_since_attach >= PROBE_STEPS:
            self._conclude(self._sizes())

    def totals(self, sizes: Optional[Dict[str, int]] = None) -> Dict[str, Optional[float]]:
        """Element-weighted medians of decay, anchor and pull over the measured parameters."""
        sizes = self._sizes() if sizes is None else sizes
        return {k: _weighted_median({n: r[k] for n, r in self.ratios.items()}, sizes) for k in ("decay", "anchor", "pull")}

    def _conclude(self, sizes: Dict[str, int]) -> None:
        self._concluded = True
        for name, seen in self._seen.items():
            self.ratios[name] = {k: float(sorted(v)[len(v) // 2]) for k, v in seen.items()}
        self._seen = {}
        total = self.totals(sizes)
        line = verdict(total["decay"], total["anchor"])
        anchored = any(e.sigma0 > 0.0 for e, _ in self._probed())  # sigma0=0 asks for weight decay itself
        if anchored and line.startswith("decay strong, anchor small"):
            warnings.warn(
                f"syre is close to weight decay here: {line}. With anchors this small next to the weights, syre undid "
                "less than 10% of what weight decay cost in the benchmarks (docs/does-syre-matter.md); Syre.summary() "
                f"lists the ratios per parameter (pull/update {total['pull']:.2g} in total)",
                WeakPullWarning,
                stacklevel=stacklevel(),
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
            a, b = functional.stalled_pull(e.local(), t, x, weight)
            stalled, pulled = stalled + a, pulled + b
            dtypes.add(str(e.param.dtype).replace("torch.", ""))
        if pulled and stalled > pulled / 2:
            self.warned = True
            warnings.warn(
                f"syre: for {stalled / pulled:.0%} of the elements of the {'/'.join(sorted(dtypes))} parameters, the "
                "decay's pull per step lr * gamma * D * |p - theta0| is below half an ulp of the storage dtype, so "
                "rounding undoes it and the decay does nothing there. Keep fp32 master weights (fp32 parameters with "
                "torch.autocast, or FSDP2's MixedPrecisionPolicy(param_dtype=...) over fp32 sharded parameters), "
                "attach with rounding='stochastic' (the pull survives on average), or raise lr * gamma. (Issued once.)",
                PrecisionWarning,
                stacklevel=stacklevel(),
            )
