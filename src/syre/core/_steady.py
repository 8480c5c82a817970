"""The hook's one-call check, held per attachment: made after a step checked in Python, used while it holds.

``syre.kernels._scan.Steady`` answers in one C++ call whether everything the decay was derived from is as it
was (the plan's inputs, a gradient on every decayed parameter, no native batch's storage moved), and runs the
decay as it was decided. ``OneCall`` keeps the one for the attachment's current plan and store state: ``get``
returns it where it still holds; ``rebuild`` makes it again after a step checked in Python, at most ``TRIES``
times per plan and store state, so a cause that persists (a gradient left None, a storage replaced at every
step) leaves those steps to the Python check. Only where every covered group's decay is decided once (its
buckets, over the parameters themselves) and the check's module is loaded (``syre.kernels._scan.lib``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..kernels import _scan

__all__ = ["OneCall", "TRIES"]

#: Builds of the check per plan and store state.
TRIES = 3


class OneCall:
    """The one-call check of one attachment (see the module doc)."""

    def __init__(self):
        self._held: Optional[tuple] = None  # (plan, store generation, Steady)
        self._tries: tuple = (None, None, 0)  # (plan, store generation, builds for them)

    @property
    def current(self) -> Optional[_scan.Steady]:
        """The check made at the last step checked in Python (None: none)."""
        return None if self._held is None else self._held[2]

    def drop(self) -> None:
        self._held = None

    def get(self, optimizer: torch.optim.Optimizer, plan, generation: int) -> Optional[_scan.Steady]:
        """The check, where it was made for ``plan`` and this store state and says nothing changed; else None."""
        held = self._held
        if held is None or held[0] is not plan or held[1] != generation or held[2].same(optimizer) != 0:
            return None
        return held[2]

    def rebuild(self, optimizer: torch.optim.Optimizer, plan, generation: int,
                buckets: Callable[[int], Optional[list]]) -> None:
        """After a step checked in Python: the check for ``plan`` (``buckets(gi)``: group ``gi``'s decided decay,
        None where it is decided at each step), or none."""
        self._held = None
        tries = self._tries
        if tries[0] is not plan or tries[1] != generation:
            tries = (plan, generation, 0)
        if tries[2] >= TRIES or plan.orphans:
            self._tries = tries
            return
        decided = {}
        for gi, row in enumerate(plan.by_group):
            if row:
                decided[gi] = buckets(gi)
                if decided[gi] is None:  # decided at each step (stochastic rounding)
                    self._tries = tries
                    return
        mod = _scan.lib() if decided else None  # None while it builds (in the background) or where it cannot
        if mod is None:
            self._tries = tries
            return
        self._tries = (plan, generation, tries[2] + 1)
        try:
            self._held = (plan, generation, _scan.Steady(mod, optimizer, decided))
        except ValueError:  # a DTensor's local shard, a native batch not run yet
            pass
