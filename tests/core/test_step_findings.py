"""Findings on the step path, each a case that ran silently wrong before: a weight-decay schedule
writing 0, a parameter a second optimizer starts holding (MultiSyre), a frozen parameter's mapping
target, a NaN target, a replaced head, and the size of a copied target."""
import warnings

import pytest
import torch
from torch import nn

import syre


def _lin(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(6, 4)


def _grad(m):
    m.zero_grad()
    m(torch.ones(2, m.in_features)).sum().backward()


def test_a_weight_decay_schedule_that_writes_0_turns_syre_off_for_that_group():
    m = _lin()
    o = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.5, betas=(0.0, 0.0))
    s = syre.attach(o, m, d_spread=0.0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        o.param_groups[0]["weight_decay"] = 0.2
        _grad(m)
        o.step()
        assert s.group_gamma(0) == 0.2
        o.param_groups[0]["weight_decay"] = 0.0
        _grad(m)
        assert s.group_gamma(0) == 0.2  # read at the step
        m.zero_grad()  # a zero gradient: Adam's update is 0, only a decay would move the weights
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        before = [p.detach().clone() for p in m.parameters()]
        o.step()
    assert s.group_gamma(0) == 0.0 and o.param_groups[0]["weight_decay"] == 0.0
    assert all(torch.equal(a, p) for a, p in zip(before, m.parameters())), "syre still decayed after the schedule wrote 0"
    assert sum("weight_decay was set to" in str(x.message) for x in w) == 1  # warned once per group
    # ... and a later nonzero value turns it on again
    o.param_groups[0]["weight_decay"] = 0.3
    o.step()
    assert s.group_gamma(0) == 0.3 and not all(torch.equal(a, p) for a, p in zip(before, m.parameters()))


def test_syres_own_zero_is_not_a_schedule_write():
    m = _lin()
    o = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.5)
    s = syre.attach(o, m)
    for _ in range(3):
        _grad(m)
        o.step()
    assert s.group_gamma(0) == 0.5
    # a checkpoint round trip puts a loaded 0.0 there: still syre's, not a write
    o.load_state_dict(o.state_dict())
    _grad(m)
    o.step()
    assert s.group_gamma(0) == 0.5


def test_multisyre_a_parameter_a_second_optimizer_takes_after_attach_is_an_error_at_the_next_step():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    o1 = torch.optim.SGD(m[0].parameters(), lr=0.1)
    o2 = torch.optim.SGD(m[1].parameters(), lr=0.1)
    syre.attach([o1, o2], m, gamma=0.5)
    o2.add_param_group({"params": [m[0].weight], "weight_decay": 0.1})
    m(torch.ones(1, 4)).sum().backward()
    before = [p.detach().clone() for p in m.parameters()]
    for o in (o1, o2):  # whichever steps first
        with pytest.raises(ValueError, match=r"'0\.weight' is held by optimizers 0 and 1 at this step.*add_param_group"):
            o.step()
    assert all(torch.equal(a, p) for a, p in zip(before, m.parameters()))


def test_a_mapping_target_is_copied_at_attach_for_every_parameter_it_names_frozen_ones_included():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    m[0].requires_grad_(False)
    given = {n: torch.randn(p.shape) for n, p in m.named_parameters()}
    want = {n: t.clone() for n, t in given.items()}
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    s = syre.attach(o, m, gamma=0.5, target=given, d_spread=0.0)
    for t in given.values():
        t.fill_(7.0)  # the caller reuses its tensors after attach
    m[0].requires_grad_(True)  # gradual unfreezing
    m(torch.ones(1, 4)).sum().backward()
    o.step()
    for n in want:
        assert torch.equal(s.anchor(n).theta0, want[n]), n


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_in_a_target_mapping_is_refused_naming_the_target(bad):
    m = _lin()
    t = torch.zeros(4, 6)
    t[1, 2] = bad
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid target mapping: 'weight' holds NaN or inf") as e:
        syre.attach(o, m, gamma=0.5, target={"weight": t, "bias": torch.zeros(4)})
    assert "sigma0" not in str(e.value)
    assert syre.attached(o) is None


def test_a_copied_targets_size_takes_no_full_size_float64_temporary():
    """The target's RMS (its reported sigma0) is accumulated block by block: no allocation near 8 bytes per element."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    m = nn.Linear(2048, 2048, bias=False)  # 4M elements: a float64 copy would be 32 MiB
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        s = syre.attach(o, m, gamma=0.5, target="pretrained")
    biggest = max((ev.cpu_memory_usage for ev in prof.events() if ev.cpu_memory_usage > 0), default=0)
    n = m.weight.numel()
    assert biggest <= 4 * n + 4096, biggest  # the fp32 copy itself is the largest allocation
    assert s.coverage()[0]["sigma0"] == pytest.approx(float(m.weight.double().square().mean().sqrt()), rel=1e-12)


def test_a_replaced_head_left_in_the_optimizer_is_skipped_as_torch_skips_it():
    """Fine-tuning: replace the head, add the new one to the optimizer; the old head has no gradient."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
    o = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.1)
    s = syre.attach(o, m)
    m(torch.ones(1, 4)).sum().backward()
    o.step()
    old = m[1]
    m[1] = nn.Linear(4, 5)
    o.add_param_group({"params": m[1].parameters(), "weight_decay": 0.1})
    o.zero_grad()
    m(torch.ones(1, 4)).sum().backward()
    kept = old.weight.detach().clone()
    new_w = m[1].weight.detach().clone()
    o.step()  # the old head: skipped; the new head: decayed and updated
    assert torch.equal(kept, old.weight) and not torch.equal(new_w, m[1].weight)
    assert "1.weight" in s.names() and s.anchor("1.weight").theta0.shape == (5, 4)
    # the old head with a gradient: an error naming the remedy, before anything changes
    old.weight.grad = torch.ones_like(old.weight)
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=r"no longer a parameter of the model.*replaced.*Remove it from the optimizer"):
        o.step()
    assert all(torch.equal(a, p) for a, p in zip(before, m.parameters()))


def test_a_takeover_restored_into_groups_loaded_before_attach_keeps_its_gamma():
    """The transformers Trainer loads the optimizer state before the callback attaches and restores syre's state:
    the loaded 0 in weight_decay is syre's, not a schedule writing 0."""
    m = _lin()
    o = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.5)
    s = syre.attach(o, m)
    _grad(m)
    o.step()
    ckpt = {"opt": o.state_dict(), "syre": s.state_dict()}
    m2 = _lin()
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.1, weight_decay=0.5)
    o2.load_state_dict(ckpt["opt"])
    s2 = syre.attach(o2, m2)
    s2.load_state_dict(ckpt["syre"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _grad(m2)
        o2.step()
    assert s2.group_gamma(0) == 0.5
