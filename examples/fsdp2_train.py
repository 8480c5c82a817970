"""Train a small MLP sharded with FSDP2 (``fully_shard``) and syre; save and resume anywhere.

    torchrun --nproc_per_node 2 examples/fsdp2_train.py --steps 200 --save /tmp/syre-ckpt
    torchrun --nproc_per_node 1 examples/fsdp2_train.py --steps 100 --resume /tmp/syre-ckpt

Runs on CPU with the gloo backend (NCCL when there is a GPU per rank). Every parameter is a
DTensor sharded on dim 0; each rank decays only its own shard, toward the matching slice of
the anchor, which it generates from the shard's position in the full parameter (never the full
anchor, and without communication). The checkpoint is a distributed checkpoint
(``torch.distributed.checkpoint``) with syre's small state beside the model and optimizer, so
it resumes on any number of processes with the same anchors (the anchor checksum printed at
the end is the same for every world size) and continues the same run.

Expected output of the two commands above (losses vary slightly with the torch version):

    world size 2 on cpu (gloo); syre covers 6/6 parameters (6,337/6,337 elements)
    rank 0 holds 3,201 of 6,337 elements; rank 1 holds 3,136
    step    0  train loss 0.2262
    step  100  train loss 0.0227
    step  199  train loss 0.0079
    test loss 0.0189
    anchor checksum -4.5162
    saved step 200 to /tmp/syre-ckpt

    world size 1 on cpu (gloo); syre covers 6/6 parameters (6,337/6,337 elements)
    rank 0 holds 6,337 of 6,337 elements
    resumed step 200 from /tmp/syre-ckpt (syre seed 0)
    step  200  train loss 0.0061
    step  299  train loss 0.0039
    test loss 0.0157
    anchor checksum -4.5162

An uninterrupted ``--steps 300`` run on 2 processes prints the same losses at steps 200 and 299
and the same test loss.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import fully_shard

import syre
from syre.data import teacher_student


def save(path, step, model, opt, s) -> None:
    model_sd, optim_sd = get_state_dict(model, opt)
    # syre's state is a few hundred bytes (seed, names, shapes, sigma0): no anchors are saved.
    dcp.save({"model": model_sd, "optim": optim_sd, "syre": s.state_dict(), "step": step}, checkpoint_id=path)


def load(path, model, opt, s) -> int:
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd, "syre": s.state_dict(), "step": 0}
    dcp.load(state, checkpoint_id=path)  # reshards to this run's world size
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    s.load_state_dict(state["syre"])  # seed, gamma, d_spread and sigma0 from the checkpoint
    return int(state["step"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64, help="global batch size (split over the ranks)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1, help="taken over by syre (gamma=None)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="directory for a distributed checkpoint at the end")
    ap.add_argument("--resume", help="distributed checkpoint to resume (saved with any world size)")
    args = ap.parse_args()

    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(args.seed)  # the same initial weights on every rank

    data = teacher_student(n_train=2048, n_test=512, d_in=32, d_hidden=16, seed=args.seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    s = syre.attach(opt, model, seed=args.seed, sigma0=0.1, d_spread=0.1)  # the one added line

    local = sum(p.to_local().numel() for p in model.parameters())
    counts = [None] * world
    dist.all_gather_object(counts, local)
    if rank == 0:
        total = sum(p.numel() for p in model.parameters())
        print(f"world size {world} on {device.type} ({dist.get_backend()}); syre {s.summary().splitlines()[1]}")
        print(f"rank 0 holds {counts[0]:,} of {total:,} elements"
              + "".join(f"; rank {r} holds {c:,}" for r, c in enumerate(counts) if r))
    start = 0
    if args.resume:
        start = load(args.resume, model, opt, s)
        if rank == 0:
            print(f"resumed step {start} from {args.resume} (syre seed {s.seed})")

    per_rank = args.batch // world
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    for step in range(start, start + args.steps):
        order = torch.Generator().manual_seed(args.seed * 1_000_003 + step)  # batch = f(step): resumable
        idx = torch.randint(0, len(x_train), (args.batch,), generator=order)[rank * per_rank : (rank + 1) * per_rank]
        loss = ((model(x_train[idx]) - y_train[idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == start + args.steps - 1:
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            if rank == 0:
                print(f"step {step:4d}  train loss {loss.item() / world:.4f}", flush=True)

    with torch.no_grad():
        test = ((model(data.x_test.to(device)) - data.y_test.to(device)) ** 2).mean()
    checksum = sum(s.anchor(n).theta0.double().sum().item() for n in s.names())
    if rank == 0:
        print(f"test loss {test.item():.4f}")
        print(f"anchor checksum {checksum:.4f}")
    if args.save:
        save(args.save, start + args.steps, model, opt, s)
        if rank == 0:
            print(f"saved step {start + args.steps} to {args.save}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
