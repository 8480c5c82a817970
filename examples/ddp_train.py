"""Train a small MLP with DistributedDataParallel and syre.

    torchrun --nproc_per_node 2 examples/ddp_train.py [--steps 300] [--seed 0]

Runs on CPU with the gloo backend (NCCL when there is a GPU per rank). The script seeds the
global RNG with ``seed + rank``, as data-augmentation pipelines do; syre never reads the global
RNG, so the anchors are the same on every rank, every rank applies the same decay, and the
replicas stay identical without any communication beyond DDP's own gradient all-reduce.
syre is attached to the DDP-wrapped model; its parameter names are those of the bare model.

Expected output with 2 CPU processes (losses vary slightly with the torch version):

    world size 2 on cpu (gloo); syre covers 4/4 parameters (2,177/2,177 elements)
    step    0  train loss 0.1820
    step  100  train loss 0.0251
    step  200  train loss 0.0080
    step  299  train loss 0.0072
    test loss 0.0147
    anchors identical on all ranks: True
    parameters identical on all ranks: True
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import syre
from syre.data import teacher_student


def same_on_all_ranks(tensors) -> bool:
    """Whether every tensor is bitwise equal to rank 0's copy."""
    ok = torch.ones(1, device=tensors[0].device)
    for t in tensors:
        ref = t.detach().clone()
        dist.broadcast(ref, src=0)
        ok *= float(torch.equal(ref, t.detach()))
    dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    return bool(ok.item())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=64, help="global batch size (split over the ranks)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1, help="taken over by syre (gamma=None)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed + rank)  # per-rank randomness: syre must not depend on it

    data = teacher_student(n_train=2048, n_test=512, d_in=32, d_hidden=16, seed=args.seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)
    ddp = DDP(model, device_ids=[device.index] if use_cuda else None)  # broadcasts rank 0's weights
    opt = torch.optim.AdamW(ddp.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    s = syre.attach(opt, ddp, seed=args.seed, sigma0=0.1, d_spread=0.1)  # the one added line
    if rank == 0:
        summary = s.summary().splitlines()[1]
        print(f"world size {world} on {device.type} ({dist.get_backend()}); syre {summary}", flush=True)

    per_rank = args.batch // world
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    order = torch.Generator().manual_seed(args.seed)  # the same batches on every rank
    for step in range(args.steps):
        idx = torch.randint(0, len(x_train), (args.batch,), generator=order)[rank * per_rank : (rank + 1) * per_rank]
        loss = ((ddp(x_train[idx]) - y_train[idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            if rank == 0:
                print(f"step {step:4d}  train loss {loss.item() / world:.4f}", flush=True)

    with torch.no_grad():
        test = ((model(data.x_test.to(device)) - data.y_test.to(device)) ** 2).mean()
    anchors = [t for n in s.names() for t in s.anchor(n)]
    anchors_ok = same_on_all_ranks(anchors)
    params_ok = same_on_all_ranks(list(model.parameters()))
    if rank == 0:
        print(f"test loss {test.item():.4f}")
        print(f"anchors identical on all ranks: {anchors_ok}")
        print(f"parameters identical on all ranks: {params_ok}")
    del ddp  # free DDP's reducer before its process group: with gloo, the reverse order can hang at exit
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
