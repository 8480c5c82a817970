"""Anchors far from their weights: ``AnchorScaleCheck`` warns once, for every form of the decay.

When parameters are first covered (at attach, or later for lazy or
newly covered ones), whether sigma0 puts a weight tensor's anchor over ``ANCHOR_FAR`` times, or
under ``1 / ANCHOR_FAR`` of, that tensor's RMS then: one ``AnchorScaleWarning`` naming the tensors
and their ratios, with the remedy (``sigma0="match"``, the tensor's own scale). Only weight tensors
(2 or more dimensions, embedding tables) are checked: a bias's anchor is at its weight's scale and a
normalisation gain's at ``UNIT_SIGMA0`` by design; a tensor of RMS 0 (zero-initialised) has no scale
to compare with, ``sigma0 = 0`` asks for weight decay, and under ``target="init"`` or ``"pretrained"``
the anchor is the weights themselves.

``syre.attach`` (``syre.core._syre``), ``syre.Penalty`` and ``syre.reparametrize`` each run one.
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable, List, Optional, Tuple

from .._validate import stacklevel
from ..select import ParamInfo
from ..sigma0 import MATCH, _scaled_tensor, parse_sigma0, rms

__all__ = ["ANCHOR_FAR", "ANCHOR_FAR_SHOWN", "AnchorScaleCheck", "AnchorScaleWarning", "anchor_ratio"]

#: An anchor over this many times its weight tensor's RMS when first covered, or under its inverse, is warned about.
ANCHOR_FAR = 10.0
#: Tensors named in the anchor-scale warning (the rest are counted).
ANCHOR_FAR_SHOWN = 4


class AnchorScaleWarning(UserWarning):
    """sigma0 puts anchors far (over 10x or under 1/10) from the RMS of the weights they decay (issued once)."""


class AnchorScaleCheck:
    """Warn once when sigma0 puts weight tensors' anchors far from their own scale (see the module doc).

    ``check(pairs, spec)`` looks at ``(ParamInfo, sigma0)`` pairs of parameters covered for the
    first time (names seen before are skipped), so it can run at attach and on every rebuilt plan.
    """

    def __init__(self, where: str = "syre.attach", enabled: bool = True):
        self.where = where
        self.warned = not enabled  # off under target="init" / "pretrained": the anchor is the weights
        self._seen: set = set()

    def check_entries(self, entries: Iterable, spec) -> None:
        """``check`` of a plan's covered entries."""
        if not self.warned:
            self.check(((e.info, e.sigma0) for e in entries), spec)

    def check(self, pairs: Iterable[Tuple[ParamInfo, float]], spec) -> None:
        if self.warned or _matched_within(spec):
            return
        far = []
        for info, sigma0 in pairs:
            if info.name in self._seen:
                continue
            self._seen.add(info.name)
            ratio = anchor_ratio(info, sigma0)
            if ratio is not None and not 1.0 / ANCHOR_FAR <= ratio <= ANCHOR_FAR:
                far.append((info.name, ratio))
        if far:
            self.warned = True
            warnings.warn(_far_message(far, spec, self.where), AnchorScaleWarning, stacklevel=stacklevel())


def _matched_within(spec) -> bool:
    """``"match:X"`` with X in the band: every weight tensor's ratio is X (or it is zero-initialised), nothing to
    measure (and no second pass over the weights, or reduction over a mesh)."""
    if not isinstance(spec, str):
        return False
    preset, scale = parse_sigma0(spec)
    return preset == MATCH and 1.0 / ANCHOR_FAR <= scale <= ANCHOR_FAR


def anchor_ratio(info: ParamInfo, sigma0: float) -> Optional[float]:
    """``sigma0 / RMS`` of a weight tensor (2 or more dimensions, an embedding table) as it is now, or None where
    the ratio means nothing: not a weight tensor, sigma0 0 (weight decay), RMS 0 (zero-initialised) or not finite."""
    scaled = _scaled_tensor(info.param, info.module, info.attr, info.role)
    if scaled is None or scaled[0] is not info.param or not sigma0 > 0.0:
        return None
    size = rms(info.param)
    if not (size > 0.0 and math.isfinite(size)):
        return None
    return sigma0 / size


def _far_message(far: List[Tuple[str, float]], spec, where: str) -> str:
    far = sorted(far, key=lambda nr: -abs(math.log(nr[1])))
    shown = ", ".join(f"{n!r} ({r:.3g}x)" for n, r in far[:ANCHOR_FAR_SHOWN])
    more = f" and {len(far) - ANCHOR_FAR_SHOWN} more" if len(far) > ANCHOR_FAR_SHOWN else ""
    spec_s = "a callable" if callable(spec) else repr(spec)
    return (
        f"{where}: sigma0={spec_s} puts the anchors of {len(far)} weight tensor(s) over {ANCHOR_FAR:g}x or under "
        f"1/{ANCHOR_FAR:g} of their own RMS when first covered (anchor/weights): {shown}{more}. Far above, the decay "
        "pulls these weights far from the scale they were initialised at (nanoGPT's std-0.02 embeddings under "
        "sigma0='lecun' are 50x); far below, syre is weight decay there. sigma0='match' puts every anchor at its "
        "tensor's own scale ('match:0.3' at 0.3x); Syre.summary() lists sigma0 per parameter. (Issued once.)"
    )
