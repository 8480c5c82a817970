"""Flows after ``attach`` that must end in what the user asked for, or in a clear error / one warning.

Each test here failed on the core before it was rebuilt: there, these flows silently did
something else (decay turned off, decay toward the origin on top of syre, a second hook, ...).
"""
import copy
import re
import warnings

import pytest
import torch
from torch import nn

import syre
from small_models import batches, make_mlp
from syre import reference as ref
from syre.optim import GROUP_KEY


def _zero_grad_step(model, opt):
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()


def _expected_after_decay(s, model, lr, gamma):
    """Each parameter after one step with zero gradient under plain SGD: the reference decay."""
    out = {}
    for name, p in model.named_parameters():
        a = s.anchor(name)
        out[name] = torch.from_numpy(ref.decay(p.detach().double().numpy(), a.theta0.double().numpy(), a.d.double().numpy(), lr, gamma))
    return out


def _assert_params(model, expected, atol=1e-6):
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach().double(), expected[name], rtol=0, atol=atol, msg=name)


def _settings_warnings(record):
    return [w for w in record if issubclass(w.category, syre.DecaySettingWarning)]


# ----------------------------------------------------------------------------- optimizer checkpoints
def test_loading_a_plain_optimizer_state_keeps_syre_on_with_weight_decay_taken_over():
    m = make_mlp()
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    s = syre.attach(o, m, sigma0=0.2, d_spread=0.0)
    plain = torch.optim.AdamW(copy.deepcopy(m).parameters(), lr=0.01, weight_decay=0.1)  # a pretrained state
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        o.load_state_dict(plain.state_dict())
    assert _settings_warnings(record) == []  # same weight decay: nothing to report
    g = o.param_groups[0]
    assert g["weight_decay"] == 0.0 and g[GROUP_KEY] == 0.1 and s.group_gamma(0) == 0.1
    assert all(r["decayed"] for r in s.coverage())
    # ... and a step is syre's decay (no decay toward the origin, no decay turned off).
    sgd = torch.optim.SGD(m.parameters(), lr=0.5, weight_decay=0.1)
    s2 = syre.attach(sgd, m, sigma0=0.2, d_spread=0.0)
    sgd.load_state_dict(torch.optim.SGD(copy.deepcopy(m).parameters(), lr=0.5, weight_decay=0.1).state_dict())
    want = _expected_after_decay(s2, m, 0.5, 0.1)
    _zero_grad_step(m, sgd)
    _assert_params(m, want)


def test_a_loaded_weight_decay_that_differs_is_named_and_syre_keeps_its_gamma():
    m = make_mlp()
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    s = syre.attach(o, m)
    other = torch.optim.AdamW(copy.deepcopy(m).parameters(), lr=0.02, weight_decay=0.05)
    with pytest.warns(syre.DecaySettingWarning, match=r"weight_decay=0.05.*keeps gamma=0.1"):
        o.load_state_dict(other.state_dict())
    assert o.param_groups[0]["weight_decay"] == 0.0 and s.group_gamma(0) == 0.1
    assert o.param_groups[0]["lr"] == 0.02  # torch's own hyperparameters are restored as usual


def test_a_syre_checkpoint_resumes_through_the_optimizer_with_its_takeover():
    m = make_mlp()
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(o, m, seed=3)
    sd = o.state_dict()
    m2 = make_mlp()
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.01, weight_decay=0.3)
    s2 = syre.attach(o2, m2, seed=99)
    o2.load_state_dict(sd)
    assert s2.seed == 3 and s2.group_gamma(0) == 0.1 and o2.param_groups[0]["weight_decay"] == 0.0
    s2.remove()
    assert o2.param_groups[0]["weight_decay"] == 0.1  # the saved takeover is what is given back


def test_a_failed_optimizer_load_leaves_nothing_pending():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    s = syre.attach(o, m, gamma=0.1, seed=5)
    other = make_mlp()
    so = syre.attach(torch.optim.SGD(other.parameters(), lr=0.1), other, gamma=0.1, seed=77)
    bad = so.optimizer.state_dict()
    bad["param_groups"] = bad["param_groups"] + [dict(bad["param_groups"][0], params=[])]  # torch refuses this
    with pytest.raises(ValueError):
        o.load_state_dict(bad)
    assert s.seed == 5
    o.load_state_dict(torch.optim.SGD(copy.deepcopy(m).parameters(), lr=0.1).state_dict())  # a plain state
    assert s.seed == 5  # the syre state of the failed load was not applied by this later one


def test_a_bad_syre_entry_is_refused_before_torch_replaces_the_optimizer_state():
    m = make_mlp()
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    s = syre.attach(o, m)
    x, y = batches(1)[0]
    ((m(x) - y) ** 2).mean().backward()
    o.step()
    before = copy.deepcopy(o.state_dict())
    sd = o.state_dict()
    sd["syre"] = dict(sd["syre"], takeover={7: 0.1})  # a group index this optimizer does not have
    sd["state"] = {k: {kk: (vv * 0 + 5 if isinstance(vv, torch.Tensor) else vv) for kk, vv in v.items()} for k, v in sd["state"].items()}
    with pytest.raises(ValueError, match="takeover.*7"):
        o.load_state_dict(sd)
    after = o.state_dict()
    for k in before["state"]:
        for kk, vv in before["state"][k].items():
            assert torch.equal(after["state"][k][kk], vv)
    assert s.seed == 0


# ----------------------------------------------------------------------------- one optimizer, one Syre
def test_attaching_twice_never_decays_twice():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.5)
    s = syre.attach(o, m, gamma=0.2, sigma0=0.3)
    assert syre.attach(o, m, gamma=0.2, sigma0=0.3) is s  # a re-run notebook cell
    with pytest.raises(ValueError, match="already has syre attached.*remove"):
        syre.attach(o, m, gamma=0.1)
    assert len(o._optimizer_step_pre_hooks) == 2  # syre's decay and its pull probe, once
    want = _expected_after_decay(s, m, 0.5, 0.2)
    _zero_grad_step(m, o)
    _assert_params(m, want)
    s.remove()
    assert syre.attached(o) is None
    assert syre.attach(o, m, gamma=0.1) is not s


# ----------------------------------------------------------------------------- weight decay written later
def test_a_weight_decay_schedule_after_the_takeover_becomes_syres_gamma():
    m = make_mlp(dtype=torch.float64)
    o = torch.optim.SGD(m.parameters(), lr=0.5, weight_decay=0.1)
    s = syre.attach(o, m, sigma0=0.2, d_spread=0.1)
    o.param_groups[0]["weight_decay"] = 0.04  # DINO / MAE style schedule
    want = _expected_after_decay(s, m, 0.5, 0.04)
    with pytest.warns(syre.DecaySettingWarning, match=r"weight_decay was set to 0.04 after syre took it over"):
        _zero_grad_step(m, o)
    _assert_params(m, want, atol=1e-12)  # syre at 0.04; no decay toward the origin on top
    assert o.param_groups[0]["weight_decay"] == 0.0 and s.group_gamma(0) == 0.04
    o.param_groups[0]["weight_decay"] = 0.02
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _zero_grad_step(m, o)
    assert _settings_warnings(record) == [] and s.group_gamma(0) == 0.02  # warned once, followed always
    s.remove()
    assert o.param_groups[0]["weight_decay"] == 0.02


def test_weight_decay_set_beside_an_explicit_gamma_is_warned_at_the_step():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    syre.attach(o, m, gamma=0.1)
    o.param_groups[0]["weight_decay"] = 0.01
    with pytest.warns(syre.DecaySettingWarning, match="still applies weight_decay=0.01 on top of syre"):
        _zero_grad_step(m, o)


def test_weight_decay_of_a_group_syre_covers_nothing_in_is_the_users_and_not_warned():
    m = make_mlp()
    head = list(m[-1].parameters())
    body = [p for p in m.parameters() if all(p is not q for q in head)]
    o = torch.optim.AdamW([{"params": body, "weight_decay": 0.0}, {"params": head, "weight_decay": 0.05}], lr=0.01)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        s = syre.attach(o, m, gamma=0.1, exclude=[f"{len(m) - 1}.*"])
        _zero_grad_step(m, o)
    assert _settings_warnings(record) == [] and o.param_groups[1]["weight_decay"] == 0.05  # left as the user set it
    assert s.group_gamma(0) == 0.1
    o.param_groups[0]["weight_decay"] = 0.01  # the group syre covers: beside its gamma, warned
    with pytest.warns(syre.DecaySettingWarning, match="param group 0 .* still applies weight_decay=0.01"):
        _zero_grad_step(m, o)


# ----------------------------------------------------------------------------- requires_grad toggled
def test_parameters_unfrozen_after_attach_are_decayed_from_then_on():
    m = make_mlp(dtype=torch.float64)
    for p in m[0].parameters():
        p.requires_grad_(False)
    o = torch.optim.SGD(m.parameters(), lr=0.5)
    s = syre.attach(o, m, gamma=0.2, sigma0=0.3)
    assert {r["name"]: r["reason"] for r in s.coverage()}["0.weight"] == "frozen"
    for p in m[0].parameters():
        p.requires_grad_(True)  # gradual unfreezing
    rows = {r["name"]: r for r in s.coverage()}
    assert rows["0.weight"]["decayed"] and "0.weight" in s.names()
    want = _expected_after_decay(s, m, 0.5, 0.2)
    _zero_grad_step(m, o)
    _assert_params(m, want, atol=1e-12)
    # Frozen again: left alone, even with a gradient lying around.
    m[0].weight.requires_grad_(False)
    before = m[0].weight.detach().clone()
    _zero_grad_step(m, o)
    assert torch.equal(m[0].weight, before)
    assert {r["name"]: r["reason"] for r in s.coverage()}["0.weight"] == "frozen"


# ----------------------------------------------------------------------------- rules and gamma
@pytest.mark.parametrize("rule,match", [
    (dict(exclude="*.wieght"), r"exclude rule '\*\.wieght': it matches no parameter"),
    (dict(exclude="LayerNorm"), r"looks like a class name.*torch\.nn\.LayerNorm.*syre\.NORM_TYPES"),
    (dict(include=["0.*", "encoder.*"]), r"include rule 'encoder\.\*'"),
    (dict(include=nn.Conv2d), r"include rule <class 'torch.nn.modules.conv.Conv2d'>"),
])
def test_rules_that_match_nothing_are_refused_and_change_nothing(rule, match):
    m = make_mlp(norm=True)
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    with pytest.raises(ValueError, match=match):
        syre.attach(o, m, **rule)
    assert o.param_groups[0]["weight_decay"] == 0.1 and GROUP_KEY not in o.param_groups[0]
    assert not o._optimizer_step_pre_hooks


def test_generic_exclusions_may_match_nothing():
    m = make_mlp()  # no normalisation layer
    s = syre.attach(torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1), m, exclude=syre.NORM_TYPES)
    assert len(s.names()) == 4


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1),
    lambda ps: torch.optim.Adam(ps, lr=0.01),
    lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.0),
])
def test_gamma_none_with_nothing_to_take_over_is_refused(make):
    m = make_mlp()
    o = make(m.parameters())
    with pytest.raises(ValueError, match="every param group.*weight_decay=0, so syre would decay nothing.*gamma="):
        syre.attach(o, m)
    assert not o._optimizer_step_pre_hooks


def test_coupled_refusal_gives_the_conversion_for_sgd_momentum():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    with pytest.raises(ValueError, match=r"coupled.*weight_decay x 10 = 0.005"):
        syre.attach(o, m)


def test_lr_times_gamma_above_one_is_refused_at_attach():
    m = make_mlp()
    for gamma in (1e30, 25.0):
        o = torch.optim.SGD(m.parameters(), lr=0.1)
        with pytest.raises(ValueError, match=r"lr \* gamma = .* > 1"):
            syre.attach(o, m, gamma=gamma)
        assert not o._optimizer_step_pre_hooks
    syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=10.0)  # lr * gamma = 1: lands on theta0


def test_a_schedule_that_pushes_lr_times_gamma_over_one_warns_then_over_two_is_refused():
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    syre.attach(o, m, gamma=5.0)
    o.param_groups[0]["lr"] = 0.3  # lr * gamma = 1.5
    with pytest.warns(syre.DecaySettingWarning, match=r"lr \* gamma = 1.5 > 1"):
        _zero_grad_step(m, o)
    o.param_groups[0]["lr"] = 0.5  # 2.5: diverges
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=r"lr \* gamma = 2.5 > 2.*nothing was changed"):
        _zero_grad_step(m, o)
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))


@pytest.mark.parametrize("value,exc", [(-0.1, ValueError), (float("nan"), ValueError), ("0.1", TypeError), (None, TypeError),
                                       (torch.tensor(True), TypeError), (torch.tensor(0.1 + 1j), TypeError),
                                       (torch.tensor([0.1]), TypeError)])
def test_syre_gamma_written_after_attach_is_validated_where_it_is_read(value, exc):
    m = make_mlp()
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    syre.attach(o, m, gamma=0.1)
    o.param_groups[0][GROUP_KEY] = value
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(exc, match=r"param_groups\[0\]\['syre_gamma'\] value: " + re.escape(repr(value))):
        _zero_grad_step(m, o)
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))


@pytest.mark.parametrize("key", [GROUP_KEY, "weight_decay"])
def test_a_bool_tensor_in_a_group_is_refused_at_attach_not_read_as_one(key):
    """``torch.tensor(True)`` as a group's syre_gamma (or the weight_decay gamma=None takes over) is not 1.0."""
    m = make_mlp()
    o = torch.optim.AdamW([{"params": list(m.parameters()), key: torch.tensor(True)}], lr=0.1)
    with pytest.raises(TypeError, match=rf"param_groups\[0\]\['{key}'\] value: tensor\(True\) \(a bool tensor\)"):
        syre.attach(o, m, **({"gamma": 0.1} if key == GROUP_KEY else {}))
    assert syre.attached(o) is None and not o._optimizer_step_pre_hooks


def test_a_real_0d_tensor_syre_gamma_is_read_as_its_value():
    """syre_gamma=torch.tensor(0.3) decays as 0.3 does, not as attach's gamma."""
    outs = []
    for g in (torch.tensor(0.3, dtype=torch.float64), 0.3, None):
        model = make_mlp()
        group = {"params": list(model.parameters()), **({} if g is None else {GROUP_KEY: g})}
        o = torch.optim.SGD([group], lr=0.1)
        syre.attach(o, model, gamma=0.1, seed=1)
        _zero_grad_step(model, o)
        outs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(outs[0], outs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(outs[0], outs[2]))


# ----------------------------------------------------------------------------- saved state fields
@pytest.mark.parametrize("mutate,match", [
    (lambda sd: sd.update(takeover={"x": 0.1}), "takeover.*'x'"),
    (lambda sd: sd.update(takeover={-1: 0.1}), "takeover.*-1"),
    (lambda sd: sd.update(takeover={0: -5.0}), "-5.0"),
    (lambda sd: sd.update(takeover={0: float("nan")}), "nan"),
    (lambda sd: sd.update(gamma=-1.0), "gamma"),
    (lambda sd: sd.update(d_spread=2.0), "d_spread"),
    (lambda sd: sd.update(mode="cached"), "mode"),
    (lambda sd: sd["params"].append(dict(sd["params"][0])), "appears twice"),
    (lambda sd: sd["params"][0].update(shape=[6, "x"]), "bad parameter record"),
    (lambda sd: sd.update(version=0), "version"),
])
def test_every_field_of_a_saved_state_is_validated_before_anything_is_assigned(mutate, match):
    m = make_mlp()
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    s = syre.attach(o, m, seed=4)
    sd = copy.deepcopy(s.state_dict())
    sd["seed"] = 11  # would change the anchors if it were assigned
    mutate(sd)
    before = s.state_dict()
    with pytest.raises((ValueError, TypeError), match=match):
        s.load_state_dict(sd)
    assert s.state_dict() == before
    s.remove()
    assert o.param_groups[0]["weight_decay"] == 0.1  # never a weight decay from a rejected state


def test_numpy_integer_seeds_are_accepted():
    np = pytest.importorskip("numpy")
    m = make_mlp()
    s = syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1, seed=np.int64(7))
    assert s.seed == 7 and type(s.seed) is int
    assert torch.equal(s.anchor("0.weight").theta0, syre.anchor(np.uint32(7), "0.weight", (16, 6), sigma0=s.coverage()[0]["sigma0"]).theta0)
    assert syre.Penalty(m, gamma=0.1, seed=np.int32(7)).seed == 7
    for bad in (7.0, True, "7"):
        with pytest.raises(ValueError, match="seed"):
            syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1, seed=bad)


# ----------------------------------------------------------------------------- what summary says
def test_summary_does_not_count_gamma_zero_parameters_as_decayed():
    m = make_mlp()
    groups = [{"params": list(m[0].parameters()), "weight_decay": 0.1}, {"params": list(m[2].parameters()), "weight_decay": 0.0}]
    s = syre.attach(torch.optim.AdamW(groups, lr=0.01), m)
    text = s.summary()
    assert "decays 2/4 parameters" in text and "no (gamma 0)" in text
    assert "2 covered parameter(s) have gamma 0 (param group(s) [1])" in text
    assert [r["decayed"] for r in s.coverage()] == [True, True, False, False]


# ----------------------------------------------------------------------------- back to a plain optimizer
def test_plain_state_dict_gives_a_plain_optimizer_its_weight_decay_back():
    m = make_mlp()
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(o, m)
    sd = o.state_dict()
    assert sd["param_groups"][0]["weight_decay"] == 0.0  # what a plain optimizer would load: no decay at all
    plain_sd = syre.plain_state_dict(sd)
    assert "syre" not in plain_sd and GROUP_KEY not in plain_sd["param_groups"][0]
    m1, m2 = make_mlp(), make_mlp()
    o1 = torch.optim.AdamW(m1.parameters(), lr=0.01, weight_decay=0.0)
    o1.load_state_dict(plain_sd)
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.01, weight_decay=0.1)
    for mm, oo in ((m1, o1), (m2, o2)):
        for x, y in batches(5):
            oo.zero_grad()
            ((mm(x) - y) ** 2).mean().backward()
            oo.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert sd["param_groups"][0]["weight_decay"] == 0.0  # the input is not modified
    with pytest.raises(TypeError, match="optimizer.state_dict"):
        syre.plain_state_dict([1, 2])
