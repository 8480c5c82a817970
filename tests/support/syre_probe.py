"""Test helper: record every covered parameter right before and right after syre's decay.

A global optimizer step pre-hook runs before every per-optimizer hook, so it sees the
parameters before syre's decay; a per-optimizer pre-hook registered after ``syre.attach`` sees
them after the decay and before the optimizer's own update (for ``step(closure)``, where syre
decays right after the closure, it records after the closure syre passes on). ``check`` compares each recorded
step with ``p - lr * gamma * D * (p - theta0)`` computed in float64 from anchors generated
independently of the ``Syre`` object.
"""
from __future__ import annotations

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from syre.anchors import anchor


class DecayProbe:
    def __init__(self):
        self.steps = []  # one dict per step: name -> (lr, before, after)
        self._handles = []
        self._before = None

    def install(self, syre_obj, model: torch.nn.Module) -> "DecayProbe":
        opt = syre_obj.optimizer
        params = dict(model.named_parameters())
        rows = [r for r in syre_obj.coverage() if r["covered"]]

        def snap():
            return {r["name"]: params[r["name"]].detach().clone().double() for r in rows}

        def before(o, args, kwargs):
            if o is opt:
                self._before = snap()

        def record():
            lrs = {r["name"]: float(opt.param_groups[r["group"]]["lr"]) for r in rows}
            now = snap()
            self.steps.append({n: (lrs[n], self._before[n], now[n]) for n in now})

        def after(o, args, kwargs):
            closure = kwargs.get("closure") if "closure" in kwargs else (args[1] if len(args) > 1 else None)
            if closure is None:
                record()
                return None
            # step(closure): syre decays right after the closure (the closure it passes on).
            def closure_then_record():
                loss = closure()
                record()
                return loss

            if "closure" in kwargs:
                return args, dict(kwargs, closure=closure_then_record)
            return (args[0], closure_then_record) + tuple(args[2:]), kwargs

        self._handles.append(register_optimizer_step_pre_hook(before))
        self._handles.append(opt.register_step_pre_hook(after))
        self.syre = syre_obj
        self.rows = rows
        return self

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    def check(self, *, min_steps: int, atol: float = 1e-6):
        """Every recorded step applied the decay; returns the distinct learning rates seen."""
        assert len(self.steps) >= min_steps, f"recorded {len(self.steps)} steps, expected >= {min_steps}"
        s = self.syre
        anchors = {
            r["name"]: anchor(s.seed, r["name"], r["shape"], sigma0=r["sigma0"], d_spread=s.d_spread, dtype=torch.float32)
            for r in self.rows
        }
        lrs = set()
        moved = 0.0
        for step in self.steps:
            for r in self.rows:
                lr, b, a = step[r["name"]]
                th, d = anchors[r["name"]]
                expected = b - lr * r["gamma"] * d.double() * (b - th.double())
                torch.testing.assert_close(a, expected, atol=atol, rtol=0)
                moved = max(moved, float((a - b).abs().max()))
                lrs.add(lr)
        assert moved > 100 * atol, f"the decay moved no parameter by more than {moved}"
        return lrs
