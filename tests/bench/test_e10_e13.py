"""E10 to E13: their building blocks (their quick runs are in test_quick_runs.py)."""
import math

import pytest
import torch
from torch import nn

import syre

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")


# ----------------------------------------------------------------------------- E10: the character LM
def test_charlm_splits_partition_the_corpus_and_the_vocabulary_covers_it():
    from syre.bench import charlm

    text, info = charlm.corpus()
    s = charlm.splits()
    assert info["chars"] == len(text) == sum(len(s[k]) for k in ("train", "val", "test")) and info["vocab"] == int(s["vocab"])
    assert 0.09 < len(s["test"]) / len(text) < 0.11 and 0.09 < len(s["val"]) / len(text) < 0.11
    assert int(max(int(s[k].max()) for k in ("train", "val", "test"))) == info["vocab"] - 1
    x, y = charlm.eval_windows(s["val"], 16, 10)
    assert x.shape == (10, 16) and torch.equal(x[:, 1:], y[:, :-1])


def _tiny_cfg(**kw):
    from syre.bench.e10 import EXPERIMENT

    return EXPERIMENT.config(quick=True, overrides=kw)


def test_charlm_is_causal_tied_and_grouped_as_nanogpt():
    from syre.bench import charlm

    cfg = _tiny_cfg(n_layer=2)
    net = charlm.build(cfg, seed=0)
    assert net.lm_head.weight is net.wte.weight
    x = torch.randint(0, int(charlm.splits()["vocab"]), (2, cfg["block"]), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % int(charlm.splits()["vocab"])
    with torch.no_grad():
        a, b = net(x), net(y)
    assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.equal(a[:, -1], b[:, -1])  # a later token never changes earlier logits
    groups = charlm.groups(net)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters()) and len(set(ids)) == len(ids)
    assert all(p.dim() >= 2 for p in groups[0]["params"]) and all(p.dim() < 2 for p in groups[1]["params"])
    assert groups[1]["syre_gamma"] == 0.0 and "syre_gamma" not in groups[0]
    proj = dict(net.named_parameters())["h.0.attn.c_proj.weight"]
    assert float(proj.detach().std()) == pytest.approx(cfg["init_std"] / math.sqrt(2 * cfg["n_layer"]), rel=0.15)


def test_attention_ranks_at_their_extremes():
    from syre.bench import charlm

    cfg = _tiny_cfg(n_embd=32, n_head=2)
    net = charlm.build(cfg, seed=0)
    hd = 16
    with torch.no_grad():
        w = net.h[0].attn.c_attn.weight
        w.copy_(torch.randn(w.shape, generator=torch.Generator().manual_seed(1)))
        w[:32].zero_()
        w[0, 0] = w[hd, 1] = 1.0  # each head's W_Q has one non-zero row: W_Q,h^T W_K,h has rank 1
    r = charlm.attention_ranks(net)
    assert r["qk"] == pytest.approx([1.0, 1.0], abs=1e-9)
    assert all(v > 0.6 * hd for v in r["vo"])  # random W_V, W_O: close to full rank (hd)


def test_default_and_match_anchors_of_the_tied_embedding():
    """The case the 'match' preset is for: nanoGPT's embedding at std 0.02 gets an anchor of std 1 under 'lecun'."""
    from syre.bench import charlm

    net = charlm.build(_tiny_cfg(), seed=0)
    sig = {}
    for spec in ("lecun", "match"):
        opt = torch.optim.AdamW(charlm.groups(net), lr=1e-3, weight_decay=0.0)
        s = syre.attach(opt, net, gamma=0.1, sigma0=spec, d_spread=0.0, seed=0)
        sig[spec] = {c["name"]: c["sigma0"] for c in s.coverage()}
        s.remove()
    rms = float(net.wte.weight.detach().square().mean().sqrt())
    assert sig["lecun"]["wte.weight"] == pytest.approx(1.0) and sig["match"]["wte.weight"] == pytest.approx(rms, rel=1e-5)
    assert 0.015 < rms < 0.025


# ----------------------------------------------------------------------------- E11: the ResNet
def test_resnet_batchnorm_rules():
    from syre.bench import resnet
    from syre.bench.e11 import BN_ARMS, attach

    net = resnet.build(4, 2, seed=0)
    f = resnet.bn_sigma0_fn(net)
    params = dict(net.named_parameters())
    assert f("stem.1.weight", params["stem.1.weight"]) == pytest.approx(1 / 3)  # the stem conv: fan-in 1 x 3 x 3
    assert f("stages.1.shortcut.1.weight", None) == pytest.approx(1 / 2)  # the 1x1 projection from 4 channels
    assert f("stages.1.bn2.bias", None) == pytest.approx(1 / math.sqrt(8 * 9))
    with pytest.raises(ValueError, match="no sigma0"):
        f("nope", None)
    # BatchNorm excluded: a huge decay with zero gradients moves every weight but BatchNorm's
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    h = attach(BN_ARMS["syre_bnx"], net, opt, {"gamma": 1.0, "sigma0": syre.DEFAULT_SIGMA0}, seed=0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in net.named_parameters():
        bn = isinstance(dict(net.named_modules())[n.rsplit(".", 1)[0]], nn.BatchNorm2d)
        assert torch.equal(p.detach(), before[n]) == bn, n
    h.remove()


def test_resnet_dead_channels_and_small_scales_at_their_extremes():
    from syre.bench import resnet

    net = resnet.build(4, 2, seed=0)
    x = torch.rand(16, 1, 14, 14, generator=torch.Generator().manual_seed(0))
    keep = resnet.probe(net, x)
    assert resnet.dead_channels(keep) == 0.0 and resnet.bn_small(net) == 0.0 and len(resnet.stage_ranks(keep)) == 2
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.zero_()
                m.bias.fill_(-1.0)
    keep = resnet.probe(net, x)
    assert resnet.bn_small(net) == 1.0 and resnet.dead_channels(keep) == 1.0


# ----------------------------------------------------------------------------- E12: the graph network
def test_gcn_equivariance_check_is_exact_and_can_fail():
    from syre.bench import graphs
    from syre.bench.e12 import EXPERIMENT

    cfg = EXPERIMENT.config(quick=True)
    a, x, y = graphs.sbm(3, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, a.transpose(1, 2)) and float(a.diagonal(dim1=1, dim2=2).abs().sum()) == 0.0
    assert sorted(torch.bincount(y[0]).tolist()) == [cfg["n_nodes"] // cfg["blocks"]] * cfg["blocks"]
    net = graphs.build(cfg, seed=0)
    assert graphs.equivariance_error(net, a, x, torch.Generator().manual_seed(1)) < 1e-13

    class Positional(graphs.GCN):  # breaks equivariance: a bias that depends on the node's index
        def forward(self, a_hat, x, keep=None):
            return super().forward(a_hat, x + torch.arange(x.shape[-2], dtype=x.dtype)[:, None] * 0.1, keep)

    bad = Positional(cfg["n_feat"], cfg["width"], cfg["layers"], cfg["blocks"])
    bad.load_state_dict(net.state_dict())
    assert graphs.equivariance_error(bad, a, x, torch.Generator().manual_seed(1)) > 1e-3


# ----------------------------------------------------------------------------- E13: merging
def test_weight_matching_recovers_a_hidden_permutation():
    from syre.bench import merging
    from syre.bench.common import mlp

    a = mlp(20, 12, 2, 5, seed=0)
    perms = [torch.randperm(12, generator=torch.Generator().manual_seed(i)) for i in (1, 2)]
    b = merging.permute(a, perms)
    x = torch.randn(30, 20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), atol=1e-6)
    found, info = merging.weight_matching(a, b, torch.Generator().manual_seed(0))
    aligned = merging.permute(b, found)
    for pa, pb in zip(a.parameters(), aligned.parameters()):
        assert torch.equal(pa, pb)
    assert info["gain"] > 0
    ts = [0.0, 0.5, 1.0]
    path = merging.interpolate(a, aligned, x, torch.zeros(30, dtype=torch.long), ts)
    assert merging.barrier(path["loss"], ts) == pytest.approx(0.0, abs=1e-6)
    assert (merging.barrier([1.0, 3.0, 2.0], ts) == pytest.approx(1.5)
            and merging.barrier([0.9, 0.5, 0.7], ts, higher_is_worse=False) == pytest.approx(0.3))


def test_pca_projection_lies_in_a_low_dimensional_subspace():
    from syre.bench import merging

    x = torch.randn(200, 30, generator=torch.Generator().manual_seed(0))
    mean, basis = merging.pca_project(x, 4)
    p = mean + (x - mean) @ basis @ basis.T
    s = torch.linalg.svdvals(p - p.mean(0))
    assert basis.shape == (30, 4) and float(s[4] / s[0]) < 1e-5
    with pytest.raises(ValueError, match="pca_dims"):
        merging.pca_project(x, 31)


# ----------------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize("exp_id,key,value", [("e10", "n_embd", 30), ("e10", "warmup", 10**6), ("e11", "momentum", 1.5),
                                              ("e12", "batch", 10**6), ("e13", "n_t", 2), ("e13", "dataset", "cifar")])
def test_bad_configuration_names_the_key(exp_id, key, value):
    from syre.bench import get_experiment
    from syre.bench.arms import ARMS

    exp = get_experiment(exp_id)
    with pytest.raises(ValueError, match=key):
        exp.trial(exp.config(quick=True, overrides={key: value}), ARMS["none"], 0)


def test_gammas_must_include_the_declared_settings():
    from syre.bench import get_experiment

    for exp_id in ("e10", "e11", "e12"):
        exp = get_experiment(exp_id)
        with pytest.raises(ValueError, match="gamma"):
            exp.design(exp.config(quick=True, overrides={"gammas": [0.5]}))


@pytest.mark.parametrize("tune_arms", [["syre"], ["wd"]])
def test_e12_reports_when_tune_arms_leave_out_the_heldout_tests(tmp_path, tune_arms):
    """Without both syre and wd among the tuned arms the held-out tests are not declared; the report must not read them."""
    from syre.bench import run_experiment

    s = run_experiment("e12", quick=True, out=tmp_path, verbose=False, overrides={"tune_arms": tune_arms})
    names = [t["name"] for t in s["tests"]]
    assert not any("held-out" in n for n in names)
    assert s["findings"]["sigma0"] == "" and "collapse" in s["findings"]


def test_e12_power_takes_the_seed_count_of_e12s_pilot_on_seeds_e12_never_used(tmp_path):
    from syre.bench import build_protocol, get_experiment, pilots, run_experiment
    from syre.bench.power import TARGET_POWER, power_t

    exp, e12 = get_experiment("e12-power"), get_experiment("e12")
    p = build_protocol(exp, exp.config())
    rec = pilots.load()["e12"]["tests"]["gamma 10: syre's accuracy above weight decay's"]
    n = len(p.evaluation_seeds)
    assert power_t(rec["mean"], rec["sd"], n) >= TARGET_POWER > power_t(rec["mean"], rec["sd"], n - 1)
    used = set(build_protocol(e12, e12.config()).evaluation_seeds) | set(build_protocol(e12, e12.config()).selection_seeds)
    assert not used & set(p.evaluation_seeds) and p.design.tests[0].a.key == "syre[gamma=10]"
    s = run_experiment("e12-power", quick=True, out=tmp_path, verbose=False)
    assert [t["role"] for t in s["tests"]] == ["primary", "secondary"] and s["arms"]["syre[gamma=10]"]["test_acc"]["n"] == 2
