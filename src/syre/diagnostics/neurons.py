"""Unit-level collapse detectors: duplicated and dead units, and the mirrors they sit on.

A hidden layer of ``H`` units sits between an *incoming* map (a ``Linear`` or ``Conv`` weight
with the units on dim 0, its bias, and any per-unit parameters such as a ``BatchNorm`` scale)
and an *outgoing* map (the next ``Linear`` or ``Conv`` weight, with the units on dim 1). Unit
``i`` is described by the vector ``v_i`` of all its incoming and outgoing parameters; the
functions here take those tensors (see ``unit_matrix``) and measure how close the layer is to
each mirror (reflection) of its symmetry families:

============  ========================================  ===========================  =====================
family        reflection                                collapsed state (on mirror)  distance to mirror
============  ========================================  ===========================  =====================
permutation   swap units i and j                        duplicated units             ||v_i - v_j|| / sqrt 2
sign flip     (u_i, w_i) -> (-u_i, -w_i) (odd act.)     dead unit, v_i = 0           ||v_i||
rescaling     (u_i, w_i) -> (c u_i, w_i / c) (ReLU)     dead unit, u_i = w_i = 0     sqrt(2 ||u_i|| ||w_i||)
rotation      (R W_in, W_out R^T), no activation        unused direction, low rank   singular values of V
============  ========================================  ===========================  =====================

(``u_i``: the incoming parameters of unit i, ``w_i``: its outgoing ones, ``V`` the ``[H, P]``
matrix of the ``v_i``.) For rescaling the distance is taken on the most balanced point of the
unit's orbit, ``min_c ||(c u_i, w_i / c)||``, so a unit whose outgoing weights are tiny counts
as near dead however large its incoming weights are.

A mirror is *near* (the unit sits on it within tolerance) when its distance is at most
``max(rtol * scale, atol)`` with ``scale`` the root-mean-square unit norm of the layer,
``sqrt(mean_i ||v_i||**2)``: the default ``rtol = 1e-3`` asks for 0.1% of a typical unit's size.
A random initialisation puts no unit near any mirror (distances are of the order of ``scale``);
plain gradient descent started on a mirror stays on it exactly (distance 0).
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "DEFAULT_RTOL",
    "FAMILIES",
    "MirrorScan",
    "activation_families",
    "dead_units",
    "duplicate_units",
    "inactive_units",
    "permutation_mirrors",
    "rescaling_mirrors",
    "rotation_mirrors",
    "sign_flip_mirrors",
    "unit_matrix",
    "zero_units",
]

#: Default relative tolerance: a mirror within 0.1% of the layer's RMS unit norm is "near".
DEFAULT_RTOL = 1e-3
FAMILIES = ("permutation", "sign", "rescaling", "rotation")

#: Activations with f(-x) = -f(x): their units have sign-flip mirrors.
ODD_ACTIVATIONS = frozenset({"identity", "tanh", "hardtanh", "softsign", "tanhshrink", "hardshrink", "softshrink"})
#: Positively homogeneous activations, f(c x) = c f(x) for c > 0: their units have rescaling mirrors.
HOMOGENEOUS_ACTIVATIONS = frozenset({"identity", "relu", "leaky_relu", "prelu"})
#: Activations that act on each unit separately but have neither property (permutation only).
OTHER_ACTIVATIONS = frozenset({
    "gelu", "silu", "sigmoid", "elu", "selu", "celu", "softplus", "mish", "hardswish", "hardsigmoid",
    "relu6", "logsigmoid", "rrelu",
})

Tensors = Union[torch.Tensor, Sequence[torch.Tensor]]


class MirrorScan(NamedTuple):
    """How close a layer is to the mirrors of one symmetry family.

    ``distances``: one float64 distance per mirror (per unit, per unit pair for permutation, per
    singular direction for rotation); ``near``: the units (or unit pairs) whose mirror is within
    ``tol``; ``count``: the number of mirrors scanned; ``degree``: the share of them that are near
    (the layer's degree of symmetry for this family); ``scale``: the layer's RMS unit norm.
    """

    family: str
    distances: torch.Tensor
    near: list
    count: int
    degree: float
    scale: float
    tol: float


def activation_families(activation: str) -> Tuple[str, ...]:
    """The mirror families a hidden layer with this elementwise activation has.

    Every elementwise activation keeps the permutation family; odd ones (``tanh``...) add sign
    flips; positively homogeneous ones (``relu``, ``leaky_relu``) add rescaling; ``"identity"``
    (two linear maps in a row) has all four, rotation included.
    """
    if not isinstance(activation, str):
        raise TypeError(f"Invalid activation: {activation!r}; expected a name such as 'relu' or 'tanh'")
    a = activation.lower()
    known = ODD_ACTIVATIONS | HOMOGENEOUS_ACTIVATIONS | OTHER_ACTIVATIONS
    if a not in known:
        raise ValueError(f"Invalid activation: {activation!r}; known: {sorted(known)}")
    fam = ["permutation"]
    if a in ODD_ACTIVATIONS:
        fam.append("sign")
    if a in HOMOGENEOUS_ACTIVATIONS:
        fam.append("rescaling")
    if a == "identity":
        fam.append("rotation")
    return tuple(fam)


def _as_list(x: Optional[Tensors], arg: str) -> List[torch.Tensor]:
    if x is None:
        return []
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in x):
        return list(x)
    raise TypeError(f"Invalid {arg}: {type(x).__name__}; expected a tensor or a list of tensors")


def _check_float(t: torch.Tensor, arg: str) -> torch.Tensor:
    if not t.is_floating_point():
        raise TypeError(f"Invalid {arg} dtype: {t.dtype}; expected a floating-point tensor")
    if t.dim() == 0:
        raise ValueError(f"Invalid {arg}: a 0-d tensor; expected the units on a dimension")
    t = t.detach()
    if t.device.type == "mps":
        t = t.cpu()
    return t.to(torch.float64)


def _incoming_rows(ts: List[torch.Tensor], h: Optional[int], arg: str) -> List[torch.Tensor]:
    out = []
    for t in ts:
        t = _check_float(t, arg)
        if h is not None and t.shape[0] != h:
            raise ValueError(f"Invalid {arg}: shape {tuple(t.shape)} has {t.shape[0]} units on dim 0; expected {h}")
        out.append(t.reshape(t.shape[0], -1))
    return out


def _outgoing_rows(ts: List[torch.Tensor], h: int, arg: str) -> List[torch.Tensor]:
    out = []
    for t in ts:
        t = _check_float(t, arg)
        if t.dim() < 2:
            raise ValueError(f"Invalid {arg}: shape {tuple(t.shape)}; expected a weight [out, H, ...] with the units on dim 1")
        if t.shape[1] == h:
            rows = t.transpose(0, 1).reshape(h, -1)
        elif t.dim() == 2 and t.shape[1] % h == 0:
            # a Linear after flattening [N, H, *spatial]: unit j owns columns j*s .. (j+1)*s - 1
            rows = t.reshape(t.shape[0], h, -1).transpose(0, 1).reshape(h, -1)
        else:
            raise ValueError(
                f"Invalid {arg}: shape {tuple(t.shape)}; dim 1 must be the {h} units (or a multiple of {h} "
                "for a Linear that reads a flattened [N, H, ...] map)"
            )
        out.append(rows)
    return out


def _split(w_in: Optional[Tensors], w_out: Optional[Tensors], b_in: Optional[Tensors]):
    """(incoming rows, outgoing rows, H) from the user's tensors."""
    ins = [(t, "w_in") for t in _as_list(w_in, "w_in")] + [(t, "b_in") for t in _as_list(b_in, "b_in")]
    outs = _as_list(w_out, "w_out")
    if not ins and not outs:
        raise ValueError("Invalid arguments: give w_in and/or w_out (the weights around the hidden layer)")
    if ins:
        h = _check_float(ins[0][0], ins[0][1]).shape[0]
    else:
        o0 = _check_float(outs[0], "w_out")
        if o0.dim() < 2:
            raise ValueError(f"Invalid w_out: shape {tuple(o0.shape)}; expected [out, H, ...]")
        h = o0.shape[1]
    if h == 0:
        raise ValueError("Invalid weights: the hidden layer has 0 units")
    u = [_incoming_rows([t], h, arg)[0] for t, arg in ins]
    w = _outgoing_rows(outs, h, "w_out")
    cat = lambda rows: torch.cat(rows, dim=1) if rows else torch.zeros(h, 0, dtype=torch.float64)
    return cat(u), cat(w), h


def unit_matrix(w_in: Optional[Tensors] = None, w_out: Optional[Tensors] = None, *,
                b_in: Optional[Tensors] = None) -> torch.Tensor:
    """The ``[H, P]`` float64 matrix whose row ``i`` is every parameter of hidden unit ``i``.

    ``w_in``: tensors with the units on dim 0 (a ``Linear``/``Conv`` weight, per-unit scales);
    ``b_in``: the incoming bias(es); ``w_out``: the next layer's weight(s) with the units on dim 1
    (a ``Linear`` that reads a flattened ``[N, H, h, w]`` map, ``in_features = H*h*w``, is split
    per unit). Rows are ``[incoming..., bias..., outgoing...]``.
    """
    u, w, _ = _split(w_in, w_out, b_in)
    return torch.cat([u, w], dim=1)


def _check_tol(rtol, atol):
    if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not (0.0 <= rtol < 1.0) or math.isnan(rtol):
        raise ValueError(f"Invalid rtol: {rtol!r}; expected a float with 0 <= rtol < 1")
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not (atol >= 0.0) or math.isinf(atol):
        raise ValueError(f"Invalid atol: {atol!r}; expected a finite float >= 0")


def _scale(v: torch.Tensor) -> float:
    return float((v * v).sum(dim=1).mean().sqrt()) if v.numel() else 0.0


def _scan(family, distances, near, count, scale, tol) -> MirrorScan:
    degree = len(near) / count if count else 0.0
    return MirrorScan(family, distances, near, count, degree, scale, tol)


@torch.no_grad()
def permutation_mirrors(w_in: Optional[Tensors] = None, w_out: Optional[Tensors] = None, *,
                        b_in: Optional[Tensors] = None, rtol: float = DEFAULT_RTOL, atol: float = 0.0) -> MirrorScan:
    """Distances ``||v_i - v_j|| / sqrt(2)`` of a layer to its ``H (H - 1) / 2`` swap mirrors.

    ``distances`` is the condensed upper triangle (pairs ``(i, j)``, ``i < j``, row-major) and
    ``near`` the list of pairs within tolerance. The Gram matrix runs in float64, so exact
    duplicates measure about ``1e-8 * scale``, far below any sensible ``rtol``.
    """
    _check_tol(rtol, atol)
    v = unit_matrix(w_in, w_out, b_in=b_in)
    h = v.shape[0]
    scale = _scale(v)
    tol = max(rtol * scale, atol)
    n = (v * v).sum(dim=1)
    d2 = (n[:, None] + n[None, :] - 2.0 * (v @ v.T)).clamp_min(0.0)
    iu = torch.triu_indices(h, h, offset=1)
    dist = (d2[iu[0], iu[1]] / 2.0).sqrt()
    hit = (dist <= tol).nonzero().flatten()
    near = [(int(iu[0, k]), int(iu[1, k])) for k in hit]
    return _scan("permutation", dist, near, h * (h - 1) // 2, scale, tol)


@torch.no_grad()
def sign_flip_mirrors(w_in: Optional[Tensors] = None, w_out: Optional[Tensors] = None, *,
                      b_in: Optional[Tensors] = None, activation: str = "tanh",
                      rtol: float = DEFAULT_RTOL, atol: float = 0.0) -> MirrorScan:
    """Distances ``||v_i||`` of each unit to its sign-flip mirror ``(u_i, w_i) -> (-u_i, -w_i)``.

    The reflection is a symmetry only for odd activations (``tanh``, ``identity``...); for others
    this raises. On the mirror the unit is dead (all its parameters zero).
    """
    if "sign" not in activation_families(activation):
        raise ValueError(f"Invalid activation: {activation!r} is not odd, so its units have no sign-flip mirror; "
                         f"odd ones: {sorted(ODD_ACTIVATIONS)}")
    _check_tol(rtol, atol)
    v = unit_matrix(w_in, w_out, b_in=b_in)
    scale = _scale(v)
    tol = max(rtol * scale, atol)
    dist = v.norm(dim=1)
    near = [int(i) for i in (dist <= tol).nonzero().flatten()]
    return _scan("sign", dist, near, v.shape[0], scale, tol)


@torch.no_grad()
def rescaling_mirrors(w_in: Optional[Tensors] = None, w_out: Optional[Tensors] = None, *,
                      b_in: Optional[Tensors] = None, activation: str = "relu",
                      rtol: float = DEFAULT_RTOL, atol: float = 0.0) -> MirrorScan:
    """Distances ``sqrt(2 ||u_i|| ||w_i||)`` of each unit to the dead state of its rescaling orbit.

    ``(u_i, w_i) -> (c u_i, w_i / c)`` leaves a positively homogeneous activation's output
    unchanged (``relu``, ``leaky_relu``); the distance is that of the orbit's most balanced point
    to zero, and ``scale`` is the RMS of ``sqrt(||u_i||**2 + ||w_i||**2)`` over units. Needs both
    ``w_in`` and ``w_out``.
    """
    if "rescaling" not in activation_families(activation):
        raise ValueError(f"Invalid activation: {activation!r} is not positively homogeneous, so its units have no "
                         f"rescaling mirror; homogeneous ones: {sorted(HOMOGENEOUS_ACTIVATIONS)}")
    _check_tol(rtol, atol)
    u, w, h = _split(w_in, w_out, b_in)
    if u.shape[1] == 0 or w.shape[1] == 0:
        raise ValueError("Invalid arguments: rescaling mirrors need both w_in (or b_in) and w_out")
    scale = _scale(torch.cat([u, w], dim=1))
    tol = max(rtol * scale, atol)
    dist = (2.0 * u.norm(dim=1) * w.norm(dim=1)).sqrt()
    near = [int(i) for i in (dist <= tol).nonzero().flatten()]
    return _scan("rescaling", dist, near, h, scale, tol)


@torch.no_grad()
def rotation_mirrors(w_in: Optional[Tensors] = None, w_out: Optional[Tensors] = None, *,
                     b_in: Optional[Tensors] = None, rtol: float = DEFAULT_RTOL, atol: float = 0.0) -> MirrorScan:
    """The singular values of the unit matrix ``V``: distances to the closest rotation mirrors.

    Between two linear maps with nothing in between (``W_out W_in``), any orthogonal ``R`` in the
    hidden space is a symmetry, and the reflection ``R = I - 2 n n^T`` has its mirror at
    ``n^T V = 0``: a hidden direction neither read nor written, i.e. a rank deficit. The
    ``k``-th smallest singular value of ``V`` is the distance to the ``k``-th closest such
    mirror; ``near`` lists the indices (in descending order of singular value) of the
    directions within tolerance, so ``len(near)`` is the number of collapsed directions.
    """
    _check_tol(rtol, atol)
    v = unit_matrix(w_in, w_out, b_in=b_in)
    h = v.shape[0]
    scale = _scale(v)
    tol = max(rtol * scale, atol)
    s = torch.linalg.svdvals(v)
    if s.numel() < h:  # fewer parameters per unit than units: the rest are exact zeros
        s = torch.cat([s, s.new_zeros(h - s.numel())])
    near = [int(i) for i in (s <= tol).nonzero().flatten()]
    return _scan("rotation", s, near, h, scale, tol)


@torch.no_grad()
def duplicate_units(w_in: Optional[Tensors] = None, w_out: Optional[Tensors] = None, *,
                    b_in: Optional[Tensors] = None, rtol: float = DEFAULT_RTOL, atol: float = 0.0) -> List[List[int]]:
    """Groups of units whose incoming and outgoing parameters are equal within tolerance.

    Units ``i`` and ``j`` are joined when their swap mirror is near (``||v_i - v_j|| / sqrt 2 <=
    max(rtol * scale, atol)``); the groups are the connected components with two or more
    members, each sorted, listed by first member. Empty on a random initialisation.
    """
    scan = permutation_mirrors(w_in, w_out, b_in=b_in, rtol=rtol, atol=atol)
    return groups_from_pairs(scan.near)


def groups_from_pairs(pairs) -> List[List[int]]:
    """Connected components (two or more members, each sorted, by first member) of unit pairs."""
    parent = {}

    def find(a):
        while parent.get(a, a) != a:
            a = parent[a]
        return a

    for i, j in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups = {}
    for i, j in pairs:
        for k in (i, j):
            groups.setdefault(find(k), set()).add(k)
    return sorted(sorted(g) for g in groups.values())


@torch.no_grad()
def zero_units(w_in: Optional[Tensors] = None, w_out: Optional[Tensors] = None, *,
               b_in: Optional[Tensors] = None, rtol: float = DEFAULT_RTOL, atol: float = 0.0) -> List[int]:
    """Units whose incoming and outgoing parameters are all (near) zero: ``||v_i|| <= tol``.

    This is the collapsed state of the sign-flip and rescaling mirrors, whatever the activation.
    """
    _check_tol(rtol, atol)
    v = unit_matrix(w_in, w_out, b_in=b_in)
    tol = max(rtol * _scale(v), atol)
    return [int(i) for i in (v.norm(dim=1) <= tol).nonzero().flatten()]


@torch.no_grad()
def inactive_units(activations: torch.Tensor, *, unit_dim: int = 1,
                   rtol: float = DEFAULT_RTOL, atol: float = 0.0) -> List[int]:
    """Units whose activation does not vary over a batch (a ReLU unit never active, for one).

    ``activations``: the layer's output after its nonlinearity, with the units on ``unit_dim``
    (1 for ``[N, H]`` and ``[N, C, h, w]``; -1 for ``[N, T, H]``); every other dimension counts as
    a sample. A unit is inactive when its standard deviation over samples is at most
    ``max(rtol * s, atol)``, ``s`` the RMS standard deviation of the layer's units: a constant
    unit carries no information about the input, so the next layer can only use it as a bias.
    """
    _check_tol(rtol, atol)
    if not isinstance(activations, torch.Tensor):
        raise TypeError(f"Invalid activations: {type(activations).__name__}; expected a torch.Tensor")
    if activations.dim() < 2:
        raise ValueError(f"Invalid activations: shape {tuple(activations.shape)}; expected [N, H, ...] with N samples")
    if not -activations.dim() <= unit_dim < activations.dim():
        raise ValueError(f"Invalid unit_dim: {unit_dim}; activations have {activations.dim()} dimensions")
    a = _check_float(activations, "activations").movedim(unit_dim, 0)
    a = a.reshape(a.shape[0], -1)
    if a.shape[1] < 2:
        raise ValueError(f"Invalid activations: {a.shape[1]} sample per unit; need at least 2")
    sd = a.std(dim=1)
    tol = max(rtol * float((sd * sd).mean().sqrt()), atol)
    return [int(i) for i in (sd <= tol).nonzero().flatten()]


@torch.no_grad()
def dead_units(w_in: Optional[Tensors] = None, w_out: Optional[Tensors] = None, *,
               b_in: Optional[Tensors] = None, activations: Optional[torch.Tensor] = None, unit_dim: int = 1,
               rtol: float = DEFAULT_RTOL, atol: float = 0.0) -> List[int]:
    """Dead units: never active on the batch (``inactive_units``) or with all incoming and
    outgoing parameters near zero (``zero_units``), sorted. Give weights, activations or both.
    """
    if activations is None and w_in is None and w_out is None and b_in is None:
        raise ValueError("Invalid arguments: give activations and/or the weights around the layer (w_in, w_out)")
    dead = set()
    if w_in is not None or w_out is not None or b_in is not None:
        dead.update(zero_units(w_in, w_out, b_in=b_in, rtol=rtol, atol=atol))
    if activations is not None:
        dead.update(inactive_units(activations, unit_dim=unit_dim, rtol=rtol, atol=atol))
    return sorted(dead)
