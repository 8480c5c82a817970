"""Small models of each kind the audit supports, freshly initialised, and a planted collapse of each.

Kinds: an MLP, an expanding MLP (layers wider than their input), a CNN with BatchNorm and 1x1
shortcut convolutions, a nanoGPT-style GPT (fused ``c_attn`` QKV, causal attention, GELU MLP,
LayerNorm, tied embedding and head) and an LSTM language model. ``make(kind, seed)`` returns
``(model, batch)``, every parameter drawn by torch's own initialisation under a forked global RNG
seeded by ``seed`` (the caller's RNG is untouched). ``plant(kind, model)`` puts collapse into a
model in place and returns ``{layer: flag}``, the flags the audit must raise.
"""

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("mlp", "expanding", "cnn", "gpt", "lstm")


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.l1, self.l2, self.l3 = Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.l3(self.l2(self.l1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class CausalSelfAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class GPTBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(d), CausalSelfAttention(d, heads), nn.LayerNorm(d)
        self.c_fc, self.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, vocab=65, block=32, d=64, heads=4, layers=2):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.h = nn.ModuleList(GPTBlock(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in nanoGPT

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.h:
            x = blk(x)
        return self.lm_head(self.ln_f(x))


class LSTMLM(nn.Module):
    def __init__(self, vocab=50, d=32, hidden=64):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, idx):
        return self.head(self.lstm(self.emb(idx))[0])


def make(kind: str, seed: int = 0):
    """``(model, batch)`` of ``kind``, initialised by torch's defaults from ``seed``."""
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "mlp":
            m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
            x = torch.randn(512, 32, generator=g)
        elif kind == "expanding":
            m = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
            x = torch.randn(512, 8, generator=g)
        elif kind == "cnn":
            m = ResNet()
            x = torch.randn(64, 3, 16, 16, generator=g)
        elif kind == "gpt":
            m = GPT()
            x = torch.randint(0, 65, (16, 32), generator=g)
        elif kind == "lstm":
            m = LSTMLM()
            x = torch.randint(0, 50, (16, 20), generator=g)
        else:
            raise ValueError(kind)
    if kind == "cnn":  # batch-norm statistics as after some training: those of the batch
        with torch.no_grad():
            for bn in m.modules():
                if isinstance(bn, nn.BatchNorm2d):
                    bn.momentum = None
            m.train()
            m(x)
            for bn in m.modules():
                if isinstance(bn, nn.BatchNorm2d):
                    bn.momentum = 0.1
    m.eval()
    return m, x


def _project(w: torch.Tensor, rank: int, seed: int) -> torch.Tensor:
    """``w`` (as [out, in]) projected onto ``rank`` random input directions: rank exactly ``rank``."""
    g = torch.Generator().manual_seed(seed)
    flat = w.reshape(w.shape[0], -1)
    basis, _ = torch.linalg.qr(torch.randn(flat.shape[1], rank, generator=g, dtype=torch.float64))
    return (flat.double() @ basis @ basis.T).to(w.dtype).reshape(w.shape)


def _copy_unit(w_in, b_in, w_out, src, dst):
    w_in[dst] = w_in[src]
    if b_in is not None:
        b_in[dst] = b_in[src]
    w_out[:, dst] = w_out[:, src]


@torch.no_grad()
def plant(kind: str, m: nn.Module):
    """Plant duplicated, dead and low-rank states in ``m``; return ``{layer: set of flags}`` expected."""
    if kind in ("mlp", "expanding"):
        a, b, c = m[0], m[2], m[4]
        if kind == "expanding":
            b.weight.copy_(_project(b.weight, 16, 1))  # the 64 -> 256 layer reads 16 of its 64 inputs
        for j in range(1, 9):  # units 1..8 of the first layer copy unit 0
            _copy_unit(a.weight, a.bias, b.weight, 0, j)
        if kind == "expanding":
            return {"0": {"duplicated"}, "2": {"low rank"}}
        b.weight[:12] = 0.0  # 12 units of the second layer with every weight at zero
        b.bias[:12] = 0.0
        c.weight[:, :12] = 0.0
        return {"0": {"duplicated"}, "2": {"dead"}}
    if kind == "cnn":
        blk = m.l2
        for j in range(1, 7):  # channels 1..6 of l2.conv1 copy channel 0, through BatchNorm
            blk.conv1.weight[j] = blk.conv1.weight[0]
            for t in (blk.bn1.weight, blk.bn1.bias, blk.bn1.running_mean, blk.bn1.running_var):
                t[j] = t[0]
            blk.conv2.weight[:, j] = blk.conv2.weight[:, 0]
        m.l3.bn1.bias[:16] = -100.0  # 16 channels of l3.conv1 never active after BN + ReLU
        m.l3.short[0].weight.copy_(_project(m.l3.short[0].weight, 4, 2))  # shortcut reads 4 of 32 channels
        return {"l2.conv1": {"duplicated"}, "l3.conv1": {"dead"}, "l3.short.0": {"low rank"}}
    if kind == "gpt":
        blk = m.h[0]
        for j in range(1, 21):  # 20 copies of c_fc unit 0
            _copy_unit(blk.c_fc.weight, blk.c_fc.bias, blk.c_proj.weight, 0, j)
        m.h[1].c_fc.bias[:40] = -100.0  # 40 c_fc units of block 1 output GELU(-100) = 0: never active
        m.h[1].attn.c_attn.weight.copy_(_project(m.h[1].attn.c_attn.weight, 16, 3))
        return {"h.0.c_fc": {"duplicated"}, "h.1.c_fc": {"dead"}, "h.1.attn.c_attn": {"low rank"}}
    if kind == "lstm":
        lstm, hsize = m.lstm, m.lstm.hidden_size
        rows = lambda j: [j + g * hsize for g in range(4)]  # noqa: E731
        for j in range(1, 9):  # units 1..8 of layer 0 copy unit 0 (gate rows and recurrent/outgoing columns)
            for src, dst in zip(rows(0), rows(j)):
                for t in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0):
                    t[dst] = t[src]
            lstm.weight_hh_l0[:, j] = lstm.weight_hh_l0[:, 0]
            lstm.weight_ih_l1[:, j] = lstm.weight_ih_l1[:, 0]
        for j in range(10):  # 10 units of layer 1 with every parameter at zero
            for r in rows(j):
                for t in (lstm.weight_ih_l1, lstm.weight_hh_l1, lstm.bias_ih_l1, lstm.bias_hh_l1):
                    t[r] = 0.0
            lstm.weight_hh_l1[:, j] = 0.0
            m.head.weight[:, j] = 0.0
        m.emb.weight.copy_(_project(m.emb.weight.T.contiguous(), 6, 4).T)  # embeddings span 6 of 32 dims
        return {"lstm.l0": {"duplicated"}, "lstm.l1": {"dead"}, "emb": {"low rank"}}
    raise ValueError(kind)
