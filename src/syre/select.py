"""Which parameters get syre: canonical names, module types, include/exclude rules.

A parameter's *name* is its name in the bare model, with wrapper components removed, so that
the anchors are the same whether syre is handed the model itself or the model wrapped by
``DistributedDataParallel``/``DataParallel`` (``module.``), ``torch.compile`` (``_orig_mod.``),
FSDP1 (``_fsdp_wrapped_module.``), activation checkpointing (``_checkpoint_wrapped_module.``)
or ``torch.nn.utils.parametrize`` (``layer.parametrizations.weight.original`` is ``layer.weight``).
A parametrization with several originals names them ``layer.weight.original0``, ... ; weight
normalisation (``torch.nn.utils.parametrizations.weight_norm``) names its magnitude and direction
``layer.weight_g`` and ``layer.weight_v``, as the older ``torch.nn.utils.weight_norm`` does, so both
forms get the same anchors.

Include/exclude rules (``include=``, ``exclude=`` of every entry point) are one rule or a list of
rules, each one of

* a module class or tuple of classes: matches the parameters that module type owns directly;
* a string: an ``fnmatch`` pattern on the canonical name (``"*.bias"``, ``"encoder.*"``); a tied
  parameter matches under any of its names;
* a callable ``(name, param) -> bool``.

A parameter is covered when it matches ``include`` (default: everything) and not ``exclude``.
``check_rules_match`` refuses a pattern (or any include rule) that matches no parameter of the
model: a typo such as ``"*.wieght"`` or a class name given as a string would otherwise cover
nothing without a word. ``NORM_TYPES`` is the tuple of normalisation layer types, for
``exclude=syre.NORM_TYPES``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = [
    "NORM_TYPES",
    "ParamInfo",
    "canonical_name",
    "check_rule",
    "check_rules_match",
    "collect",
    "covered",
    "is_selected",
    "matches",
    "unwrap_model",
]

#: Normalisation layer types (BatchNorm, InstanceNorm, LayerNorm, GroupNorm, LocalResponseNorm, RMSNorm).
NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

_WRAPPER_COMPONENTS = {"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"}

Rule = Union[type, tuple, str, Callable[[str, torch.Tensor], bool], Sequence]

#: ``ParamInfo.role`` of a weight-normalised layer's magnitude ``g`` (a gain: it has no fan-in).
GAIN = "gain"


def canonical_name(name: str) -> str:
    """The name of a parameter in the bare model (wrapper components removed).

    ``<prefix>.parametrizations.<attr>.original`` is ``<prefix>.<attr>``; with several originals,
    ``<prefix>.parametrizations.<attr>.original<i>`` is ``<prefix>.<attr>.original<i>``.
    """
    parts = [p for p in name.split(".") if p not in _WRAPPER_COMPONENTS]
    out: List[str] = []
    i = 0
    while i < len(parts):
        if parts[i] == "parametrizations" and i + 2 < len(parts) and parts[i + 2].startswith("original"):
            out.append(parts[i + 1])
            if parts[i + 2] != "original":
                out.append(parts[i + 2])
            i += 3
            continue
        out.append(parts[i])
        i += 1
    return ".".join(out)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP/DataParallel and torch.compile wrappers from the outside of ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"Invalid model: {type(model).__name__}; expected a torch.nn.Module")
    while True:
        inner = getattr(model, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            model = inner
            continue
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
            continue
        return model


@dataclass
class ParamInfo:
    """One parameter of a model: canonical name, the tensor, its owning module and attribute.

    ``aliases`` are the other canonical names of a tied parameter; ``role`` is ``"gain"`` for
    the magnitude of a weight-normalised weight (no fan-in), else empty.
    """

    name: str
    param: torch.Tensor
    module: nn.Module
    attr: str
    aliases: Tuple[str, ...] = field(default=())
    role: str = ""

    @property
    def module_type(self) -> str:
        return type(self.module).__name__

    @property
    def names(self) -> Tuple[str, ...]:
        return (self.name,) + self.aliases


def _is_weight_norm(plist: nn.Module) -> bool:
    return len(plist) == 1 and type(plist[0]).__name__ == "_WeightNorm"


def collect(model: nn.Module) -> Dict[int, ParamInfo]:
    """``id(param) -> ParamInfo`` for every parameter of ``model``, tied ones once (first name).

    Order and deduplication follow ``model.named_parameters()``; the later names of a tied
    parameter are kept in ``ParamInfo.aliases``.
    """
    model = unwrap_model(model)
    out: Dict[int, ParamInfo] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        for attr, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{attr}" if mod_name else attr
            owner, name, role = module, canonical_name(full), ""
            # parametrize keeps `original` in a ParametrizationList; the owner is two levels up.
            if attr.startswith("original") and type(module).__name__ == "ParametrizationList":
                owner = _parametrized_owner(model, mod_name) or module
                owner_path, _, target = mod_name.rpartition(".")
                owner_path = canonical_name(owner_path.rpartition(".")[0]) if owner_path else ""
                if attr == "original":
                    attr = target
                elif _is_weight_norm(module) and attr in ("original0", "original1"):
                    attr = f"{target}_g" if attr == "original0" else f"{target}_v"
                    role = GAIN if attr.endswith("_g") else ""
                else:
                    attr = f"{target}.{attr}"
                name = f"{owner_path}.{attr}" if owner_path else attr
            elif attr.endswith("_g") and isinstance(module._parameters.get(attr[:-2] + "_v"), torch.Tensor):
                role = GAIN  # torch.nn.utils.weight_norm (the older form)
            known = out.get(id(p))
            if known is not None:
                if name != known.name and name not in known.aliases:
                    known.aliases = known.aliases + (name,)
                continue
            out[id(p)] = ParamInfo(name, p, owner, attr, role=role)
    seen = set()
    for info in out.values():
        if info.name in seen:
            raise ValueError(f"Two parameters share the canonical name {info.name!r}; syre cannot tell their anchors apart")
        seen.add(info.name)
    return out


def covered(model: nn.Module, include=None, exclude=None) -> List[ParamInfo]:
    """The trainable parameters of ``model`` selected by ``include``/``exclude``, in order.

    Refuses rules that match no parameter (``check_rules_match``).
    """
    check_rule("include", include)
    check_rule("exclude", exclude)
    infos = list(collect(model).values())
    check_rules_match(infos, include, exclude)
    return [i for i in infos if i.param.requires_grad and is_selected(i, include, exclude)]


def _parametrized_owner(model: nn.Module, mod_name: str) -> Optional[nn.Module]:
    parts = mod_name.split(".")
    if len(parts) < 2 or parts[-2] != "parametrizations":
        return None
    owner_name = ".".join(parts[:-2])
    return model.get_submodule(owner_name) if owner_name else model


def _items(rule) -> list:
    if rule is None:
        return []
    return list(rule) if isinstance(rule, (list, tuple)) and not _is_type_tuple(rule) else [rule]


def check_rule(arg: str, rule) -> None:
    """Raise a clear error for an include/exclude rule of the wrong kind."""
    for item in _items(rule):
        if isinstance(item, type):
            if not issubclass(item, nn.Module):
                raise TypeError(f"Invalid {arg} rule: {item!r}; a class rule must be an nn.Module subclass")
        elif _is_type_tuple(item) or isinstance(item, str) or callable(item):
            continue
        else:
            raise TypeError(
                f"Invalid {arg} rule: {item!r}; expected a module class, a tuple of classes, "
                "an fnmatch pattern string, a callable (name, param) -> bool, or a list of these"
            )


def check_rules_match(infos: Sequence[ParamInfo], include, exclude) -> None:
    """Refuse a rule that matches no parameter of the model, naming it.

    Every pattern string (of ``include`` or ``exclude``) and every ``include`` rule must match at
    least one parameter, frozen ones included. An ``exclude`` class or callable may match nothing
    (``exclude=syre.NORM_TYPES`` on a model without normalisation layers excludes nothing).
    """
    for arg, rule in (("include", include), ("exclude", exclude)):
        for item in _items(rule):
            if not (isinstance(item, str) or arg == "include"):
                continue
            if any(matches(item, i) for i in infos):
                continue
            hint = ""
            if isinstance(item, str) and item.isidentifier() and item[:1].isupper():
                hint = (f" ({item!r} looks like a class name: pass the class itself, e.g. {arg}=torch.nn.{item}"
                        + (", or syre.NORM_TYPES" if "Norm" in item else "") + ")")
            names = [n for i in infos for n in i.names]
            shown = ", ".join(repr(n) for n in names[:6]) + (" ..." if len(names) > 6 else "")
            raise ValueError(
                f"Invalid {arg} rule {item!r}: it matches no parameter of the model{hint}. Patterns are fnmatch "
                f"patterns on names such as {shown}; nothing was changed"
            )


def _is_type_tuple(x) -> bool:
    return isinstance(x, tuple) and len(x) > 0 and all(isinstance(t, type) for t in x)


def matches(rule, info: ParamInfo) -> bool:
    """Whether ``info`` matches ``rule`` (see the module docstring)."""
    if rule is None:
        return False
    if isinstance(rule, type) or _is_type_tuple(rule):
        return isinstance(info.module, rule)
    if isinstance(rule, str):
        return any(fnmatch.fnmatchcase(n, rule) for n in info.names)
    if isinstance(rule, (list, tuple)):
        return any(matches(r, info) for r in rule)
    return bool(rule(info.name, info.param))


def is_selected(info: ParamInfo, include, exclude) -> bool:
    if include is not None and not matches(include, info):
        return False
    return not matches(exclude, info)
