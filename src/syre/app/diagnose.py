"""``syre diagnose``: audit a saved model for symmetry-induced collapse and print the report.

    syre diagnose --model mypkg.models:make_net --checkpoint run/model.pt --data digits
    syre diagnose --model nets.py:Net --model-arg width=64 --data synthetic --json audit.json
    syre diagnose --model model.py:GPT --model-arg n_layer=4 --checkpoint ckpt.pt --key model --data val.npz

The model comes from an import path ``package.module:factory`` (the current directory is on the
import path, as for ``python -m``) or ``path/to/file.py:factory`` (the file's folder is put first
on the import path, as ``python file.py`` does, so it can import its neighbours), where
``factory`` is a function or class returning the ``nn.Module``, called with the keyword arguments
of ``--model-kwargs JSON`` and ``--model-arg KEY=VALUE`` (repeatable; VALUE is read as a Python
literal, else kept as a string), or a module-level ``nn.Module``. The checkpoint is a
``state_dict`` saved with ``torch.save``, or a dict holding one under ``model``, ``state_dict`` or
``model_state_dict`` (``--key`` picks another); it is read with ``weights_only=True``; a prefix
that all its keys share and the model's lack (``module.``, ``_orig_mod.``, Lightning's ``model.``)
is stripped. When the checkpoint also holds a syre state (``Syre.state_dict()`` under ``syre``, or
inside the optimizer's state under ``optimizer``), the report gives each layer's distance to its
anchors.

The fresh-init reference (``--reference``): ``factory`` compares each layer with the model as the
factory built it, before the checkpoint was loaded (your own initialisation); ``init`` with a
copy re-initialised by each layer's ``reset_parameters``; ``none`` with the structural maxima
only. The default, ``auto``, is ``factory`` with a checkpoint and ``init`` without.

Data: ``digits`` and ``fashion-mnist`` (test images, ``--size`` 28, 14 or 7; ``--images`` for
``[N, 1, H, W]`` instead of flat vectors), ``synthetic`` (standard Gaussian inputs of ``--shape``,
inferred from the first ``Linear`` when omitted; token ids for a model whose first layer is an
``Embedding``) or a ``.npz`` file of inputs (the array ``--data-key``, else ``x``, ``inputs``,
``x_test`` or the only array). Integer arrays (token ids) stay integer (int64), floating ones
become float32; ``--dtype`` overrides. ``--mean``/``--std`` normalise the inputs as the model saw
them in training: a number, one number per channel (``0.49,0.48,0.45``: dim 1), or ``data`` for the
batch's own statistics (per channel of ``[N, C, ...]`` inputs, per feature of ``[N, D]`` ones).
"""
from __future__ import annotations

import argparse
import ast
import copy
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from ._diagnose_data import DTYPES, DiagnoseError, load_inputs, normalise, parse_shape

__all__ = ["DiagnoseError", "SavedAnchors", "load_checkpoint", "load_inputs", "load_model", "normalise", "register",
           "run"]

REFERENCES = ("auto", "factory", "init", "none")
_STATE_KEYS = ("model", "state_dict", "model_state_dict", "model_state")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


class SavedAnchors:
    """The anchors of a saved ``Syre.state_dict()``, without an optimizer: ``anchor(name)``, ``names()``.

    theta0 and D are pure functions of (seed, name, element index), so the state's seed,
    d_spread and per-parameter sigma0 are all it takes to rebuild them.
    """

    def __init__(self, state: Dict[str, Any], params: Dict[str, torch.Tensor]):
        from ..rng.anchors import anchor  # noqa: F401  (fail early if the core is missing)

        if not isinstance(state, dict) or state.get("format") != "syre":
            raise DiagnoseError("the checkpoint's syre entry is not a Syre.state_dict() (no format 'syre')")
        self._seed = int(state["seed"])
        self._d_spread = float(state.get("d_spread", 0.0))
        self._items = {item["name"]: item for item in state.get("params", [])}
        self._params = params

    def names(self) -> List[str]:
        return list(self._items)

    def anchor(self, name: str):
        from ..rng.anchors import Anchor, anchor

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
def _on_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _import_file(path: Path, spec: str):
    """Import ``path`` with its folder first on ``sys.path``, under its own name when that is free."""
    folder = str(path.resolve().parent)
    _on_path(folder)
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path.resolve():
        return existing
    if existing is not None or not name.isidentifier():  # the name is taken by another module
        name = f"_syre_diagnose_{abs(hash(str(path.resolve())))}_{path.stem}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        hint = (f" (its folder {folder} is on the import path; is the missing module elsewhere?)"
                if isinstance(exc, ModuleNotFoundError) else "")
        raise DiagnoseError(f"--model {spec!r}: running {path} failed: {type(exc).__name__}: {exc}{hint}") from exc
    return module


def _import_target(spec: str):
    if not isinstance(spec, str) or ":" not in spec or spec.startswith(":") or spec.endswith(":"):
        raise DiagnoseError(f"invalid --model {spec!r}: expected 'package.module:factory' or 'path/to/file.py:factory'")
    mod_part, attr = spec.rsplit(":", 1)
    if mod_part.endswith(".py"):
        path = Path(mod_part)
        if not path.is_file():
            raise DiagnoseError(f"--model {spec!r}: file not found: {path}")
        module = _import_file(path, spec)
    else:
        _on_path(str(Path.cwd()))  # as ``python -m``: packages in the current directory import
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


def parse_model_args(items: Optional[List[str]], json_text: Optional[str] = None) -> Dict[str, Any]:
    """Factory keyword arguments from ``--model-kwargs JSON`` and ``--model-arg KEY=VALUE`` (the latter win)."""
    kwargs: Dict[str, Any] = {}
    if json_text:
        try:
            loaded = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise DiagnoseError(f"invalid --model-kwargs {json_text!r}: not JSON ({exc})") from exc
        if not isinstance(loaded, dict):
            raise DiagnoseError(f"invalid --model-kwargs {json_text!r}: expected a JSON object")
        kwargs.update(loaded)
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise DiagnoseError(f"invalid --model-arg {item!r}: expected KEY=VALUE with KEY a Python name, e.g. n_layer=4")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text  # a bare word: a string
        kwargs[key.strip()] = value
    return kwargs


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
    except TypeError as exc:
        sig = _signature(obj)
        raise DiagnoseError(f"--model {spec!r}: calling it with {kwargs or {}} failed: {exc}"
                            + (f"; it takes {sig}" if sig else "")) from exc
    except Exception as exc:
        raise DiagnoseError(f"--model {spec!r}: calling it with {kwargs or {}} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise DiagnoseError(f"--model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _signature(obj) -> str:
    import inspect

    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""


def _match_keys(sd: Dict[str, Any], own) -> Tuple[Dict[str, Any], Optional[str]]:
    """Strip a prefix every checkpoint key has and no model key has (``module.``, ``_orig_mod.``,
    Lightning's ``model.``, or any leading name that makes the keys match); or add one every model
    key has. Returns the state dict and a note of what was done, or None."""
    own = set(own)
    if not sd or set(sd) == own:
        return sd, None
    done = []
    changed = True
    while changed:
        changed = False
        firsts = {k.split(".", 1)[0] + "." for k in sd}
        candidates = list(_WRAPPER_PREFIXES) + (sorted(firsts) if len(firsts) == 1 else [])
        for prefix in candidates:
            if all(k.startswith(prefix) for k in sd) and not all(k.startswith(prefix) for k in own):
                stripped = {k[len(prefix):]: v for k, v in sd.items()}
                if prefix in _WRAPPER_PREFIXES or set(stripped) == own:
                    sd, changed = stripped, True
                    done.append(f"stripped the prefix {prefix!r} from the checkpoint's keys")
                    break
    firsts = {k.split(".", 1)[0] + "." for k in own}
    if set(sd) != own and len(firsts) == 1:
        prefix = firsts.pop()
        if {prefix + k for k in sd} == own:
            sd = {prefix + k: v for k, v in sd.items()}
            done.append(f"added the prefix {prefix!r} to the checkpoint's keys")
    return sd, "; ".join(done) or None


def _examples(keys, n=4) -> str:
    keys = sorted(keys)
    return f"{keys[:n]}{' ...' if len(keys) > n else ''} ({len(keys)} in all)"


def load_checkpoint(model: nn.Module, path: str, key: Optional[str] = None, model_name: str = "the model"
                    ) -> Optional[Dict[str, Any]]:
    """Load the state dict in ``path`` into ``model`` (strict); return the checkpoint's syre state, if any.

    Keys that differ only by a prefix are matched (see ``_match_keys``, printed as a note). Any
    other mismatch is an error naming both sides: the keys only the model has, those only the
    checkpoint has, the shapes that differ, and examples of each side's keys.
    """
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
    where = f"{p}"
    if key is not None:
        if key not in ckpt:
            raise DiagnoseError(f"--checkpoint {p}: no key {key!r}; top-level keys: {sorted(map(str, ckpt))[:20]}")
        sd, where = ckpt[key], f"{p} (entry {key!r})"
    elif all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        sd = ckpt
    else:
        found = [k for k in _STATE_KEYS if isinstance(ckpt.get(k), dict)]
        if not found:
            raise DiagnoseError(f"--checkpoint {p}: not a state_dict and no {list(_STATE_KEYS)} entry; top-level "
                                f"keys: {sorted(map(str, ckpt))[:20]}; pass --key")
        sd, where = ckpt[found[0]], f"{p} (entry {found[0]!r})"
    if not isinstance(sd, dict):
        raise DiagnoseError(f"--checkpoint {where}: the state dict is a {type(sd).__name__}, expected a dict")
    own = model.state_dict()
    sd, note = _match_keys(sd, own)
    if note:
        print(f"note: --checkpoint {where}: {note}", file=sys.stderr)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)}, model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(sd)) if isinstance(sd[k], torch.Tensor) and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing in the checkpoint (the model has them): {missing[:12]}"
                         f"{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            parts.append(f"not in the model (the checkpoint has them): {unexpected[:12]}"
                         f"{' ...' if len(unexpected) > 12 else ''}")
        if shapes:
            parts.append(f"shape mismatch: {shapes[:12]}")
        parts.append(f"the model's keys: {_examples(own)}; the checkpoint's keys: {_examples(sd)}")
        raise DiagnoseError(f"--checkpoint {where} does not match {model_name}: " + "; ".join(parts))
    model.load_state_dict(sd)
    return syre_state


# ----------------------------------------------------------------------------- command
def _failure_hint(exc: Exception, x: torch.Tensor) -> str:
    text = str(exc)
    if not x.is_floating_point() and ("Float" in text or "dtype" in text or "scalar type" in text):
        return "; the inputs are int64 (token ids): for integer-valued features such as raw pixels pass --dtype float32"
    if x.is_floating_point() and ("indices" in text or "Long" in text):
        return "; the model wants integer inputs (token ids): pass --dtype int64"
    return " (see --shape, --images, --dtype)"


def run(args: argparse.Namespace, out=None) -> int:
    """Run the command on parsed ``args``; print the report; return the exit code."""
    out = out or sys.stdout
    from ..diagnostics import audit

    if args.reference not in REFERENCES:
        raise DiagnoseError(f"invalid --reference {args.reference!r}: expected one of {', '.join(REFERENCES)}")
    kwargs = parse_model_args(args.model_arg, args.model_kwargs) or None
    model = load_model(args.model, kwargs)
    reference = args.reference
    if reference == "auto":
        reference = "factory" if args.checkpoint else "init"
    fresh = None
    if reference == "factory":
        if not args.checkpoint:
            raise DiagnoseError("--reference factory compares the checkpoint with the model as the factory builds it; "
                                "without --checkpoint use --reference init or none")
        try:
            fresh = copy.deepcopy(model)
        except Exception as exc:
            raise DiagnoseError(f"--reference factory: the model cannot be copied ({type(exc).__name__}: {exc}); "
                                "use --reference init or none") from exc
    syre_state = None
    if args.checkpoint:
        syre_state = load_checkpoint(model, args.checkpoint, args.key, model_name=f"the model from {args.model}")
    else:
        print("note: no --checkpoint; auditing the model as its factory builds it", file=sys.stderr)
    x = load_inputs(args.data, batch=args.batch, shape=parse_shape(args.shape), images=args.images,
                    key=args.data_key, model=model, seed=args.seed, center=args.center, size=args.size,
                    dtype=args.dtype)
    x, how = normalise(x, args.mean, args.std)
    if how:
        print(f"note: inputs {how}", file=sys.stderr)
    anchors = SavedAnchors(syre_state, {k: v for k, v in model.named_parameters()}) if syre_state else None
    print(f"auditing {args.model} on {tuple(x.shape)} {str(x.dtype).replace('torch.', '')} inputs from {args.data}, "
          f"reference: {reference} ...", file=sys.stderr)
    ref = {"factory": fresh, "init": "init", "none": None}[reference]
    try:
        report = audit(model, x, anchors, reference=ref, rtol=args.rtol, max_rows=args.max_rows, seed=args.seed)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        if str(exc).startswith("Invalid "):  # the audit's own argument checks
            raise DiagnoseError(str(exc)) from exc
        raise DiagnoseError(f"the model failed on inputs of shape {tuple(x.shape)} ({x.dtype}) from {args.data}: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0]}{_failure_hint(exc, x)}") from exc
    if reference == "factory":
        report.meta["reference"] = f"{args.model} as built, before the checkpoint"
    print(report, file=out)
    if args.json:
        d = report.to_dict()
        d["config"] = {"model": args.model, "checkpoint": args.checkpoint, "data": args.data,
                       "batch": int(x.shape[0]), "model_kwargs": kwargs, "reference": reference,
                       "dtype": str(x.dtype).replace("torch.", ""), "normalisation": how or None}
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
    p.add_argument("--model-arg", action="append", default=None, metavar="KEY=VALUE",
                   help="one keyword argument for the factory (repeatable; VALUE a Python literal or a string)")
    p.add_argument("--reference", default="auto", choices=REFERENCES,
                   help="fresh-init reference: factory (the model before the checkpoint), init (reset_parameters), "
                        "none; auto: factory with a checkpoint, else init")
    p.add_argument("--checkpoint", default=None, metavar="FILE.pt", help="state_dict saved with torch.save")
    p.add_argument("--key", default=None, help="entry of the checkpoint that holds the state dict")
    p.add_argument("--data", required=True, metavar="SOURCE", help="digits, fashion-mnist, synthetic or a .npz file")
    p.add_argument("--data-key", default=None, help="array of the .npz file to use")
    p.add_argument("--batch", type=int, default=1024, help="number of inputs (default 1024)")
    p.add_argument("--shape", default=None, help="input shape without the batch, e.g. 64 or 1,28,28")
    p.add_argument("--images", action="store_true", help="digits/fashion-mnist as [N, 1, H, W] instead of flat")
    p.add_argument("--size", type=int, default=28, help="fashion-mnist image side: 28, 14 or 7 (default 28)")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES),
                   help="input dtype (default: float32 for floating data, int64 for integer data such as token ids)")
    p.add_argument("--mean", default=None, metavar="M", help="subtract: a number, one per channel (a,b,c), or 'data'")
    p.add_argument("--std", default=None, metavar="S", help="divide by: a number, one per channel (a,b,c), or 'data'")
    p.add_argument("--center", action="store_true", help="subtract the batch mean from the inputs (as --mean data)")
    p.add_argument("--rtol", type=float, default=1e-3, help="mirror tolerance relative to the layer scale (1e-3)")
    p.add_argument("--max-rows", type=int, default=4096, help="rows per representation for its SVD (4096)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data subset, synthetic inputs and init reference")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the report as JSON")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="write the report's plot")
    p.set_defaults(func=_main)
