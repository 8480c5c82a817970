"""sigma0 presets relative to the init std ("lecun:0.3"), the 1-D rule, and the weak-pull warning."""
import math
import warnings

import pytest
import torch
from torch import nn

import syre
from syre import anchors as A
from syre.optim import PROBE_STEPS, WEAK_PULL_RATIO, WeakPullWarning

S = A.DEFAULT_SIGMA0_SCALE


def test_bare_preset_is_the_default_scale_times_the_init_std():
    lin = nn.Linear(64, 32)
    assert A.parse_sigma0("lecun") == ("lecun", S)
    assert A.resolve_sigma0("lecun", "w", lin.weight, lin, "weight") == pytest.approx(S / 8)
    assert A.resolve_sigma0("kaiming", "w", lin.weight, lin, "weight") == pytest.approx(S * math.sqrt(2 / 64))
    assert A.resolve_sigma0("xavier", "w", lin.weight, lin, "weight") == pytest.approx(S * math.sqrt(2 / 96))
    assert A.SIGMA0_PRESETS == {"lecun": S, "kaiming": S, "xavier": S}
    assert A.DEFAULT_SIGMA0 == syre.DEFAULT_SIGMA0 == "match" and syre.sigma0.DEFAULT_SHAPE_SIGMA0 == "lecun"


@pytest.mark.parametrize("scale", [0.0, 0.01, 0.3, 1.0, 3.0])
def test_scaled_presets_are_that_multiple_of_the_init_std(scale):
    lin, conv, emb = nn.Linear(64, 32), nn.Conv2d(3, 8, kernel_size=3), nn.Embedding(100, 16)
    r = lambda spec, p, m, a: A.resolve_sigma0(spec, "x", p, m, a)  # noqa: E731
    assert r(f"lecun:{scale}", lin.weight, lin, "weight") == pytest.approx(scale / 8)
    assert r(f"lecun:{scale}", lin.bias, lin, "bias") == pytest.approx(scale / 8)  # a bias takes its layer's fan-in
    assert r(f"kaiming:{scale}", conv.weight, conv, "weight") == pytest.approx(scale * math.sqrt(2 / 27))
    assert r(f"xavier:{scale}", conv.bias, conv, "bias") == pytest.approx(scale * math.sqrt(2 / (27 + 72)))
    assert r(f"lecun:{scale}", emb.weight, emb, "weight") == pytest.approx(scale)  # one-hot input: fan_in 1
    # scale 1 is exactly the init std
    assert r("lecun:1", lin.weight, lin, "weight") == pytest.approx(1 / 8)


def test_scale_accepts_any_float_syntax_and_absolute_floats_stay_absolute():
    lin = nn.Linear(16, 4)
    assert A.parse_sigma0("lecun:1e-2") == ("lecun", 0.01)
    assert A.parse_sigma0("xavier:2") == ("xavier", 2.0)
    assert A.resolve_sigma0(0.2, "x", lin.weight, lin, "weight") == 0.2
    assert A.resolve_sigma0(1, "x", lin.bias, lin, "bias") == 1.0


@pytest.mark.parametrize("norm", [nn.LayerNorm(64), nn.BatchNorm1d(64), nn.GroupNorm(4, 64)])
def test_normalisation_parameters_are_not_read_as_fan_in_1(norm):
    """Norm weights/biases follow the 1-D rule, never ``scale * 1`` (which "fan_in = 1" would give)."""
    for scale in (0.3, 1.0):
        for attr in ("weight", "bias"):
            p = getattr(norm, attr)
            got = A.resolve_sigma0(f"lecun:{scale}", "n", p, norm, attr)
            assert got == pytest.approx(scale * A.UNIT_SIGMA0) and A.UNIT_SIGMA0 == 0.01
    loose = nn.Parameter(torch.ones(10))
    assert A.resolve_sigma0("lecun:1", "loose", loose, None, "") == pytest.approx(A.UNIT_SIGMA0)


@pytest.mark.parametrize(
    "spec,exc,text",
    [
        ("lecun:", ValueError, "'lecun:'; the scale after 'lecun:' must be a finite number >= 0"),
        ("lecun:abc", ValueError, "'lecun:abc'; the scale after 'lecun:'"),
        ("kaiming:-1", ValueError, "'kaiming:-1'; the scale after 'kaiming:'"),
        ("lecun:nan", ValueError, "'lecun:nan'"),
        ("xavier:inf", ValueError, "'xavier:inf'"),
        ("glorot:1", ValueError, "sigma0 value: 'glorot:1'; expected one of ['kaiming', 'lecun', 'xavier']"),
        ("LECUN", ValueError, "'LECUN'; expected one of"),
        ("rel:0.3", ValueError, "'rel:0.3'; expected one of"),
        ([0.1], TypeError, "sigma0 value: [0.1]"),
        (True, TypeError, "sigma0 value: True"),
        (-0.1, ValueError, "sigma0 value: -0.1"),
    ],
)
def test_bad_specs_name_the_value_and_the_forms_allowed(spec, exc, text):
    m = nn.Sequential(nn.Linear(4, 3))
    entry_points = [
        lambda: A.check_sigma0_spec(spec),
        lambda: syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1, sigma0=spec),
        lambda: syre.Penalty(m, gamma=0.1, sigma0=spec),
        lambda: syre.reparametrize(m, sigma0=spec),
    ]
    for call in entry_points:
        with pytest.raises(exc) as info:
            call()
        assert text in str(info.value)
    assert m[0].weight.__class__ is nn.Parameter  # reparametrize refused before changing anything


def test_every_entry_point_resolves_the_same_sigma0():
    def make():
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.LayerNorm(16), nn.Linear(16, 3))

    for spec in ("lecun", "kaiming:0.5", 0.07):
        m = make()
        s = syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1, sigma0=spec)
        via_attach = [r["sigma0"] for r in s.coverage()]
        via_penalty = syre.Penalty(make(), gamma=0.1, sigma0=spec).sigma0s
        via_reparam = [e[3] for e in syre.reparametrize(make(), sigma0=spec)._entries]
        via_state = [p["sigma0"] for p in s.state_dict()["params"]]
        assert via_attach == pytest.approx(via_penalty)
        assert via_attach == pytest.approx(via_reparam)
        assert via_attach == pytest.approx(via_state)
        assert s.anchor("0.weight").theta0.std().item() == pytest.approx(via_attach[0], rel=0.2)


def test_a_checkpoint_keeps_its_resolved_sigma0_across_a_change_of_default():
    """The state stores floats: a state saved under another default restores that state's anchors."""
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    old = {"0.weight": 0.01 / math.sqrt(6), "0.bias": 0.01 / math.sqrt(6), "2.weight": 0.01 / 4, "2.bias": 0.01 / 4}
    s_old = syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1, sigma0=lambda n, p: old[n], seed=3)
    sd = s_old.state_dict()
    s_old.remove()
    s = syre.attach(torch.optim.SGD(m.parameters(), lr=0.1), m, gamma=0.1, seed=3)  # the current default
    s.load_state_dict(sd)
    for name, s0 in old.items():
        want = syre.anchor(3, name, dict(m.named_parameters())[name].shape, sigma0=s0, d_spread=s.d_spread)
        got = s.anchor(name)
        assert torch.equal(got.theta0, want.theta0) and torch.equal(got.d, want.d)


def _train(sigma0, steps=PROBE_STEPS + 3, opt="adamw", gamma=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.randn(128, 20, generator=g), torch.randint(0, 10, (128,), generator=g)
    if opt == "adamw":
        o = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=gamma)
        s = syre.attach(o, m, sigma0=sigma0)
    else:
        o = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        s = syre.attach(o, m, gamma=gamma, sigma0=sigma0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(steps):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    return s, [w for w in caught if issubclass(w.category, WeakPullWarning)]


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_weak_pull_warns_once_when_the_decay_is_strong_and_the_anchor_tiny(opt):
    s, caught = _train("lecun:1e-5", opt=opt, gamma=3.0)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "sigma0='match'" in msg and "close to weight decay" in msg and "docs/does-syre-matter.md" in msg
    ratios = s.pull_ratios()
    assert set(ratios) == set(s.names()) and max(ratios.values()) < WEAK_PULL_RATIO
    assert s._probe._snap == {}  # nothing kept after the first steps
    assert "pull/update" in s.summary() and "syre is close to weight decay" in s.summary()


def test_a_weak_decay_is_said_in_the_summary_and_not_warned():
    """With a weak decay syre and weight decay both do nearly nothing: a fact for summary(), not a warning."""
    s, caught = _train("lecun:1e-5", gamma=0.01)
    assert caught == []
    assert s.pull_report()["verdict"].startswith("decay too weak to collapse anything")


@pytest.mark.parametrize("opt", ["adamw", "sgd"])
def test_no_warning_at_the_default(opt):
    s, caught = _train(A.DEFAULT_SIGMA0, opt=opt, gamma=3.0)
    assert caught == []
    assert "anchor small" not in s.pull_report()["verdict"]


def test_pull_ratio_matches_its_definition_for_adam():
    """Adam's first update is lr * sign(g) per element, so pull / update = gamma * sigma0 at step 1."""
    m = nn.Sequential(nn.Linear(8, 4))
    o = torch.optim.Adam(m.parameters(), lr=1e-3)
    s = syre.attach(o, m, gamma=0.5, sigma0=0.2, d_spread=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(PROBE_STEPS):
        o.zero_grad()
        m(torch.randn(16, 8, generator=g)).square().mean().backward()
        o.step()
    r = s.pull_ratios()
    # the later steps' updates are at most lr in magnitude: the median ratio is >= gamma * sigma0
    assert r["0.weight"] >= 0.5 * 0.2 * (1 - 1e-3)
    assert r["0.weight"] < 0.5 * 0.2 * 3
    row = {x["name"]: x for x in s.coverage()}["0.weight"]
    assert row["pull_ratio"] == r["0.weight"] and row["strength"] == pytest.approx(0.1)


def test_the_check_leaves_other_step_hooks_alone():
    """Hooks registered after syre's run at every step, also at the step where the check ends."""
    m = nn.Sequential(nn.Linear(8, 4))
    o = torch.optim.SGD(m.parameters(), lr=0.1)
    syre.attach(o, m, gamma=0.1)
    calls = []
    o.register_step_pre_hook(lambda *a: calls.append("pre"))
    o.register_step_post_hook(lambda *a: calls.append("post"))
    for _ in range(PROBE_STEPS + 2):
        o.zero_grad()
        m(torch.ones(2, 8)).sum().backward()
        o.step()
    assert calls == ["pre", "post"] * (PROBE_STEPS + 2)


def test_no_check_without_syre_pull():
    """sigma0 = 0 (weight decay by choice) and gamma = 0 are not "negligible pulls": no warning."""
    for kwargs in (dict(sigma0=0.0), dict(gamma=0.0)):
        m = nn.Sequential(nn.Linear(8, 4))
        o = torch.optim.SGD(m.parameters(), lr=0.1)
        s = syre.attach(o, m, **{"gamma": 0.1, **kwargs})
        with warnings.catch_warnings():
            warnings.simplefilter("error", WeakPullWarning)
            for _ in range(PROBE_STEPS + 1):
                o.zero_grad()
                m(torch.ones(2, 8)).sum().backward()
                o.step()
        assert s.pull_ratios() == {}


def test_the_jax_port_resolves_the_same_presets():
    """syre.optax reads torch-layout shapes as torch does: the same sigma0 for every spec form."""
    from syre import optax as sx

    class Leaf:
        def __init__(self, shape):
            self.shape = shape

    lin = nn.Linear(6, 4)
    shapes = {"0.weight": (4, 6), "0.bias": (4,), "norm.scale": (4,)}
    for spec in ("lecun", "kaiming:0.3", "xavier:2", 0.05):
        for name, p, attr in (("0.weight", lin.weight, "weight"), ("0.bias", lin.bias, "bias")):
            got = sx._resolve_sigma0(spec, name, Leaf(shapes[name]), "torch", shapes)
            assert got == pytest.approx(A.resolve_sigma0(spec, name, p, lin, attr))
    ln = nn.LayerNorm(4)
    assert sx._resolve_sigma0("lecun:0.5", "norm.scale", Leaf((4,)), "torch", shapes) == pytest.approx(
        A.resolve_sigma0("lecun:0.5", "n", ln.weight, ln, "weight"))
    with pytest.raises(ValueError, match="'lecun:-2'"):
        sx._resolve_sigma0("lecun:-2", "0.weight", Leaf((4, 6)), "torch", shapes)
