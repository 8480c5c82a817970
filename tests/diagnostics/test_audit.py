"""The audit on models it has never seen: a small CNN with a residual block and functional
activations, with planted duplicated, dead and low-rank units; none on a random initialisation."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import syre
from syre.diagnostics import audit

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only add overhead


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        h = self.act(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block = ResBlock(8)
        self.head = nn.Conv2d(8, 12, 1)
        self.head_bn = nn.BatchNorm2d(12)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(12 * 4, 32)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(32, 16)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, x):
        x = self.block(torch.relu(self.stem(x)))
        x = torch.flatten(self.pool(torch.tanh(self.head_bn(self.head(x)))), 1)
        x = self.drop(F.relu(self.fc1(x)))
        return self.fc3(self.fc2(x))  # no nonlinearity between fc2 and fc3: rotation mirrors


def make_model(seed=0):
    g = torch.Generator().manual_seed(seed)
    m = SmallCNN()
    with torch.no_grad():
        for p in m.parameters():  # He-normal weights, small biases
            std = math.sqrt(2.0 / p[0].numel()) if p.dim() > 1 else 0.05
            p.copy_(torch.randn(p.shape, generator=g) * std)
        for bn in (m.block.bn1, m.block.bn2, m.head_bn):
            bn.weight.copy_(1 + 0.1 * torch.randn(bn.weight.shape, generator=g))
            bn.momentum = None  # cumulative average: running stats of the calibration batch
        m.train()
        m(batch(256, seed=99))  # BatchNorm statistics as after training
    m.eval()
    return m


def batch(n=128, seed=1):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def plant(m):
    """Duplicates in block.conv1 (through BN + ReLU), a dead head channel, a never-active fc1 unit,
    4 unused hidden directions between fc2 and fc3."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        b = m.block
        for i, j in [(1, 4), (1, 6)]:
            b.conv1.weight[j] = b.conv1.weight[i]
            b.conv1.bias[j] = b.conv1.bias[i]
            b.bn1.weight[j], b.bn1.bias[j] = b.bn1.weight[i], b.bn1.bias[i]
            b.bn1.running_mean[j], b.bn1.running_var[j] = b.bn1.running_mean[i], b.bn1.running_var[i]
            b.conv2.weight[:, j] = b.conv2.weight[:, i]
        m.head_bn.weight[5] = 0.0  # the unit's last affine before tanh is its BN scale and shift
        m.head_bn.bias[5] = 0.0
        m.fc1.weight.view(32, 12, 4)[:, 5] = 0.0
        m.fc1.bias[20] = -100.0
        basis, _ = torch.linalg.qr(torch.randn(16, 12, generator=g))
        proj = basis @ basis.T
        m.fc2.weight.copy_(proj @ m.fc2.weight)
        m.fc2.bias.copy_(proj @ m.fc2.bias)
        m.fc3.weight.copy_(m.fc3.weight @ proj)
    return m


def test_structure_of_an_unseen_model():
    r = audit(make_model(), batch())
    assert [layer.name for layer in r.layers] == ["stem", "block.conv1", "block.conv2", "head", "fc1", "fc2", "fc3"]
    nxt = {layer.name: layer.next for layer in r.layers}
    assert nxt == {"stem": [], "block.conv1": ["block.conv2"], "block.conv2": [], "head": ["fc1"],
                   "fc1": ["fc2"], "fc2": ["fc3"], "fc3": []}
    # the stem and conv2 write to the residual sum: their mirrors involve other layers
    assert "add" in r["stem"].stop and "add" in r["block.conv2"].stop
    assert r["fc3"].stop == "model output"
    assert list(r["block.conv1"].families) == ["permutation", "rescaling"]  # BN + ReLU
    assert list(r["head"].families) == ["permutation", "sign"]  # BN + tanh + avg pool + flatten
    assert list(r["fc2"].families) == ["permutation", "sign", "rescaling", "rotation"]
    assert r["block.conv1"].families["permutation"]["count"] == 8 * 7 // 2
    assert r["head"].representation["dim"] == 12


def test_random_init_shows_no_collapse():
    r = audit(make_model(seed=3), batch())
    assert r.findings == [] and not r.collapsed, str(r)
    for layer in r.layers:
        assert layer.duplicate_groups == [] and layer.dead_units == [] and not layer.low_rank_directions
        for d in layer.families.values():
            assert d["near"] == 0 and d["min_distance"] > 0.01


def never_active_fc1(m, x):
    out = {}
    h = m.fc1.register_forward_hook(lambda mod, i, o: out.__setitem__("z", o))
    with torch.no_grad():
        m(x)
    h.remove()
    return [int(i) for i in ((out["z"] > 0).sum(0) == 0).nonzero().flatten()]


def test_planted_states_are_found():
    m = plant(make_model())
    r = audit(m, batch())
    assert r["block.conv1"].duplicate_groups == [[1, 4, 6]]
    assert r["block.conv1"].families["permutation"]["near"] == 3
    assert r["head"].zero_units == [5] and 5 in r["head"].dead_units
    assert r["head"].families["sign"]["near"] == 1
    truth = never_active_fc1(m, batch())  # the planted unit, and any the planting switched off
    assert 20 in truth and r["fc1"].inactive_units == truth and r["fc1"].dead_units == truth
    assert r["fc1"].zero_units == []
    assert r["fc2"].low_rank_directions == 4
    assert r["fc2"].families["rotation"]["near"] == 4
    assert r["fc2"].duplicate_groups == [] and r["fc2"].dead_units == []
    assert r["fc2"].representation["numerical_rank"] == 12
    assert set(r["block.conv1"].collapse) >= {"duplicated"}
    assert "dead" in r["head"].collapse and "low rank" in r["fc2"].collapse
    # a never-active unit or two of 32 are within what a fresh layer shows (the noise allowance of
    # INACTIVE_Z): reported, not flagged; a unit with zero weights (an exact mirror state) is flagged
    assert r["fc1"].collapse == [] and r["fc1"].evidence["inactive"]["flagged"] is False
    n = len(truth)
    assert any(o.startswith(f"fc1: {n} of 32 units dead ({n} never active") for o in r.observations), r.observations
    for name in ("stem", "block.conv2", "fc3"):
        assert r[name].collapse == [], name
    text = str(r)
    assert "block.conv1: 3 of 8 units duplicated in 1 group (permutation mirrors; fresh init: 0)" in text
    assert "fc2: 4 of 16 hidden directions unused (rotation mirrors; fresh init: 0)" in text


def test_audit_never_modifies_the_model():
    m = plant(make_model())
    m.train()
    m.block.bn1.eval()  # a mixed state must come back exactly
    flags = {n: mod.training for n, mod in m.named_modules()}
    before = {k: v.clone() for k, v in m.state_dict().items()}
    audit(m, batch())
    assert {n: mod.training for n, mod in m.named_modules()} == flags
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched
    assert all(p.grad is None for p in m.parameters())
    for mod in m.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks


def test_report_dict_json_and_plot(tmp_path):
    r = audit(plant(make_model()), batch())
    d = json.loads(json.dumps(r.to_dict()))
    assert d["meta"]["model"] == "SmallCNN" and d["meta"]["batch"] == 128
    assert {layer["name"]: layer["duplicate_groups"] for layer in d["layers"]}["block.conv1"] == [[1, 4, 6]]
    assert d["findings"] == r.findings and len(d["findings"]) >= 4
    out = r.plot(tmp_path / "audit.png")
    assert (tmp_path / "audit.png").stat().st_size > 1000 and out.endswith("audit.png")
    r.to_json(tmp_path / "a.json")
    assert json.loads((tmp_path / "a.json").read_text())["meta"]["parameters"] == sum(
        p.numel() for p in make_model().parameters())


def test_anchor_distances_with_syre():
    m = make_model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    s = syre.attach(opt, m, sigma0=0.5)
    x, y = batch(64), torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    r = audit(m, x, s)
    manual = math.sqrt(sum(float((getattr(m.fc1, a).detach().double() - s.anchor(f"fc1.{a}").theta0.double()).norm()) ** 2
                           for a in ("weight", "bias")))
    assert r["fc1"].anchor_distance == pytest.approx(manual, rel=1e-9)
    assert r["fc1"].anchor_norm > 0
    rows = {a["name"]: a for a in r.anchors}
    assert set(rows) == {n for n, _ in m.named_parameters()}
    assert "|p-theta0|" in str(r)
    lin = nn.Linear(3, 3)
    other = syre.attach(torch.optim.AdamW(lin.parameters()), lin)
    with pytest.raises(ValueError, match="different model"):
        audit(m, x, other)


def test_activation_families_follow_the_forward():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d = nn.Linear(6, 10), nn.Linear(10, 10), nn.Linear(10, 10), nn.Linear(10, 2)
            self.ln = nn.LayerNorm(10)

        def forward(self, x):
            return self.d(F.gelu(self.c(self.ln(torch.tanh(self.b(torch.tanh(self.a(x))))))))

    r = audit(Net(), torch.randn(200, 6, generator=torch.Generator().manual_seed(0)))
    assert list(r["a"].families) == ["permutation", "sign"]
    # after LayerNorm the unit's last affine is (gamma_i, beta_i), read linearly by c: sign and rescaling
    assert list(r["b"].families) == ["permutation", "sign", "rescaling"] and r["b"].activation == "tanh+layer_norm"
    assert r["b"].next == ["c"]
    assert list(r["c"].families) == ["permutation"]


def test_attention_heads_rotation_mirrors():
    class Att(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x)[0]

    m = Att()
    with torch.no_grad():
        w = m.mha.in_proj_weight
        n = torch.zeros(4)
        n[0] = 1.0  # head 0: direction 0 of its 4-dim query/key space is never written
        w[0] = 0.0
        w[8] = 0.0
    r = audit(m, torch.randn(16, 5, 8, generator=torch.Generator().manual_seed(0)))
    fam = r["mha"].families
    assert fam["rotation QK"]["near"] == 1 and fam["rotation QK"]["count"] == 8
    assert fam["rotation VO"]["near"] == 0
    assert "low rank" in r["mha"].collapse


def test_input_forms_and_errors():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(4, 8)
            self.g = nn.Linear(8, 3)

        def forward(self, x, scale=1.0):
            return self.g(torch.relu(self.f(x * scale)))

    m = Two()
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert audit(m, (x, 2.0))["f"].next == ["g"]
    assert audit(m, {"x": x})["f"].next == ["g"]
    with pytest.raises(TypeError, match="model"):
        audit("model", x)
    with pytest.raises(TypeError, match="inputs"):
        audit(m, 3)
    with pytest.raises(ValueError, match="no tensor"):
        audit(m, (1.0,))
    with pytest.raises(ValueError, match="rtol"):
        audit(m, x, rtol=-1)
    with pytest.raises(ValueError, match="max_rows"):
        audit(m, x, max_rows=1)
    with pytest.raises(TypeError, match="syre"):
        audit(m, x, syre=object())
