"""One body for the flows after ``attach``, run over every decay path.

Each flow (a plain optimizer state loaded, a weight-decay schedule down to 0, ``requires_grad``
toggled, the model moved to another dtype, ``add_param_group``, a step GradScaler skips, attach
again) is followed by a check step whose outcome is known exactly: zero gradients, optimizers whose
own update is then 0 (AdamW with ``betas=(0, 0)``, momentum buffers zeroed), so each parameter must
move by syre's decay alone, ``p - lr * gamma * D * (p - theta0)`` with the gamma the flow asked
for, or not move at all.

``PATHS`` lists every decay path; ``test_every_declared_path_is_listed`` derives the paths the
library declares (modes, target kinds, roundings, the fused optimizer classes, MultiSyre) and fails
when one is missing here.
"""
import warnings
from dataclasses import dataclass, field
from typing import Dict, List

import pytest
import torch
from torch import nn

import syre
from syre import config, fused, reference as ref
from syre.core import _targets

G = 0.2  # the weight decay taken over (or the explicit gamma)
LR = 0.1
HELD = ("0.weight", "0.bias", "2.weight", "2.bias")  # layer 3 is added later (add_param_group)

#: name -> how the path is built: optimizer kind, attach keywords, parameter dtype.
PATHS = {
    "hook stored": dict(opt="torch.AdamW"),
    "hook seeded": dict(opt="torch.AdamW", attach=dict(mode="seeded")),
    "fused syre.AdamW": dict(opt="syre.AdamW"),
    "fused syre.AdamW seeded": dict(opt="syre.AdamW", attach=dict(mode="seeded")),
    "fused syre.SGD": dict(opt="syre.SGD"),
    "MultiSyre": dict(opt="multi"),
    "target init": dict(opt="torch.AdamW", attach=dict(target="init")),
    "target pretrained": dict(opt="torch.AdamW", attach=dict(target="pretrained")),
    "target mapping": dict(opt="torch.AdamW", attach=dict(target="mapping")),
    "stochastic rounding": dict(opt="torch.AdamW", attach=dict(rounding="stochastic"), dtype=torch.bfloat16),
}


@dataclass
class Case:
    model: nn.Module
    opts: List[torch.optim.Optimizer]
    s: object
    kwargs: dict
    taken: bool  # gamma=None: the groups' weight decay was taken over
    dtype: torch.dtype
    gammas: Dict[str, float] = field(default_factory=dict)  # name -> the gamma the flows asked for now


def _layer(m, name):
    return m[int(name.split(".")[0])]


def _setup(path) -> Case:
    spec = PATHS[path]
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 4), nn.Linear(4, 4))  # 65536 weights: fused
    kwargs = dict(spec.get("attach", {}), strict=False, seed=3)
    if kwargs.get("target") == "init":
        syre.init_(m, seed=5)
    if kwargs.get("target") == "mapping":
        g = torch.Generator().manual_seed(7)
        kwargs["target"] = {n: torch.randn(p.shape, generator=g) * 0.05 for n, p in m.named_parameters()}
    dtype = spec.get("dtype", torch.float32)
    m.to(dtype)
    held = [p for n, p in m.named_parameters() if n in HELD]
    kind, taken = spec["opt"], True
    if kind == "torch.AdamW":
        opts = [torch.optim.AdamW(held, lr=LR, weight_decay=G, betas=(0.0, 0.0))]
    elif kind == "syre.AdamW":
        opts = [syre.AdamW(held, lr=LR, weight_decay=G, betas=(0.0, 0.0))]
    elif kind == "syre.SGD":
        opts, taken = [syre.SGD(held, lr=LR, momentum=0.9)], False
        kwargs["gamma"] = G
    else:
        opts = [torch.optim.AdamW(m[0].parameters(), lr=LR, weight_decay=G, betas=(0.0, 0.0)),
                torch.optim.SGD(m[2].parameters(), lr=LR, weight_decay=G)]
    s = syre.attach(opts if kind == "multi" else opts[0], m, **kwargs)
    return Case(m, opts, s, kwargs, taken, dtype, {n: G for n in HELD})


def _train_step(c: Case):
    for o in c.opts:
        o.zero_grad()
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(1)).to(c.dtype)
    c.model(x).pow(2).mean().backward()
    for o in c.opts:
        o.step()


def _check_step(c: Case):
    """Zero gradients and momentum: each parameter moves by syre's decay with the gamma asked for, or not at all."""
    for o in c.opts:
        for group in o.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p) if p.requires_grad else None
                buf = o.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.zero_()
    names = dict(c.model.named_parameters())
    before = {n: p.detach().clone() for n, p in names.items()}
    anchors = {n: c.s.anchor(n) for n, g in c.gammas.items() if g}
    for o in c.opts:
        o.step()
    low = c.model[0].weight.dtype == torch.bfloat16
    for n, p in names.items():
        gamma = c.gammas.get(n, 0.0) if p.requires_grad else 0.0
        if not gamma:
            assert torch.equal(p, before[n]), f"{n} moved, though nothing should decay it"
            continue
        a = anchors[n]
        want = ref.decay(before[n].double().numpy(), a.theta0.double().numpy(), a.d.double().numpy(), LR, gamma)
        assert not torch.equal(p, before[n]), f"{n} did not move: syre's decay did not run"
        # bf16 with stochastic rounding: one of the two bf16 neighbours of the decayed value (within one ulp)
        torch.testing.assert_close(p.detach().double(), torch.from_numpy(want), rtol=2.0**-7 if low else 0.0,
                                   atol=2.0**-20 if low else 1e-6,
                                   msg=lambda m: f"{n}: {m}")


# ----------------------------------------------------------------------------- the flows
def flow_plain_optimizer_state_loaded(c):
    _train_step(c)
    for o in c.opts:
        o.load_state_dict(syre.plain_state_dict(o.state_dict()))  # a checkpoint of the optimizer without syre
    _check_step(c)


def flow_weight_decay_schedule_down_to_0(c):
    _train_step(c)
    key = "weight_decay" if c.taken else syre.optim.GROUP_KEY
    for value in (0.3, 0.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", syre.DecaySettingWarning)  # "written weight_decay becomes gamma", once
            for o in c.opts:
                for group in o.param_groups:
                    group[key] = value
            c.gammas = {n: value for n in c.gammas}
            _check_step(c)


def flow_requires_grad_toggled(c):
    _train_step(c)
    c.model[0].requires_grad_(False)
    _check_step(c)
    c.model[0].requires_grad_(True)
    _check_step(c)


def flow_dtype_moved(c):
    c.model.to(torch.float32 if c.dtype == torch.bfloat16 else torch.float64)
    c.dtype = c.model[0].weight.dtype
    _train_step(c)
    _check_step(c)


def flow_add_param_group(c):
    _train_step(c)
    group = {"params": list(c.model[3].parameters())}
    if not c.taken:
        group["weight_decay"] = 0.0
    c.opts[-1].add_param_group(group)
    c.gammas.update({"3.weight": G, "3.bias": G})
    _train_step(c)
    _check_step(c)


def flow_grad_scaler_skip(c):
    _train_step(c)
    for o in c.opts:
        o.zero_grad()
    sc = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x = torch.randn(8, 256, generator=torch.Generator().manual_seed(2)).to(c.dtype)
    sc.scale(c.model(x).pow(2).mean() * float("inf")).backward()
    before = [p.detach().clone() for p in c.model.parameters()]
    for o in c.opts:
        sc.step(o)
    sc.update()
    assert all(torch.equal(a, p) for a, p in zip(before, c.model.parameters())), "a skipped step changed a parameter"
    _check_step(c)  # ... and the next step decays once


def flow_attach_again(c):
    _train_step(c)
    target = c.opts if len(c.opts) > 1 else c.opts[0]
    try:
        again = syre.attach(target, c.model, **c.kwargs)
    except ValueError as e:  # refused by name, nothing attached twice
        assert "already has syre attached" in str(e)
    else:
        assert again is c.s
    with pytest.raises(ValueError, match="already has syre attached"):
        syre.attach(target, c.model, **dict(c.kwargs, seed=99))
    _check_step(c)  # decayed once


FLOWS = {f.__name__[len("flow_"):]: f for f in [
    flow_plain_optimizer_state_loaded, flow_weight_decay_schedule_down_to_0, flow_requires_grad_toggled,
    flow_dtype_moved, flow_add_param_group, flow_grad_scaler_skip, flow_attach_again]}


@pytest.mark.parametrize("flow", sorted(FLOWS))
@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_flow_on_every_path(path, flow):
    c = _setup(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", syre.PrecisionWarning)
        FLOWS[flow](c)


def test_every_declared_path_is_listed():
    """A decay path the library adds (a mode, a target kind, a rounding, a fused optimizer class) must be listed above."""
    specs = list(PATHS.values())
    attach = [s.get("attach", {}) for s in specs]
    assert {a.get("mode", "stored") for a in attach} == set(config.MODES)
    assert {a.get("target", "random") for a in attach} == set(_targets.KINDS)
    assert {a.get("rounding", "nearest") for a in attach} == set(config.ROUNDINGS)
    assert {s["opt"] for s in specs} >= {f"syre.{cls.__name__}" for cls in fused.FUSABLE} | {"multi"}
    assert {a.get("mode", "stored") for s, a in zip(specs, attach) if s["opt"].startswith("syre.")} == set(config.MODES)
