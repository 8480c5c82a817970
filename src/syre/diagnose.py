"""``syre diagnose``: audit a saved model for symmetry-induced collapse and print the report.

    syre diagnose --model mypkg.models:make_net --checkpoint run/model.pt --data digits
    syre diagnose --model nets.py:Net --model-kwargs '{"width": 64}' --data synthetic --json audit.json

The model comes from an import path ``package.module:factory`` (or ``path/to/file.py:factory``),
where ``factory`` is a function or class returning the ``nn.Module`` (called with
``--model-kwargs``), or a module-level ``nn.Module``. The checkpoint is a ``state_dict`` saved
with ``torch.save``, or a dict holding one under ``model``, ``state_dict`` or
``model_state_dict`` (``--key`` picks another); it is read with ``weights_only=True``. When the
checkpoint also holds a syre state (``Syre.state_dict()`` under ``syre``, or inside the
optimizer's state under ``optimizer``), the report gives each layer's distance to its anchors.

Data: ``digits`` and ``fashion-mnist`` (test images, ``--size`` 28, 14 or 7; ``--images`` for
``[N, 1, H, W]`` instead of flat vectors), ``synthetic`` (standard Gaussian inputs of ``--shape``, inferred from the first
``Linear`` when omitted) or a ``.npz`` file of inputs (the array ``--data-key``, else ``x``, ``inputs``,
``x_test`` or the only array).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

__all__ = ["DiagnoseError", "SavedAnchors", "load_inputs", "load_model", "register", "run"]

DATA_CHOICES = ("digits", "fashion-mnist", "synthetic", "<file>.npz")
_STATE_KEYS = ("model", "state_dict", "model_state_dict", "model_state")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class DiagnoseError(Exception):
    """A problem with the command's inputs; the message names the file, path or key at fault."""


class SavedAnchors:
    """The anchors of a saved ``Syre.state_dict()``, without an optimizer: ``anchor(name)``, ``names()``.

    theta0 and D are pure functions of (seed, name, element index), so the state's seed,
    d_spread and per-parameter sigma0 are all it takes to rebuild them.
    """

    def __init__(self, state: Dict[str, Any], params: Dict[str, torch.Tensor]):
        from .anchors import anchor  # noqa: F401  (fail early if the core is missing)

        if not isinstance(state, dict) or state.get("format") != "syre":
            raise DiagnoseError("the checkpoint's syre entry is not a Syre.state_dict() (no format 'syre')")
        self._seed = int(state["seed"])
        self._d_spread = float(state.get("d_spread", 0.0))
        self._items = {item["name"]: item for item in state.get("params", [])}
        self._params = params

    def names(self) -> List[str]:
        return list(self._items)

    def anchor(self, name: str):
        from .anchors import Anchor, anchor

        p = self._params.get(name)
        item = self._items.get(name)
        if p is None and item is None:
            raise KeyError(f"Unknown parameter name {name!r}")
        dtype = torch.float64 if p is not None and p.dtype == torch.float64 else torch.float32
        if item is None:  # not covered: decays toward nothing
            return Anchor(torch.zeros(p.shape, dtype=dtype), torch.ones(p.shape, dtype=dtype))
        return anchor(self._seed, name, item["shape"], sigma0=float(item["sigma0"]), d_spread=self._d_spread,
                      dtype=dtype)


# ----------------------------------------------------------------------------- model
def _import_target(spec: str):
    if not isinstance(spec, str) or ":" not in spec or spec.startswith(":") or spec.endswith(":"):
        raise DiagnoseError(f"invalid --model {spec!r}: expected 'package.module:factory' or 'path/to/file.py:factory'")
    mod_part, attr = spec.rsplit(":", 1)
    if mod_part.endswith(".py"):
        path = Path(mod_part)
        if not path.is_file():
            raise DiagnoseError(f"--model {spec!r}: file not found: {path}")
        name = f"_syre_diagnose_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            raise DiagnoseError(f"--model {spec!r}: running {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(mod_part)
        except ModuleNotFoundError as exc:
            raise DiagnoseError(f"--model {spec!r}: cannot import module {mod_part!r} ({exc}); is its package on "
                                "PYTHONPATH, or give a file: path/to/file.py:factory") from exc
        except Exception as exc:
            raise DiagnoseError(f"--model {spec!r}: importing {mod_part!r} failed: {type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))[:20]
            raise DiagnoseError(f"--model {spec!r}: module {mod_part!r} has no attribute {attr!r}; it has: {public}")
        obj = getattr(obj, part)
    return obj


def load_model(spec: str, kwargs: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The ``nn.Module`` named by ``spec`` (``package.module:factory``), built with ``kwargs``."""
    obj = _import_target(spec)
    if isinstance(obj, nn.Module):
        if kwargs:
            raise DiagnoseError(f"--model {spec!r} is a module instance; --model-kwargs cannot apply")
        return obj
    if not callable(obj):
        raise DiagnoseError(f"--model {spec!r}: {type(obj).__name__} is neither an nn.Module nor callable")
    try:
        model = obj(**(kwargs or {}))
    except Exception as exc:
        raise DiagnoseError(f"--model {spec!r}: calling it with {kwargs or {}} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise DiagnoseError(f"--model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _strip_prefix(sd: Dict[str, Any]) -> Dict[str, Any]:
    for prefix in _WRAPPER_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_checkpoint(model: nn.Module, path: str, key: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """Load the state dict in ``path`` into ``model`` (strict); return the checkpoint's syre state, if any."""
    p = Path(path)
    if not p.is_file():
        raise DiagnoseError(f"--checkpoint: file not found: {p}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DiagnoseError(f"--checkpoint {p}: cannot read it with torch.load(weights_only=True): "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(ckpt, dict):
        raise DiagnoseError(f"--checkpoint {p}: holds a {type(ckpt).__name__}, expected a state_dict (a dict)")
    syre_state = None
    if isinstance(ckpt.get("syre"), dict):
        syre_state = ckpt["syre"]
    elif isinstance(ckpt.get("optimizer"), dict) and isinstance(ckpt["optimizer"].get("syre"), dict):
        syre_state = ckpt["optimizer"]["syre"]
    if key is not None:
        if key not in ckpt:
            raise DiagnoseError(f"--checkpoint {p}: no key {key!r}; top-level keys: {sorted(map(str, ckpt))[:20]}")
        sd = ckpt[key]
    elif all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt
    else:
        found = [k for k in _STATE_KEYS if isinstance(ckpt.get(k), dict)]
        if not found:
            raise DiagnoseError(f"--checkpoint {p}: not a state_dict and no {list(_STATE_KEYS)} entry; top-level "
                                f"keys: {sorted(map(str, ckpt))[:20]}; pass --key")
        sd = ckpt[found[0]]
    if not isinstance(sd, dict):
        raise DiagnoseError(f"--checkpoint {p}: the state dict is a {type(sd).__name__}, expected a dict")
    sd = _strip_prefix(sd)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)}, model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(sd)) if isinstance(sd[k], torch.Tensor) and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing in the checkpoint: {missing[:12]}{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            parts.append(f"not in the model: {unexpected[:12]}{' ...' if len(unexpected) > 12 else ''}")
        if shapes:
            parts.append(f"shape mismatch: {shapes[:12]}")
        raise DiagnoseError(f"--checkpoint {p} does not match the model: " + "; ".join(parts))
    model.load_state_dict(sd)
    return syre_state


# ----------------------------------------------------------------------------- data
def _parse_shape(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise DiagnoseError(f"invalid --shape {text!r}: expected sizes without the batch, e.g. '64' or '1,28,28'")
    if not shape or any(s <= 0 for s in shape):
        raise DiagnoseError(f"invalid --shape {text!r}: expected positive sizes, e.g. '64' or '1,28,28'")
    return shape


def load_inputs(data: str, *, batch: int = 1024, shape: Optional[Tuple[int, ...]] = None, images: bool = False,
                key: Optional[str] = None, model: Optional[nn.Module] = None, seed: int = 0,
                center: bool = False, size: int = 28) -> torch.Tensor:
    """A batch of at most ``batch`` inputs from ``data`` (see the module docstring), float32."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise DiagnoseError(f"invalid --batch {batch!r}: expected an int >= 2")
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
        if shape is None:
            first = next((m for m in (model.modules() if model is not None else []) if isinstance(m, nn.Linear)), None)
            convs = [m for m in (model.modules() if model is not None else []) if isinstance(m, nn.modules.conv._ConvNd)]
            if first is None or convs:
                raise DiagnoseError("--data synthetic needs --shape (the input size without the batch, e.g. 1,28,28) "
                                    "for a model whose first layer is not a Linear")
            shape = (first.in_features,)
        x = torch.randn((batch,) + tuple(shape), generator=torch.Generator().manual_seed(seed))
    elif data.endswith(".npz"):
        import numpy as np

        p = Path(data)
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
                        raise DiagnoseError(f"--data {p}: several arrays {names} and none named x/inputs/x_test; pass --key")
                    arr = z[pick]
        except DiagnoseError:
            raise
        except Exception as exc:
            raise DiagnoseError(f"--data {p}: cannot read it as .npz: {type(exc).__name__}: {exc}") from exc
        if arr.dtype.kind not in "fiub":
            raise DiagnoseError(f"--data {p}: the inputs have dtype {arr.dtype}; expected numbers")
        x = torch.from_numpy(np.ascontiguousarray(arr)).float()[:batch]
    else:
        raise DiagnoseError(f"invalid --data {data!r}: expected one of {', '.join(DATA_CHOICES)}")
    if shape is not None and data != "synthetic":
        try:
            x = x.reshape((x.shape[0],) + tuple(shape))
        except RuntimeError:
            raise DiagnoseError(f"--shape {shape} does not fit inputs of shape {tuple(x.shape[1:])} "
                                f"({math.prod(x.shape[1:])} values per sample)")
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    return x[:batch]


# ----------------------------------------------------------------------------- command
def run(args: argparse.Namespace, out=None) -> int:
    """Run the command on parsed ``args``; print the report; return the exit code."""
    out = out or sys.stdout
    from .diagnostics import audit

    try:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else None
    except json.JSONDecodeError as exc:
        raise DiagnoseError(f"invalid --model-kwargs {args.model_kwargs!r}: not JSON ({exc})") from exc
    if kwargs is not None and not isinstance(kwargs, dict):
        raise DiagnoseError(f"invalid --model-kwargs {args.model_kwargs!r}: expected a JSON object")
    model = load_model(args.model, kwargs)
    syre_state = None
    if args.checkpoint:
        syre_state = load_checkpoint(model, args.checkpoint, args.key)
    else:
        print("note: no --checkpoint; auditing the model as its factory builds it", file=sys.stderr)
    x = load_inputs(args.data, batch=args.batch, shape=_parse_shape(args.shape), images=args.images,
                    key=args.data_key, model=model, seed=args.seed, center=args.center, size=args.size)
    anchors = SavedAnchors(syre_state, {k: v for k, v in model.named_parameters()}) if syre_state else None
    print(f"auditing {args.model} on {tuple(x.shape)} inputs from {args.data} ...", file=sys.stderr)
    try:
        report = audit(model, x, anchors, rtol=args.rtol, max_rows=args.max_rows)
    except (RuntimeError, ValueError, TypeError) as exc:
        if str(exc).startswith("Invalid "):  # the audit's own argument checks
            raise DiagnoseError(str(exc)) from exc
        raise DiagnoseError(f"the model failed on inputs of shape {tuple(x.shape)} from {args.data}: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0]} (see --shape, --images)") from exc
    print(report, file=out)
    if args.json:
        d = report.to_dict()
        d["config"] = {"model": args.model, "checkpoint": args.checkpoint, "data": args.data,
                       "batch": int(x.shape[0]), "model_kwargs": kwargs}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(d, indent=1) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        report.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _main(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except DiagnoseError as exc:
        print(f"syre diagnose: error: {exc}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="audit a saved model for symmetry-induced collapse",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="MODULE:FACTORY",
                   help="import path of the model: package.module:factory or path/to/file.py:factory")
    p.add_argument("--model-kwargs", default=None, metavar="JSON", help="keyword arguments for the factory, as JSON")
    p.add_argument("--checkpoint", default=None, metavar="FILE.pt", help="state_dict saved with torch.save")
    p.add_argument("--key", default=None, help="entry of the checkpoint that holds the state dict")
    p.add_argument("--data", required=True, metavar="SOURCE", help=f"one of {', '.join(DATA_CHOICES)}")
    p.add_argument("--data-key", default=None, help="array of the .npz file to use")
    p.add_argument("--batch", type=int, default=1024, help="number of inputs (default 1024)")
    p.add_argument("--shape", default=None, help="input shape without the batch, e.g. 64 or 1,28,28")
    p.add_argument("--images", action="store_true", help="digits/fashion-mnist as [N, 1, H, W] instead of flat")
    p.add_argument("--size", type=int, default=28, help="fashion-mnist image side: 28, 14 or 7 (default 28)")
    p.add_argument("--center", action="store_true", help="subtract the batch mean from the inputs")
    p.add_argument("--rtol", type=float, default=1e-3, help="mirror tolerance relative to the layer scale (1e-3)")
    p.add_argument("--max-rows", type=int, default=4096, help="rows per representation for its SVD (4096)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data subset / synthetic inputs")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the report as JSON")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="write the report's plot")
    p.set_defaults(func=_main)
