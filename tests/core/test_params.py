"""Parameters as models hold them: moved after attach, tied, weight-normalised, recurrent, many and small
(the checkpoint format pinned byte for byte: tests/artifacts/test_state_dicts.py)."""
import math
import random

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

import syre
from small_models import TiedLM, make_mlp
from syre import anchors as A
from syre.sigma0 import UNIT_SIGMA0


def _zero_grad_step(model, opt):
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()


# ----------------------------------------------------------------------------- moved after attach
@pytest.mark.parametrize("mode", ["stored", "seeded"])
def test_anchors_follow_the_model_to_another_dtype(mode):
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.5)
    s = syre.attach(o, m, gamma=0.2, sigma0=0.3, d_spread=0.2, mode=mode)
    m.double()
    a = s.anchor("0.weight")
    assert a.theta0.dtype == torch.float64
    fresh = syre.anchor(0, "0.weight", (16, 6), sigma0=0.3, d_spread=0.2, dtype=torch.float64)
    assert torch.equal(a.theta0, fresh.theta0) and torch.equal(a.d, fresh.d)
    w = m[0].weight.detach().clone()
    _zero_grad_step(m, o)  # crashed before: float64 parameter, float32 anchor
    torch.testing.assert_close(m[0].weight.detach(), w - 0.1 * fresh.d * (w - fresh.theta0), rtol=0, atol=1e-15)
    m.bfloat16()  # low precision: the anchors stay fp32
    assert s.anchor("0.weight").theta0.dtype == torch.float32
    _zero_grad_step(m, o)
    m.float()
    assert torch.equal(s.anchor("0.weight").theta0, syre.anchor(0, "0.weight", (16, 6), sigma0=0.3, d_spread=0.2).theta0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_anchors_follow_the_model_to_another_device():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.5)
    s = syre.attach(o, m, gamma=0.2, sigma0=0.3, d_spread=0.2)
    cpu = s.anchor("0.weight")
    m.cuda()
    a = s.anchor("0.weight")
    assert a.theta0.device.type == "cuda"
    torch.testing.assert_close(a.theta0.cpu(), cpu.theta0, rtol=0, atol=1e-6)  # v1: float64 transcendentals per device
    _zero_grad_step(m, o)


def test_moving_to_the_same_place_regenerates_nothing(monkeypatch):
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.5)
    s = syre.attach(o, m, gamma=0.2)
    calls = []
    monkeypatch.setattr(A, "anchor_many", lambda *a, **k: calls.append(1))
    m.to(torch.float32).to("cpu")
    _zero_grad_step(m, o)
    assert calls == [] and s.anchor_nbytes() > 0


# ----------------------------------------------------------------------------- tied weights and reparametrize
def test_reparametrize_refuses_tied_weights_and_changes_nothing():
    m = TiedLM()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match=r"'emb.weight' is tied: the model also holds it as \['head.weight'\]"):
        syre.reparametrize(m)
    assert not parametrize.is_parametrized(m.emb) and all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    h = syre.reparametrize(m, exclude="head.weight")  # a rule on an alias excludes the tied tensor
    assert h.names == []


def test_reparametrize_and_attach_on_one_model_are_refused_both_ways():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    s = syre.attach(o, m, gamma=0.1)
    with pytest.raises(ValueError, match="syre attached to its optimizer"):
        syre.reparametrize(m)
    s.remove()
    h = syre.reparametrize(m)
    with pytest.raises(ValueError, match="reparametrized by syre.reparametrize"):
        syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1)
    h.remove()
    syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1)


def test_attach_decays_a_tied_weight_once_under_its_first_name():
    m = TiedLM()
    s = syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1)
    assert s.names() == ["emb.weight"]


# ----------------------------------------------------------------------------- parametrized and recurrent
def test_weight_norm_magnitude_and_direction_get_names_and_sigma0_that_make_sense():
    torch.manual_seed(0)
    new = weight_norm(nn.Linear(9, 4))
    with pytest.warns(FutureWarning):
        old = torch.nn.utils.weight_norm(nn.Linear(9, 4))
    syres = []
    for layer in (new, old):
        s = syre.attach(torch.optim.SGD(layer.parameters(), lr=0.1), layer, gamma=0.1, sigma0="lecun")
        rows = {r["name"]: r for r in s.coverage()}
        assert sorted(rows) == ["bias", "weight_g", "weight_v"]
        assert rows["weight_g"]["sigma0"] == pytest.approx(UNIT_SIGMA0)  # a gain: no fan-in (was 1.0, fan-in 1)
        assert rows["weight_v"]["sigma0"] == pytest.approx(1 / 3)  # the layer's fan-in, 9
        assert rows["bias"]["sigma0"] == pytest.approx(1 / 3)
        syres.append(s)
    # Both forms name the same tensors alike, so they get the same anchors.
    for n in ("weight_g", "weight_v", "bias"):
        assert torch.equal(syres[0].anchor(n).theta0, syres[1].anchor(n).theta0)


def test_several_originals_are_named_after_their_weight():
    class Split(nn.Module):
        def forward(self, a, b):
            return a + b

        def right_inverse(self, w):
            return w / 2, w / 2

    lin = nn.Linear(3, 2)
    parametrize.register_parametrization(lin, "weight", Split())
    s = syre.attach(torch.optim.SGD(lin.parameters(), lr=0.1), lin, gamma=0.1)
    assert sorted(s.names()) == ["bias", "weight.original0", "weight.original1"]


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
def test_recurrent_biases_take_their_layers_fan_in(cls):
    rnn = cls(input_size=9, hidden_size=16, num_layers=2, bidirectional=True)
    s = syre.attach(torch.optim.SGD(rnn.parameters(), lr=0.1), rnn, gamma=0.1, sigma0="lecun")
    rows = {r["name"]: r["sigma0"] for r in s.coverage()}
    assert rows["bias_ih_l0"] == pytest.approx(1 / 3) and rows["bias_ih_l0_reverse"] == pytest.approx(1 / 3)
    assert rows["bias_hh_l0"] == pytest.approx(1 / 4)
    assert rows["bias_ih_l1"] == pytest.approx(1 / math.sqrt(32))  # layer 1 reads both directions
    assert all(rows[n] == pytest.approx(rows[n.replace("bias", "weight")]) for n in rows if n.startswith("bias"))


# ----------------------------------------------------------------------------- many small tensors
def test_batched_generation_is_bitwise_the_one_tensor_generator():
    rng = random.Random(0)
    sizes = [0, 1, 2, 3, 63, 64, 65, 255, 4096]
    reqs = [(f"layer{i}.w", rng.choice(sizes), rng.choice([0.0, 0.05, 1.3])) for i in range(60)]
    reqs[7:7] = [("big.w", A._MANY_MAX + 1, 0.2), ("edge.w", A._MANY_MAX, 0.3)]
    for d_spread in (0.0, 0.1):
        for dtype in (torch.float32, torch.float64):
            got = A.anchor_many(2**40 + 3, reqs, d_spread=d_spread, dtype=dtype)
            for (name, n, s0), (t, x) in zip(reqs, got):
                wt, wx = A.anchor_slice(2**40 + 3, name, 0, n, sigma0=s0, d_spread=d_spread, dtype=dtype)
                for a, b in ((t, wt), (x, wx)):
                    assert (a is None and (b is None or n == 0)) or torch.equal(a, b), (name, n, s0)


def test_a_model_of_many_small_tensors_gets_the_per_tensor_anchors():
    m = nn.ModuleList([nn.Linear(3, 2) for _ in range(300)])
    s = syre.attach(torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1), m, sigma0="lecun")
    for name in ("0.weight", "137.bias", "299.weight"):
        sigma0 = 1 / math.sqrt(3)
        want = syre.anchor(0, name, s.anchor(name).theta0.shape, sigma0=sigma0, d_spread=0.1)
        got = s.anchor(name)
        assert torch.equal(got.theta0, want.theta0) and torch.equal(got.d, want.d)
