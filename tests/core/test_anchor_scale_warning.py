"""AnchorScaleWarning: an anchor over 10x or under 1/10 of its weight tensor's RMS when first covered is warned
once, naming the tensors and the ratio; where the ratio means nothing, nothing is said. And what summary() says
it measured, and when."""
import re
import warnings

import pytest
import torch
from torch import nn

import syre
from syre.core._checks import PROBE_STEPS
from syre.forms._scale_check import ANCHOR_FAR, ANCHOR_FAR_SHOWN


class NanoGPTish(nn.Module):
    """nanoGPT's init: N(0, 0.02) for embeddings and matrices, a LayerNorm."""

    def __init__(self, n_blocks=1):
        super().__init__()
        self.wte = nn.Embedding(64, 32)
        self.ln = nn.LayerNorm(32)
        self.blocks = nn.ModuleList(nn.Linear(32, 32) for _ in range(n_blocks))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in [self.wte.weight] + [b.weight for b in self.blocks]:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            for b in self.blocks:
                b.bias.zero_()

    def forward(self, x):
        h = self.ln(self.wte(x))
        for b in self.blocks:
            h = h + b(h)
        return h


def _far(record):
    return [w for w in record if issubclass(w.category, syre.AnchorScaleWarning)]


def _attach(model, **kw):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s = syre.attach(opt, model, **kw)
    return opt, s, _far(rec)


def test_lecun_on_a_nanogpt_init_is_warned_once_naming_the_tensors_and_ratios():
    m = NanoGPTish()
    opt, s, far = _attach(m, sigma0="lecun")
    assert len(far) == 1
    msg = str(far[0].message)
    # the embedding: lecun gives 1 (fan-in 1) against RMS ~0.02: ~50x; the linear: 1/sqrt(32) / 0.02 ~ 8.8x (not far)
    ratio = float(re.search(r"'wte.weight' \(([0-9.]+)x\)", msg).group(1))
    assert ratio == pytest.approx(1.0 / float(m.wte.weight.detach().double().square().mean().sqrt()), rel=1e-2)
    assert 40 < ratio < 60
    assert "blocks.0.weight" not in msg and "ln.weight" not in msg  # within 10x; a norm gain is not a weight tensor
    assert "sigma0='match'" in msg and "1 weight tensor(s)" in msg
    with warnings.catch_warnings(record=True) as rec:  # once: steps and later plans say nothing more
        warnings.simplefilter("always")
        for _ in range(4):
            m(torch.randint(0, 64, (2, 5))).sum().backward()
            opt.step()
            opt.zero_grad()
    assert not _far(rec)


def test_match_and_default_torch_inits_are_not_warned():
    assert not _attach(NanoGPTish(), sigma0="match")[2]
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))
    for spec in ("lecun", "kaiming", "xavier", "match"):
        assert not _attach(mlp, sigma0=spec)[2], spec  # torch's init: RMS 1/sqrt(3 fan_in), lecun is 1.7x
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3))
    assert not _attach(conv, sigma0="lecun")[2]


def test_an_anchor_far_below_its_weights_is_warned_too():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))
    far = _attach(mlp, sigma0=1e-4)[2]
    assert len(far) == 1 and "'0.weight'" in str(far[0].message) and "'1.weight'" in str(far[0].message)
    assert "2 weight tensor(s)" in str(far[0].message)
    assert not _attach(mlp, sigma0="match:0.2")[2]  # 0.2x is within the band
    assert _attach(mlp, sigma0=f"match:{0.5 / ANCHOR_FAR}")[2]  # 0.05x is not, whatever the spec


def test_many_far_tensors_are_named_up_to_a_count():
    m = NanoGPTish(n_blocks=8)
    far = _attach(m, sigma0=5.0)[2]
    msg = str(far[0].message)
    assert "9 weight tensor(s)" in msg
    assert len(re.findall(r"'[a-z0-9.]+weight' \(", msg)) == ANCHOR_FAR_SHOWN
    assert f"and {9 - ANCHOR_FAR_SHOWN} more" in msg


def test_where_the_ratio_means_nothing_nothing_is_said():
    m = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    with torch.no_grad():
        m[0].weight.zero_()  # RMS 0: a zero-initialised weight has no scale to compare with
        m[1].weight.normal_(0.0, 0.5)
    assert not _attach(m, sigma0=0.5)[2]
    assert not _attach(NanoGPTish(), sigma0=0.0)[2]  # sigma0 0 is weight decay
    for target in ("pretrained", "init"):
        model = NanoGPTish()
        if target == "init":
            syre.init_(model, seed=0, scheme="normal:0.02")
        assert not _attach(model, sigma0="lecun", target=target)[2], target  # the anchor is the weights


def test_a_lazy_module_is_checked_when_first_covered():
    torch.manual_seed(0)
    m = nn.Sequential(nn.LazyLinear(16), nn.Linear(16, 4))
    opt, s, far = _attach(m, sigma0=0.001)
    assert len(far) == 1 and "'1.weight'" in str(far[0].message)  # warned once already: the lazy one adds nothing
    m2 = nn.Sequential(nn.LazyLinear(16), nn.Linear(16, 4))
    opt2, s2, far2 = _attach(m2, sigma0="lecun")
    assert not far2
    m2(torch.randn(3, 12)).sum().backward()
    with torch.no_grad():
        m2[0].weight.mul_(1e-3)  # far below its lecun anchor when first covered
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        opt2.step()
    far = _far(rec)
    assert len(far) == 1 and "'0.weight'" in str(far[0].message) and "'1.weight'" not in str(far[0].message)


def test_penalty_and_reparametrize_warn_too():
    with pytest.warns(syre.AnchorScaleWarning, match="syre.Penalty: sigma0='lecun'.*'wte.weight'"):
        syre.Penalty(NanoGPTish(), gamma=0.1, sigma0="lecun")
    with pytest.warns(syre.AnchorScaleWarning, match="syre.reparametrize: sigma0='lecun'.*'wte.weight'"):
        syre.reparametrize(NanoGPTish(), sigma0="lecun")
    with warnings.catch_warnings():
        warnings.simplefilter("error", syre.AnchorScaleWarning)
        syre.Penalty(NanoGPTish(), gamma=0.1, sigma0="match")
        syre.reparametrize(NanoGPTish(), sigma0="match")


def test_summary_says_what_it_measured_and_when():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=1.0)
    s = syre.attach(opt, m)
    assert "measured over" not in s.summary()  # nothing measured yet: the verdict says so
    for step in range(PROBE_STEPS + 4):
        m(torch.randn(4, 8)).sum().backward()
        opt.step()
        opt.zero_grad()
        if step == PROBE_STEPS - 1:
            right_after = s.summary()
    assert f"measured over optimizer steps 1-{PROBE_STEPS} after attach (this summary: right after them)" in right_after
    text = s.summary()
    assert f"(this summary: 4 step(s) later, at step {PROBE_STEPS + 4})" in text
    assert "not whether it improves the task metric" in text


def test_match_within_the_band_reads_no_weights_a_second_time(monkeypatch):
    import syre.forms._scale_check as C

    calls = []
    real = C.rms
    monkeypatch.setattr(C, "rms", lambda t: calls.append(1) or real(t))
    assert not _attach(NanoGPTish(), sigma0="match")[2] and not calls  # each ratio is 1 by construction
    assert _attach(NanoGPTish(), sigma0="match:20")[2] and calls  # out of the band: measured and warned
