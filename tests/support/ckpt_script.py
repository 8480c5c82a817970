"""Run k training steps, optionally resuming from a checkpoint, in its own process.

usage: python ckpt_script.py OUT START STOP [CHECKPOINT] [--via-optimizer]
Trains steps [START, STOP) and saves the model, optimizer and syre state to OUT.
"""
import sys

import torch

import syre
from small_models import batches, make_mlp


def main(out, start, stop, ckpt=None, via_optimizer=False):
    model = make_mlp(seed=0 if ckpt is None else 123)  # a resumed run starts from other weights
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    s = syre.attach(opt, model, d_spread=0.2, seed=7 if ckpt is None else 999, sigma0=0.05)
    if ckpt is not None:
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if not via_optimizer:
            s.load_state_dict(state["syre"])
    data = batches(stop)
    for x, y in data[start:stop]:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "syre": s.state_dict()}, out)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0], int(args[1]), int(args[2]), args[3] if len(args) > 3 else None, "--via-optimizer" in sys.argv)
