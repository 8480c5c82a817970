"""The fresh-init reference: the same architecture, re-initialised, measured on the same batch (private).

``fresh_twin(model, seed)`` deep-copies the model and calls every module's own
``reset_parameters()`` (``_reset_parameters()`` for attention), the initialisation torch gives
each layer type. Those functions draw from torch's global generator; here it is forked, seeded
with ``seed`` and restored (CPU and the CUDA devices the model uses), so the caller's random
stream is untouched and the twin is the same on every call. A parameter that no
``reset_parameters`` re-initialised (a custom module's own ``nn.Parameter``) is redrawn from an
explicit generator, ``N(0, 1 / fan_in)`` for matrices; vectors keep their values, and both are
named in the report's notes.

``calibrate(twin, args, kwargs)`` sets the running statistics of its batch-norm layers to those
of the batch (one forward with only those layers in training mode and cumulative averaging), so
the twin normalises the way a fresh model does in its first training step. The model is never
touched: everything happens on the copy.
"""
from __future__ import annotations

import copy
import hashlib
import math
from typing import List, Tuple

import torch
from torch import nn


def _cuda_indices(model: nn.Module) -> List[int]:
    return sorted({t.device.index or 0 for t in list(model.parameters()) + list(model.buffers())
                   if t.device.type == "cuda"})


def _other_devices(model: nn.Module) -> bool:
    return any(t.device.type not in ("cpu", "cuda") for t in list(model.parameters()) + list(model.buffers()))


def _seed_for(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "little") & (2**63 - 1)


def copy_model(model: nn.Module, what: str = "reference") -> nn.Module:
    try:
        return copy.deepcopy(model)
    except Exception as exc:
        raise ValueError(f"Invalid {what}: the model cannot be copied to build its fresh-init twin "
                         f"({type(exc).__name__}: {exc}); pass reference=None (structural maxima only) or a "
                         "freshly built model of the same architecture as reference=") from exc


@torch.no_grad()
def fresh_twin(model: nn.Module, seed: int) -> Tuple[nn.Module, List[str]]:
    """``(twin, notes)``: a re-initialised copy of ``model`` (see the module docstring)."""
    twin = copy_model(model)
    moved = None
    if _other_devices(twin):  # generators of other device types cannot be forked here: re-init on the CPU
        moved = {n: p.device for n, p in twin.named_parameters()}
        twin.cpu()
    before = {n: p.detach().clone() for n, p in twin.named_parameters()}
    cuda = _cuda_indices(twin)
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for i in cuda:
            torch.cuda.default_generators[i].manual_seed(seed)
        for name, mod in twin.named_modules():
            fn = getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters", None)
            if callable(fn):
                try:
                    fn()
                except Exception as exc:
                    raise ValueError(f"Invalid reference: re-initialising {name or 'the model'} "
                                     f"({type(mod).__name__}) with its reset_parameters() failed "
                                     f"({type(exc).__name__}: {exc}); pass reference=None or a freshly built model "
                                     "of the same architecture") from exc
    has_reset = {id(p) for mod in twin.modules() for p in mod.parameters(recurse=False)
                 if callable(getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters", None))}
    redrawn, kept = [], []
    for name, p in twin.named_parameters():
        if id(p) in has_reset or not torch.equal(p.detach(), before[name]):
            continue
        if p.dim() >= 2:
            g = torch.Generator().manual_seed(_seed_for(seed, name))
            fan_in = p[0].numel()
            p.copy_((torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(fan_in)).to(p.dtype))
            redrawn.append(name)
        elif p.numel() > 1 and p.requires_grad:
            kept.append(name)
    if moved is not None:
        twin.to(next(iter(moved.values())))
    notes = []
    if redrawn:
        notes.append(f"fresh-init reference: {len(redrawn)} parameter(s) have no reset_parameters() and were drawn "
                     "as N(0, 1/fan_in): " + ", ".join(redrawn[:6]) + (" ..." if len(redrawn) > 6 else ""))
    if kept:
        notes.append(f"fresh-init reference: {len(kept)} vector parameter(s) have no reset_parameters() and keep "
                     "their trained values: " + ", ".join(kept[:6]) + (" ..." if len(kept) > 6 else ""))
    return twin, notes


def check_same_architecture(model: nn.Module, reference: nn.Module) -> None:
    """Raise ``ValueError`` naming both sides when the reference's parameters differ from the model's."""
    own = {n: tuple(p.shape) for n, p in model.named_parameters()}
    ref = {n: tuple(p.shape) for n, p in reference.named_parameters()}
    if own == ref:
        return
    missing = sorted(set(own) - set(ref))
    extra = sorted(set(ref) - set(own))
    shapes = [f"{k}: model {own[k]}, reference {ref[k]}" for k in sorted(set(own) & set(ref)) if own[k] != ref[k]]
    parts = []
    if missing:
        parts.append(f"in the model, not in the reference: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if extra:
        parts.append(f"in the reference, not in the model: {extra[:8]}{' ...' if len(extra) > 8 else ''}")
    if shapes:
        parts.append(f"shapes differ: {shapes[:8]}")
    raise ValueError("Invalid reference: its parameters are not the model's (same names and shapes are needed): "
                     + "; ".join(parts))


@torch.no_grad()
def calibrate(twin: nn.Module, args: tuple, kwargs: dict) -> List[str]:
    """Set the twin's batch-norm running statistics to the batch's (see the module docstring)."""
    bns = [m for m in twin.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
           and m.running_mean is not None]
    if not bns:
        return []
    if any(isinstance(m, nn.SyncBatchNorm) for m in bns) and torch.distributed.is_available() \
            and torch.distributed.is_initialized():
        return ["fresh-init reference: SyncBatchNorm statistics were not calibrated (a process group is active); "
                "the reference normalises with the default running statistics"]
    flags = {m: m.training for m in twin.modules()}
    momenta = {m: m.momentum for m in bns}
    saved = {m: (m.running_mean.clone(), m.running_var.clone()) for m in bns}
    try:
        twin.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, exactly its statistics
            m.train()
        twin(*args, **kwargs)
    except Exception as exc:  # e.g. a batch of one sample: batch statistics do not exist
        for m, (mean, var) in saved.items():
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
        return [f"fresh-init reference: batch-norm statistics not calibrated on the batch ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}); the reference normalises with its default statistics"]
    finally:
        for m, mo in momenta.items():
            m.momentum = mo
        for m, t in flags.items():
            m.train(t)
    return []
