"""``syre.init_``'s rules against torch's own init, and ``syre.reset_units_`` on the layers that are not a plain
``Linear``: bool masks, ``ConvTranspose`` output channels, weight-normalised and parametrized layers, tied heads."""
import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

import syre
from small_models import TiedLM
from syre import init as I


def _bump(model):
    """Move every parameter away from its initial value (as training would)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.linspace(0.5, 1.5, p.numel()).view(p.shape))


# ----------------------------------------------------------------------------- init_ against torch
def test_init_follows_torch_for_rnn_and_attention_biases_and_prelu():
    m = nn.ModuleDict({"lstm": nn.LSTM(100, 16), "cell": nn.GRUCell(100, 16),
                       "mha": nn.MultiheadAttention(32, 4, add_bias_kv=True), "act": nn.PReLU(3, init=0.3)})
    ref = copy.deepcopy(m)  # torch's own init, for the bounds it uses
    I.init_(m, seed=0)
    for name in ("lstm.bias_ih_l0", "lstm.bias_hh_l0", "cell.bias_ih", "cell.bias_hh"):
        b, torch_b = m.get_parameter(name), ref.get_parameter(name)
        bound = 1 / math.sqrt(16)  # torch: 1/sqrt(hidden_size) for every RNN bias, not the input's fan-in (100)
        assert torch_b.abs().max() <= bound and b.abs().max() <= bound and b.abs().max() > 0.9 * bound, name
    mha = m["mha"]
    assert torch.equal(mha.in_proj_bias, torch.zeros(96)) and torch.equal(mha.out_proj.bias, torch.zeros(32))
    assert torch.equal(ref["mha"].in_proj_bias, torch.zeros(96))  # as torch's _reset_parameters
    assert mha.bias_k.std().item() == pytest.approx(1 / math.sqrt(32), rel=0.35)  # torch's xavier_normal_: the same std
    assert torch.equal(m["act"].weight, torch.full((3,), 0.3)) and torch.equal(ref["act"].weight, m["act"].weight)
    # The seeded target recomputes these values (kind by kind) from the record alone.
    for info in syre.select.collect(m).values():
        idx = torch.arange(info.param.numel())
        torch.testing.assert_close(I.init_values(info, idx, seed=0, scheme="lecun").view(info.param.shape),
                                   info.param.detach(), rtol=0, atol=0)


def test_a_parameter_torch_leaves_to_its_module_starts_at_zero_as_documented():
    m = nn.Linear(3, 2)
    m.scale = nn.Parameter(torch.tensor(2.5))  # a learnable 0-d scale: no rule in torch
    I.init_(m, seed=0)
    assert m.scale.item() == 0.0
    assert "0-d learnable scale" in I.__doc__


# ----------------------------------------------------------------------------- reset_units_
def _fresh_and_trained(model, make=None, seed=3):
    """``model`` initialised then moved; copies of it at init and trained (``make()`` builds a twin to load into)."""
    def twin():
        if make is None:
            return copy.deepcopy(model)
        out = make()
        out.load_state_dict(model.state_dict())
        return out

    I.init_(model, seed=seed)
    init = twin()
    _bump(model)
    return init, twin()


def test_a_bool_mask_resets_the_masked_units():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    init, trained = _fresh_and_trained(m)
    mask = torch.zeros(8, dtype=torch.bool)
    mask[[3, 5]] = True
    I.reset_units_(m, "0", mask)
    assert torch.equal(m[0].weight[mask], init[0].weight[mask]) and torch.equal(m[0].bias[mask], init[0].bias[mask])
    assert torch.equal(m[0].weight[~mask], trained[0].weight[~mask])  # rows 0 and 1 were not touched
    I.reset_units_(m, "0", [False] * 8)  # a mask of no unit changes nothing
    with pytest.raises(ValueError, match=r"Invalid units value: a bool mask of shape \(7,\); expected .* 8 entries"):
        I.reset_units_(m, "0", torch.ones(7, dtype=torch.bool))


@pytest.mark.parametrize("units", [[0.5, 2.0], torch.tensor([1.0]), "0"])
def test_float_or_other_indices_are_refused(units):
    m = nn.Sequential(nn.Linear(4, 8))
    I.init_(m, seed=0)
    before = copy.deepcopy(m.state_dict())
    with pytest.raises(TypeError, match="Invalid units value: .*expected integer indices in \\[0, 8\\) or a bool mask"):
        I.reset_units_(m, "0", units)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_transpose_resets_output_channels(groups):
    m = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=groups), nn.ReLU(), nn.Conv2d(6, 4, 1))
    init, trained = _fresh_and_trained(m)
    x = torch.randn(2, 4, 5, 5)
    units = [1, 4]
    I.reset_units_(m, "0", units, outgoing="2")
    y, y_init, y_trained = m[0](x), init[0](x), trained[0](x)
    keep = [c for c in range(6) if c not in units]
    # The layer's output channels are its units: reset ones compute as at init, the others as trained.
    torch.testing.assert_close(y[:, units], y_init[:, units], rtol=0, atol=1e-6)
    torch.testing.assert_close(y[:, keep], y_trained[:, keep], rtol=0, atol=0)
    assert torch.all(m[2].weight[:, units] == 0) and torch.equal(m[2].weight[:, keep], trained[2].weight[:, keep])


@pytest.mark.parametrize("form", ["parametrizations", "legacy", "orthogonal-free"])
def test_a_weight_normalised_or_parametrized_layer_resets_its_underlying_parameters(form):
    def wrap(lin):
        if form == "parametrizations":
            return weight_norm(lin)
        if form == "legacy":
            return torch.nn.utils.weight_norm(lin)

        class Scaled(nn.Module):
            def forward(self, w):
                return 2.0 * w
        parametrize.register_parametrization(lin, "weight", Scaled())
        return lin

    def make():
        torch.manual_seed(0)
        return nn.Sequential(wrap(nn.Linear(5, 6)), nn.Tanh(), wrap(nn.Linear(6, 3)))

    m = make()
    init, trained = _fresh_and_trained(m, make)
    units, keep = [0, 4], [1, 2, 3, 5]
    x = torch.randn(7, 5)
    I.reset_units_(m, "0", units, outgoing="2" if form != "orthogonal-free" else None)
    h, h_init, h_trained = m[0](x), init[0](x), trained[0](x)
    torch.testing.assert_close(h[:, units], h_init[:, units], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h[:, keep], h_trained[:, keep], rtol=0, atol=0)
    if form != "orthogonal-free":
        m(x), trained(x)  # the legacy weight_norm computes .weight in its forward pre-hook
        w2 = m[2].weight  # the computed weight: columns of the reset units 0, the others unchanged
        assert torch.all(w2[:, units].abs() < 1e-7)
        torch.testing.assert_close(w2[:, keep], trained[2].weight[:, keep], rtol=1e-6, atol=1e-7)


def test_an_outgoing_parametrization_other_than_weight_norm_is_refused_before_any_change():
    m = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))

    class Twice(nn.Module):
        def forward(self, w):
            return 2.0 * w
    parametrize.register_parametrization(m[2], "weight", Twice())
    I.init_(m, seed=0)
    _bump(m)
    before = copy.deepcopy(m.state_dict())
    with pytest.raises(ValueError, match="Invalid outgoing value: '2' computes its weight with a parametrization"):
        I.reset_units_(m, "0", [1], outgoing="2")
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_a_head_tied_to_an_embedding_resets_through_its_alias():
    m = TiedLM()
    init, trained = _fresh_and_trained(m)
    I.reset_units_(m, "head", [2, 7])
    assert torch.equal(m.head.weight[[2, 7]], init.emb.weight[[2, 7]])  # the shared rows, recomputed as emb.weight
    assert m.emb.weight is m.head.weight and torch.equal(m.emb.weight[3], trained.emb.weight[3])


def test_shrink_perturb_takes_a_tied_parameter_under_its_alias():
    m = TiedLM()
    I.init_(m, seed=1)
    before = m.emb.weight.detach().clone()
    I.shrink_perturb_(m, shrink=0.5, perturb=0.0, step=0, include=["head.weight"])
    torch.testing.assert_close(m.emb.weight, 0.5 * before, rtol=0, atol=0)
