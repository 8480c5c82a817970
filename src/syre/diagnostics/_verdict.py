"""When a measured state counts as collapse: the thresholds, and the rules that apply them (private).

A layer is judged against what it could have, never against its width alone:

* **rank** (of the weight, or of the representation): what the layer could have is the smaller of
  its *structural maximum* (width, batch, and the rank of its input where the chain is affine)
  and the rank of the same layer *freshly initialised* on the same batch, counted at
  ``REFERENCE_MARGIN`` times the tolerance (the directions it clearly has). The rank is collapsed
  when, after adding back the directions its duplicated and dead units account for, it is below
  ``RANK_SHARE`` of that.
* **exact mirror states** (duplicated units, units whose weights are all zero, unused rotation
  directions): a random initialisation has none (they have probability zero) unless the
  architecture or its init puts them there, which the fresh reference and the structural count
  show. Flagged when the units in the state beyond those exceed ``EXACT_SHARE`` of the layer.
* **units never active on the batch** (a ReLU that is always off): common at initialisation, and
  their number varies between draws. Flagged when the excess over the reference is above
  ``INACTIVE_SHARE`` of the layer *and* above ``INACTIVE_Z`` standard deviations of the difference of
  two binomial counts with the pooled rate, so a layer is not flagged for one unlucky draw.

Every rule returns its evidence (value, what it was compared with, the limit, the verdict), which
the report keeps, so the reason for each flag can be read back.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

#: A rank is collapsed below this share of what the layer could have (its structural maximum and
#: its fresh-init value). Two fresh initialisations of the same layer agree within 2% at the
#: default tolerance (tested on MLP, CNN, GPT block and LSTM); in E5's set-up (digits, gamma 10,
#: three seeds) weight decay takes the middle hidden layer to 60-70% of what a fresh layer clearly
#: has, while training without decay, or with syre at sigma0 = the init std, keeps every hidden
#: layer at or above 97%.
RANK_SHARE = 0.9
#: The fresh reference counts only the directions it has clearly: at REFERENCE_MARGIN x rtol of
#: its top one. A layer whose spectrum has a tail near the tolerance (attention outputs at init,
#: layers after a nearly uniform attention) then does not lose "directions" against a fresh draw
#: whose tail happened to sit just above it: a direction counts as lost only when a fresh layer
#: has it at ten times the tolerance.
REFERENCE_MARGIN = 10.0
#: Duplicated units, units with all weights at zero, unused rotation directions: flagged when more
#: than this share of the layer's units is in the state beyond the fresh reference (and beyond the
#: structural count). A random initialisation has none, so the share only sets how small a collapse
#: is still called one: at most one unit in a layer of up to 100.
EXACT_SHARE = 0.01
#: Units never active on the batch: the excess over the fresh reference must exceed this share of
#: the layer's units ...
INACTIVE_SHARE = 0.05
#: ... and this many standard deviations of the difference between two draws (binomial, pooled rate).
INACTIVE_Z = 3.0


def _num(x):
    return None if x is None else (int(x) if float(x).is_integer() else float(x))


def rank_check(value: Optional[float], maximum: Optional[float], reference: Optional[float],
               explained: float = 0.0) -> Optional[Dict[str, Any]]:
    """Is ``value`` below ``RANK_SHARE`` of ``min(maximum, reference)`` after adding back ``explained``?"""
    if value is None:
        return None
    bounds = [b for b in (maximum, reference) if b is not None]
    if not bounds:
        return None
    could = min(bounds)
    limit = RANK_SHARE * could
    return {"value": _num(value), "max": _num(maximum), "reference": _num(reference), "could_have": _num(could),
            "explained_by_units": _num(explained), "limit": limit,
            "flagged": bool(could > 0 and value + explained < limit)}


def exact_check(count: int, units: int, reference: Optional[int] = None, structural: int = 0) -> Dict[str, Any]:
    """Are more than ``EXACT_SHARE`` of ``units`` in an exact mirror state beyond the reference and the structure?"""
    expected = max(reference or 0, structural)
    excess = count - expected
    limit = EXACT_SHARE * units
    return {"value": int(count), "reference": reference, "structural": int(structural), "excess": int(excess),
            "limit": limit, "flagged": bool(excess > limit)}


def inactive_check(count: int, units: int, reference: Optional[int] = None) -> Dict[str, Any]:
    """Is the excess of never-active units over the reference larger than a share and than the draw-to-draw noise?"""
    ref = reference or 0
    excess = count - ref
    p = (count + ref) / (2 * units) if units else 0.0
    noise = INACTIVE_Z * math.sqrt(2 * units * p * (1 - p))
    limit = max(INACTIVE_SHARE * units, noise)
    return {"value": int(count), "reference": reference, "excess": int(excess), "limit": limit,
            "flagged": bool(units > 0 and excess > limit)}
