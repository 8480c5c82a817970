"""The tensor-parallel runs behind test_tensor_parallel.py (2 processes) and test_mesh_2d.py (4).

The model is an MLP ``6 -> H -> 3 -> 1`` whose first layer is ``ColwiseParallel`` (weight and bias
``Shard(0)``) and second ``RowwiseParallel`` (weight ``Shard(1)``, bias ``Replicate``); on a 2-D
``(dp, tp)`` mesh FSDP2 shards it further (``fully_shard`` on the ``dp`` mesh: the colwise weight
becomes ``(_StridedShard(0), Shard(0))``). Every tensor-parallel rank sees the whole batch; the
``dp`` rank takes its rows of it, so the gradients are those of one process up to rounding.

Which elements of the full parameter a rank holds is read from torch itself, not from syre: a
copy of the model whose every parameter holds its own global indices (``local_indices``) is
parallelized the same way, and its local shards are the oracle for slicing the one-process run.
Each worker writes what it saw to ``OUT/rank{r}.pt``.
"""
from __future__ import annotations

import datetime
import math
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

import dist_worker as W
import syre
import syre.anchors
from spawn import spawn as spawn_world

TIMEOUT = datetime.timedelta(seconds=90)


def make_model(init_seed: int = 0, hidden: int = 5) -> nn.Sequential:
    g = torch.Generator().manual_seed(init_seed)
    m = nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 3), nn.Tanh(), nn.Linear(3, 1))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return m


def tp(model: nn.Module, tp_mesh) -> nn.Module:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    return parallelize_module(model, tp_mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})


def fsdp(model: nn.Module, dp_mesh) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for i in (0, 2, 4):
        fully_shard(model[i], mesh=dp_mesh)
    return fully_shard(model, mesh=dp_mesh)


def fsdp_tp(model: nn.Module, mesh) -> nn.Module:
    return fsdp(tp(model, mesh["tp"]), mesh["dp"])


def local_of(p: torch.Tensor) -> torch.Tensor:
    return (p.to_local() if hasattr(p, "to_local") else p).detach().clone()


def locals_of(model: nn.Module) -> dict:
    return {n: local_of(p) for n, p in syre.select.unwrap_model(model).named_parameters()}


def local_indices(build, hidden: int) -> dict:
    """``{name: int64 tensor}``: the global flat index of each element of this rank's local shards."""
    m = make_model(0, hidden).double()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.arange(p.numel(), dtype=torch.float64).view(p.shape))  # exact below 2**53
    return {n: t.long() for n, t in locals_of(build(m)).items()}


def decay_once(model: nn.Module, mode: str) -> dict:
    """One syre decay and nothing else: SGD with zero gradients; returns the local shards after it."""
    opt = torch.optim.SGD(model.parameters(), lr=W.LR)
    syre.attach(opt, model, gamma=W.WD, sigma0=W.SIGMA0, d_spread=W.D_SPREAD, seed=W.SEED, mode=mode)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    return locals_of(model)


class GenSpy:
    """Records the global indices of every anchor generation: ``_fill`` and ``_blocks`` (a slice of
    the flattened parameter) and ``anchor_at`` (any indices)."""

    def __init__(self):
        self.calls = []  # (name, int64 tensor of the global indices generated)
        self._saved = (syre.anchors._fill, syre.anchors._blocks, syre.anchors.anchor_at)

    def __enter__(self):
        fill, blocks, at = self._saved

        def spy_fill(seed, name, start, stop, *args):
            self.calls.append((name, torch.arange(start, stop)))
            return fill(seed, name, start, stop, *args)

        def spy_blocks(seed, name, start, stop, *args):
            self.calls.append((name, torch.arange(start, stop)))
            return blocks(seed, name, start, stop, *args)

        def spy_at(seed, name, indices, **kwargs):
            self.calls.append((name, indices.detach().reshape(-1).clone()))
            return at(seed, name, indices, **kwargs)

        syre.anchors._fill, syre.anchors._blocks, syre.anchors.anchor_at = spy_fill, spy_blocks, spy_at
        return self

    def __exit__(self, *exc):
        syre.anchors._fill, syre.anchors._blocks, syre.anchors.anchor_at = self._saved


# ----------------------------------------------------------------------------- one process
def single(out: Path, hidden: int) -> dict:
    """The reference: 2N AdamW steps (a DCP checkpoint at N in OUT/single_ckpt) and one pure decay."""
    m = make_model(0, hidden)
    opt, s = W.make_opt(m)
    W.train(m, opt, 0, W.N)
    res = {"N": W.full_params(m)}
    W.save_checkpoint(out / "single_ckpt", m, opt, s)
    W.train(m, opt, W.N, 2 * W.N)
    res["2N"] = W.full_params(m)
    res["anchors"] = W.anchors(s)
    res["decay"] = decay_once(make_model(0, hidden), "stored")
    return res


def resume_single(ckpt: Path, hidden: int) -> dict:
    m = make_model(7, hidden)
    opt, s = W.make_opt(m, seed=999)
    W.load_checkpoint(ckpt, m, opt, s)
    res = {"seed": s.seed, "anchors": W.anchors(s)}
    W.train(m, opt, W.N, 2 * W.N)
    res["2N"] = W.full_params(m)
    return res


# ----------------------------------------------------------------------------- a parallel layout
def run_layout(build, hidden: int, out: Path, tag: str, dp_rank: int = 0, dp: int = 1) -> dict:
    """Everything one layout is tested for: its index oracle, pure decays in both modes, N + N
    AdamW steps with a DCP checkpoint between (OUT/{tag}_ckpt), seeded training, the spies."""
    res = {"index": local_indices(build, hidden)}
    m = build(make_model(0, hidden))
    res["placements"] = {n: str(getattr(p, "placements", "plain")) for n, p in m.named_parameters()}
    res["decay"] = {mode: decay_once(build(make_model(0, hidden)), mode) for mode in ("stored", "seeded")}
    with GenSpy() as spy:
        opt, s = W.make_opt(m)
    res["gen_stored"] = spy.calls
    W.train(m, opt, 0, W.N, dp_rank, dp)
    res["N"] = locals_of(m)
    W.save_checkpoint(out / f"{tag}_ckpt", m, opt, s)
    W.train(m, opt, W.N, 2 * W.N, dp_rank, dp)
    res["2N"] = locals_of(m)
    res["anchors"] = W.anchors(s)  # the full anchors, built on demand

    m = build(make_model(0, hidden))
    opt, s = W.make_opt(m, mode="seeded")
    with GenSpy() as spy:
        W.train(m, opt, 0, W.N, dp_rank, dp)
    res["gen_seeded"] = spy.calls
    res["seeded_N"] = locals_of(m)
    return res


def resume_layout(build, hidden: int, ckpt: Path, dp_rank: int = 0, dp: int = 1) -> dict:
    """Resume a checkpoint written on another layout (other init, other seed: both from the file)."""
    m = build(make_model(7, hidden))
    opt, s = W.make_opt(m, seed=999)
    W.load_checkpoint(ckpt, m, opt, s)
    res = {"seed": s.seed, "anchors": W.anchors(s), "index": local_indices(build, hidden)}
    W.train(m, opt, W.N, 2 * W.N, dp_rank, dp)
    res["2N"] = locals_of(m)
    return res


# ----------------------------------------------------------------------------- the worlds
# Tensor parallelism shards the activations as it shards the weights, and torch's parallel
# styles assume even activation shards (an uneven hidden size fails in the forward, an uneven
# colwise output layer gets gradients of another placement), so the hidden sizes split evenly;
# uneven and empty shards come from FSDP (2-D) and from single DTensor parameters.
HIDDEN_1D = 4  # tensor-parallel shards of 2 rows / 2 columns
HIDDEN_2D = 6  # tensor-parallel chunks of 3, FSDP shards of 2 + 1 (and 1 + 0 in the output layer)


def world_of_2(rank: int, world: int, out: Path) -> dict:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("tp",))
    build = lambda m: tp(m, mesh)  # noqa: E731
    res = run_layout(build, HIDDEN_1D, out, "tp2")
    res["resume"] = resume_layout(build, HIDDEN_1D, out / "single_ckpt")
    res["direct"] = direct_placements_run(mesh, DIRECT_1D)
    res["match"] = match_sigma0s(build, HIDDEN_1D)
    res["match_zero"] = match_sigma0s(build, HIDDEN_1D, zero="0")
    res["far"] = far_warnings(build, HIDDEN_1D)
    return res


def zeroed(model: nn.Sequential, zero: str = "") -> nn.Sequential:
    """``model`` with layer ``zero``'s weight and bias set to 0 (a zero-initialised layer), before any sharding."""
    if zero:
        with torch.no_grad():
            model[int(zero)].weight.zero_()
            model[int(zero)].bias.zero_()
    return model


def far_warnings(build, hidden: int) -> list:
    """The AnchorScaleWarnings of an attach whose anchors are far below sharded weights (RMS of the full tensors)."""
    import warnings

    model = build(make_model(0, hidden))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s = syre.attach(torch.optim.SGD(model.parameters(), lr=0.1), model, gamma=0.1, sigma0=1e-5, seed=W.SEED)
    s.remove()
    return [str(w.message) for w in rec if issubclass(w.category, syre.AnchorScaleWarning)]


def match_sigma0s(build, hidden: int, zero: str = "") -> dict:
    """sigma0='match' on sharded parameters: the full tensor's RMS, the same on every rank."""
    model = build(zeroed(make_model(0, hidden), zero))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = syre.attach(opt, model, gamma=0.1, sigma0="match", seed=W.SEED)
    out = {r["name"]: r["sigma0"] for r in s.coverage()}
    s.remove()
    return out


def world_of_4(rank: int, world: int, out: Path) -> dict:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    dp_rank = mesh.get_coordinate()[0]
    build = lambda m: fsdp_tp(m, mesh)  # noqa: E731
    res = run_layout(build, HIDDEN_2D, out, "mesh22", dp_rank, 2)
    # The 2 x 2 checkpoint resumed by FSDP2 alone on a 1-D mesh of 4 (shards of 2, 2, 2, 0 rows).
    # (Tensor parallelism over 4 would split the hidden size 6 unevenly, which torch's styles refuse.)
    mesh4 = init_device_mesh("cpu", (world,), mesh_dim_names=("dp",))
    dp4 = mesh4.get_coordinate()[0]
    res["resume_fsdp4"] = resume_layout(lambda m: fsdp(m, mesh4), HIDDEN_2D, out / "mesh22_ckpt", dp4, world)
    res["uneven_strided"] = _uneven_strided(mesh)
    res["direct"] = direct_placements_run(mesh, DIRECT_2D)
    return res


def _uneven_strided(mesh) -> dict:
    """fully_shard over ColwiseParallel with 5 rows on 2 tensor-parallel ranks: refused, nothing changed."""
    m = fsdp_tp(make_model(0, 5), mesh)
    opt = torch.optim.AdamW(m.parameters(), lr=W.LR, weight_decay=W.WD)
    try:
        syre.attach(opt, m, sigma0=W.SIGMA0, seed=W.SEED)
        return {"error": None}
    except ValueError as exc:
        return {"error": str(exc), "weight_decay": opt.param_groups[0]["weight_decay"],
                "placements": str(m[0].weight.placements)}


#: "shape placements" of single DTensor parameters on 2 ranks and on the 2 x 2 mesh: every tensor
#: dim, two mesh dims on one tensor dim, uneven and empty shards (dim 2 of (5, 4, 3): 2 + 1, then
#: 1 + 1 and 1 + 0; dim 0 of (1, 4, 3): 1 + 0).
DIRECT_1D = ["5x4x3 S0", "5x4x3 S1", "5x4x3 S2", "5x4x3 R", "1x4x3 S0"]
DIRECT_2D = ["5x4x3 S0,S0", "5x4x3 S1,S1", "5x4x3 S2,S2", "5x4x3 S0,S2", "5x4x3 S2,S0", "5x4x3 S1,R",
             "5x4x3 R,S2", "5x4x3 SS1,S1", "1x4x3 S0,S1"]


def direct_shape(spec: str):
    return tuple(int(n) for n in spec.split()[0].split("x"))


def direct_placements(spec: str):
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.placement_types import _StridedShard

    out = []
    for p in spec.split()[1].split(","):
        out.append(Replicate() if p == "R" else _StridedShard(int(p[2:]), split_factor=2) if p.startswith("SS")
                   else Shard(int(p[1:])))
    return out


def holder(value: torch.Tensor) -> nn.Module:
    """A module whose one parameter, ``w``, holds ``value``."""
    m = nn.Module()
    m.w = nn.Parameter(value)
    return m


def direct_value(shape):
    return 0.01 * torch.arange(math.prod(shape), dtype=torch.float32).view(shape) - 0.2


def direct_placements_run(mesh, specs) -> dict:
    """A single DTensor parameter per placement: one pure decay per mode, and the index oracle."""
    from torch.distributed.tensor import distribute_tensor

    res = {}
    for spec in specs:
        pl, shape = direct_placements(spec), direct_shape(spec)
        idx = torch.arange(math.prod(shape), dtype=torch.int64).view(shape)
        row = {"index": distribute_tensor(idx, mesh, pl).to_local().clone()}
        for mode in ("stored", "seeded"):
            row[mode] = decay_once(holder(distribute_tensor(direct_value(shape), mesh, pl)), mode)["w"]
        res[spec] = row
    return res


def worker(rank: int, world: int, port: int, out: str) -> None:
    out = Path(out)
    with W.process_group(rank, world, port, TIMEOUT):
        res = (world_of_2 if world == 2 else world_of_4)(rank, world, out)
        torch.save(res, out / f"rank{rank}.pt")
        dist.barrier()


def spawn(world: int, out: Path, timeout_s: float) -> float:
    """Run ``worker`` on ``world`` gloo processes; the wall time in seconds (fails the test after ``timeout_s``)."""
    return spawn_world(worker, world, (str(out),), timeout_s)


def run_all(out: Path, world: int, hidden: int, ckpt: str, timeout_s: float) -> dict:
    """The one-process reference run, the spawned world's results (one dict a rank), the world's checkpoint
    ``out / ckpt`` resumed in one process, the world's wall time, and the full parameters' sizes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*single process.*")  # DCP without a process group
        one = single(out, hidden)
        seconds = spawn(world, out, timeout_s)
        ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]
        resumed = resume_single(out / ckpt, hidden)
    numel = {n: t.numel() for n, t in one["N"].items()}
    return {"single": one, "ranks": ranks, "resume_single": resumed, "seconds": seconds, "numel": numel}
