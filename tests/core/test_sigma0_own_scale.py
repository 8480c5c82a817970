"""sigma0="match": the anchor at the tensor's own scale, case by case (the sigma0 module doc)."""
import math

import pytest
import torch
from torch import nn

import syre
from syre.select import collect
from syre.sigma0 import UNIT_SIGMA0, match_scale, resolve_sigma0_of


def _rms(t):
    return float(t.detach().double().square().mean().sqrt())


def _sigma0s(s):
    return {r["name"]: r["sigma0"] for r in s.coverage() if r["covered"]}


def _attach(model, **kw):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)
    return opt, syre.attach(opt, model, **kw)


class ZeroProj(nn.Module):
    """A block whose output projection is zero-initialised (as some transformer inits do), with a bias."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(24, 48)
        self.proj = nn.Linear(48, 24)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.bias.zero_()
        self.gain = nn.Parameter(torch.ones(24))

    def forward(self, x):
        return self.proj(torch.relu(self.up(x))) * self.gain


def test_each_case_of_match_has_its_documented_value():
    torch.manual_seed(0)
    m = ZeroProj()
    _, s = _attach(m, sigma0="match:0.5")
    got = _sigma0s(s)
    assert got["up.weight"] == pytest.approx(0.5 * _rms(m.up.weight), rel=1e-12)
    assert got["up.bias"] == pytest.approx(0.5 * _rms(m.up.weight), rel=1e-12)  # a bias: its layer's weight's RMS
    # a zero-initialised weight has no scale of its own: X x the LeCun std of its fans (fan-in 48), and its bias too
    assert got["proj.weight"] == pytest.approx(0.5 / math.sqrt(48), rel=1e-12)
    assert got["proj.bias"] == pytest.approx(0.5 / math.sqrt(48), rel=1e-12)
    assert got["gain"] == pytest.approx(0.5 * UNIT_SIGMA0)  # no fan-in: the 1-D rule
    # the fallback is exactly what "lecun:X" gives that tensor
    lecun = {i.name: resolve_sigma0_of("lecun:0.5", i) for i in collect(m).values()}
    assert got["proj.weight"] == lecun["proj.weight"]


def test_a_tied_tensor_has_one_sigma0_under_every_name():
    torch.manual_seed(0)
    emb = nn.Embedding(30, 8)
    head = nn.Linear(8, 30, bias=False)
    head.weight = emb.weight
    with torch.no_grad():
        emb.weight.normal_(0.0, 0.02)
    m = nn.ModuleDict({"emb": emb, "head": head})
    _, s = _attach(m, sigma0="match")
    rows = [r for r in s.coverage() if r["covered"]]
    assert [r["name"] for r in rows] == ["emb.weight"]  # one parameter, one anchor
    assert rows[0]["sigma0"] == pytest.approx(_rms(emb.weight), rel=1e-12)
    assert s.anchor("emb.weight").theta0.std().item() == pytest.approx(_rms(emb.weight), rel=0.05)


def test_a_lazy_module_is_matched_when_first_covered():
    torch.manual_seed(0)
    m = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 4))
    opt, s = _attach(m, sigma0="match")
    assert "0.weight" not in _sigma0s(s)  # not materialised: not covered yet
    m(torch.randn(5, 12)).sum().backward()  # materialises 0.weight (12 inputs)
    with torch.no_grad():
        m[0].weight.mul_(3.0)  # the values when first covered (the step's pre-hook) are what counts
    want = _rms(m[0].weight)
    opt.step()
    got = _sigma0s(s)
    assert got["0.weight"] == pytest.approx(want, rel=1e-12)
    assert got["0.bias"] == got["0.weight"]


def test_a_parameter_covered_after_attach_is_matched_then_and_kept():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    m[1].weight.requires_grad_(False)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)  # holds the frozen weight too
    s = syre.attach(opt, m, sigma0="match")
    assert "1.weight" not in _sigma0s(s)
    with torch.no_grad():
        m[1].weight.mul_(7.0)
    m[1].weight.requires_grad_(True)
    want = _rms(m[1].weight)
    m(torch.randn(3, 10)).sum().backward()
    opt.step()
    assert _sigma0s(s)["1.weight"] == pytest.approx(want, rel=1e-12)
    with torch.no_grad():
        m[1].weight.mul_(0.1)
    opt.step()
    assert _sigma0s(s)["1.weight"] == pytest.approx(want, rel=1e-12)  # resolved once


def test_attach_on_a_pretrained_model_matches_the_pretrained_scale():
    torch.manual_seed(0)
    m = nn.Linear(64, 64)
    with torch.no_grad():
        m.weight.mul_(5.0)  # "trained" away from its init scale
    _, s = _attach(m, sigma0="match")
    assert _sigma0s(s)["weight"] == pytest.approx(_rms(m.weight), rel=1e-12)
    _, lecun = _attach(nn.Linear(64, 64), sigma0="lecun")
    assert _sigma0s(lecun)["weight"] == pytest.approx(1 / 8)


def test_a_resumed_run_keeps_its_saved_sigma0s_whatever_the_spec_now():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 8))
    with torch.no_grad():
        m[0].weight.normal_(0.0, 0.02)
    opt, s = _attach(m, sigma0="lecun", seed=3)
    saved = s.state_dict()
    before = _sigma0s(s)
    assert before["0.weight"] == pytest.approx(1.0)  # lecun: an embedding's fan-in is 1
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2.0)  # trained since
    opt2 = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
    s2 = syre.attach(opt2, m, sigma0="match", seed=3)
    assert _sigma0s(s2)["0.weight"] == pytest.approx(2 * 0.02, rel=0.2)
    s2.load_state_dict(saved)
    assert _sigma0s(s2) == before
    assert torch.equal(s2.anchor("0.weight").theta0, s.anchor("0.weight").theta0)


@pytest.mark.parametrize("target", ["init", "pretrained"])
def test_under_a_target_sigma0_is_the_targets_rms_whatever_the_spec(target):
    torch.manual_seed(0)
    m = nn.Linear(32, 16)
    if target == "init":
        syre.init_(m, seed=1, scheme="lecun:0.1")
    else:
        with torch.no_grad():
            m.weight.mul_(0.1)
    sizes = []
    for spec in ("lecun", "match", 0.5):
        _, s = _attach(m, sigma0=spec, target=target, seed=1)
        sizes.append(_sigma0s(s))
        s.remove()
    assert sizes[0] == sizes[1] == sizes[2]
    assert sizes[0]["weight"] == pytest.approx(_rms(m.weight), rel=1e-6)  # the anchor is the target itself


def test_match_scale_of_a_layer_with_no_inputs_is_the_no_fan_in_rule():
    m = nn.Linear(0, 4)
    assert match_scale(m.weight, m, "weight") == UNIT_SIGMA0
    assert match_scale(m.bias, m, "bias") == UNIT_SIGMA0


def test_the_jax_port_matches_torch_case_by_case():
    pytest.importorskip("jax")
    np = pytest.importorskip("numpy")
    from syre import optax as sx

    g = np.random.default_rng(0)
    params = {"up": {"kernel": g.normal(0, 0.02, (24, 48)).astype(np.float32), "bias": np.zeros(48, np.float32)},
              "proj": {"kernel": np.zeros((48, 24), np.float32), "bias": np.zeros(24, np.float32)},
              "empty": {"kernel": np.zeros((0, 4), np.float32), "bias": np.zeros(4, np.float32)}}
    table = sx.sigma0s(params, "match:0.5")
    up = float(np.sqrt(np.mean(params["up"]["kernel"].astype(np.float64) ** 2)))
    assert table["up.kernel"] == pytest.approx(0.5 * up) and table["up.bias"] == pytest.approx(0.5 * up)
    # a zero kernel (JAX layout (in, out): 48 inputs): the LeCun std of its fans, as ZeroProj's proj in torch
    assert table["proj.kernel"] == table["proj.bias"] == pytest.approx(0.5 / math.sqrt(48))
    assert table["empty.kernel"] == table["empty.bias"] == pytest.approx(0.5 * UNIT_SIGMA0)  # no inputs
    torch_proj = nn.Linear(48, 24)
    with torch.no_grad():
        torch_proj.weight.zero_()
    assert match_scale(torch_proj.weight, torch_proj, "weight") == pytest.approx(1 / math.sqrt(48))
