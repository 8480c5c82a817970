"""Train a small MLP with tensor parallelism and FSDP2 on a 2-D mesh, with syre; resume on another mesh.

    torchrun --nproc_per_node 4 examples/tp_train.py --tp 2 --steps 200 --save /tmp/syre-tp-ckpt
    torchrun --nproc_per_node 2 examples/tp_train.py --tp 2 --steps 100 --resume /tmp/syre-tp-ckpt

Runs on CPU with the gloo backend (NCCL when there is a GPU per rank). The ranks form a
``(dp, tp)`` mesh of shape ``(world / tp, tp)``: the hidden layers are split torchtitan-style,
the first ``ColwiseParallel`` (weight rows: ``Shard(0)``), the second ``RowwiseParallel`` (weight
columns: ``Shard(1)``), on the ``tp`` dimension; then ``fully_shard`` shards every layer over
``dp``. The colwise weight ends up ``(_StridedShard(0), Shard(0))``, the rowwise one
``(Shard(0), Shard(1))``: local shards that are no slice of the flattened parameter. Each rank
generates the anchor of its own elements from their global indices (never the full anchor,
without communication) and decays its shard. The checkpoint is a distributed checkpoint with
syre's small state beside it, so it resumes on any mesh with the same anchors: the checksum
printed at the end is the same for every mesh shape.

Expected output of the two commands above (losses vary slightly with the torch version):

    mesh (dp=2, tp=2) on cpu (gloo); syre decays 6/6 parameters (6,337/6,337 elements); anchors held: 13.2 kB (stored)
      0.weight (_StridedShard(dim=0, sf=2), Shard(dim=0)); rank 0 holds 512 of 2,048 elements
      2.weight (Shard(dim=0), Shard(dim=1)); rank 0 holds 1,024 of 4,096 elements
      4.weight (Shard(dim=0),); rank 0 holds 64 of 64 elements
    step    0  train loss 0.2262
    step  100  train loss 0.0227
    step  199  train loss 0.0078
    test loss 0.0189
    anchor checksum -4.5162
    saved step 200 to /tmp/syre-tp-ckpt

    mesh (dp=1, tp=2) on cpu (gloo); syre decays 6/6 parameters (6,337/6,337 elements); anchors held: 25.9 kB (stored)
      0.weight (_StridedShard(dim=0, sf=2), Shard(dim=0)); rank 0 holds 1,024 of 2,048 elements
      2.weight (Shard(dim=0), Shard(dim=1)); rank 0 holds 2,048 of 4,096 elements
      4.weight (Shard(dim=0),); rank 0 holds 64 of 64 elements
    resumed step 200 from /tmp/syre-tp-ckpt (syre seed 0)
    step  200  train loss 0.0062
    step  299  train loss 0.0041
    test loss 0.0157
    anchor checksum -4.5162

An uninterrupted ``--steps 300`` run on the 2 x 2 mesh prints the same losses at steps 200 and
299 and the same test loss. The anchor checksum is also that of ``examples/fsdp2_train.py``
(same seed and parameter names): the anchors do not depend on how the model is split.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

import syre
from syre.data import teacher_student


def save(path, step, model, opt, s) -> None:
    model_sd, optim_sd = get_state_dict(model, opt)
    # syre's state is a few hundred bytes (seed, names, shapes, sigma0): no anchors are saved.
    dcp.save({"model": model_sd, "optim": optim_sd, "syre": s.state_dict(), "step": step}, checkpoint_id=path)


def load(path, model, opt, s) -> int:
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd, "syre": s.state_dict(), "step": 0}
    dcp.load(state, checkpoint_id=path)  # reshards to this run's mesh
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    s.load_state_dict(state["syre"])  # seed, gamma, d_spread and sigma0 from the checkpoint
    return int(state["step"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tp", type=int, default=2, help="tensor-parallel degree (divides the world size and 64)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64, help="global batch size (split over the dp ranks)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1, help="taken over by syre (gamma=None)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", help="directory for a distributed checkpoint at the end")
    ap.add_argument("--resume", help="distributed checkpoint to resume (saved on any mesh)")
    args = ap.parse_args()

    use_cuda = torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if world % args.tp or 64 % args.tp:
        raise SystemExit(f"--tp {args.tp} must divide the world size {world} and the hidden size 64")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    mesh = init_device_mesh(device.type, (world // args.tp, args.tp), mesh_dim_names=("dp", "tp"))
    torch.manual_seed(args.seed)  # the same initial weights on every rank

    data = teacher_student(n_train=2048, n_test=512, d_in=32, d_hidden=16, seed=args.seed)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1)).to(device)
    parallelize_module(model, mesh["tp"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh["dp"])
    fully_shard(model, mesh=mesh["dp"])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    s = syre.attach(opt, model, seed=args.seed, sigma0=0.1, d_spread=0.1)  # the one added line

    if rank == 0:
        print(f"mesh (dp={world // args.tp}, tp={args.tp}) on {device.type} ({dist.get_backend()}); "
              f"syre {s.summary().splitlines()[1]}")
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                print(f"  {name} {p.placements}; rank 0 holds {p.to_local().numel():,} of {p.numel():,} elements")
    start = 0
    if args.resume:
        start = load(args.resume, model, opt, s)
        if rank == 0:
            print(f"resumed step {start} from {args.resume} (syre seed {s.seed})")

    dp_rank, dp = mesh.get_coordinate()[0], world // args.tp
    per_rank = args.batch // dp
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    for step in range(start, start + args.steps):
        order = torch.Generator().manual_seed(args.seed * 1_000_003 + step)  # batch = f(step): resumable
        idx = torch.randint(0, len(x_train), (args.batch,), generator=order)[dp_rank * per_rank : (dp_rank + 1) * per_rank]
        loss = ((model(x_train[idx]) - y_train[idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == start + args.steps - 1:
            loss = loss.detach().clone()
            dist.all_reduce(loss)  # the tp ranks of one dp rank hold the same loss
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
