"""The default sigma0 ("match"): every weight tensor's anchor at its own scale, whatever init the model used.

With the default, every weight tensor of a nanoGPT-style model (std-0.02 init), a GPT-2 model from
transformers' GPT2Config (Conv1D layers) and a default-initialised torch MLP gets an anchor within
[0.25, 3]x its own RMS at attach; "lecun" does not (the embeddings at 50x).
"""
import math
import warnings

import pytest
import torch
from torch import nn

import syre

LOW, HIGH = 0.25, 3.0


class Block(nn.Module):
    def __init__(self, d, n_layer):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)
        with torch.no_grad():
            for lin in (self.c_attn, self.c_fc):
                lin.weight.normal_(0.0, 0.02)
            for lin in (self.c_proj, self.mlp_proj):  # nanoGPT's residual projections
                lin.weight.normal_(0.0, 0.02 / math.sqrt(2 * n_layer))
            for lin in (self.c_attn, self.c_proj, self.c_fc, self.mlp_proj):
                lin.bias.zero_()

    def forward(self, x):
        q, k, v = self.c_attn(self.ln_1(x)).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v
        x = x + self.c_proj(a)
        return x + self.mlp_proj(torch.relu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    """nanoGPT's init at width 64, 2 layers: N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 n_layer)),
    zero biases, a head tied to the token embedding."""

    def __init__(self, vocab=65, d=64, n_layer=2, block=16):
        super().__init__()
        torch.manual_seed(0)
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        with torch.no_grad():
            self.wte.weight.normal_(0.0, 0.02)
            self.wpe.weight.normal_(0.0, 0.02)
        self.h = nn.ModuleList(Block(d, n_layer) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.h:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=97, n_positions=32)
    return transformers.GPT2LMHeadModel(cfg)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def _rms(t):
    return float(t.detach().double().square().mean().sqrt())


def _weight_ratios(model, **kw):
    """name -> (sigma0 / RMS, RMS(theta0) / RMS) of every covered weight tensor (2+ dims), and the warnings."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        s = syre.attach(opt, model, **kw)
    params = dict(model.named_parameters())
    out = {}
    for row in s.coverage():
        p = params.get(row["name"])
        if row["covered"] and p is not None and p.dim() >= 2:
            size = _rms(p)
            out[row["name"]] = (row["sigma0"] / size, _rms(s.anchor(row["name"]).theta0) / size)
    s.remove()
    return out, [w for w in rec if issubclass(w.category, syre.AnchorScaleWarning)]


@pytest.mark.parametrize("build", [NanoGPT, gpt2, mlp], ids=["nanogpt", "gpt2", "mlp"])
def test_the_default_anchors_every_weight_tensor_at_its_own_scale(build):
    model = build()
    ratios, far = _weight_ratios(model)  # the default sigma0
    assert len(ratios) >= 3
    for name, (sigma0_ratio, anchor_ratio) in ratios.items():
        assert LOW <= sigma0_ratio <= HIGH, (name, sigma0_ratio)
        assert LOW <= anchor_ratio <= HIGH, (name, anchor_ratio)  # the anchor drawn, not only its sigma0
    assert not far


@pytest.mark.parametrize("build", [NanoGPT, gpt2], ids=["nanogpt", "gpt2"])
def test_lecun_misses_std_002_models_and_is_warned(build):
    ratios, far = _weight_ratios(build(), sigma0="lecun")
    worst = max(r for r, _ in ratios.values())
    assert worst > 30  # the embeddings: fan-in 1, std 1 against 0.02
    assert len(far) == 1 and "sigma0='match'" in str(far[0].message)


def test_a_checkpoint_keeps_the_sigma0s_it_was_saved_with_under_the_new_default():
    model = NanoGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", syre.AnchorScaleWarning)
        old = syre.attach(opt, model, sigma0="lecun", seed=5)  # a run started under the old default
    saved, before = old.state_dict(), {r["name"]: r["sigma0"] for r in old.coverage() if r["covered"]}
    old.remove()
    resumed = syre.attach(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1), model, seed=5)
    assert {r["name"]: r["sigma0"] for r in resumed.coverage() if r["covered"]} != before  # the default moved
    resumed.load_state_dict(saved)
    assert {r["name"]: r["sigma0"] for r in resumed.coverage() if r["covered"]} == before
    assert resumed.anchor("wte.weight").theta0.std().item() == pytest.approx(1.0, rel=0.05)


def test_every_entry_point_has_the_one_default():
    import inspect

    for fn in (syre.Syre.__init__, syre.Penalty.__init__, syre.reparametrize):
        assert inspect.signature(fn).parameters["sigma0"].default is syre.DEFAULT_SIGMA0
    assert syre.Config().sigma0 is syre.DEFAULT_SIGMA0


@pytest.mark.parametrize("framework", ["lightning", "sb3", "transformers"])
def test_the_framework_entry_points_take_the_default_through_config(framework):
    """The callbacks and sb3's attach take attach's keywords through Config: no default of their own
    (run where the framework is installed: ci/integrations.sh)."""
    import importlib
    import inspect

    try:
        mod = importlib.import_module(f"syre.integrations.{framework}")
    except ImportError as exc:
        pytest.skip(str(exc))
    own = [v for v in vars(mod).values() if (inspect.isclass(v) or inspect.isfunction(v)) and v.__module__ == mod.__name__]
    sigs = [inspect.signature(v.__init__ if inspect.isclass(v) else v) for v in own]
    assert any(p.kind is p.VAR_KEYWORD for sig in sigs for p in sig.parameters.values()), mod.__name__
    assert not any("sigma0" in sig.parameters for sig in sigs), mod.__name__
    if hasattr(mod, "SyreCallback"):
        assert mod.SyreCallback().config.sigma0 is syre.DEFAULT_SIGMA0


def test_the_jax_port_takes_its_defaults_from_the_same_place():
    pytest.importorskip("jax")
    import inspect

    from syre import optax as sx
    from syre.sigma0 import DEFAULT_SHAPE_SIGMA0

    assert inspect.signature(sx.sigma0s).parameters["sigma0"].default is syre.DEFAULT_SIGMA0
    # syre_decay reads sigma0 from shapes at every update: "match" needs the initial values (sigma0s)
    assert "sigma0" not in inspect.signature(sx.syre_decay).parameters  # taken through attach's keywords
    import jax.numpy as jnp

    params = {"w": jnp.full((4, 3), 0.02), "b": jnp.zeros((3,))}
    grads = {"w": jnp.zeros((4, 3)), "b": jnp.zeros((3,))}

    def decay(**kw):
        tx = sx.syre_decay(0.5, seed=3, **kw)
        return tx.update(grads, tx.init(params), params)[0]

    default, shaped = decay(), decay(sigma0=DEFAULT_SHAPE_SIGMA0)
    assert all(bool(jnp.array_equal(default[k], shaped[k])) for k in params)
    assert not bool(jnp.array_equal(default["w"], decay(sigma0=0.0)["w"]))
    with pytest.raises(ValueError, match="sigma0s"):
        sx.syre_decay(0.5, sigma0=syre.DEFAULT_SIGMA0)
