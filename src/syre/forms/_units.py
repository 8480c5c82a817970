"""Units of a layer for ``syre.reset_units_``: which elements of its parameters a unit is, and the units' indices.

A layer's *output units* are the rows of its weight (``Linear``, ``Conv``: dim 0) or the output
channels of a ``ConvTranspose`` (dim 1 of its ``(in, out / groups, ...)`` weight, per group of rows);
its *input units* (what ``outgoing=`` zeroes) are the columns of its weight (per group for a
grouped ``Conv``) or the rows of a ``ConvTranspose``'s. The parameters a layer holds are its own
(a tied weight included) and those under its parametrizations (``weight_norm``'s ``g`` and ``v``,
another parametrization's ``original``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import _dist
from ..select import GAIN

__all__ = ["TRANSPOSED", "check_units", "held", "input_mask", "n_inputs", "n_outputs", "outgoing_writes", "output_mask", "rows"]


def held(mod: nn.Module) -> list:
    """The parameters ``mod`` holds: its own (tied ones included) and those of its parametrizations."""
    out = [p for _, p in mod.named_parameters(recurse=False)]
    plist = getattr(mod, "parametrizations", None)
    if isinstance(plist, nn.ModuleDict):
        out += list(plist.parameters())
    return out


def check_units(units, n: int, layer_name: str) -> torch.Tensor:
    """``units`` as int64 indices: integer indices in ``[0, n)``, or a bool mask of ``n`` entries."""
    expected = f"expected integer indices in [0, {n}) or a bool mask of {n} entries (one per unit of {layer_name!r})"
    try:
        t = torch.as_tensor(list(units) if isinstance(units, range) else units)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"Invalid units value: {units!r}; {expected}") from None
    if t.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    if t.dtype == torch.bool:
        if t.dim() != 1 or t.shape[0] != n:
            raise ValueError(f"Invalid units value: a bool mask of shape {tuple(t.shape)}; {expected}")
        return t.nonzero().reshape(-1).cpu()
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"Invalid units value: {units!r} of dtype {t.dtype}; {expected}")
    t = t.to(torch.int64).reshape(-1).cpu()
    if int(t.min()) < 0 or int(t.max()) >= n:
        raise ValueError(f"Invalid units value: {t.tolist()}; {layer_name!r} has units 0 to {n - 1}")
    return t


TRANSPOSED = nn.modules.conv._ConvTransposeNd
_CONV = nn.modules.conv._ConvNd


def n_outputs(mod: nn.Module, shape) -> int:
    return shape[1] * mod.groups if isinstance(mod, TRANSPOSED) else shape[0]


def n_inputs(mod: nn.Module, shape) -> int:
    if isinstance(mod, TRANSPOSED):
        return shape[0]
    return shape[1] * (mod.groups if isinstance(mod, _CONV) else 1)


def rows(shape, idx: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[idx] = True
    return mask


def _grouped_columns(shape, groups: int, idx: torch.Tensor) -> torch.Tensor:
    """A weight ``(groups * a, b, *window)`` whose unit ``c`` is column ``c % b`` of row block ``c // b``."""
    mask = torch.zeros(groups, shape[0] // groups, shape[1], math.prod(shape[2:]), dtype=torch.bool)
    mask[idx // shape[1], :, idx % shape[1], :] = True
    return mask.view(shape)


def output_mask(mod: nn.Module, shape, idx: torch.Tensor) -> torch.Tensor:
    return _grouped_columns(shape, mod.groups, idx) if isinstance(mod, TRANSPOSED) else rows(shape, idx)


def input_mask(mod: nn.Module, shape, idx: torch.Tensor) -> torch.Tensor:
    if isinstance(mod, TRANSPOSED):
        return rows(shape, idx)
    return _grouped_columns(shape, mod.groups if isinstance(mod, _CONV) else 1, idx)


def outgoing_writes(out_name: str, nxt: nn.Module, by_id, n: int, idx: torch.Tensor, layer_name: str) -> list:
    """``(param, mask, values)`` that zero the weights of ``nxt`` reading the units ``idx``."""
    ow = getattr(nxt, "weight", None)
    if not isinstance(ow, torch.Tensor) or ow.dim() < 2 or _dist.is_dtensor(ow) or n_inputs(nxt, ow.shape) != n:
        raise ValueError(f"Invalid outgoing value: {out_name!r} has no weight reading the {n} units of {layer_name!r}")
    mask = input_mask(nxt, ow.shape, idx)
    if isinstance(nxt._parameters.get("weight"), torch.Tensor):
        return [(ow, mask, torch.zeros((), dtype=ow.dtype))]
    own = {by_id[id(p)].name: p for p in held(nxt)}
    gains = [name for name, p in own.items() if by_id[id(p)].role == GAIN]
    if len(gains) != 1 or gains[0][: -len("_g")] + "_v" not in own:
        raise ValueError(f"Invalid outgoing value: {out_name!r} computes its weight with a parametrization "
                         f"({sorted(own)}); zeroing its originals would not zero the weights that read the reset "
                         "units. Zero them in the parametrization's terms yourself")
    g, v = own[gains[0]], own[gains[0][: -len("_g")] + "_v"]
    if v.shape != ow.shape:
        raise ValueError(f"Invalid outgoing value: {out_name!r}'s direction {tuple(v.shape)} is not shaped as its weight")
    # w = g * v / |v| (norms over the dims where g has size 1): zero v's columns, rescale g to keep the rest.
    dims = tuple(d for d in range(v.dim()) if g.dim() != v.dim() or g.shape[d] == 1)
    v_new = v.detach().masked_fill(mask.to(v.device), 0.0)
    before = v.detach().double().norm(dim=dims, keepdim=True).reshape(g.shape)
    after = v_new.double().norm(dim=dims, keepdim=True).reshape(g.shape)
    if bool(((after == 0) & (before > 0)).any()):
        raise ValueError(f"Invalid outgoing value: a unit of {out_name!r} reads only from the reset units of "
                         f"{layer_name!r}; weight_norm cannot zero all of its weights")
    scale = torch.where(before > 0, after / before.clamp_min(1e-300), torch.ones_like(before))
    g_new = (g.detach().double() * scale).to(g.dtype)
    return [(v, mask, torch.zeros((), dtype=v.dtype)), (g, torch.ones(g.shape, dtype=torch.bool), g_new)]
