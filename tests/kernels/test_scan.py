"""syre.kernels._scan: the hook's per-step check in one C++ call. It must see every change the Python check sees
(each scenario below, by its code), and a hook that uses it must give, step for step, the parameters of a hook
that checks in Python, through every change a user makes mid-run."""
import os
import shutil

import pytest
import torch
from torch import nn

import syre
from syre.kernels import _native as N, _scan as S

needs_scan = pytest.mark.skipif(N.lib() is None or S.lib(wait=True) is None,
                                reason=f"the step check is off here: {S.disable_reason() or N.disable_reason()}")


def test_the_step_check_builds_wherever_a_cxx_compiler_and_torchs_headers_are():
    if os.environ.get("SYRE_NATIVE", "") in ("0", "false", "no", "off"):
        pytest.skip("SYRE_NATIVE=0")
    headers = os.path.exists(os.path.join(os.path.dirname(torch.__file__), "include", "torch", "csrc", "autograd",
                                          "python_variable.h"))
    has_cxx = any(shutil.which(c) for c in ("c++", "g++", "clang++"))
    assert (S.lib(wait=True) is not None) == (has_cxx and headers), S.disable_reason()


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _steady(model, opt):
    """A Steady over every parameter of ``opt``'s first group, as the hook builds it (one native batch, run once)."""
    ps = list(opt.param_groups[0]["params"])
    for p in ps:
        p.grad = torch.zeros_like(p)
    ts = [torch.zeros_like(p).detach() for p in ps]
    batch = N.Batch(ps, ts, None)
    with torch.no_grad():
        assert batch(0.0)
    return S.Steady(S.lib(), opt, {0: [("native", ps, ts, [None] * len(ps), (batch, "lerp"))]})


class _Sub(nn.Parameter):
    pass


def _swap_class(m, o):
    m[0].weight.__class__ = _Sub


# name: (the change, the check's answer). 1 is "check in Python": a group's params made a tuple is one (the one call
# reads lists only) although the fingerprint is unchanged; every change of the fingerprint is a 1.
CHANGES = {
    "nothing": (lambda m, o: None, 0),
    "the same groups in a new list": (lambda m, o: setattr(o, "param_groups", list(o.param_groups)), 0),
    "a group added": (lambda m, o: o.add_param_group({"params": [nn.Parameter(torch.zeros(2))]}), 1),
    "a parameter appended to a group": (lambda m, o: o.param_groups[0]["params"].append(nn.Parameter(torch.zeros(2))), 1),
    "a parameter replaced in a group": (lambda m, o: o.param_groups[0]["params"].__setitem__(1, nn.Parameter(torch.zeros(8))), 1),
    "a group replaced by an equal copy": (lambda m, o: o.param_groups.__setitem__(0, dict(o.param_groups[0])), 1),
    "a group's params made a tuple": (lambda m, o: o.param_groups[0].__setitem__("params", tuple(o.param_groups[0]["params"])), 1),
    "requires_grad turned off": (lambda m, o: m[2].bias.requires_grad_(False), 1),
    "cast to float64": (lambda m, o: setattr(m[0].weight, "data", m[0].weight.data.double()), 1),
    "cast to bfloat16": (lambda m, o: setattr(m[2].weight, "data", m[2].weight.data.to(torch.bfloat16)), 1),
    "a parameter's Python class": (_swap_class, 1),
    "a gradient set to None": (lambda m, o: setattr(m[2].weight, "grad", None), 2),
    "a storage replaced (same dtype and device)": (lambda m, o: setattr(m[0].weight, "data", m[0].weight.data.clone()), 3),
}


@needs_scan
@pytest.mark.parametrize("name", list(CHANGES))
def test_the_check_sees_each_change_the_python_fingerprint_sees(name):
    from syre.core._plan import fingerprint

    m = _model()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    steady = _steady(m, o)
    before = fingerprint(o)
    change, code = CHANGES[name]
    change(m, o)
    assert steady.same(o) == code
    assert (fingerprint(o) != before) == (code == 1 and name != "a group's params made a tuple")


def _train(steps, change_at, change, use_scan, monkeypatch, ds, dtype=torch.float32):
    """Parameters after each step of SGD + syre (hook path; SGD keeps no state, so the model may be cast), with
    ``change`` made before step ``change_at``."""
    monkeypatch.setattr(S, "lib", S.lib if use_scan else (lambda wait=False: None))
    m = _model(1).to(dtype)
    o = torch.optim.SGD(m.parameters(), lr=0.05, weight_decay=0.2)
    s = syre.attach(o, m, d_spread=ds)
    g = torch.Generator().manual_seed(3)
    out, engaged = [], 0
    for step in range(steps):
        if step == change_at:
            change(m, o)
        x = torch.randn(16, 6, generator=g, dtype=m[0].weight.dtype)
        o.zero_grad(set_to_none=False)
        m(x).square().mean().backward()
        if step == change_at and change is _grad_none:
            m[2].weight.grad = None
        o.step()
        engaged += s._one_call.current is not None
        out.append([p.detach().clone() for p in m.parameters()])
    return out, engaged


def _grad_none(m, o):
    pass  # applied after backward, in _train


def _cast(m, o):
    m.double()


def _new_storage(m, o):
    with torch.no_grad():
        m[0].weight.data = m[0].weight.data.clone() * 0.5


def _freeze(m, o):
    m[2].bias.requires_grad_(False)


def _schedule(m, o):
    for g in o.param_groups:
        g["lr"] = 0.02
        g["weight_decay"] = 0.5  # a weight-decay schedule after the takeover: syre's gamma from here on


MID_RUN = {"none": lambda m, o: None, "gradient None": _grad_none, "model.double()": _cast,
           "storage replaced": _new_storage, "frozen": _freeze, "lr and weight decay scheduled": _schedule}


@needs_scan
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])  # native batches; torch's multi-tensor calls
@pytest.mark.parametrize("ds", [0.0, 0.1])
@pytest.mark.parametrize("name", list(MID_RUN))
def test_a_hook_with_the_one_call_check_gives_the_python_checks_parameters_bitwise(name, ds, dtype, monkeypatch):
    fast, engaged = _train(10, 5, MID_RUN[name], True, monkeypatch, ds, dtype)
    slow, none = _train(10, 5, MID_RUN[name], False, monkeypatch, ds, dtype)
    assert engaged >= 5 and none == 0  # the one-call check ran (and the reference never did)
    for step, (a, b) in enumerate(zip(fast, slow)):
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and torch.equal(x, y), (name, step)


def test_without_the_check_the_hook_checks_in_python(monkeypatch):
    monkeypatch.setenv("SYRE_NATIVE", "0")
    monkeypatch.setattr(S, "_state", {})
    assert S.lib(wait=True) is None and S.disable_reason() == "SYRE_NATIVE=0"


def test_without_a_cxx_compiler_one_warning_names_why_and_the_hook_checks_in_python(monkeypatch):
    monkeypatch.delenv("SYRE_NATIVE", raising=False)
    monkeypatch.setattr(S, "_state", {})
    monkeypatch.setattr(S, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="step check is off .*no C\\+\\+ compiler"):
        assert S.lib(wait=True) is None
    assert "no C++ compiler" in S.disable_reason()
    m = _model()
    o = torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=0.1)
    s = syre.attach(o, m)
    for _ in range(3):
        m(torch.ones(2, 6)).sum().backward()
        o.step()
    assert s._one_call.current is None  # every step checked in Python


@needs_scan
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_tensor_weight_takes_the_multi_tensor_calls_as_apply_buckets_does(dtype):
    """A 0-d tensor ``lr * gamma`` (a device lr): the one-call path runs every bucket through ``apply_buckets``."""
    from syre.kernels import functional as F

    m = _model().to(dtype)
    o = torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=0.1)
    s = syre.attach(o, m, d_spread=0.1)
    for _ in range(3):
        m(torch.ones(2, 6, dtype=dtype)).sum().backward()
        o.step()
    assert s._one_call.current is not None
    w = torch.tensor(0.01)
    buckets = s._buckets(s._plan, 0)[1]
    before = [p.detach().clone() for p in m.parameters()]
    with torch.no_grad():
        s._one_call.current.run(0, w)
        got = [p.detach().clone() for p in m.parameters()]
        for p, b in zip(m.parameters(), before):
            p.copy_(b)
        F.apply_buckets(buckets, w)
    assert all(torch.equal(a, p) for a, p in zip(got, m.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(got, before))  # it decayed


PATHS = {  # name: (attach keywords, optimizer, dtype, whether the one-call check serves it)
    "stored, AdamW": ({}, lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0), torch.float32, True),
    "target pretrained, AR": ({"target": "pretrained", "d_spread": 0.1}, lambda p: torch.optim.SGD(p, lr=0.01),
                              torch.float32, True),
    "target init, SGD momentum": ({"target": "init"}, lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), torch.float32, True),
    "seeded": ({"mode": "seeded"}, lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0), torch.float32, False),
    "syre.AdamW (its own step decays)": ({}, lambda p: syre.AdamW(p, lr=0.01, weight_decay=0), torch.float32, False),
    "bf16, stochastic rounding": ({"rounding": "stochastic"}, lambda p: torch.optim.SGD(p, lr=0.01), torch.bfloat16, False),
}


def _run_path(kw, make, dtype, use_scan, monkeypatch):
    monkeypatch.setattr(S, "lib", S.lib if use_scan else (lambda wait=False: None))
    torch.manual_seed(0)
    m = _model().to(dtype)
    o = make(m.parameters())
    s = syre.attach(o, m, gamma=0.1, **kw)
    g, engaged = torch.Generator().manual_seed(1), 0
    for step in range(8):
        if step == 4:  # the optimizer's state saved and loaded (new group dicts), then an lr schedule
            o.load_state_dict(o.state_dict())
            for group in o.param_groups:
                group["lr"] *= 0.5
        o.zero_grad()
        m(torch.randn(5, 6, generator=g, dtype=dtype)).square().mean().backward()
        o.step()
        engaged += s._one_call.current is not None
    return [p.detach().clone() for p in m.parameters()], engaged


@needs_scan
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", list(PATHS))
def test_every_path_gives_the_same_parameters_with_the_check_and_only_decided_decays_take_it(name, monkeypatch):
    kw, make, dtype, served = PATHS[name]
    fast, engaged = _run_path(kw, make, dtype, True, monkeypatch)
    slow, _ = _run_path(kw, make, dtype, False, monkeypatch)
    assert (engaged > 0) == served
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))
