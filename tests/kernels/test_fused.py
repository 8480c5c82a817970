"""syre.AdamW / syre.SGD: the decay inside the optimizer's own pass, against the equations
(``syre._reference``, float64) over many steps, with schedulers, param groups, checkpoints and
add_param_group; the fused kernel is really used; without syre they are torch's optimizers."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

import syre
from syre import fused as FU, reference as ref

#: Stated agreement of one fused fp32 step with the float64 equations applied to the same
#: (p, grad, m, v): |difference| <= ATOL + RTOL |p|, at every one of 20 steps.
RTOL, ATOL = 1e-6, 1e-7
#: ... and of a whole 20-step run with "decay, then torch's AdamW" (the separate pass): the two
#: trajectories part by rounding only, amplified where Adam divides by a small sqrt(v).
TRAJ_RTOL, TRAJ_ATOL = 1e-4, 1e-5


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(300, 256)  # 76,800 weights: fused
        self.norm = nn.LayerNorm(256)
        self.b = nn.Linear(256, 8)  # small: the separate pass

    def forward(self, x):
        return self.b(torch.tanh(self.norm(self.a(x))))


def _net(seed=0):
    torch.manual_seed(seed)
    return Net()


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 300, generator=g), torch.randn(16, 8, generator=g)) for _ in range(n)]


def _train(model, opt, data, sched=None):
    for x, y in data:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def _groups(model, lr):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.02, "lr": lr * 0.5}]


class Calls(list):
    """The sizes of the tensors the fused kernel took, one entry per tensor per step; ``route`` says which kernel."""

    def __init__(self, route):
        super().__init__()
        self.route = route


@pytest.fixture(params=["native", "compiled"])
def spy(request, monkeypatch):
    """Each fused route in turn: the native C kernels (one call per group, every size), and -- with those off --
    the compiled kernel (one call per tensor of at least FUSED_MIN elements)."""
    calls = Calls(request.param)
    if request.param == "native":
        if FU._native.lib() is None:
            pytest.skip(f"the native kernels are off here: {FU._native.disable_reason()}")
        for name in ("adamw", "sgd"):
            orig_native = getattr(FU._native, name)

            def counting_native(ps, *rest, _orig=orig_native):
                calls.extend(p.numel() for p in ps)
                return _orig(ps, *rest)

            monkeypatch.setattr(FU._native, name, counting_native)
        return calls
    monkeypatch.setattr(FU._native, "on", lambda: False)
    orig = FU._kernel

    def counting(lazy, p, ar):
        k = orig(lazy, p, ar)
        if k is None:
            pytest.skip("torch.compile is not available here; syre.AdamW takes the separate pass")
        return lambda *args: (calls.append(args[0].numel()), k(*args))

    monkeypatch.setattr(FU, "_kernel", counting)
    monkeypatch.setattr(FU, "FOLD_MAX", 0)  # every fused tensor takes the kernel (basic too)
    return calls


@pytest.fixture
def folds(monkeypatch):
    """The sizes of the tensors whose basic decay is folded into torch's fused AdamW, per call (the route where
    the native kernels are off)."""
    monkeypatch.setattr(FU._native, "on", lambda: False)
    calls = []
    orig = FU._folded

    def counting(opt, work, group, todo, params, *rest):
        calls.append(sorted(params[i].numel() for i, _, _ in todo))
        return orig(opt, work, group, todo, params, *rest)

    monkeypatch.setattr(FU, "_folded", counting)
    return calls


def _anchors(s, gi_of):
    return {id(p): s.anchor(n) for n, p in gi_of.items()}


def _train_checked(model, opt, s, data, sched=None, worst=None):
    """Train; before each step snapshot (p, grad, m, v), after it compare with ``ref.adamw_step``."""
    names = {id(p): n for n, p in model.named_parameters()}
    anchors = {n: s.anchor(n) for n in s.names()}
    for x, y in data:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        want = {}
        for gi, group in enumerate(opt.param_groups):
            for p in group["params"]:
                st = opt.state.get(p, {})
                m = st["exp_avg"].double().numpy() if st else np.zeros(p.shape)
                v = st["exp_avg_sq"].double().numpy() if st else np.zeros(p.shape)
                t = int(st["step"]) + 1 if st else 1
                a = anchors[names[id(p)]]
                want[id(p)] = ref.adamw_step(p.detach().double().numpy(), p.grad.double().numpy(), m, v, t,
                                             a.theta0.double().numpy(), a.d.double().numpy(), lr=group["lr"],
                                             gamma=s.group_gamma(gi), weight_decay=group["weight_decay"])[0]
        opt.step()
        if sched is not None:
            sched.step()
        for p in model.parameters():
            got = p.detach().double().numpy()
            np.testing.assert_allclose(got, want[id(p)], rtol=RTOL, atol=ATOL, err_msg=names[id(p)])
            if worst is not None:
                worst.append(float(np.abs(got - want[id(p)]).max()))


@pytest.mark.parametrize("d_spread", [0.0, 0.1])
def test_adamw_fused_matches_the_equations_with_a_schedule_and_groups(spy, d_spread):
    model, data = _net(), _batches(20)
    model0 = copy.deepcopy(model)
    opt = syre.AdamW(_groups(model, 0.01), lr=0.01)
    s = syre.attach(opt, model, d_spread=d_spread, seed=3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + 0.05 * k))
    worst = []
    _train_checked(model, opt, s, data, sched, worst)
    assert spy.count(76800) == len(data)  # the big weight went through the fused kernel at every step
    if spy.route == "native":
        assert sorted(set(spy)) == [8, 256, 2048, 76800]  # and every other tensor, small ones included
    else:
        assert set(spy) == {76800}
        assert FU._ADAMW._direct[(torch.float32, d_spread != 0.0)].__name__ == "call"  # called past dynamo's wrapper
    assert isinstance(opt, torch.optim.AdamW)
    assert max(worst) < 2e-7  # measured 1.1e-7: two fp32 ulps of the largest weights
    # and against the separate pass, over the whole run: torch's AdamW with syre's hook
    hook_model = copy.deepcopy(model0)
    hook_opt = torch.optim.AdamW(_groups(hook_model, 0.01), lr=0.01)
    syre.attach(hook_opt, hook_model, d_spread=d_spread, seed=3)
    _train(hook_model, hook_opt, data, torch.optim.lr_scheduler.LambdaLR(hook_opt, lambda k: 1.0 / (1 + 0.05 * k)))
    for p, q in zip(model.parameters(), hook_model.parameters()):
        torch.testing.assert_close(p, q, rtol=TRAJ_RTOL, atol=TRAJ_ATOL)


def test_adamw_basic_folded_into_torch_fused_adamw_matches_the_equations(folds):
    """Basic syre on tensors below FOLD_MAX: torch's fused AdamW with the weight decay that scales p by
    (1 - w)(1 - lr wd), then p += w (1 - lr wd) theta0; the same bound against the float64 equations,
    with two groups of different weight decay and lr under a schedule, and against the hook's run."""
    model, data = _net(), _batches(20)
    model0 = copy.deepcopy(model)
    opt = syre.AdamW(_groups(model, 0.01), lr=0.01)
    s = syre.attach(opt, model, d_spread=0.0, seed=3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 / (1 + 0.05 * k))
    worst = []
    _train_checked(model, opt, s, data, sched, worst)
    # every covered tensor of both groups, small ones included, at every step: two calls per step
    assert folds[:2] == [[2048, 76800], [8, 256, 256, 256]] and len(folds) == 2 * len(data)
    assert max(worst) < 2e-7
    hook_model = copy.deepcopy(model0)
    hook_opt = torch.optim.AdamW(_groups(hook_model, 0.01), lr=0.01)
    syre.attach(hook_opt, hook_model, d_spread=0.0, seed=3)
    _train(hook_model, hook_opt, data, torch.optim.lr_scheduler.LambdaLR(hook_opt, lambda k: 1.0 / (1 + 0.05 * k)))
    for p, q in zip(model.parameters(), hook_model.parameters()):
        torch.testing.assert_close(p, q, rtol=TRAJ_RTOL, atol=TRAJ_ATOL)


def test_adamw_folded_keeps_the_groups_own_weight_decay(folds):
    """gamma given and the groups' weight_decay kept (decay toward the origin on top, warned): the folded route
    scales p by (1 - lr gamma)(1 - lr wd) and adds lr gamma (1 - lr wd) theta0; the same bound."""
    model, data = _net(), _batches(10)
    opt = syre.AdamW(_groups(model, 0.01), lr=0.01)
    with pytest.warns(syre.DecaySettingWarning):
        s = syre.attach(opt, model, gamma=0.3, d_spread=0.0, seed=4)
        _train_checked(model, opt, s, data)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.02] and len(folds) == 2 * len(data)


def test_adamw_checkpoints_are_torch_adamw_checkpoints_and_resume_bitwise(spy):
    model, data = _net(), _batches(12)
    opt = syre.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(opt, model, seed=5)
    _train(model, opt, data[:6])
    ckpt = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})
    _train(model, opt, data[6:])
    # resumed into a fresh syre.AdamW: bitwise the uninterrupted run
    m2 = _net(9)
    o2 = syre.AdamW(m2.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(o2, m2, seed=5)
    m2.load_state_dict(ckpt["model"])
    o2.load_state_dict(ckpt["opt"])
    _train(m2, o2, data[6:])
    for p, q in zip(model.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    # the optimizer state is torch's AdamW state: a plain AdamW loads it
    plain = torch.optim.AdamW(_net().parameters(), lr=0.01, weight_decay=0.1)
    plain.load_state_dict(syre.plain_state_dict(ckpt["opt"]))
    assert set(plain.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def test_add_param_group_is_fused_from_the_next_step(spy):
    model, data = _net(), _batches(6)
    opt = syre.AdamW(model.b.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(opt, model, strict=False, seed=1)
    _train(model, opt, data[:2])
    assert 76800 not in spy  # only the small tensors of model.b so far
    opt.add_param_group({"params": list(model.a.parameters()) + list(model.norm.parameters()), "weight_decay": 0.1})
    before = model.a.weight.detach().clone()
    _train(model, opt, data[2:])
    assert spy.count(76800) == 4 and not torch.equal(before, model.a.weight)


def test_without_syre_it_is_torch_adamw_bitwise():
    a, b, data = _net(), _net(), _batches(5)
    oa = syre.AdamW(a.parameters(), lr=0.01, weight_decay=0.1)
    ob = torch.optim.AdamW(b.parameters(), lr=0.01, weight_decay=0.1)
    _train(a, oa, data)
    _train(b, ob, data)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("d_spread", [0.0, 0.1])
def test_sgd_momentum_fused_matches_the_equations(spy, d_spread):
    model, data = _net(), _batches(12)
    model0 = copy.deepcopy(model)
    opt = syre.SGD(model.parameters(), lr=0.05, momentum=0.9)
    s = syre.attach(opt, model, gamma=0.2, d_spread=d_spread, seed=2)
    _train(model, opt, data)
    assert spy.count(76800) == len(data) - 1  # the first step has no momentum buffer: the separate pass
    assert len(spy) == (len(data) - 1) * (6 if spy.route == "native" else 1)
    sig = {r["name"]: r["sigma0"] for r in s.coverage()}
    ref_model = copy.deepcopy(model0).double()
    bufs = {}
    anchors = {n: syre.anchor(2, n, p.shape, sigma0=sig[n], d_spread=d_spread, dtype=torch.float64)
               for n, p in ref_model.named_parameters()}
    for x, y in data:
        ref_model.zero_grad()
        nn.functional.mse_loss(ref_model(x.double()), y.double()).backward()
        with torch.no_grad():
            for n, p in ref_model.named_parameters():
                a = anchors[n]
                new, bufs[n] = ref.sgd_momentum_step(p.numpy(), p.grad.numpy(), bufs.get(n), a.theta0.numpy(), a.d.numpy(),
                                                     lr=0.05, gamma=0.2, momentum=0.9)
                p.copy_(torch.from_numpy(new))
    for (n, p), q in zip(model.named_parameters(), ref_model.parameters()):
        np.testing.assert_allclose(p.detach().double().numpy(), q.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=n)


@pytest.mark.parametrize("cls,kw", [(syre.AdamW, dict(lr=0.01, weight_decay=0.1)), (syre.SGD, dict(lr=0.05, momentum=0.9))])
def test_seeded_mode_takes_the_fused_pass_and_equals_stored_bitwise(spy, cls, kw):
    """Stored and seeded give identical parameters (seeded generates each fused tensor's anchor for its kernel)."""
    model, data = _net(), _batches(4)
    m2 = copy.deepcopy(model)
    o1 = cls(model.parameters(), **kw)
    o2 = cls(m2.parameters(), **kw)
    gamma = None if "weight_decay" in kw else 0.2
    syre.attach(o1, model, mode="seeded", gamma=gamma, d_spread=0.1)
    syre.attach(o2, m2, gamma=gamma, d_spread=0.1)
    _train(model, o1, data)
    n = len(spy)
    _train(m2, o2, data)
    assert n and len(spy) == 2 * n  # both modes took the fused kernel as often
    for p, q in zip(model.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_nothing_is_written_onto_the_optimizer():
    """The fused work is asked of the attached Syre at the step; the optimizer keeps torch's attributes only."""
    model, data = _net(), _batches(2)
    opt = syre.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(opt, model)
    before = set(vars(opt))
    _train(model, opt, data)
    assert set(vars(opt)) == before and not [k for k in vars(opt) if "syre" in k]


@pytest.mark.parametrize("d_spread", [0.0, 0.1])
def test_a_parameter_given_a_transposed_storage_mid_run_is_stepped_right(d_spread):
    """``p.data`` replaced by a transposed (non-contiguous) copy after the state exists: torch's fused AdamW would pair
    p with another element's moments (it indexes memory), so syre.AdamW leaves it to torch's logical-index AdamW: the
    run equals torch's AdamW (for-loop) with syre's hook, to the fused route's tolerance."""
    runs = []
    for cls in (syre.AdamW, torch.optim.AdamW):
        model, data = _net(), _batches(8)
        opt = cls(model.parameters(), lr=0.01, weight_decay=0.1)
        syre.attach(opt, model, d_spread=d_spread, seed=2)
        _train(model, opt, data[:4])
        with torch.no_grad():
            w = model.a.weight.data
            model.a.weight.data = w.t().contiguous().t()
        assert not model.a.weight.is_contiguous()
        _train(model, opt, data[4:])
        runs.append([p.detach().clone() for p in model.parameters()])
    for p, q in zip(*runs):
        torch.testing.assert_close(p, q, rtol=TRAJ_RTOL, atol=TRAJ_ATOL)


@pytest.mark.parametrize("cls,torch_cls,kw", [(syre.AdamW, torch.optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
                                              (syre.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9))])
@pytest.mark.parametrize("mode", ["stored", "seeded"])
def test_a_group_of_fp32_and_fp64_parameters_is_stepped_per_dtype(cls, torch_cls, kw, mode):
    """One param group holding fp32 and fp64 parameters: each dtype takes its own kernel call, and the run equals
    torch's optimizer with syre's hook to the fused route's tolerance."""
    torch.manual_seed(0)
    base = nn.ModuleDict({"a": nn.Linear(20, 10), "b": nn.Linear(10, 3).double()})
    gamma = None if "weight_decay" in kw else 0.2
    runs = []
    for c in (cls, torch_cls):
        m = copy.deepcopy(base)
        o = c(m.parameters(), **kw)
        syre.attach(o, m, gamma=gamma, d_spread=0.1, seed=2, mode=mode)
        g = torch.Generator().manual_seed(0)
        for _ in range(5):
            o.zero_grad()
            m["b"](m["a"](torch.randn(8, 20, generator=g)).double()).pow(2).mean().backward()
            o.step()
        runs.append([p.detach().clone() for p in m.parameters()])
    for p, q in zip(*runs):
        torch.testing.assert_close(p, q, rtol=TRAJ_RTOL, atol=TRAJ_ATOL)
