"""syre.optax: the same anchors as torch, the decay step, masks, schedules, integer state."""
import collections
import math

import numpy as np
import pytest
import torch
from torch import nn

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import syre  # noqa: E402
from syre import anchors as A, optax as so  # noqa: E402
from syre.rng import jax as jax_gen  # noqa: E402

CASES = [
    (0, "enc.weight", (64, 33), 1.0, 0.5),
    (2**64 - 1, "params.Dense_0.kernel", (5, 7, 11), 0.02, 0.1),
    (12345, "layers.3.bias", (1000,), 0.3, 0.0),
    (7, "scalar", (), 1.0, 0.9),
]


@pytest.mark.parametrize("seed,name,shape,sigma0,d_spread", CASES)
def test_anchor_is_bitwise_torch_in_float32_without_x64(seed, name, shape, sigma0, d_spread):
    """Format 2: the JAX and torch anchors are the same bits, with jax_enable_x64 off."""
    assert not jax.config.jax_enable_x64
    t = A.anchor(seed, name, shape, sigma0=sigma0, d_spread=d_spread)
    theta0, d = (np.asarray(a) for a in so.anchor(seed, name, shape, sigma0=sigma0, d_spread=d_spread))
    assert theta0.shape == tuple(shape) and theta0.dtype == np.float32
    assert np.array_equal(theta0, t.theta0.numpy()) and np.array_equal(d, t.d.numpy())
    with jax.enable_x64(True):  # float64 anchors (for float64 parameters) equal torch's float64 ones
        t64 = A.anchor(seed, name, shape, sigma0=sigma0, d_spread=d_spread, dtype=torch.float64)
        theta64, d64 = so.anchor(seed, name, shape, sigma0=sigma0, d_spread=d_spread, dtype=jnp.float64)
        assert np.array_equal(np.asarray(theta64), t64.theta0.numpy()) and np.array_equal(np.asarray(d64), t64.d.numpy())


@pytest.mark.parametrize("seed,name,shape,sigma0,d_spread", CASES)
def test_format1_anchor_equals_torch_to_float32_rounding(seed, name, shape, sigma0, d_spread):
    t = A.anchor(seed, name, shape, sigma0=sigma0, d_spread=d_spread, version=1)
    theta0, d = (np.asarray(a) for a in so.anchor(seed, name, shape, sigma0=sigma0, d_spread=d_spread, format_version=1))
    assert theta0.shape == tuple(shape) and theta0.dtype == np.float32
    ref = t.theta0.numpy()
    # float32 arithmetic in JAX vs float64 rounded once in torch: within 3 float32 ulps of
    # max(|theta0|, sigma0), measured over 4 million draws (see test_normal_float32_path_*).
    ulp = np.spacing(np.maximum(np.abs(ref), np.float32(sigma0)))
    assert np.all(np.abs(theta0 - ref) <= 4 * ulp)
    assert np.all(np.abs(d - t.d.numpy()) <= 2 * np.spacing(np.float32(1.0)))
    if ref.size > 100:
        assert np.mean(theta0 == ref) > 0.3  # about half the elements are bitwise equal already


@pytest.mark.parametrize("seed,name,shape,sigma0,d_spread", CASES[:2])
def test_format1_anchor_is_bitwise_torch_with_x64(seed, name, shape, sigma0, d_spread):
    t = A.anchor(seed, name, shape, sigma0=sigma0, d_spread=d_spread, version=1)
    with jax.enable_x64(True):
        theta0, d = so.anchor(seed, name, shape, sigma0=sigma0, d_spread=d_spread, format_version=1)
    assert np.array_equal(np.asarray(theta0), t.theta0.numpy())
    assert np.array_equal(np.asarray(d), t.d.numpy())


def test_format1_decay_resumes_format1_anchors():
    params = {"w": jnp.full((4, 5), 0.5)}
    tx = so.syre_decay(1.0, sigma0=0.3, d_spread=0.0, seed=2, format_version=1)
    u, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    theta0 = A.anchor(2, "w", (4, 5), sigma0=0.3, version=1).theta0.numpy()
    np.testing.assert_allclose(np.asarray(u["w"]), 0.5 - theta0, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="Invalid anchor format version: 3"):
        so.syre_decay(1.0, format_version=3)


def test_philox_words_equal_torch():
    g = np.random.default_rng(1)
    counters = g.integers(0, 2**32, 4096, dtype=np.uint64)
    for key in [(0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (123456789, 987654321)]:
        tw = A.philox4x32(torch.from_numpy(counters.astype(np.int64)), torch.zeros(4096, dtype=torch.int64), key)
        jw = jax_gen._philox(jnp.asarray(counters.astype(np.uint32)), jnp.uint32(key[0]), jnp.uint32(key[1]))
        for a, b in zip(tw, jw):
            assert np.array_equal(a.numpy().astype(np.uint32), np.asarray(b))
    # Random123's known answer for Philox4x32-10, counter 0 and key 0.
    words = jax_gen._philox(jnp.zeros(1, jnp.uint32), jnp.uint32(0), jnp.uint32(0))
    assert [int(w[0]) for w in words] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


def test_normal_float32_path_at_the_extremes_of_the_words():
    edge = np.array([0, 1, 2, 255, 256, 2**24, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 257, 2**32 - 2, 2**32 - 1], dtype=np.uint64)
    quarters = np.array([(2**29 * k + o) % 2**32 for k in range(8) for o in (-129, 0, 128)], dtype=np.uint64)
    x0 = np.concatenate([np.repeat(edge, len(edge)), np.full(len(quarters), 5)]).astype(np.uint32)
    x1 = np.concatenate([np.tile(edge, len(edge)), quarters]).astype(np.uint32)
    u1 = (x0.astype(np.float64) + 1) * 2.0**-32
    ref = (np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * x1.astype(np.float64) * 2.0**-32)).astype(np.float32)
    got = np.asarray(jax_gen._normal_f32(jnp.asarray(x0), jnp.asarray(x1)))
    ulp = np.spacing(np.maximum(np.abs(ref), np.float32(1.0)))
    assert np.all(np.abs(got - ref) <= 2 * ulp)
    assert got[0] == pytest.approx(math.sqrt(-2 * math.log(2.0**-32)), rel=1e-6)  # the largest |z|
    assert got[len(edge) * (len(edge) - 1)] == 0.0  # x0 = 2**32 - 1: u1 = 1, r = 0


def test_param_names_are_key_paths():
    Pair = collections.namedtuple("Pair", "left right")
    tree = {"enc": {"weight": jnp.ones((2, 3)), "bias": jnp.ones(2)}, "layers": [jnp.ones(1), Pair(jnp.ones(1), jnp.ones(1))]}
    assert so.param_names(tree) == ["enc.bias", "enc.weight", "layers.0", "layers.1.left", "layers.1.right"]


class Enc(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(5, 4)
        self.head = nn.Linear(4, 3)


@pytest.mark.parametrize("d_spread", [0.0, 0.2])
def test_decay_steps_equal_torch_attach(d_spread):
    """SGD + syre.attach in torch and chain(syre_decay, scale(-lr)) in optax follow one trajectory."""
    model = Enc()
    g = torch.Generator().manual_seed(0)
    grads = {n: torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}
    start = {m: {a: jnp.asarray(getattr(getattr(model, m), a).detach().numpy()) for a in ("weight", "bias")} for m in ("enc", "head")}
    jgrads = {m: {a: jnp.asarray(grads[f"{m}.{a}"].numpy()) for a in ("weight", "bias")} for m in ("enc", "head")}
    lr, gamma, seed = 0.1, 0.5, 9

    def run_optax(sigma0):
        tx = optax.chain(so.syre_decay(gamma, sigma0=sigma0, d_spread=d_spread, seed=seed, kernel_layout="torch"), optax.scale(-lr))
        params, state = start, tx.init(start)
        update = jax.jit(tx.update)
        for _ in range(5):
            u, state = update(jgrads, state, params)
            params = optax.apply_updates(params, u)
        return params

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    s = syre.attach(opt, model, gamma=gamma, sigma0="lecun", d_spread=d_spread, seed=seed)
    for _ in range(5):
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        opt.step()
    params, toward_origin = run_optax("lecun"), run_optax(0.0)
    # presets read the same fans: the bias takes its weight's fan-in in both frameworks
    resolved = so.sigma0s(start, "lecun", kernel_layout="torch")
    for r in s.coverage():
        assert resolved[r["name"]] == pytest.approx(r["sigma0"], rel=1e-12)
    for n, p in model.named_parameters():
        m, a = n.split(".")
        want = p.detach().numpy()
        np.testing.assert_allclose(np.asarray(params[m][a]), want, rtol=0, atol=2e-6)
        assert np.abs(np.asarray(toward_origin[m][a]) - want).max() > 1e-4  # the anchors matter


def test_zero_anchor_is_add_decayed_weights_and_adamw():
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.arange(3.0)}
    grads = jax.tree.map(lambda p: jnp.cos(p * 3.0), params)
    a = optax.adamw(0.01, weight_decay=0.3)
    b = optax.chain(optax.scale_by_adam(), so.syre_decay(0.3, sigma0=0.0, d_spread=0.0), optax.scale_by_learning_rate(0.01))
    pa, pb, sa, sb = params, params, a.init(params), b.init(params)
    a_update, b_update = jax.jit(a.update), jax.jit(b.update)
    for _ in range(3):
        ua, sa = a_update(grads, sa, pa)
        ub, sb = b_update(grads, sb, pb)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
    for k in params:
        np.testing.assert_array_equal(np.asarray(pa[k]), np.asarray(pb[k]))


def test_update_adds_gamma_d_diff_with_the_anchors_of_the_full_names():
    params = {"enc": {"weight": jnp.full((3, 4), 0.5), "bias": jnp.full((3,), -0.25)}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = so.syre_decay(0.7, sigma0=0.2, d_spread=0.3, seed=4, mask={"enc": {"weight": True, "bias": False}})
    u, state = jax.jit(tx.update)(zeros, tx.init(params), params)
    theta0, d = A.anchor(4, "enc.weight", (3, 4), sigma0=0.2, d_spread=0.3)
    expected = 0.7 * d.double().numpy() * (0.5 - theta0.double().numpy())
    np.testing.assert_allclose(np.asarray(u["enc"]["weight"]), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(u["enc"]["bias"]), 0.0)  # masked out


def test_state_holds_only_integers_and_a_gamma_schedule_counts():
    params = {"a": jnp.ones((4, 4)), "b": jnp.ones(4)}
    tx = so.syre_decay(lambda count: 0.1 * (count + 1), sigma0=0.0, d_spread=0.0)
    state = tx.init(params)
    leaves = jax.tree.leaves(state)
    assert leaves and all(jnp.issubdtype(x.dtype, jnp.integer) for x in leaves)
    assert sum(x.size for x in leaves) == 1 + 2 * 2  # the count and two uint32 words per parameter
    assert [int(w) for w in state.keys["a"]] == list(A.stream_key(0, "a"))
    zeros = jax.tree.map(jnp.zeros_like, params)
    update = jax.jit(tx.update)
    for k in range(3):
        u, state = update(zeros, state, params)
        np.testing.assert_allclose(np.asarray(u["a"]), 0.1 * (k + 1), rtol=1e-6)
    assert int(state.count) == 3


def test_flax_layout_presets():
    params = {
        "Dense_0": {"kernel": jnp.zeros((5, 4)), "bias": jnp.zeros(4)},
        "Conv_0": {"kernel": jnp.zeros((3, 3, 2, 8)), "bias": jnp.zeros(8)},
        "Embed_0": {"embedding": jnp.zeros((10, 4))},
        "LayerNorm_0": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
    }
    s = so.sigma0s(params)
    k = A.DEFAULT_SIGMA0_SCALE  # a bare preset is that multiple of the init std
    assert s["Dense_0.kernel"] == pytest.approx(k / math.sqrt(5)) and s["Dense_0.bias"] == s["Dense_0.kernel"]
    assert s["Conv_0.kernel"] == pytest.approx(k / math.sqrt(3 * 3 * 2)) and s["Conv_0.bias"] == s["Conv_0.kernel"]
    assert s["Embed_0.embedding"] == pytest.approx(k)
    assert s["LayerNorm_0.scale"] == s["LayerNorm_0.bias"] == pytest.approx(k * A.UNIT_SIGMA0)
    x = so.sigma0s(params, "xavier")
    assert x["Dense_0.kernel"] == pytest.approx(k * math.sqrt(2 / 9))
    assert so.sigma0s(params, "lecun:0.3")["Dense_0.kernel"] == pytest.approx(0.3 / math.sqrt(5))
    # torch layout reads the Dense kernel (5, 4) as (out=5, in=4)
    assert so.sigma0s(params, kernel_layout="torch")["Dense_0.kernel"] == pytest.approx(k / 2)


def test_bfloat16_params_keep_their_dtype():
    params = {"w": jnp.ones((8, 8), jnp.bfloat16)}
    tx = so.syre_decay(0.5, sigma0=0.1)
    u, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert u["w"].dtype == jnp.bfloat16 and float(jnp.abs(u["w"]).max()) > 0.3


def test_update_without_params_and_integer_params_are_refused():
    tx = so.syre_decay(0.1)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="needs the current params"):
        tx.update(params, tx.init(params))
    with pytest.raises(ValueError, match="Parameter 'n' has dtype int32"):
        tx.init({"n": jnp.ones(3, jnp.int32)})


def test_leaves_whose_joined_names_collide_are_refused_naming_both():
    params = {"a.b": jnp.ones(3), "a": {"b": jnp.zeros(3)}}
    tx = so.syre_decay(0.1)
    for call in (lambda: tx.init(params), lambda: so.param_names(params), lambda: so.sigma0s(params)):
        with pytest.raises(ValueError, match=r"the leaves \['a'\]\['b'\] and \['a.b'\] both have the name 'a.b'"):
            call()


def test_attach_keywords_go_through_config_and_include_exclude_select_leaves():
    params = {"enc": {"weight": jnp.full((3, 4), 0.5), "bias": jnp.full((3,), -0.25)}, "head": {"weight": jnp.ones((2, 3))}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = so.syre_decay(0.7, sigma0=0.2, seed=4, include="enc.*", exclude=lambda name, leaf: leaf.ndim < 2,
                       mode="seeded", target="random", rounding="nearest")
    u, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    theta0, d = A.anchor(4, "enc.weight", (3, 4), sigma0=0.2, d_spread=0.1)
    np.testing.assert_allclose(np.asarray(u["enc"]["weight"]), 0.7 * d.numpy() * (0.5 - theta0.numpy()), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(u["enc"]["bias"]), 0.0)  # excluded (1-D)
    np.testing.assert_array_equal(np.asarray(u["head"]["weight"]), 0.0)  # not included
    with pytest.raises(ValueError, match="Invalid include rule 'dec.*': it matches no parameter"):
        so.syre_decay(0.1, include="dec.*").init(params)


