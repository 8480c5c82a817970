import copy

import numpy as np
import pytest
import torch
from torch import nn

import syre
from small_models import batches, make_mlp
from syre import reference as ref
from syre.optim import GROUP_KEY

OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.0),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01),
    "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=0.05),
}


class SignSGD(torch.optim.Optimizer):
    """An optimizer class syre has never seen."""

    def __init__(self, params, lr=0.01):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-g["lr"])


OPTIMIZERS["never_seen"] = lambda ps: SignSGD(ps, lr=0.01)


def loss_of(model, x, y):
    return ((model(x) - y) ** 2).mean()


def train(model, opt, data, sched=None, extra_loss=None):
    for x, y in data:
        opt.zero_grad()
        loss = loss_of(model, x, y)
        if extra_loss is not None:
            loss = loss + extra_loss()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return model


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_step_is_reference_decay_then_the_plain_optimizer(name):
    """For any optimizer: syre's step == (p - lr*gamma*D*(p - theta0) in float64) then the plain step."""
    torch.manual_seed(0)
    gamma = 0.3
    m_syre = make_mlp(dtype=torch.float64)
    m_plain = copy.deepcopy(m_syre)
    o_syre, o_plain = OPTIMIZERS[name](m_syre.parameters()), OPTIMIZERS[name](m_plain.parameters())
    s = syre.attach(o_syre, m_syre, gamma=gamma, sigma0=0.2, d_spread=0.3, seed=4)
    lr = o_plain.param_groups[0]["lr"]
    for x, y in batches(5, dtype=torch.float64):
        for m, o in ((m_syre, o_syre), (m_plain, o_plain)):
            o.zero_grad()
            loss_of(m, x, y).backward()
        with torch.no_grad():
            for pname, p in m_plain.named_parameters():
                a = s.anchor(pname)
                p.copy_(torch.from_numpy(ref.decay(p.numpy(), a.theta0.numpy(), a.d.numpy(), lr, gamma)))
        o_syre.step()
        o_plain.step()
        for (_, p1), (_, p2) in zip(m_syre.named_parameters(), m_plain.named_parameters()):
            torch.testing.assert_close(p1, p2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_gamma_zero_is_bitwise_the_plain_optimizer(name):
    m1 = make_mlp()
    m2 = copy.deepcopy(m1)
    o1, o2 = OPTIMIZERS[name](m1.parameters()), OPTIMIZERS[name](m2.parameters())
    syre.attach(o1, m1, gamma=0.0, sigma0=0.5, d_spread=0.5)
    train(m1, o1, batches(20))
    train(m2, o2, batches(20))
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    # syre writes nothing into the optimizer's per-parameter state
    s1, s2 = o1.state_dict()["state"], o2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        assert s1[k].keys() == s2[k].keys()


@pytest.mark.parametrize("foreach", [False, True])
def test_zero_anchor_is_bitwise_adamw_weight_decay(foreach):
    """sigma0 = 0, d_spread = 0: Adam + syre(gamma) is bitwise AdamW(weight_decay=gamma)."""
    m1 = make_mlp()
    m2 = copy.deepcopy(m1)
    m3 = copy.deepcopy(m1)
    o1 = torch.optim.Adam(m1.parameters(), lr=0.01, foreach=foreach)
    syre.attach(o1, m1, gamma=0.1, sigma0=0.0, d_spread=0.0, foreach=foreach)
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.01, weight_decay=0.1, foreach=foreach)
    o3 = torch.optim.AdamW(m3.parameters(), lr=0.01, weight_decay=0.1, foreach=foreach)
    syre.attach(o3, m3, sigma0=0.0, d_spread=0.0, foreach=foreach)  # takes over weight_decay=0.1
    for m, o in ((m1, o1), (m2, o2), (m3, o3)):
        train(m, o, batches(30))
    for p1, p2, p3 in zip(m1.parameters(), m2.parameters(), m3.parameters()):
        assert torch.equal(p1, p2) and torch.equal(p3, p2)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_lr_times_gamma_one_lands_exactly_on_theta0(opt):
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.5) if opt == "sgd" else torch.optim.Adam(m.parameters(), lr=0.5)
    s = syre.attach(o, m, gamma=2.0, sigma0=0.3, d_spread=0.0)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    o.step()
    for name, p in m.named_parameters():
        assert torch.equal(p.detach(), s.anchor(name).theta0)


def test_theta0_is_a_fixed_point():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    s = syre.attach(o, m, gamma=0.5, sigma0=0.3, d_spread=0.4)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(s.anchor(name).theta0)
            p.grad = torch.zeros_like(p)
    o.step()
    for name, p in m.named_parameters():
        assert torch.equal(p.detach(), s.anchor(name).theta0)


def test_schedulers_apply_to_the_decay():
    m = make_mlp(dtype=torch.float64)
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5)
    s = syre.attach(o, m, gamma=0.2, sigma0=0.1)
    p = m[0].weight
    a = s.anchor("0.weight")
    for step in range(3):
        lr = o.param_groups[0]["lr"]
        p.grad = torch.zeros_like(p)
        for q in m.parameters():
            if q is not p:
                q.grad = None
        before = p.detach().numpy().copy()
        o.step()
        sched.step()
        np.testing.assert_allclose(p.detach().numpy(), ref.decay(before, a.theta0.numpy(), a.d.numpy(), lr, 0.2), rtol=1e-13)


def test_decoupled_equals_coupled_penalty_for_plain_sgd_with_factor_two():
    """attach(gamma=2g) and Penalty(gamma=g) give the same SGD trajectory (grad of g||x||^2 is 2gx)."""
    m1 = make_mlp(dtype=torch.float64)
    m2 = copy.deepcopy(m1)
    o1, o2 = torch.optim.SGD(m1.parameters(), lr=0.05), torch.optim.SGD(m2.parameters(), lr=0.05)
    syre.attach(o1, m1, gamma=2 * 0.3, sigma0=0.2, d_spread=0.2, seed=3)
    pen = syre.Penalty(m2, gamma=0.3, sigma0=0.2, d_spread=0.2, seed=3)
    train(m1, o1, batches(50, dtype=torch.float64))
    train(m2, o2, batches(50, dtype=torch.float64), extra_loss=pen)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=1e-10)
    # and in float32, to 1e-6
    m1, m2 = make_mlp(), make_mlp()
    o1, o2 = torch.optim.SGD(m1.parameters(), lr=0.05), torch.optim.SGD(m2.parameters(), lr=0.05)
    syre.attach(o1, m1, gamma=0.6, sigma0=0.2, d_spread=0.2)
    pen = syre.Penalty(m2, gamma=0.3, sigma0=0.2, d_spread=0.2)
    train(m1, o1, batches(50))
    train(m2, o2, batches(50), extra_loss=pen)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("d_spread", [0.0, 0.3])
def test_stored_and_seeded_modes_are_identical(d_spread):
    m1 = make_mlp()
    m2 = copy.deepcopy(m1)
    o1 = torch.optim.AdamW(m1.parameters(), lr=0.01, weight_decay=0.0)
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.01, weight_decay=0.0)
    s1 = syre.attach(o1, m1, gamma=0.5, sigma0=0.1, d_spread=d_spread, mode="stored")
    s2 = syre.attach(o2, m2, gamma=0.5, sigma0=0.1, d_spread=d_spread, mode="seeded")
    train(m1, o1, batches(20))
    train(m2, o2, batches(20))
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert s2.anchor_nbytes() == 0
    assert s1.anchor_nbytes() == sum(p.numel() for p in m1.parameters()) * 4 * (2 if d_spread else 1)


def test_params_without_grad_and_frozen_params_are_left_alone():
    m = make_mlp()
    m[2].bias.requires_grad_(False)
    o = torch.optim.SGD([p for p in m.parameters()], lr=0.1)
    s = syre.attach(o, m, gamma=0.5, sigma0=0.1)
    frozen = m[2].bias.detach().clone()
    no_grad = m[2].weight.detach().clone()
    m[0].weight.grad = torch.zeros_like(m[0].weight)
    m[0].bias.grad = torch.zeros_like(m[0].bias)
    o.step()
    assert torch.equal(m[2].bias, frozen) and torch.equal(m[2].weight, no_grad)
    assert not torch.equal(m[0].weight.detach(), make_mlp()[0].weight.detach())
    row = {r["name"]: r for r in s.coverage()}
    assert row["2.bias"]["covered"] is False and row["2.bias"]["reason"] == "frozen"


def test_gradscaler_skipped_step_skips_the_decay():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    syre.attach(o, m, gamma=0.5, sigma0=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    before = [p.detach().clone() for p in m.parameters()]
    x, y = batches(1)[0]
    scaler.scale(loss_of(m, x, y) * float("inf")).backward()
    scaler.step(o)
    scaler.update()
    for p, b in zip(m.parameters(), before):
        assert torch.equal(p, b)
    o.zero_grad()
    scaler.scale(loss_of(m, x, y)).backward()
    scaler.step(o)
    assert any(not torch.equal(p, b) for p, b in zip(m.parameters(), before))


def test_tied_parameters_are_decayed_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(4, 4, bias=False)
            self.dec = nn.Linear(4, 4, bias=False)
            self.dec.weight = self.enc.weight

        def forward(self, x):
            return self.dec(torch.relu(self.enc(x)))

    m = Tied()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    s = syre.attach(o, m, gamma=0.5, sigma0=0.2, d_spread=0.0)
    assert s.names() == ["enc.weight"]
    w = m.enc.weight.detach().clone().double()
    m.enc.weight.grad = torch.zeros_like(m.enc.weight)
    o.step()
    expected = w - 0.05 * (w - s.anchor("enc.weight").theta0.double())
    torch.testing.assert_close(m.enc.weight.detach().double(), expected, rtol=1e-6, atol=1e-7)


def test_selection_rules_and_per_group_gamma():
    m = make_mlp(norm=True)
    groups = [
        {"params": [m[0].weight, m[0].bias, m[2].weight, m[2].bias]},
        {"params": [m[3].weight, m[3].bias], GROUP_KEY: 0.0},
    ]
    o = torch.optim.SGD(groups, lr=0.1)
    s = syre.attach(o, m, gamma=0.5, exclude=syre.NORM_TYPES)
    assert s.names() == ["0.weight", "0.bias", "3.weight", "3.bias"]
    rows = {r["name"]: r for r in s.coverage()}
    assert rows["2.weight"]["reason"] == "excluded"
    assert rows["3.weight"]["gamma"] == 0.0 and rows["0.weight"]["gamma"] == 0.5
    assert rows["0.weight"]["strength"] == pytest.approx(0.5 * rows["0.weight"]["sigma0"])
    assert syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1, exclude="*.bias").names() == [
        "0.weight", "2.weight", "3.weight"]
    assert syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1, include=[nn.Linear],
                       exclude=lambda n, p: n.startswith("3.")).names() == ["0.weight", "0.bias"]
    text = s.summary()
    assert "2.weight" in text and "no (excluded)" in text and "gamma*sigma0" in text
    # group 1 has syre_gamma = 0: its parameters do not move on a zero gradient
    before = m[3].weight.detach().clone()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    o.step()
    assert torch.equal(m[3].weight, before)


def test_parameters_must_match_between_model_and_optimizer():
    m = make_mlp()
    stranger = nn.Parameter(torch.zeros(7, 5))
    with pytest.raises(ValueError, match=r"param group 0 \(shape \(7, 5\)"):
        syre.attach(torch.optim.SGD(list(m.parameters()) + [stranger], lr=0.1), m, gamma=0.1)
    with pytest.raises(ValueError, match="'2.weight', '2.bias'"):
        syre.attach(torch.optim.SGD(m[0].parameters(), lr=0.1), m, gamma=0.1)
    s = syre.attach(torch.optim.SGD(m[0].parameters(), lr=0.1), m, gamma=0.1, strict=False)
    assert {r["name"] for r in s.coverage() if r["reason"] == "not in optimizer"} == {"2.weight", "2.bias"}


def test_add_param_group_gets_anchors():
    m = make_mlp()
    o = torch.optim.SGD(m[0].parameters(), lr=0.1)
    s = syre.attach(o, m, gamma=0.5, sigma0=0.2, strict=False)
    o.add_param_group({"params": list(m[2].parameters())})
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    before = m[2].weight.detach().clone()
    o.step()
    assert "2.weight" in s.names()
    a = s.anchor("2.weight")
    torch.testing.assert_close(m[2].weight.detach(), before - 0.05 * a.d * (before - a.theta0))


def test_weight_decay_takeover():
    m = make_mlp()
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.05)
    s = syre.attach(o, m)
    assert o.param_groups[0]["weight_decay"] == 0.0 and o.param_groups[0][GROUP_KEY] == 0.05
    assert s.group_gamma(0) == 0.05
    s.remove()
    assert o.param_groups[0]["weight_decay"] == 0.05 and GROUP_KEY not in o.param_groups[0]
    # plain SGD: coupled == decoupled, taken over
    o = torch.optim.SGD(m.parameters(), lr=0.01, weight_decay=0.05)
    assert syre.attach(o, m).group_gamma(0) == 0.05
    # coupled optimizers are refused with the reason and the remedy
    for opt in (torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.05),
                torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=0.05)):
        before = copy.deepcopy(opt.param_groups[0])
        with pytest.raises(ValueError, match="coupled.*gamma=..."):
            syre.attach(opt, m)
        assert opt.param_groups[0]["weight_decay"] == before["weight_decay"] and GROUP_KEY not in opt.param_groups[0]
    with pytest.raises(ValueError, match="has none; pass gamma"):
        syre.attach(SignSGD(m.parameters()), m)
    with pytest.warns(UserWarning, match="still applies weight_decay=0.05"):
        syre.attach(torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.05), m, gamma=0.1)


def test_remove_detaches_the_hooks():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    s = syre.attach(o, m, gamma=0.5, sigma0=0.2)
    s.remove()
    before = [p.detach().clone() for p in m.parameters()]
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    o.step()
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))
    assert "syre" not in o.state_dict()


def test_wrapped_models_share_names_and_anchors():
    m = make_mlp()
    dp = nn.DataParallel(m)
    s1 = syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1)
    s2 = syre.attach(torch.optim.SGD(dp.parameters(), lr=0.1), dp, gamma=0.1)
    assert s1.names() == s2.names() == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert torch.equal(s1.anchor("2.weight").theta0, s2.anchor("2.weight").theta0)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(gamma=-0.1), ValueError, "gamma"),
        (dict(gamma=float("nan")), ValueError, "gamma"),
        (dict(gamma="0.1"), TypeError, "gamma"),
        (dict(gamma=0.1, sigma0="he"), ValueError, "sigma0"),
        (dict(gamma=0.1, d_spread=1.5), ValueError, "d_spread"),
        (dict(gamma=0.1, seed=-3), ValueError, "seed"),
        (dict(gamma=0.1, mode="lazy"), ValueError, "mode"),
        (dict(gamma=0.1, exclude=3), TypeError, "exclude"),
        (dict(gamma=0.1, include=[int]), TypeError, "include"),
    ],
)
def test_attach_errors_change_nothing(kwargs, exc, match):
    m = make_mlp()
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.05)
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in o.param_groups])
    with pytest.raises(exc, match=match):
        syre.attach(o, m, **kwargs)
    assert [{k: v for k, v in g.items() if k != "params"} for g in o.param_groups] == groups_before
    assert not o._optimizer_step_pre_hooks


def test_group_without_lr_is_an_error():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    del o.param_groups[0]["lr"]
    with pytest.raises(ValueError, match="no 'lr'"):
        syre.attach(o, m, gamma=0.1)


def test_reference_and_fast_paths_agree():
    """foreach and for-loop kernels agree bitwise; both match the float64 reference."""
    from syre import functional as F

    g = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (13,), (3, 4, 5)]
    for theta_on, xi_on in ((False, False), (True, False), (True, True), (False, True)):
        ps = [torch.randn(s, generator=g) for s in shapes]
        ts = [torch.randn(s, generator=g) if theta_on else None for s in shapes]
        xs = [0.2 * torch.rand(s, generator=g) - 0.1 if xi_on else None for s in shapes]
        a = [p.clone() for p in ps]
        b = [p.clone() for p in ps]
        F.decay_(a, ts, xs, weight=0.3, foreach=True)
        F.decay_(b, ts, xs, weight=0.3, foreach=False)
        for pa, pb, p0, t, x in zip(a, b, ps, ts, xs):
            assert torch.equal(pa, pb)
            theta0 = np.zeros(p0.shape) if t is None else t.double().numpy()
            d = np.ones(p0.shape) if x is None else 1 + x.double().numpy()
            np.testing.assert_allclose(pa.numpy(), ref.decay(p0.numpy(), theta0, d, 1.0, 0.3), rtol=2e-6, atol=1e-6)


def test_low_precision_parameters_decay_in_fp32():
    m = make_mlp().to(torch.bfloat16)
    o = torch.optim.SGD(m.parameters(), lr=0.5)
    s = syre.attach(o, m, gamma=1.0, sigma0=0.5, d_spread=0.0)
    assert s.anchor("0.weight").theta0.dtype == torch.float32
    w = m[0].weight.detach().float()
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    o.step()
    expected = (w + 0.5 * (s.anchor("0.weight").theta0 - w)).to(torch.bfloat16)
    assert torch.equal(m[0].weight.detach(), expected)
