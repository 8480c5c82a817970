"""What ``syre.integrations.deepspeed.attach`` refuses, and finding a DeepSpeed engine (no DeepSpeed import).

Every refusal is a ``ValueError`` naming the setting and the remedy, raised before anything
changes. ``TESTED`` are the DeepSpeed versions whose private ZeRO bookkeeping syre reads.
"""
from __future__ import annotations

import gc
import sys
from typing import Any, Optional

import torch

from ..config import Config

__all__ = ["TESTED", "check_engine", "engine_of", "inconsistent", "refuse"]

#: DeepSpeed versions whose bookkeeping this module reads (prefixes of ``deepspeed.__version__``).
TESTED = ("0.19.",)


def refuse(what: str, remedy: str) -> ValueError:
    return ValueError(f"syre.integrations.deepspeed.attach refuses this engine: {what}. {remedy}; nothing was changed")


def check_engine(engine, ds, config: Config) -> int:
    """Every refusal, before anything changes; returns the ZeRO stage."""
    if not isinstance(engine, ds.DeepSpeedEngine):
        raise TypeError(f"Invalid engine: {type(engine).__name__}; expected the deepspeed.DeepSpeedEngine that "
                        "deepspeed.initialize returns (syre hooks the client optimizer inside the engine's ZeRO "
                        "optimizer, and reads its partitions from there): syre.attach(engine, ...)")
    version = getattr(ds, "__version__", "?")
    if not version.startswith(TESTED):
        raise refuse(f"DeepSpeed {version} is untested (syre reads ZeRO's private bookkeeping, tested with "
                      f"{', '.join(v + 'x' for v in TESTED)})", "Install a tested version (pip install 'torch-syre[deepspeed]')")
    pipe = getattr(getattr(ds, "runtime", None), "pipe", None)
    if getattr(engine, "pipeline_parallelism", False) or (pipe is not None and isinstance(engine, pipe.engine.PipelineEngine)):
        raise refuse("pipeline parallelism (PipelineEngine) is not supported", "Train without pipeline stages")
    if getattr(engine, "has_moe_layers", False):
        raise refuse("the model has MoE layers (expert parallelism: expert parameters are partitioned over other "
                      "process groups)", "Train the model without DeepSpeed MoE")
    if engine.fp16_enabled() or engine.bfloat16_enabled() or engine.torch_autocast_enabled():
        raise refuse("fp16 / bf16 / torch-autocast training is untested with syre (the master weights and their "
                      "rounding differ)", "Train in fp32 (no 'fp16', 'bf16' or 'torch_autocast' section in the config)")
    stage = int(engine.zero_optimization_stage())
    if stage == 0:
        return stage
    zc = engine._config.zero_config
    for kind in ("offload_optimizer", "offload_param"):
        off = getattr(zc, kind)
        device = str(getattr(getattr(off, "device", None), "value", getattr(off, "device", "none")))
        if off is not None and device == "nvme":
            raise refuse(f"{kind} to NVMe swaps the fp32 partitions in and out of memory around each step",
                          "Offload to 'cpu' or not at all")
        if off is not None and kind == "offload_optimizer" and device == "cpu" and float(getattr(off, "ratio", 1.0)) < 1.0:
            raise refuse(f"partial optimizer offload (ratio={off.ratio}) steps part of the partitions with a second "
                          "optimizer", "Offload the whole optimizer (ratio 1.0)")
    if getattr(zc, "mics_shard_size", -1) > 0 or engine.zero_hpz_partition_size() > 1:
        raise refuse("MiCS and hpZ (zero_hpz_partition_size > 1) partition over other process groups",
                      "Use plain ZeRO partitioning")
    if engine.zero_elastic_checkpoint():
        raise refuse("elastic checkpoints store the optimizer state without the client optimizer's state_dict, so "
                      "syre's state would not be saved", "Set zero_optimization.elastic_checkpoint to false")
    zo = engine.optimizer
    if getattr(zo, "zenflow", False) or getattr(zo, "use_muon", False):
        raise refuse("ZenFlow and DeepSpeed's Muon step the partitions outside the client optimizer",
                      "Use a torch.optim optimizer without ZenFlow")
    client = getattr(zo, "optimizer", None)
    if not isinstance(client, torch.optim.Optimizer) or not type(client).__module__.startswith("torch.optim"):
        raise refuse(f"the client optimizer is {type(client).__name__}, not a torch.optim optimizer (DeepSpeed's "
                      "FusedAdam and DeepSpeedCPUAdam are untested with syre)",
                      "Pass deepspeed.initialize(optimizer=torch.optim.AdamW(...)) instead of a config 'optimizer' section")
    if not isinstance(config.target, str) or config.target != "random":
        raise refuse(f"target={config.target!r} is not supported at ZeRO stage {stage}", "Use target='random'")
    if config.rounding != "nearest":
        raise refuse("rounding='stochastic' rounds fp16/bf16 parameters, and ZeRO decays fp32 master weights",
                      "Use rounding='nearest'")
    return stage


def inconsistent(what: str) -> ValueError:
    return refuse(f"DeepSpeed's partition bookkeeping is not what syre reads ({what})",
                   "Report the DeepSpeed version and configuration")


def engine_of(optimizer) -> Optional[Any]:
    """The ``DeepSpeedEngine`` whose ZeRO optimizer ``optimizer`` is or wraps (accelerate's
    ``DeepSpeedOptimizerWrapper``, what the transformers ``Trainer`` hands its callbacks), else None.

    Imports nothing: without DeepSpeed loaded there is no engine. ZeRO's optimizer keeps no link
    to its engine, so the engine is found among the objects that refer to it (once, at attach).
    """
    ds = sys.modules.get("deepspeed")
    engine_class = getattr(ds, "DeepSpeedEngine", None)
    if engine_class is None:
        return None
    seen, o = set(), optimizer
    while o is not None and id(o) not in seen and not type(o).__module__.startswith("deepspeed.runtime"):
        if isinstance(o, engine_class):
            return o
        seen.add(id(o))
        o = getattr(o, "optimizer", None)
    if o is None or not type(o).__module__.startswith("deepspeed.runtime"):
        return None
    for r in gc.get_referrers(o):
        for e in [r] + (gc.get_referrers(r) if isinstance(r, dict) else []):
            if isinstance(e, engine_class) and e.optimizer is o:
                return e
    return None
