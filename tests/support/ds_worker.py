"""The training runs behind test_deepspeed.py: DeepSpeed ZeRO on 2 gloo processes vs one process.

Every run trains the same model on the same data: each rank of a ZeRO run feeds the same
micro-batch the one-process run feeds, so the averaged gradient equals the one-process gradient
exactly and the parameters can be compared bitwise. ``worker`` runs in each spawned process
(``DS_ACCELERATOR=cpu``, gloo) and writes what it saw to ``OUT/rank{r}.pt``; ``single`` runs in the
test process without a process group.

Harness only (never in the library): DeepSpeed builds a shared-memory comm op (a C++ JIT build of
minutes on a small CPU) at ``init_distributed``; the workers replace its builder by one that builds
nothing, so gloo does the collectives.
"""
from __future__ import annotations

import datetime
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

import syre

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dist_worker import batch, make_model  # noqa: E402  (the DDP tests' model: tensors split and padded over 2 ranks)

STEPS = 3
B = 8  # micro-batch (the same on every rank)
LR, WD = 0.05, 0.5  # AdamW; syre takes over the weight decay (gamma=None)
KW = dict(sigma0=0.3, d_spread=0.2, seed=11)  # a strong anchor: the decay moves weights by ~1e-2 per step
TIMEOUT = datetime.timedelta(seconds=60)


def loss_of(model, step: int):
    x, y = batch(step)
    return ((model(x) - y) ** 2).mean()


def single(steps: int = STEPS) -> dict:
    """One process: torch AdamW + syre.attach, ``steps`` steps; the parameters after each step."""
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    s = syre.attach(opt, model, **KW)
    out = {"anchors": {n: tuple(s.anchor(n)) for n in s.names()}}
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_of(model, step).backward()
        opt.step()
        out[step + 1] = {n: p.detach().clone() for n, p in model.named_parameters()}
    out["state"] = s.state_dict()
    return out


def ds_config(stage: int, offload: bool = False, **zero) -> dict:
    z = {"stage": stage, **zero}
    extra = {}
    if offload:  # a torch client optimizer on the offloaded partitions (DeepSpeedCPUAdam needs a JIT build)
        z["offload_optimizer"] = {"device": "cpu"}
        extra["zero_force_ds_cpu_optimizer"] = False
    return {**extra, "train_micro_batch_size_per_gpu": B, "gradient_clipping": 0.0, "zero_optimization": z,
            "steps_per_print": 10 ** 9, "wall_clock_breakdown": False}


def engine(stage: int, offload: bool = False, optimizer=None, **zero):
    import deepspeed

    model = make_model()
    opt = optimizer(model) if optimizer else torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    config = ds_config(stage, offload, **zero)
    if optimizer:
        config["zero_allow_untested_optimizer"] = True
    eng, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config)
    return eng


def full_params(eng) -> dict:
    import deepspeed

    params = list(eng.module.parameters())
    with deepspeed.zero.GatheredParameters(params) if hasattr(params[0], "ds_id") else _null():
        return {n: p.detach().clone() for n, p in eng.module.named_parameters()}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def train(eng, start: int, stop: int) -> None:
    for step in range(start, stop):
        eng.backward(loss_of(eng, step))
        eng.step()


def _run(stage: int, offload: bool = False) -> dict:
    from syre.integrations import deepspeed as sds

    eng = engine(stage, offload)
    s = syre.attach(eng, **KW) if stage == 1 else sds.attach(eng, **KW)  # syre.attach dispatches an engine
    out = {"names": s.names() if hasattr(s, "names") else None, "wd": [g["weight_decay"] for g in s.optimizer.param_groups]}
    if stage:
        out["fragments"] = s.local_fragments()
        out["summary"] = s.summary()
        zo = eng.optimizer
        out["flat"] = [t.numel() for t in (zo.fp32_partitioned_groups_flat if stage == 3 else zo.single_partition_of_fp32_groups)]
    for step in range(STEPS):
        train(eng, step, step + 1)
        out[step + 1] = full_params(eng)
    out["params"] = out[STEPS]
    return out


def _resume(stage: int, path: Path, offload: bool = False) -> dict:
    """2 steps, checkpoint, a third step; then a fresh engine loads the checkpoint and takes the third step again."""
    from syre.integrations import deepspeed as sds

    kw = dict(KW, mode="seeded") if offload else KW  # seeded mode: anchors regenerated at every step
    eng = engine(stage, offload)
    sds.attach(eng, **kw)
    train(eng, 0, 2)
    eng.save_checkpoint(str(path), tag="t2")
    train(eng, 2, STEPS)
    straight = full_params(eng)
    fresh = engine(stage, offload)
    s = sds.attach(fresh, **dict(kw, seed=99, d_spread=0.0))  # the checkpoint's seed and d_spread come back
    fresh.load_checkpoint(str(path), tag="t2")
    seed_after_load = s.config.seed
    train(fresh, 2, STEPS)
    return {"straight": straight, "resumed": full_params(fresh), "seed_after_load": seed_after_load,
            "saved_state": torch.load(next(path.joinpath("t2").glob("*optim_states.pt")), weights_only=False)}


def _universal_save(stage: int, path: Path) -> dict:
    """2 steps on this world size; a checkpoint with what ds_to_universal needs and syre's state in client_state."""
    from syre.integrations import deepspeed as sds

    eng = engine(stage)
    s = sds.attach(eng, **KW)
    train(eng, 0, 2)
    eng.save_checkpoint(str(path), tag="t2", client_state={
        "universal_checkpoint_info": {"universal_checkpoint_version": 0.2}, "syre": s.state_dict()})
    return {}


def universal_load(rank: int, world: int, port: int, out: str, stage: int) -> None:
    """Another world size: load the converted (universal) checkpoint, then the third step."""
    _init(rank, world, port)
    import deepspeed

    from syre.integrations import deepspeed as sds

    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    config = dict(ds_config(stage), checkpoint={"load_universal": True})
    eng, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = sds.attach(eng, **dict(KW, seed=99))
    _, client = eng.load_checkpoint(str(Path(out) / f"universal{stage}"), tag="t2_universal")
    s.load_state_dict(client["syre"])  # the recipe: a universal checkpoint skips the client optimizer's state_dict
    train(eng, 2, STEPS)
    torch.save({"params": full_params(eng), "seed": s.config.seed, "warned": [str(w.message) for w in caught]},
               Path(out) / f"universal_rank{rank}.pt")


class NotTorchAdamW(torch.optim.AdamW):
    """A client optimizer from outside torch.optim (stands for DeepSpeed's FusedAdam, which needs a JIT build)."""


def _refusals() -> dict:
    """What attach refuses on a stage-2 engine, and that the refusal changed nothing; the synthetic step."""
    import deepspeed

    from syre.integrations import deepspeed as sds

    out = {}

    def refused(key, eng, patch=None, **kw):
        before = [dict((k, v) for k, v in g.items() if k != "params") for g in eng.optimizer.optimizer.param_groups]
        hooks = len(eng.optimizer.optimizer._optimizer_step_pre_hooks)
        undo = patch() if patch else None
        try:
            sds.attach(eng, **dict(KW, **kw))
            out[key] = None
        except (ValueError, TypeError) as exc:
            out[key] = str(exc)
        finally:
            if undo:
                undo()
        after = [dict((k, v) for k, v in g.items() if k != "params") for g in eng.optimizer.optimizer.param_groups]
        out[key + ":unchanged"] = before == after and hooks == len(eng.optimizer.optimizer._optimizer_step_pre_hooks)

    eng = engine(2)

    def setter(obj, attr, value):
        def patch():
            old = getattr(obj, attr)
            object.__setattr__(obj, attr, value)  # past pydantic's validation of DeepSpeed's config objects
            return lambda: object.__setattr__(obj, attr, old)
        return patch

    refused("version", eng, setter(deepspeed, "__version__", "0.20.0"))
    refused("bf16", eng, setter(eng, "bfloat16_enabled", lambda: True))
    refused("fp16", eng, setter(eng, "fp16_enabled", lambda: True))
    refused("moe", eng, setter(eng, "has_moe_layers", True))
    refused("pipeline", eng, setter(eng, "pipeline_parallelism", True))
    from deepspeed.runtime.zero.offload_config import DeepSpeedZeroOffloadOptimizerConfig

    zc = eng._config.zero_config
    refused("nvme", eng, setter(zc, "offload_optimizer", DeepSpeedZeroOffloadOptimizerConfig(device="nvme", nvme_path="/tmp")))
    refused("ratio", eng, setter(zc, "offload_optimizer", DeepSpeedZeroOffloadOptimizerConfig(device="cpu", ratio=0.5)))
    refused("target", eng, target="init")
    refused("rounding", eng, rounding="stochastic")
    refused("bad_arg", eng, gamma=-1.0)
    refused("unknown_arg", eng, colour="blue")
    for key, call in (("not_engine", lambda: sds.attach(eng.module, **KW)),
                      ("zero_optimizer", lambda: syre.attach(eng.optimizer, eng.module, **KW)),
                      ("wrong_model", lambda: syre.attach(eng, make_model(), **KW))):
        try:
            call()
            out[key] = None
        except (TypeError, ValueError) as exc:
            out[key] = str(exc)
    refused("client", engine(2, optimizer=lambda m: NotTorchAdamW(m.parameters(), lr=LR, weight_decay=WD)))
    refused("elastic", engine(2, elastic_checkpoint=True))

    # One ZeroSyre per engine: the same arguments give the one there, others are refused; remove() gives back.
    s = sds.attach(eng, **KW)
    out["again_same"] = syre.attach(eng, **KW) is s
    try:
        sds.attach(eng, **dict(KW, seed=12))
        out["again_other"] = None
    except ValueError as exc:
        out["again_other"] = str(exc)
    client = eng.optimizer.optimizer
    s.remove()
    out["removed"] = (client.param_groups[0]["weight_decay"], len(client._optimizer_step_pre_hooks))
    # A step of the client optimizer outside engine.step() (a synthetic step) decays nothing.
    sds.attach(eng, **KW)
    flat = eng.optimizer.single_partition_of_fp32_groups[0]
    before = flat.detach().clone()
    flat.grad = torch.zeros_like(flat)
    eng.optimizer.optimizer.step()  # AdamW with a zero gradient and weight_decay 0 (taken over): no change
    out["synthetic_unchanged"] = torch.equal(flat, before)
    eng._running_engine_step = True  # the same client step, as engine.step() runs it: syre decays
    try:
        eng.optimizer.optimizer.step()
    finally:
        eng._running_engine_step = False
    out["engine_step_changed"] = not torch.equal(flat, before)
    return out


def _init(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_SIZE=str(world))
    warnings.filterwarnings("ignore")
    import deepspeed
    import deepspeed.comm

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # the harness's one shortcut (module docstring)
    deepspeed.utils.logger.setLevel("ERROR")
    deepspeed.init_distributed(dist_backend="gloo", timeout=TIMEOUT)
    torch.manual_seed(1234 + rank)  # syre must not depend on the global RNG


def worker(rank: int, world: int, port: int, out: str, jobs: list) -> None:
    _init(rank, world, port)
    import deepspeed.comm

    out = Path(out)
    res = {}
    for job in jobs:
        kind, stage, offload = job
        if kind == "run":
            res[job] = _run(stage, offload)
        elif kind == "resume":
            path = out / f"ckpt{stage}{'o' if offload else ''}"
            res[job] = _resume(stage, path, offload)
        elif kind == "universal_save":
            res[job] = _universal_save(stage, out / f"universal{stage}")
        elif kind == "refusals":
            res[job] = _refusals()
        elif kind == "trainer":  # the transformers Trainer with deepspeed=... and SyreCallback()
            res[job] = trainer_run(str(out / f"trainer{rank}"), trainer_ds_config(stage))
    torch.save(res, out / f"rank{rank}.pt")
    deepspeed.comm.barrier()


# ----------------------------------------------------------------------------- the transformers Trainer
class _Data(torch.utils.data.Dataset):
    """B rows: every global batch of B is the whole set, whatever order the samplers pick."""

    def __init__(self):
        self.x, self.y = batch(0)

    def __len__(self):
        return B

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_model()

    def forward(self, x, labels):
        return {"loss": ((self.net(x) - labels) ** 2).mean()}


def trainer_run(out: str, deepspeed_config=None) -> dict:
    """The Trainer with ``SyreCallback()`` (AdamW, weight_decay taken over), 3 steps; ``deepspeed=...`` optional."""
    from transformers import Trainer, TrainingArguments

    from syre.integrations.transformers import SyreCallback

    args = TrainingArguments(str(out), per_device_train_batch_size=B // 2, max_steps=STEPS, learning_rate=LR,
                             weight_decay=WD, lr_scheduler_type="constant", max_grad_norm=0.0, save_strategy="no",
                             report_to=[], use_cpu=deepspeed_config is None, logging_steps=10 ** 6,
                             dataloader_num_workers=0, deepspeed=deepspeed_config, disable_tqdm=True)
    model = _Net()
    cb = SyreCallback(**KW)
    trainer = Trainer(model=model, args=args, train_dataset=_Data(), callbacks=[cb])
    trainer.train()
    res = {"processes": trainer.accelerator.num_processes, "syre": type(cb.syre).__name__, "names": cb.syre.names(),
           "gammas": [cb.syre.group_gamma(i) for i in range(2)]}
    eng = trainer.model_wrapped
    res["params"] = full_params(eng) if deepspeed_config else {n: p.detach().clone() for n, p in model.named_parameters()}
    return res


def trainer_ds_config(stage: int) -> dict:
    return {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto", "zero_optimization": {"stage": stage}}
