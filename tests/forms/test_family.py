"""The decay-toward-an-anchor family: regenerable init, targets (init, pretrained, mapping), shrink-and-perturb,
unit resets, and stochastic rounding of the decay into bf16."""
import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

import syre
from small_models import batches
from syre import init as I
from syre.select import collect


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))


def _zero_grad_step(model, opt):
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()


def _train(model, opt, n=5):
    for x, y in batches(n):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


# ----------------------------------------------------------------------------- syre.init_
def test_init_is_a_pure_function_of_seed_name_and_index():
    a, b = _mlp(), _mlp()
    torch.manual_seed(123)  # the global RNG plays no part
    I.init_(a, seed=4)
    torch.manual_seed(999)
    state = torch.random.get_rng_state()
    I.init_(b, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = _mlp()
    I.init_(c, seed=5)
    assert not torch.equal(a[0].weight, c[0].weight)
    # The values at any set of indices are those of the whole tensor (a shard computes its own alone).
    info = collect(a)[id(a[0].weight)]
    idx = torch.tensor([95, 3, 40])
    assert torch.equal(I.init_values(info, idx, seed=4, scheme="lecun"), a[0].weight.detach().reshape(-1)[idx])


def test_init_rules_follow_the_fan_in_and_torch_for_biases_and_norms():
    m = nn.ModuleDict({"lin": nn.Linear(400, 300), "ln": nn.LayerNorm(300), "emb": nn.Embedding(500, 64),
                       "wn": weight_norm(nn.Linear(50, 10)), "rnn": nn.LSTM(20, 16)})
    I.init_(m, seed=0, scheme="lecun")
    assert m["lin"].weight.std().item() == pytest.approx(1 / 20, rel=0.02)
    assert m["lin"].bias.abs().max().item() <= 1 / 20 and m["lin"].bias.abs().max().item() > 0.9 / 20
    assert torch.equal(m["ln"].weight, torch.ones(300)) and torch.equal(m["ln"].bias, torch.zeros(300))
    assert m["emb"].weight.std().item() == pytest.approx(1.0, rel=0.02)  # an Embedding's fan-in is 1
    g, v = m["wn"].parametrizations.weight.original0, m["wn"].parametrizations.weight.original1
    torch.testing.assert_close(g.squeeze(1), v.norm(dim=1))
    assert m["rnn"].bias_hh_l0.abs().max().item() <= 1 / 4  # its layer's fan-in (16)
    I.init_(m, seed=0, scheme="kaiming:0.5")
    assert m["lin"].weight.std().item() == pytest.approx(0.5 * math.sqrt(2 / 400), rel=0.02)
    I.init_(m, seed=0, scheme="normal:0.02")
    assert m["lin"].weight.std().item() == pytest.approx(0.02, rel=0.02) and torch.equal(m["lin"].bias, torch.zeros(300))
    for bad in ("he", "normal:-1", "normal:x", 3):
        with pytest.raises(ValueError, match="Invalid scheme"):
            I.init_(m, scheme=bad)


# ----------------------------------------------------------------------------- targets
@pytest.mark.parametrize("d_spread", [0.0, 0.2])
def test_target_init_seeded_keeps_nothing_and_equals_the_stored_copy_bitwise(d_spread):
    from syre_state import syre_tensors as _syre_tensors

    base = _mlp()
    I.init_(base, seed=3)
    runs = []
    for case in ("regenerated", "copied"):
        m = copy.deepcopy(base)
        if case == "copied":
            del m.__dict__["_syre_init"]  # no record: the weights at attach are copied
        o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.5)
        s = syre.attach(o, m, target="init", d_spread=d_spread, mode="seeded" if case == "regenerated" else "stored")
        _train(m, o, 8)
        runs.append((m, s))
    (m1, s1), (m2, s2) = runs
    assert all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))
    assert s1.anchor_nbytes() == 0 and _syre_tensors(s1) == []  # zero bytes per parameter between steps
    n = sum(p.numel() for p in base.parameters())
    assert s2.anchor_nbytes() == n * 4 * (2 if d_spread else 1)
    assert "init (recomputed from syre.init_(seed=3" in s1.summary() and "a stored fp32 copy" in s2.summary()


def test_each_target_is_the_point_the_decay_pulls_toward():
    for target in ("init", "pretrained", "mapping"):
        m = _mlp()
        want = {n: p.detach().clone() - 1.0 for n, p in m.named_parameters()}
        spec = want if target == "mapping" else target
        if target != "mapping":
            want = {n: p.detach().clone() for n, p in m.named_parameters()}
        o = torch.optim.SGD(m.parameters(), lr=0.5)
        s = syre.attach(o, m, gamma=1.0, target=spec, d_spread=0.3, seed=2)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(2.0)
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        _zero_grad_step(m, o)
        for n, p in m.named_parameters():
            d = syre.anchor(2, n, p.shape, sigma0=0.0, d_spread=0.3).d  # AR's D, from the anchor stream
            torch.testing.assert_close(p.detach(), before[n] - 0.5 * d * (before[n] - want[n]), rtol=0, atol=1e-6)
            torch.testing.assert_close(s.anchor(n).theta0, want[n])


def test_a_mapping_target_is_checked_before_anything_changes():
    m = _mlp()
    good = {n: torch.zeros_like(p) for n, p in m.named_parameters()}
    for bad, match in (({**good, "nope": torch.zeros(1)}, r"\['nope'\] are not parameters"),
                       ({**good, "0.weight": torch.zeros(3)}, r"'0.weight' is \(3,\)"),
                       ({k: v for k, v in good.items() if k != "3.bias"}, "no tensor for the covered parameter '3.bias'")):
        o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
        with pytest.raises(ValueError, match=match):
            syre.attach(o, m, target=bad)
        assert o.param_groups[0]["weight_decay"] == 0.1 and not o._optimizer_step_pre_hooks
    with pytest.raises(ValueError, match="Invalid target value: 'origin'"):
        syre.attach(torch.optim.AdamW(m.parameters(), lr=0.01), m, target="origin")


def test_a_parameter_covered_after_attach_reports_its_targets_size():
    m = _mlp()
    start = {n: p.detach().clone() - 0.5 for n, p in m.named_parameters()}
    m[3].weight.requires_grad_(False)  # covered only once unfrozen: the plan is rebuilt then
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    s = syre.attach(o, m, target=start, d_spread=0.0)
    m[3].weight.requires_grad_(True)
    _train(m, o, 1)
    sig = {p["name"]: p["sigma0"] for p in s.state_dict()["params"]}
    for name in ("0.weight", "3.weight"):  # the target's RMS, not the "lecun" preset, for both
        assert sig[name] == pytest.approx(float(start[name].double().square().mean().sqrt()), rel=1e-12)
    torch.testing.assert_close(s.anchor("3.weight").theta0, start["3.weight"])


def test_target_init_refuses_weights_that_left_their_initial_values():
    m = _mlp()
    I.init_(m, seed=1)
    with torch.no_grad():
        m[0].weight.add_(0.1)
    with pytest.raises(ValueError, match=r"'0.weight' no longer holds the value syre.init_\(seed=1"):
        syre.attach(torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1), m, target="init")


def test_targets_ride_along_in_checkpoints_and_a_different_one_is_refused():
    base = _mlp()
    I.init_(base, seed=7)
    m = copy.deepcopy(base)
    o = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    syre.attach(o, m, target="init", mode="seeded")
    _train(m, o, 3)
    sd = copy.deepcopy(o.state_dict())  # torch shares the state tensors of a state_dict it loads
    assert sd["syre"]["target"] == {"kind": "init", "init_seed": 7, "init_scheme": "lecun"}
    # Resume: a new process builds the model (any init), loads the weights, attaches, loads the optimizer.
    m2 = _mlp()
    m2.load_state_dict(m.state_dict())
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.01, weight_decay=0.1)
    s2 = syre.attach(o2, m2, target="init", mode="seeded")  # no record on m2: a copy, until the state says
    o2.load_state_dict(sd)
    assert s2._target.record.seed == 7
    _train(m, o, 2)
    _train(m2, o2, 2)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), m2.parameters()))
    # A checkpoint of another target, or of another copied tensor, is refused.
    m3 = copy.deepcopy(base)
    s3 = syre.attach(torch.optim.AdamW(m3.parameters(), lr=0.01, weight_decay=0.1), m3, target="pretrained")
    with pytest.raises(ValueError, match="saved with target 'init'"):
        s3.load_state_dict(sd["syre"])
    pre = s3.state_dict()
    assert set(pre["target"]) == {"kind", "checksum"}
    m4 = _mlp()
    s4 = syre.attach(torch.optim.AdamW(m4.parameters(), lr=0.01, weight_decay=0.1), m4, target="pretrained")
    with pytest.raises(ValueError, match="checksum"):
        s4.load_state_dict(pre)
    m5 = copy.deepcopy(base)
    s5 = syre.attach(torch.optim.AdamW(m5.parameters(), lr=0.01, weight_decay=0.1), m5, target="pretrained")
    s5.load_state_dict(pre)  # the same pretrained weights: accepted


# ----------------------------------------------------------------------------- shrink and perturb, resets
def test_shrink_perturb_is_exactly_shrink_p_plus_perturb_fresh_init():
    m = _mlp()
    I.init_(m, seed=2)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    I.shrink_perturb_(m, shrink=0.4, perturb=0.1, step=5)
    for info in collect(m).values():
        fresh = I._values_for(info, list(collect(m).values()), 2, "lecun", 6)  # generation step + 1
        torch.testing.assert_close(info.param.detach(), before[info.name] * 0.4 + fresh * 0.1, rtol=0, atol=0)
    twin = _mlp()
    twin.load_state_dict({k: v * 0 + before[k] for k, v in twin.state_dict().items()})
    I.shrink_perturb_(twin, shrink=0.4, perturb=0.1, step=5, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), twin.parameters()))  # the same on every rank
    I.shrink_perturb_(twin, shrink=1.0, perturb=0.1, step=6, seed=2)
    assert not torch.equal(twin[0].weight, m[0].weight)
    with pytest.raises(ValueError, match="not initialised by syre.init_"):
        I.shrink_perturb_(_mlp(), shrink=0.5, perturb=0.1, step=0)


def test_reset_units_restores_their_initial_weights_and_silences_their_outputs():
    m = _mlp()
    I.init_(m, seed=9)
    init = {n: p.detach().clone() for n, p in m.named_parameters()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    trained = {n: p.detach().clone() for n, p in m.named_parameters()}
    I.reset_units_(m, "0", [2, 7], outgoing="3")
    rows = torch.tensor([2, 7])
    assert torch.equal(m[0].weight[rows], init["0.weight"][rows]) and torch.equal(m[0].bias[rows], init["0.bias"][rows])
    keep = torch.tensor([i for i in range(16) if i not in (2, 7)])
    assert torch.equal(m[0].weight[keep], trained["0.weight"][keep])
    assert torch.all(m[3].weight[:, rows] == 0) and torch.equal(m[3].weight[:, keep], trained["3.weight"][:, keep])
    with pytest.raises(ValueError, match="has units 0 to 15"):
        I.reset_units_(m, "0", [16])
    with pytest.raises(ValueError, match="'nope' is not a submodule"):
        I.reset_units_(m, "nope", [0])


# ----------------------------------------------------------------------------- stochastic rounding
def _bf16_run(rounding, steps=300, seed=0):
    m = nn.Linear(64, 64, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        m.weight.fill_(1.0)
    o = torch.optim.SGD(m.parameters(), lr=1e-3)
    syre.attach(o, m, gamma=0.5, sigma0=0.0, d_spread=0.0, rounding=rounding, seed=seed)  # pull 5e-4 < half an ulp
    for _ in range(steps):
        _zero_grad_step(m, o)
    return m, o


def test_stochastic_rounding_keeps_a_sub_ulp_pull_on_average():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", syre.PrecisionWarning)
        nearest, _ = _bf16_run("nearest")
    assert torch.all(nearest.weight == 1.0)  # rounding to nearest undoes every step
    with warnings.catch_warnings():
        warnings.simplefilter("error", syre.PrecisionWarning)  # nothing to warn of: the pull survives on average
        sr, _ = _bf16_run("stochastic")
    want = (1 - 1e-3 * 0.5) ** 300  # the fp32 trajectory: 0.8607
    mean = sr.weight.float().mean().item()
    assert abs(mean - want) < 0.004, (mean, want)  # 4096 elements; ulp 2**-8 below 1
    again, _ = _bf16_run("stochastic")
    assert torch.equal(sr.weight, again.weight)  # the same bits in two runs
    other, _ = _bf16_run("stochastic", seed=1)
    assert not torch.equal(sr.weight, other.weight)


def test_stochastic_rounding_resumes_its_stream():
    full, _ = _bf16_run("stochastic", steps=20)
    half, o = _bf16_run("stochastic", steps=10)
    sd = copy.deepcopy(o.state_dict())  # torch shares the state tensors of a state_dict it loads
    assert sd["syre"]["step"] == 10 and sd["syre"]["rounding"] == "stochastic"
    m = nn.Linear(64, 64, bias=False).to(torch.bfloat16)
    m.load_state_dict(half.state_dict())
    o2 = torch.optim.SGD(m.parameters(), lr=1e-3)
    syre.attach(o2, m, gamma=0.5, sigma0=0.0, d_spread=0.0, rounding="stochastic")
    o2.load_state_dict(sd)
    for _ in range(10):
        _zero_grad_step(m, o2)
    assert torch.equal(m.weight, full.weight)
    m3 = nn.Linear(64, 64, bias=False).to(torch.bfloat16)
    s3 = syre.attach(torch.optim.SGD(m3.parameters(), lr=1e-3), m3, gamma=0.5, sigma0=0.0, d_spread=0.0)
    with pytest.raises(ValueError, match="saved with rounding='stochastic'"):
        s3.load_state_dict(sd["syre"])
    with pytest.raises(ValueError, match="Invalid rounding value"):
        syre.Config(rounding="up")


def test_the_family_is_exported_at_the_top_level():
    assert syre.init_ is I.init_ and syre.shrink_perturb_ is I.shrink_perturb_ and syre.reset_units_ is I.reset_units_


# ----------------------------------------------------------------------------- the compiled counter streams
def test_compiled_stream_ranges_equal_the_eager_words_and_normals(monkeypatch):
    from syre.rng import _streams as S

    monkeypatch.setenv("SYRE_COMPILE", "1")  # compile now (the probe checks them bitwise first)
    k = S.key(3, "layer.weight", "round")
    for gen in (0, 5, 2**31, 2**32 - 1):  # generations past int32's sign bit
        for a, b in ((0, 1000), (37, 5000), ((1 << 34) - 91, (1 << 34) + 300)):
            want = S.words(k, torch.arange(a, b), gen)
            assert torch.equal(S.range_words(k, a, b, gen), want), (gen, a, b)
            assert torch.equal(S.range_bits(k, a, b, gen).to(torch.int64) & 0xFFFFFFFF, want)
            assert torch.equal(S.range_normal(k, a, b, gen, dtype=torch.float64), S.normal(want, torch.float64))
    assert S._WORDS._state.get(None) is True and S._NORMALS._state.get(None) is True  # the compiled path was taken
    m, twin = _mlp(), _mlp()
    I.init_(m, seed=4)
    monkeypatch.setenv("SYRE_COMPILE", "0")
    I.init_(twin, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), twin.parameters()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_stochastic_rounding_rounds_up_with_the_distance_as_probability(dtype):
    from syre.core._rounding import stochastic_round_

    n = 1 << 16
    for base in (1.0, -3.0):
        lo = torch.tensor(base, dtype=dtype)
        hi = (torch.nextafter(lo, torch.tensor(float("inf"), dtype=dtype)) if base > 0
              else torch.nextafter(lo, torch.tensor(-float("inf"), dtype=dtype)))
        for share in (0.1, 0.75):
            v = torch.full((n,), lo.float().item() + share * (hi.float().item() - lo.float().item()))
            p = torch.empty(n, dtype=dtype)
            stochastic_round_(p, v, seed=1, name="w", step=3)
            assert set(p.float().unique().tolist()) <= {lo.float().item(), hi.float().item()}
            up = (p == hi).float().mean().item()
            assert abs(up - share) < 4 * math.sqrt(share * (1 - share) / n), (dtype, base, share, up)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.5, -0.0])
    p = torch.empty(5, dtype=dtype)
    stochastic_round_(p, special, seed=1, name="w", step=0)
    assert torch.isnan(p[0]) and p[1] == float("inf") and p[2] == -float("inf") and p[3] == 0.5 and p[4] == 0
