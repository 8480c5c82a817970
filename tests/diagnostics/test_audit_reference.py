"""Collapse judged against what a layer could have: no false alarms on fresh models of each kind,
planted collapse of each kind found, weight-decay collapse of the E5 set-up found; the rules'
thresholds at their boundaries; the fresh-init twin; the structural maxima; recurrent replay."""
import math

import pytest
import torch
from torch import nn

import model_zoo as Z
from syre.diagnostics import (
    EXACT_SHARE,
    INACTIVE_SHARE,
    INACTIVE_Z,
    RANK_SHARE,
    REFERENCE_MARGIN,
    _measure,
    _recurrent,
    _twin,
    _verdict as V,
    audit,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only add overhead


# ---------------------------------------------------------------- fresh models are healthy
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", Z.KINDS)
def test_fresh_models_of_each_kind_are_healthy(kind, seed):
    m, x = Z.make(kind, seed)
    r = audit(m, x)
    assert not r.collapsed and r.findings == [], str(r)
    assert len(r.layers) >= 3


def test_a_fresh_expanding_layer_is_not_low_rank():
    """The issue's example: 8 outputs of a 4-dim input have rank 4 by construction."""
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(4, 8))
    for reference in ("init", None):
        r = audit(m, x, reference=reference)
        rep = r["0"].representation
        assert not r.collapsed, str(r)
        assert rep["rank"] == 4 and rep["max_rank"] == 4 and rep["max_rank_by"] == "input"


def test_two_fresh_draws_agree_within_two_percent():
    """What RANK_SHARE's margin rests on: fresh initialisations differ by far less than 10%."""
    for kind in Z.KINDS:
        m0, x = Z.make(kind, 0)
        m1, _ = Z.make(kind, 1)
        a, b = audit(m0, x, reference=None), audit(m1, x, reference=None)
        for la, lb in zip(a.layers, b.layers):
            ra, rb = la.representation["rank"], lb.representation["rank"]
            assert abs(ra - rb) <= 0.02 * max(ra, rb) + 1, (kind, la.name, ra, rb)
            assert abs(la.weight_rank - lb.weight_rank) <= 0.02 * la.weight_max_rank + 1, (kind, la.name)


# ---------------------------------------------------------------- planted collapse is found
@pytest.mark.parametrize("kind", Z.KINDS)
def test_planted_collapse_of_each_kind_is_found(kind):
    m, x = Z.make(kind, 0)
    expected = Z.plant(kind, m)
    r = audit(m, x)
    got = {layer.name: set(layer.collapse) for layer in r.layers if layer.collapse}
    for layer, flags in expected.items():
        assert flags <= got.get(layer, set()), (layer, flags, got, str(r))
    # a layer flagged beyond the planted ones must be downstream of them, and say so
    for layer in set(got) - set(expected):
        assert any(f.startswith(f"{layer}:") and "collapsed upstream" in f for f in r.findings), (layer, r.findings)
    assert r.collapsed


# ---------------------------------------------------------------- weight decay's collapse (E5's set-up)
@pytest.fixture(scope="module")
def e5_nets():
    pytest.importorskip("sklearn")
    from e5_runs import e5_run

    return {arm: e5_run(arm) for arm in ("none", "wd", "syre")}


@pytest.mark.parametrize("reference", ["init", "bench"])
def test_weight_decay_collapse_in_the_e5_setup_is_found(e5_nets, reference):
    """E5 (4-layer ReLU MLP, Adam, digits, gamma 10): weight decay's hidden layers go low rank; the
    same net trained without decay, or with syre at sigma0 = the init std, is healthy. Judged
    against torch's own re-initialisation and against the benchmark's LeCun init alike."""
    verdicts = {}
    for arm, (net, _, x, fresh) in e5_nets.items():
        r = audit(net, x, reference="init" if reference == "init" else fresh)
        verdicts[arm] = r
        hidden = [layer for layer in r.layers if layer.name.startswith("hidden.")]
        if arm == "wd":
            assert r.collapsed and "low rank" in r["hidden.1"].collapse, str(r)
            e = r["hidden.1"].evidence["representation rank"]
            assert e["value"] < 0.7 * e["could_have"]  # far below the 0.9 limit, not at its edge
        else:
            assert not r.collapsed, (arm, str(r))
            for layer in hidden:  # and not at the edge either
                e = layer.evidence["representation rank"]
                assert e["value"] >= 0.97 * e["could_have"], (arm, layer.name, e)
    wd, none = verdicts["wd"], verdicts["none"]
    assert wd["hidden.1"].representation["rank"] < 0.75 * none["hidden.1"].representation["rank"]


# ---------------------------------------------------------------- the rules at their boundaries
def test_rank_rule_boundary_and_units_added_back():
    assert V.rank_check(90, 100, 120)["flagged"] is False  # exactly RANK_SHARE of min(max, reference)
    assert V.rank_check(89, 100, 120)["flagged"] is True
    assert V.rank_check(89, 120, 100)["could_have"] == 100  # the smaller bound counts
    assert V.rank_check(80, 100, None, explained=10)["flagged"] is False  # directions dead units take
    assert V.rank_check(5, None, None) is None and V.rank_check(0, 0, 0)["flagged"] is False
    assert RANK_SHARE == 0.9


def test_exact_state_rule():
    assert V.exact_check(1, 100, 0)["flagged"] is False  # 1 unit is not more than 1% of 100
    assert V.exact_check(2, 100, 0)["flagged"] is True
    assert V.exact_check(1, 50, 0)["flagged"] is True  # in a layer of up to 100 units one is enough
    assert V.exact_check(12, 64, 12)["flagged"] is False  # the reference has them too
    assert V.exact_check(12, 64, 0, structural=12)["flagged"] is False  # so does the structure
    assert EXACT_SHARE == 0.01


def test_inactive_rule_allows_for_draw_to_draw_noise():
    # n = 128, reference 11: the pooled rate gives sd of the difference sqrt(2 n p (1 - p))
    n, ref = 128, 11
    for count in (16, 20, 30, 40):
        p = (count + ref) / (2 * n)
        limit = max(INACTIVE_SHARE * n, INACTIVE_Z * math.sqrt(2 * n * p * (1 - p)))
        assert V.inactive_check(count, n, ref)["limit"] == pytest.approx(limit)
        assert V.inactive_check(count, n, ref)["flagged"] is (count - ref > limit)
    assert V.inactive_check(16, 128, 11)["flagged"] is False  # E5 trained without decay: 16 vs 11 at init
    assert V.inactive_check(40, 128, 11)["flagged"] is True
    assert V.inactive_check(1, 32, 0)["flagged"] is False and V.inactive_check(16, 64, 0)["flagged"] is True
    assert (INACTIVE_SHARE, INACTIVE_Z) == (0.05, 3.0)


# ---------------------------------------------------------------- structural maxima
def test_structural_maxima():
    g = torch.Generator().manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 24)
            self.ln = nn.LayerNorm(24)
            self.up = nn.Linear(24, 64)
            self.conv = nn.Conv2d(2, 40, 3, padding=1)

        def forward(self, idx, img):
            h = self.up(self.ln(self.emb(idx)))
            return h.mean() + self.conv(img).mean()

    m = Net()
    idx = torch.randint(0, 10, (8, 16), generator=g)  # only 10 distinct ids
    img = torch.randn(3, 2, 4, 4, generator=g)  # 48 rows of 2 channels
    r = audit(m, (idx, img))
    emb = r["emb"].representation  # the embedding's chain runs through the LayerNorm to the next Linear
    assert r["emb"].input_rank == 9 and r["emb"].activation == "" and r["emb"].stop == "feeds linear"
    assert emb["max_rank"] == 9 + 1 and emb["max_rank_by"] == "input"  # 10 distinct rows; LayerNorm adds one
    up = r["up"]
    assert up.input_rank <= 10 and up.representation["max_rank"] == up.input_rank
    conv = r["conv"].representation
    # 40 output channels read 3 x 3 patches of 2 channels: 18 directions at most, weight and output alike
    assert r["conv"].weight_max_rank == 18 and conv["max_rank"] == 18 and conv["max_rank_by"] == "input"
    assert not r.collapsed, str(r)
    small = audit(nn.Sequential(nn.Linear(32, 32)), torch.randn(10, 32, generator=g))
    assert small["0"].representation["max_rank"] == 9 and small["0"].representation["max_rank_by"] == "batch"
    assert not small.collapsed


# ---------------------------------------------------------------- the fresh-init twin
class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(8, 6))  # no reset_parameters: redrawn N(0, 1/fan_in)
        self.bn = nn.BatchNorm1d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(x @ self.w.T)))


def test_fresh_twin_is_seeded_and_leaves_model_and_rng_alone():
    m = Custom()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    state = torch.get_rng_state()
    a, notes = _twin.fresh_twin(m, seed=3)
    b, _ = _twin.fresh_twin(m, seed=3)
    c, _ = _twin.fresh_twin(m, seed=4)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.fc.weight, c.fc.weight)
    assert not torch.equal(a.fc.weight, m.fc.weight)
    std = float(a.w.detach().std())
    assert 0.25 < std < 0.6 and any("w" in n and "N(0, 1/fan_in)" in n for n in notes)  # 1/sqrt(6) = 0.41
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(0)) + 3.0
    _twin.calibrate(a, (x,), {})
    h = x @ a.w.T
    assert torch.allclose(a.bn.running_mean, h.mean(0), atol=1e-5)  # batch statistics, as at a first step
    assert a.bn.momentum == 0.1 and a.training == m.training  # settings and flags restored
    assert audit(m, x).meta["notes"][0].startswith("fresh-init reference: 1 parameter(s)")


def test_given_reference_must_match_and_none_means_structure_only():
    m, x = Z.make("mlp", 0)
    with pytest.raises(ValueError, match=r"in the model, not in the reference: \['4.bias', '4.weight'\]"):
        audit(m, x, reference=nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64)))
    with pytest.raises(ValueError, match="the model itself"):
        audit(m, x, reference=m)
    with pytest.raises(ValueError, match="reference"):
        audit(m, x, reference="fresh")
    Z.plant("mlp", m)
    r = audit(m, x, reference=None)
    assert r.meta["reference"] is None and all(layer.reference is None for layer in r.layers)
    assert "duplicated" in r["0"].collapse and "dead" in r["2"].collapse  # exact states need no reference


# ---------------------------------------------------------------- recurrent layers
@pytest.mark.parametrize("cls, kw", [
    (nn.LSTM, dict(num_layers=2, bidirectional=True)),
    (nn.LSTM, dict(num_layers=1, batch_first=True)),
    (nn.GRU, dict(num_layers=2, batch_first=True)),
    (nn.RNN, dict(num_layers=2, nonlinearity="relu")),
    (nn.RNN, dict(num_layers=1, bidirectional=True)),
])
def test_recurrent_replay_matches_torch(cls, kw):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mod = cls(5, 7, **kw)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 5, generator=g)
    dirs = 2 if mod.bidirectional else 1
    h0 = torch.randn(mod.num_layers * dirs, 6 if not mod.batch_first else 4, 7, generator=g)
    hx = (h0, torch.randn_like(h0)) if cls is nn.LSTM else h0
    with torch.no_grad():
        out, _ = mod(x, hx)
    seqs = _recurrent.replay(mod, (x, hx))
    last = torch.cat(seqs[-1], dim=-1)  # [time, batch, dirs * hidden]
    if mod.batch_first:
        last = last.transpose(0, 1)
    assert torch.allclose(last, out, atol=1e-5)


def test_lstm_layers_in_the_report():
    m, x = Z.make("lstm", 0)
    r = audit(m, x)
    names = [layer.name for layer in r.layers]
    assert names == ["emb", "lstm.l0", "lstm.l1", "head"]  # forward order
    l0, l1 = r["lstm.l0"], r["lstm.l1"]
    assert l0.next == ["lstm.l1"] and l1.next == ["head"] and l0.units == 64
    assert l0.families["permutation"]["count"] == 64 * 63 // 2
    assert l0.shape == [256, 32 + 64] and l0.weight_max_rank == 96


def test_reference_failures_are_named():
    class Broken(nn.Linear):
        def reset_parameters(self):
            if hasattr(self, "armed"):
                raise RuntimeError("needs a config")
            super().reset_parameters()

    m = nn.Sequential(Broken(4, 6), nn.ReLU(), nn.Linear(6, 2))
    m[0].armed = True
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"re-initialising 0 \(Broken\).*needs a config.*reference=None"):
        audit(m, x)
    assert not audit(m, x, reference=None).collapsed
    bn = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2)).eval()
    r = audit(bn, x[:1])  # one sample: no batch statistics to calibrate the reference's BatchNorm on
    assert any("not calibrated" in n for n in r.meta["notes"]), r.meta["notes"]


def test_a_reference_counts_only_the_directions_it_clearly_has():
    """A spectrum with a tail near the tolerance: 59 clear directions and 5 at 3e-3 of the top."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    scale = torch.cat([torch.linspace(1.0, 0.05, 59), torch.full((5,), 3e-3)]).double()
    z = torch.randn(4000, 64, generator=g, dtype=torch.float64)
    z = (z - z.mean(0)) / z.std(0)
    rows = ((z @ q) @ torch.diag(scale) @ q.T).float()
    stats = _measure.rep_stats({"rows": rows, "std": rows.double().std(0), "samples": 4000}, 1e-3, 1e-3)
    assert (stats["rank"], stats["rank_clear"]) == (64, 59) and REFERENCE_MARGIN == 10
    # a layer at 58 is not "below 90% of 64" when the fresh layer clearly has 59
    assert V.rank_check(58, 64, stats["rank_clear"])["flagged"] is False
    assert V.rank_check(58, 64, stats["rank"])["flagged"] is False and V.rank_check(57, 64, 64)["flagged"] is True


def test_equal_rows_have_centred_rank_zero_not_round_off():
    rows = torch.randn(1, 16, generator=torch.Generator().manual_seed(0)).repeat(300, 1) * 7 + 3
    stats = _measure.rep_stats({"rows": rows, "std": rows.double().std(0), "samples": 300}, 1e-3, 1e-3)
    assert stats["rank"] == 0 and stats["rank_clear"] == 0 and stats["numerical_rank"] == 1
