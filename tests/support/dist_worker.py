"""The training runs behind test_distributed.py: one model, one data stream, any world size.

Every run trains the same small model on the same global batches; a rank of a world of size W
takes rows [rank * B / W, (rank + 1) * B / W) of each batch, so that averaging the gradients
over the ranks (DDP's all-reduce, FSDP2's reduce-scatter) gives the full-batch gradient of a
single process up to rounding.

``worker`` runs in each of the spawned processes (gloo, CPU) and writes what it saw to
``OUT/rank{r}.pt``; ``single`` runs in the test process itself, without a process group.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

import syre
import syre.anchors

N = 4  # steps per phase
B = 8  # global batch size
LR, WD = 0.05, 0.5  # AdamW; syre takes over the weight decay (gamma=None)
SEED, SIGMA0, D_SPREAD = 11, 0.3, 0.2  # a strong anchor: the decay moves weights by ~1e-2 per step
TIMEOUT = datetime.timedelta(seconds=60)  # a collective that waits longer fails instead of hanging


def make_model(init_seed: int = 0) -> nn.Sequential:
    """6 -> 5 -> LayerNorm -> 3 -> 1: rows 5, 3 and 1 shard unevenly over 2 ranks (one empty)."""
    g = torch.Generator().manual_seed(init_seed)
    m = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.LayerNorm(5), nn.Linear(5, 3), nn.Tanh(), nn.Linear(3, 1))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return m


def batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(B, 6, generator=g), torch.randn(B, 1, generator=g)


def make_opt(model: nn.Module, seed: int = SEED, mode: str = "stored"):
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD)
    return opt, syre.attach(opt, model, sigma0=SIGMA0, d_spread=D_SPREAD, seed=seed, mode=mode)


def train(model, opt, start: int, stop: int, rank: int = 0, world: int = 1) -> None:
    lo, hi = rank * B // world, (rank + 1) * B // world
    for step in range(start, stop):
        x, y = batch(step)
        opt.zero_grad(set_to_none=True)
        ((model(x[lo:hi]) - y[lo:hi]) ** 2).mean().backward()
        opt.step()


def full_params(model: nn.Module):
    """``{name: full tensor}``; DTensors are gathered (a collective: every rank must call it)."""
    out = {}
    for name, p in syre.select.unwrap_model(model).named_parameters():
        p = p.full_tensor() if hasattr(p, "full_tensor") else p
        out[name] = p.detach().clone()
    return out


def anchors(s) -> dict:
    return {n: tuple(s.anchor(n)) for n in s.names()}


def save_checkpoint(path, model, opt, s) -> None:
    """Distributed checkpoint: model and optimizer through DCP's helpers, syre's state beside them."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd, "syre": s.state_dict()}, checkpoint_id=str(path))


def load_checkpoint(path, model, opt, s) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd, "syre": s.state_dict()}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    s.load_state_dict(state["syre"])


class FillSpy:
    """Records the ``[start, stop)`` ranges of every anchor generation (``syre.anchors._fill``, and
    ``syre.anchors._blocks``, through which seeded mode streams a slice block by block)."""

    def __init__(self):
        self.calls = []
        self._orig = syre.anchors._fill
        self._orig_blocks = syre.anchors._blocks

    def __enter__(self):
        def spy(seed, name, start, stop, *args):
            self.calls.append((name, start, stop))
            return self._orig(seed, name, start, stop, *args)

        def spy_blocks(seed, name, start, stop, *args):
            self.calls.append((name, start, stop))
            return self._orig_blocks(seed, name, start, stop, *args)

        syre.anchors._fill = spy
        syre.anchors._blocks = spy_blocks
        return self

    def __exit__(self, *exc):
        syre.anchors._fill = self._orig
        syre.anchors._blocks = self._orig_blocks


# ----------------------------------------------------------------------------- world of 1
def single(out: Path) -> dict:
    """The reference run in one process: 2N steps, a DCP checkpoint at step N (saved to OUT/ckpt1)."""
    m = make_model(0)
    opt, s = make_opt(m)
    train(m, opt, 0, N)
    res = {"N": full_params(m)}
    save_checkpoint(out / "ckpt1", m, opt, s)
    train(m, opt, N, 2 * N)
    res["2N"] = full_params(m)
    res["anchors"] = anchors(s)
    return res


def resume_single(ckpt: Path) -> dict:
    """Resume a checkpoint in one process (other init, other seed: both must come from the file)."""
    m = make_model(7)
    opt, s = make_opt(m, seed=999)
    load_checkpoint(ckpt, m, opt, s)
    res = {"seed": s.seed, "anchors": anchors(s)}
    train(m, opt, N, 2 * N)
    res["2N"] = full_params(m)
    return res


# ----------------------------------------------------------------------------- world of 2
def _ddp(rank: int, world: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP

    # Each rank starts from different weights; DDP broadcasts rank 0's (= make_model(0)).
    ddp = DDP(make_model(rank))
    opt, s = make_opt(ddp)
    res = {"names": s.names(), "anchors": anchors(s)}
    train(ddp, opt, 0, N, rank, world)
    res["params"] = full_params(ddp)
    return res


def _fsdp2_model(init_seed: int = 0, mesh=None):
    from torch.distributed.fsdp import fully_shard

    m = make_model(init_seed)
    for i in (0, 3, 5):
        fully_shard(m[i], mesh=mesh)
    fully_shard(m, mesh=mesh)
    return m


def _fsdp2(rank: int, world: int, out: Path) -> dict:
    res = {}
    with FillSpy() as spy:
        m = _fsdp2_model()
        opt, s = make_opt(m)
        res["local"] = {n: tuple(p.to_local().shape) for n, p in m.named_parameters()}
        res["fill_stored"] = list(spy.calls)
    train(m, opt, 0, N, rank, world)
    res["N"] = full_params(m)
    save_checkpoint(out / "ckpt2", m, opt, s)
    train(m, opt, N, 2 * N, rank, world)
    res["2N"] = full_params(m)
    res["anchors"] = anchors(s)

    # Seeded mode: the anchors are regenerated at every step, still only the local slice.
    m = _fsdp2_model()
    opt, s = make_opt(m, mode="seeded")
    with FillSpy() as spy:
        train(m, opt, 0, N, rank, world)
        res["fill_seeded"] = list(spy.calls)
    res["seeded_N"] = full_params(m)

    # Resume the world-of-1 checkpoint on 2 ranks.
    m = _fsdp2_model(7)
    opt, s = make_opt(m, seed=999)
    load_checkpoint(out / "ckpt1", m, opt, s)
    res["resume12_seed"] = s.seed
    res["resume12_anchors"] = anchors(s)
    train(m, opt, N, 2 * N, rank, world)
    res["resume12_2N"] = full_params(m)

    # HSDP: a 2-D mesh, placements (Replicate(), Shard(0)); replicas of size 1 here.
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (1, world), mesh_dim_names=("replicate", "shard"))
    m = _fsdp2_model(mesh=mesh)
    res["hsdp_placements"] = str(m[0].weight.placements)
    opt, s = make_opt(m)
    train(m, opt, 0, N, rank, world)
    res["hsdp_N"] = full_params(m)
    return res


def _placements(rank: int, world: int) -> dict:
    """Replicate is supported (the local tensor is the whole); Partial and FSDP1 are refused."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor, Partial, Replicate, distribute_tensor

    res = {}
    mesh = init_device_mesh("cpu", (world,))
    lin = nn.Linear(4, 6)
    lin.weight = nn.Parameter(distribute_tensor(lin.weight.detach(), mesh, [Replicate()]))
    s = syre.attach(torch.optim.SGD(lin.parameters(), lr=0.1), lin, gamma=0.1, sigma0=0.3, seed=3)
    res["replicate_anchor"] = tuple(s.anchor("weight"))
    lin.weight = nn.Parameter(DTensor.from_local(lin.weight.to_local().detach(), mesh, [Partial()]))
    try:
        syre.attach(torch.optim.SGD(lin.parameters(), lr=0.1), lin, gamma=0.1)
    except ValueError as exc:
        res["partial_error"] = str(exc)
    fsdp1 = FullyShardedDataParallel(make_model(0), device_id=torch.device("cpu"), use_orig_params=True)
    try:
        syre.attach(torch.optim.AdamW(fsdp1.parameters(), lr=0.1), fsdp1)
    except ValueError as exc:
        res["fsdp1_error"] = str(exc)
    return res


@contextlib.contextmanager
def process_group(rank: int, world: int, port: int, timeout: datetime.timedelta = TIMEOUT) -> Iterator[None]:
    """One thread, a gloo process group on ``port``, and the global RNG seeded by rank, for the block."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    # The usual "seed + rank" of data augmentation: syre must not depend on the global RNG.
    torch.manual_seed(1234 + rank)
    try:
        yield
    finally:
        dist.destroy_process_group()


def worker(rank: int, world: int, port: int, out: str) -> None:
    out = Path(out)
    with process_group(rank, world, port):
        res = {"ddp": _ddp(rank, world), "fsdp2": _fsdp2(rank, world, out), "placements": _placements(rank, world)}
        torch.save(res, out / f"rank{rank}.pt")
        dist.barrier()
