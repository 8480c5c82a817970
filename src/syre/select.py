"""Which parameters get syre: canonical names, module types, include/exclude rules.

A parameter's *name* is its name in the bare model, with wrapper components removed, so that
the anchors are the same whether syre is handed the model itself or the model wrapped by
``DistributedDataParallel``/``DataParallel`` (``module.``), ``torch.compile`` (``_orig_mod.``),
FSDP1 (``_fsdp_wrapped_module.``), activation checkpointing (``_checkpoint_wrapped_module.``)
or ``torch.nn.utils.parametrize`` (``layer.parametrizations.weight.original`` is ``layer.weight``).

Include/exclude rules (``include=``, ``exclude=`` of every entry point) are one rule or a list of
rules, each one of

* a module class or tuple of classes: matches the parameters that module type owns directly;
* a string: an ``fnmatch`` pattern on the canonical name (``"*.bias"``, ``"encoder.*"``);
* a callable ``(name, param) -> bool``.

A parameter is covered when it matches ``include`` (default: everything) and not ``exclude``.
``NORM_TYPES`` is the tuple of normalisation layer types, for ``exclude=syre.select.NORM_TYPES``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .anchors import _NORM_TYPES

__all__ = ["NORM_TYPES", "ParamInfo", "canonical_name", "collect", "matches", "unwrap_model", "check_rule"]

NORM_TYPES = _NORM_TYPES
_WRAPPER_COMPONENTS = {"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"}

Rule = Union[type, tuple, str, Callable[[str, torch.Tensor], bool], Sequence]


def canonical_name(name: str) -> str:
    """The name of a parameter in the bare model (wrapper components removed)."""
    parts = [p for p in name.split(".") if p not in _WRAPPER_COMPONENTS]
    out: List[str] = []
    i = 0
    while i < len(parts):
        # parametrize: <prefix>.parametrizations.<attr>.original -> <prefix>.<attr>
        if parts[i] == "parametrizations" and i + 2 < len(parts) and parts[i + 2] == "original":
            out.append(parts[i + 1])
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
    """One parameter of a model: canonical name, the tensor, its owning module and attribute."""

    name: str
    param: torch.Tensor
    module: nn.Module
    attr: str

    @property
    def module_type(self) -> str:
        return type(self.module).__name__


def collect(model: nn.Module) -> Dict[int, ParamInfo]:
    """``id(param) -> ParamInfo`` for every parameter of ``model``, tied ones once (first name).

    Order and deduplication follow ``model.named_parameters()``.
    """
    model = unwrap_model(model)
    out: Dict[int, ParamInfo] = {}
    for mod_name, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            if id(p) in out:
                continue
            full = f"{mod_name}.{attr}" if mod_name else attr
            owner = module
            # parametrize keeps `original` in a ParametrizationList; the owner is two levels up.
            if attr == "original" and type(module).__name__ == "ParametrizationList":
                owner = _parametrized_owner(model, mod_name) or module
                attr = mod_name.rsplit(".", 1)[-1]
            out[id(p)] = ParamInfo(canonical_name(full), p, owner, attr)
    seen = set()
    for info in out.values():
        if info.name in seen:
            raise ValueError(f"Two parameters share the canonical name {info.name!r}; syre cannot tell their anchors apart")
        seen.add(info.name)
    return out


def covered(model: nn.Module, include=None, exclude=None) -> List[ParamInfo]:
    """The trainable parameters of ``model`` selected by ``include``/``exclude``, in order."""
    check_rule("include", include)
    check_rule("exclude", exclude)
    return [i for i in collect(model).values() if i.param.requires_grad and is_selected(i, include, exclude)]


def _parametrized_owner(model: nn.Module, mod_name: str) -> Optional[nn.Module]:
    parts = mod_name.split(".")
    if len(parts) < 2 or parts[-2] != "parametrizations":
        return None
    owner_name = ".".join(parts[:-2])
    return model.get_submodule(owner_name) if owner_name else model


def check_rule(arg: str, rule) -> None:
    """Raise a clear error for an include/exclude rule of the wrong kind."""
    if rule is None:
        return
    items = rule if isinstance(rule, (list, tuple)) and not _is_type_tuple(rule) else [rule]
    for item in items:
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


def _is_type_tuple(x) -> bool:
    return isinstance(x, tuple) and len(x) > 0 and all(isinstance(t, type) for t in x)


def matches(rule, info: ParamInfo) -> bool:
    """Whether ``info`` matches ``rule`` (see the module docstring)."""
    if rule is None:
        return False
    if isinstance(rule, type) or _is_type_tuple(rule):
        return isinstance(info.module, rule)
    if isinstance(rule, str):
        return fnmatch.fnmatchcase(info.name, rule)
    if isinstance(rule, (list, tuple)):
        return any(matches(r, info) for r in rule)
    return bool(rule(info.name, info.param))


def is_selected(info: ParamInfo, include, exclude) -> bool:
    if include is not None and not matches(include, info):
        return False
    return not matches(exclude, info)
