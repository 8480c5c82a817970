"""E5's set-up (4-layer ReLU MLP, Adam, digits, gamma 10) trained once per arm per test session,
with a ``Monitor`` recording every 20 steps; shared by the audit and the monitor tests."""
import functools
import math

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=None)
def e5_run(arm: str, seed: int = 0):
    """``(net, monitor, audit batch, fresh net built by the benchmark's own init)`` for ``arm``."""
    import warnings

    from syre.bench import e5
    from syre.bench.arms import ARMS, apply_arm
    from syre.bench.common import dataset, mlp, trial_rng
    from syre.diagnostics import CollapseWarning, Monitor

    cfg = dict(e5.DEFAULTS)
    data = dataset("digits")
    x = data.x_test[: cfg["n_rank"]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with trial_rng(seed), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CollapseWarning)
            net = mlp(64, cfg["width"], cfg["depth"], 10, seed=seed, gain=math.sqrt(2.0))
            opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
            gamma = 0.0 if arm == "none" else max(cfg["gammas"])  # 10: where E5 finds weight decay's collapse
            apply_arm(ARMS[arm], net, opt, gamma=gamma, seed=seed, cfg=cfg)
            mon = Monitor(net, every=20, metrics=("rank", "effective_rank", "dead_fraction", "duplicate_fraction"),
                          probe=x)
            g = torch.Generator().manual_seed(seed + 7919)  # the order of E5's own training loop
            step = 0
            for _ in range(cfg["epochs"]["digits"]):
                perm = torch.randperm(len(data.x_train), generator=g)
                for i in range(0, len(perm), cfg["batch"]):
                    idx = perm[i: i + cfg["batch"]]
                    mon.step(step)
                    loss = F.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step += 1
        mon.warned = [w for w in caught if issubclass(w.category, CollapseWarning)]
    finally:
        torch.set_num_threads(threads)
    fresh = mlp(64, cfg["width"], cfg["depth"], 10, seed=seed + 100, gain=math.sqrt(2.0))
    return net, mon, x, fresh
