"""Weight layouts the fan-in rules know: torch's [out, in, *window], transformers' Conv1D [in, out],
nn.Bilinear (out, in1, in2), JAX's (*window, in, out), and a layer with no inputs."""
import math
import warnings

import pytest
import torch
from torch import nn

import syre
from syre.select import collect
from syre.sigma0 import UNIT_SIGMA0, fans, fans_from_shape, resolve_sigma0_of, std_from_fans, weight_layout

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402


def _sigma0s(model, spec):
    return {i.name: resolve_sigma0_of(spec, i) for i in collect(model).values()}


def test_conv1d_reads_its_fan_in_from_dim_0():
    c = Conv1D(256, 64)  # nf=256 outputs, nx=64 inputs: weight [64, 256]
    assert tuple(c.weight.shape) == (64, 256)
    assert weight_layout(c) == "jax" and weight_layout(nn.Linear(2, 3)) == "torch"
    assert fans(c.weight, c, "weight") == (64, 256)
    assert fans(c.bias, c, "bias") == (64, 256)  # the bias takes its weight's fan-in
    got = _sigma0s(c, "lecun")
    assert got["weight"] == pytest.approx(1 / math.sqrt(64)) and got["bias"] == pytest.approx(1 / 8)
    assert _sigma0s(c, "xavier")["weight"] == pytest.approx(math.sqrt(2 / (64 + 256)))
    # the same numbers as the equivalent nn.Linear(64, 256), whose weight is the transpose
    lin = nn.Linear(64, 256)
    assert fans(lin.weight, lin, "weight") == fans(c.weight, c, "weight")
    # and as the JAX layout reads a flax Dense kernel of the same shape
    assert fans_from_shape(c.weight.shape, layout="jax") == fans(c.weight, c, "weight")
    assert fans_from_shape(lin.weight.shape, layout="torch") == fans_from_shape(c.weight.shape, layout="jax")


def test_a_subclass_of_conv1d_keeps_the_layout_and_a_lookalike_elsewhere_does_not():
    class MyConv1D(Conv1D):
        pass

    assert weight_layout(MyConv1D(8, 4)) == "jax"

    class Conv1DOther(nn.Module):  # same shape convention unknown: not matched by name alone
        pass

    Conv1DOther.__name__ = "Conv1D"
    assert weight_layout(Conv1DOther()) == "torch"


def test_gpt2_from_config_gets_conv1d_fans_in_attach():
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=16)
    model = transformers.GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = syre.attach(opt, model, sigma0="lecun")
    got = {r["name"]: r["sigma0"] for r in s.coverage() if r["covered"]}
    assert got["transformer.h.0.attn.c_attn.weight"] == pytest.approx(1 / math.sqrt(32))  # [32, 96]: 32 inputs
    assert got["transformer.h.0.mlp.c_proj.weight"] == pytest.approx(1 / math.sqrt(128))  # [128, 32]: 128 inputs
    assert got["transformer.h.0.mlp.c_fc.weight"] == pytest.approx(1 / math.sqrt(32))  # [32, 128]


def test_init_follows_conv1d_fans():
    c = Conv1D(256, 64)
    syre.init_(c, seed=0, scheme="lecun")
    assert c.weight.std().item() == pytest.approx(1 / 8, rel=0.05)  # fan-in 64, not 256


def test_bilinear_takes_in1_times_in2():
    b = nn.Bilinear(6, 10, 4)  # weight (4, 6, 10)
    assert fans(b.weight, b, "weight") == (60, 40)
    got = _sigma0s(b, "lecun")
    assert got["weight"] == pytest.approx(1 / math.sqrt(60)) and got["bias"] == pytest.approx(1 / math.sqrt(60))
    # the variance-preserving count: y = x1^T W x2 sums in1 * in2 products, so at std 1/sqrt(in1 in2)
    # unit inputs give unit outputs
    torch.manual_seed(0)
    wide = nn.Bilinear(6, 10, 200)
    with torch.no_grad():
        wide.weight.normal_(0.0, _sigma0s(wide, "lecun")["weight"])
        wide.bias.zero_()
        y = wide(torch.randn(20000, 6), torch.randn(20000, 10))
    assert y.var().item() == pytest.approx(1.0, rel=0.1)
    # torch's own init, U(+-1/sqrt(in1)), has std 1/sqrt(3 in1): "match" follows it
    torch.manual_seed(0)
    b = nn.Bilinear(6, 10, 4)
    assert _sigma0s(b, "match")["weight"] == pytest.approx(1 / math.sqrt(18), rel=0.1)


def test_jax_layout_is_the_transpose_of_torchs():
    for torch_shape in [(8, 4), (16, 3, 5), (16, 3, 5, 7)]:
        out, inp, *window = torch_shape
        jax_shape = (*window, inp, out)
        assert fans_from_shape(torch_shape, "torch") == fans_from_shape(jax_shape, "jax")
    assert fans_from_shape((5,), "jax") is None
    with pytest.raises(ValueError, match="kernel_layout"):
        fans_from_shape((2, 2), "tf")


def test_a_layer_with_no_inputs_has_a_defined_sigma0():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "Initializing zero-element tensors is a no-op"
        m = nn.Sequential(nn.Linear(0, 4), nn.Linear(4, 2))
    for spec in ("lecun", "kaiming", "xavier", "lecun:0.5", "match"):
        got = _sigma0s(m, spec)
        scale = 0.5 if spec.endswith("0.5") else 1.0
        assert got["0.weight"] == got["0.bias"] == pytest.approx(scale * UNIT_SIGMA0), spec
        assert got["1.weight"] > 0.1
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
    s = syre.attach(opt, m)  # no ZeroDivisionError
    m(torch.zeros(3, 0)).sum().backward()
    opt.step()
    assert {r["name"] for r in s.coverage() if r["decayed"]} == {"0.weight", "0.bias", "1.weight", "1.bias"}
    with pytest.raises(ValueError, match="no inputs"):
        std_from_fans("lecun", 0, 4)
