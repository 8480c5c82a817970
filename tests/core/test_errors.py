"""Errors beyond the argument table (tests/core/test_error_table.py): wrong model and optimizer types, unsupported
parameters, unknown names, and the helper functions outside the public entry points."""
import pytest
import torch
from torch import nn

import syre
from small_models import make_mlp
from syre import anchors, data, demo, functional


def _opt(m):
    return torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.05)

# The argument errors of every entry point are one table: tests/core/test_error_table.py.


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
