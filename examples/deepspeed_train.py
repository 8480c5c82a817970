"""Train a small MLP under DeepSpeed ZeRO (stage 1, 2 or 3) with syre; save and resume.

    pip install 'torch-syre[deepspeed]'
    deepspeed --num_gpus 2 examples/deepspeed_train.py --stage 3 --steps 200 --save /tmp/syre-ds
    torchrun --nproc_per_node 2 examples/deepspeed_train.py --stage 3 --steps 300 --resume /tmp/syre-ds

Runs on CPU with gloo (``DS_ACCELERATOR=cpu`` is set when there is no GPU; on CPU DeepSpeed
builds its shared-memory comm op the first time, which takes minutes) or on GPUs with NCCL. The
client optimizer is ``torch.optim.AdamW`` with ``weight_decay=0.05``, which syre takes over:
each rank decays only the fp32 master fragments ZeRO gives it, toward the matching slices of the
one-process anchors, without communication. syre's state rides in DeepSpeed's checkpoint (inside
the client optimizer's state), so ``--resume`` continues with the saved anchors, whatever seed
this process asks for. Expected output of the two commands above on 2 CPU processes (losses vary
slightly with versions):

    world size 2, ZeRO stage 3; syre covers 6 parameters, this rank decays 2,657 of 5,313 elements
    step    0  train loss 0.5189
    step  100  train loss 0.1189
    step  199  train loss 0.0088
    anchor checksum -8.8541
    saved step 200 to /tmp/syre-ds

    resumed step 200 from /tmp/syre-ds (syre seed 0)
    world size 2, ZeRO stage 3; syre covers 6 parameters, this rank decays 2,657 of 5,313 elements
    step  200  train loss 0.0048
    step  299  train loss 0.0022
    anchor checksum -8.8541

An uninterrupted ``--steps 300`` run prints the same losses at steps 200 and 299. Another world
size needs DeepSpeed's universal checkpoint (see docs/distributed.md, "DeepSpeed ZeRO").
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

import deepspeed  # noqa: E402

from syre.integrations import deepspeed as syre_ds  # noqa: E402


def make_model() -> nn.Module:
    torch.manual_seed(0)  # the same initial weights on every rank
    return nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1))


def batch(step: int, rank: int, world: int, n: int = 64):
    """Rows [rank * n / world, (rank + 1) * n / world) of the global batch of step ``step``."""
    g = torch.Generator().manual_seed(step)
    x = torch.randn(n, 16, generator=g)
    y = torch.sin(x[:, :4].sum(dim=1, keepdim=True))
    lo, hi = rank * n // world, (rank + 1) * n // world
    return x[lo:hi], y[lo:hi]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", type=int, default=3, choices=(0, 1, 2, 3))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--offload", action="store_true", help="offload the optimizer (fp32 partitions) to the CPU")
    ap.add_argument("--save")
    ap.add_argument("--resume")
    ap.add_argument("--local_rank", type=int, default=-1)  # passed by the deepspeed launcher
    args = ap.parse_args()

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = deepspeed.comm.get_rank(), deepspeed.comm.get_world_size()
    model = make_model()
    zero = {"stage": args.stage}
    if args.offload:
        zero["offload_optimizer"] = {"device": "cpu"}
    config = {"train_micro_batch_size_per_gpu": 64 // world, "gradient_clipping": 1.0, "zero_optimization": zero,
              "zero_force_ds_cpu_optimizer": False, "steps_per_print": 10 ** 9}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config)
    s = syre_ds.attach(engine, sigma0="lecun", seed=0)  # the one added line (syre.attach(engine) is the same)
    start = 0
    if args.resume:
        _, client = engine.load_checkpoint(args.resume)
        start = client["step"]
        if rank == 0:
            print(f"resumed step {start} from {args.resume} (syre seed {s.config.seed})")
    mine = sum(b - a for _, a, b in s.local_fragments()) if args.stage else "all"
    total = sum(p.numel() for p in model.parameters()) if args.stage != 3 else sum(p.ds_numel for p in model.parameters())
    if rank == 0:
        print(f"world size {world}, ZeRO stage {args.stage}; syre covers {len(s.names())} parameters, "
              f"this rank decays {mine:,} of {total:,} elements")
    device = engine.device
    for step in range(start, start + args.steps):
        x, y = batch(step, rank, world)
        loss = nn.functional.mse_loss(engine(x.to(device)), y.to(device))
        engine.backward(loss)
        engine.step()
        if rank == 0 and (step % 100 == 0 or step == start + args.steps - 1):
            print(f"step {step:4d}  train loss {loss.item():.4f}")
    # The anchors are a function of (seed, name, element index): the same sum on every world size and stage.
    checksum = sum(float(s.anchor(name).theta0.double().sum()) for name in s.names())
    if rank == 0:
        print(f"anchor checksum {checksum:.4f}")
    if args.save:
        engine.save_checkpoint(args.save, client_state={"step": start + args.steps})
        if rank == 0:
            print(f"saved step {start + args.steps} to {args.save}")


if __name__ == "__main__":
    main()
