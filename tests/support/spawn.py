"""Start a world of gloo processes on CPU and wait for it: the one launcher of the distributed tests
(test_distributed.py, test_tensor_parallel.py, test_mesh_2d.py, test_deepspeed.py)."""
from __future__ import annotations

import socket
import time
from typing import Callable

import pytest
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(fn: Callable[..., None], world: int, args: tuple, timeout_s: float) -> float:
    """Run ``fn(rank, world, port, *args)`` on ``world`` spawned processes; the wall time in seconds.

    Fails the test (after terminating what still runs) when they have not all finished within ``timeout_s``."""
    ctx = mp.start_processes(fn, args=(world, free_port()) + tuple(args), nprocs=world, join=False,
                             start_method="spawn")
    t0 = time.monotonic()
    while not ctx.join(timeout=1.0):
        if time.monotonic() - t0 > timeout_s:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail(f"the {world} gloo processes did not finish within {timeout_s} s")
    return time.monotonic() - t0
