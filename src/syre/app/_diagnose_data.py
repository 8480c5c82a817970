"""Inputs of ``syre diagnose``: built-in datasets, synthetic inputs, ``.npz`` files, normalisation.

See ``syre.diagnose`` for the command; these functions are also usable on their own.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["DATA_CHOICES", "DTYPES", "DiagnoseError", "load_inputs", "normalise", "parse_shape"]

DATA_CHOICES = ("digits", "fashion-mnist", "synthetic", "<file>.npz")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}


class DiagnoseError(Exception):
    """A problem with the command's inputs; the message names the file, path or key at fault."""


def parse_shape(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise DiagnoseError(f"invalid --shape {text!r}: expected sizes without the batch, e.g. '64' or '1,28,28'")
    if not shape or any(s <= 0 for s in shape):
        raise DiagnoseError(f"invalid --shape {text!r}: expected positive sizes, e.g. '64' or '1,28,28'")
    return shape


def _first_layer(model: Optional[nn.Module]) -> Optional[nn.Module]:
    kinds = (nn.Linear, nn.Embedding, nn.modules.conv._ConvNd, nn.RNNBase)
    return next((m for m in (model.modules() if model is not None else []) if isinstance(m, kinds)), None)


def load_inputs(data: str, *, batch: int = 1024, shape: Optional[Tuple[int, ...]] = None, images: bool = False,
                key: Optional[str] = None, model: Optional[nn.Module] = None, seed: int = 0,
                center: bool = False, size: int = 28, dtype: Optional[str] = None) -> torch.Tensor:
    """A batch of at most ``batch`` inputs from ``data`` (see the module docstring).

    Floating data is float32 and integer data (token ids) int64, unless ``dtype`` (``float32``,
    ``float64`` or ``int64``) says otherwise. ``center`` subtracts the batch mean.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise DiagnoseError(f"invalid --batch {batch!r}: expected an int >= 2")
    if dtype is not None and dtype not in DTYPES:
        raise DiagnoseError(f"invalid --dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if data == "digits":
        from .data import digits

        s = digits(seed=seed, flat=not images)
        x = torch.cat([s.x_test, s.x_train])[:batch]
    elif data == "fashion-mnist":
        from .data import DataNotFoundError, fashion_mnist

        try:
            s = fashion_mnist(n_train=1, n_test=min(batch, 10000), flat=not images, seed=seed, size=size)
        except DataNotFoundError as exc:
            raise DiagnoseError(str(exc)) from exc
        except ValueError as exc:
            raise DiagnoseError(f"invalid --size {size!r}: {exc}") from exc
        x = s.x_test
    elif data == "synthetic":
        x = _synthetic(model, batch, shape, seed)
    elif data.endswith(".npz"):
        x = _npz(Path(data), key)[:batch]
    else:
        raise DiagnoseError(f"invalid --data {data!r}: expected one of {', '.join(DATA_CHOICES)}")
    if shape is not None and data != "synthetic":
        try:
            x = x.reshape((x.shape[0],) + tuple(shape))
        except RuntimeError:
            raise DiagnoseError(f"--shape {shape} does not fit inputs of shape {tuple(x.shape[1:])} "
                                f"({math.prod(x.shape[1:])} values per sample)")
    if dtype is not None:
        if DTYPES[dtype] == torch.int64 and x.is_floating_point() and not bool((x == x.round()).all()):
            raise DiagnoseError(f"--dtype int64: the inputs from {data} are not whole numbers (token ids); "
                                "leave --dtype out for floating inputs")
        x = x.to(DTYPES[dtype])
    if center:
        if not x.is_floating_point():
            raise DiagnoseError("--center: the inputs are integers (token ids), which are not centred; pass "
                                "--dtype float32 if they are numeric features")
        x = x - x.mean(dim=0, keepdim=True)
    return x[:batch]


def _synthetic(model, batch: int, shape, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    first = _first_layer(model)
    if isinstance(first, nn.Embedding):  # token ids
        if shape is None:
            raise DiagnoseError("--data synthetic needs --shape (the sequence length, e.g. 64) for a model whose "
                                "first layer is an Embedding")
        return torch.randint(0, first.num_embeddings, (batch,) + tuple(shape), generator=gen)
    if shape is None:
        if not isinstance(first, nn.Linear):
            raise DiagnoseError("--data synthetic needs --shape (the input size without the batch, e.g. 1,28,28) "
                                "for a model whose first layer is not a Linear")
        shape = (first.in_features,)
    return torch.randn((batch,) + tuple(shape), generator=gen)


def _npz(p: Path, key: Optional[str]) -> torch.Tensor:
    import numpy as np

    if not p.is_file():
        raise DiagnoseError(f"--data: file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            names = list(z.files)
            if key is not None:
                if key not in names:
                    raise DiagnoseError(f"--data {p}: no array {key!r}; arrays: {names}")
                arr = z[key]
            else:
                pick = next((k for k in ("x", "inputs", "x_test", "X") if k in names), None)
                if pick is None and len(names) == 1:
                    pick = names[0]
                if pick is None:
                    raise DiagnoseError(f"--data {p}: several arrays {names} and none named x/inputs/x_test; pass --data-key")
                arr = z[pick]
    except DiagnoseError:
        raise
    except Exception as exc:
        raise DiagnoseError(f"--data {p}: cannot read it as .npz: {type(exc).__name__}: {exc}") from exc
    if arr.dtype.kind not in "fiub":
        raise DiagnoseError(f"--data {p}: the inputs have dtype {arr.dtype}; expected numbers")
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.float() if arr.dtype.kind in "fb" else t.long()  # token ids stay integer


def _stat(text: str, what: str) -> Optional[torch.Tensor]:
    if text == "data":
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise DiagnoseError(f"invalid --{what} {text!r}: expected a number, one number per channel "
                            "(e.g. 0.49,0.48,0.45) or 'data'") from None
    if what == "std" and any(v <= 0 or not math.isfinite(v) for v in values):
        raise DiagnoseError(f"invalid --std {text!r}: standard deviations must be finite and > 0")
    return torch.tensor(values)


def normalise(x: torch.Tensor, mean: Optional[str] = None, std: Optional[str] = None) -> Tuple[torch.Tensor, str]:
    """``(x - mean) / std`` with each given as ``--mean``/``--std`` text; returns the inputs and a description.

    A number applies to every value; a list, one value per channel (dim 1); ``data``: the batch's
    own statistics, per channel of ``[N, C, ...]`` inputs, per feature of ``[N, D]`` ones (a feature
    that does not vary keeps std 1).
    """
    if mean is None and std is None:
        return x, ""
    if not x.is_floating_point():
        raise DiagnoseError("--mean/--std: the inputs are integers (token ids); normalisation applies to numeric "
                            "inputs (pass --dtype float32 if these are numeric features)")
    dims = [0] + list(range(2, x.dim()))
    view = (1, -1) + (1,) * (x.dim() - 2) if x.dim() >= 2 else (-1,)
    out, parts = x, []
    for text, what in ((mean, "mean"), (std, "std")):
        if text is None:
            continue
        v = _stat(text, what)
        if v is None:
            v = x.mean(dim=dims) if what == "mean" else x.std(dim=dims)
            if what == "std":
                v = torch.where(v > 0, v, torch.ones_like(v))
            shown = "the batch's own, per " + ("channel" if x.dim() > 2 else "feature")
        else:
            channels = x.shape[1] if x.dim() >= 2 else x.shape[0]
            if v.numel() not in (1, channels):
                raise DiagnoseError(f"invalid --{what} {text!r}: {v.numel()} values for inputs with {channels} "
                                    "channels (dim 1); give one value or one per channel")
            shown = text
        v = v.to(x.dtype).reshape(view) if v.numel() > 1 else v.to(x.dtype).reshape(())
        out = out - v if what == "mean" else out / v
        parts.append(f"{what} {shown}")
    return out, "normalised with " + ", ".join(parts)
