"""Every public entry point: bad input gets a clear error naming the argument and the value,
and nothing is half-applied."""
import copy
import math

import pytest
import torch
from torch import nn

import syre
from syre import anchors, data, demo, functional

from conftest import make_mlp


def _opt(m):
    return torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.05)


NAN, INF = float("nan"), float("inf")

# (entry point, kwargs, exception, text that must appear)
CASES = [
    ("attach", dict(gamma=-1.0), ValueError, "gamma value: -1.0"),
    ("attach", dict(gamma=NAN), ValueError, "gamma value: nan"),
    ("attach", dict(gamma=INF), ValueError, "gamma value: inf"),
    ("attach", dict(gamma=[0.1]), TypeError, "gamma value: [0.1]"),
    ("attach", dict(gamma=True), TypeError, "gamma value: True"),
    ("attach", dict(sigma0=-0.5), ValueError, "sigma0 value: -0.5"),
    ("attach", dict(sigma0=NAN), ValueError, "sigma0 value: nan"),
    ("attach", dict(sigma0="glorot"), ValueError, "sigma0 value: 'glorot'; expected one of ['kaiming', 'lecun', 'xavier']"),
    ("attach", dict(sigma0=lambda n, p: -1.0), ValueError, "returned by the sigma0 callable for parameter '0.weight'"),
    ("attach", dict(d_spread=-0.1), ValueError, "d_spread value: -0.1"),
    ("attach", dict(d_spread=1.0), ValueError, "d_spread value: 1.0; expected 0 <= d_spread < 1"),
    ("attach", dict(d_spread=INF), ValueError, "d_spread value: inf"),
    ("attach", dict(seed=-1), ValueError, "seed: -1"),
    ("attach", dict(seed="0"), ValueError, "seed: '0'"),
    ("attach", dict(mode="cached"), ValueError, "mode value: 'cached'; expected one of ('stored', 'seeded')"),
    ("attach", dict(include=5), TypeError, "include rule: 5"),
    ("attach", dict(exclude=[nn.Linear, 1.5]), TypeError, "exclude rule: 1.5"),
    ("attach", dict(strict="yes"), TypeError, "strict value: 'yes'"),
    ("attach", dict(foreach=1), TypeError, "foreach value: 1"),
    ("Penalty", dict(gamma=-2.0), ValueError, "gamma value: -2.0"),
    ("Penalty", dict(gamma=0.1, sigma0="he"), ValueError, "sigma0 value: 'he'"),
    ("Penalty", dict(gamma=0.1, d_spread=2.0), ValueError, "d_spread value: 2.0"),
    ("Penalty", dict(gamma=0.1, seed=2**64), ValueError, "seed: 18446744073709551616"),
    ("reparametrize", dict(sigma0=INF), ValueError, "sigma0 value: inf"),
    ("reparametrize", dict(d_spread=-1.0), ValueError, "d_spread value: -1.0"),
    ("reparametrize", dict(exclude={}), TypeError, "exclude rule: {}"),
]


@pytest.mark.parametrize("entry,kwargs,exc,text", CASES, ids=[f"{c[0]}-{list(c[1])[0]}-{i}" for i, c in enumerate(CASES)])
def test_entry_point_errors(entry, kwargs, exc, text):
    m = make_mlp()
    state_before = copy.deepcopy(m.state_dict())
    names_before = [n for n, _ in m.named_parameters()]
    o = _opt(m)
    groups_before = [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups]
    with pytest.raises(exc) as info:
        if entry == "attach":
            syre.attach(o, m, **kwargs)
        elif entry == "Penalty":
            syre.Penalty(m, **kwargs)
        else:
            syre.reparametrize(m, **kwargs)
    assert text in str(info.value)
    # nothing half-applied
    assert [n for n, _ in m.named_parameters()] == names_before
    assert all(torch.equal(v, state_before[k]) for k, v in m.state_dict().items())
    assert [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] == groups_before
    assert not o._optimizer_step_pre_hooks


def test_model_and_optimizer_types():
    m = make_mlp()
    with pytest.raises(TypeError, match="Invalid optimizer: list"):
        syre.attach([p for p in m.parameters()], m, gamma=0.1)
    with pytest.raises(TypeError, match="Invalid model: dict"):
        syre.attach(_opt(m), {"w": 1}, gamma=0.1)
    with pytest.raises(TypeError, match="Invalid model: str"):
        syre.Penalty("model", gamma=0.1)


def test_unsupported_parameters_are_refused_by_name():
    m = nn.Linear(2, 2)
    m.weight = nn.Parameter(torch.zeros(2, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="'weight' has dtype torch.complex64"):
        syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1)


def test_unknown_anchor_name():
    m = make_mlp()
    s = syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1)
    with pytest.raises(KeyError, match="Unknown parameter name 'nope'"):
        s.anchor("nope")


@pytest.mark.parametrize(
    "call,exc,text",
    [
        (lambda: anchors.anchor_slice(0, "w", 5, 3, sigma0=1.0), ValueError, "start=5, stop=3"),
        (lambda: anchors.anchor(0, 3, (2,), sigma0=1.0), TypeError, "name: 3"),
        (lambda: anchors.stream_key(0.5, "w"), ValueError, "seed: 0.5"),
        (lambda: functional.decay_([torch.zeros(2)], [], [], weight=0.1), ValueError, "same length"),
        (lambda: data.fashion_mnist(size=10), ValueError, "size: 10"),
        (lambda: data.fashion_mnist(n_train=0), ValueError, "n_train: 0"),
        (lambda: data.digits(seed=-1), ValueError, "seed: -1"),
        (lambda: demo.run(steps=0), ValueError, "steps: 0"),
    ],
)
def test_function_errors(call, exc, text):
    with pytest.raises(exc) as info:
        call()
    assert text in str(info.value)
