"""The training monitor writes what it says, measures what the metrics say, and leaves training alone."""
import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import syre
from syre.diagnostics import metrics as M
from syre.diagnostics.monitor import METRICS, Monitor, plot_log, read_log


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these models are tiny, and more threads only add overhead."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def gen(seed):
    return torch.Generator().manual_seed(seed)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 32)
        self.bn = nn.BatchNorm1d(32)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.bn(self.fc1(x)))))


def data(n=96):
    x = torch.randn(n, 10, generator=gen(1))
    y = torch.randint(0, 3, (n,), generator=gen(2))
    return x, y


def train(steps, mon=None, seed=0):
    torch.manual_seed(seed)  # the model's own init and dropout masks: identical in both runs
    m = Net()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = data()
    for step in range(steps):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mon is not None:
            mon(m).step(step, batch=x, loss=loss)
    return m


def test_monitor_leaves_training_bitwise_unchanged(tmp_path):
    ref = train(7)
    holder = {}

    def mon(m):
        if "m" not in holder:
            holder["m"] = Monitor(m, every=2, path=tmp_path / "log.csv")
        return holder["m"]

    got = train(7, mon)
    for (k, a), b in zip(ref.state_dict().items(), got.state_dict().values()):
        assert torch.equal(a, b), k  # parameters and BatchNorm running stats
    assert got.training  # flags restored after each recording


def test_csv_rows_and_values(tmp_path):
    m = Net()
    x, _ = data()
    path = tmp_path / "log.csv"
    mon = Monitor(m, every=3, path=path, metrics=("effective_rank", "low_rank_fraction", "dead_fraction"))
    recorded = [s for s in range(10) if mon.step(s, batch=x, loss=torch.tensor(float(s))) is not None]
    mon.close()
    assert recorded == [0, 3, 6, 9]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == recorded
    assert [float(r["loss"]) for r in rows] == [0.0, 3.0, 6.0, 9.0]
    assert set(rows[0]) == {"step", "loss", "time_s", "overhead_s", "alarms"} | {
        f"{l}/{k}" for l in ("fc1", "fc2") for k in ("effective_rank", "low_rank_fraction", "dead_fraction")}
    # the value is the metric of the post-activation representation, measured in eval mode
    m.eval()
    with torch.no_grad():
        h = m.act(m.bn(m.fc1(x)))
    assert float(rows[0]["fc1/effective_rank"]) == pytest.approx(M.effective_rank(h), rel=1e-6)
    assert float(rows[0]["fc1/low_rank_fraction"]) == pytest.approx(M.low_rank_fraction(h))
    assert read_log(path)[2]["step"] == 6.0


def test_jsonl_with_syre_and_weight_metrics(tmp_path):
    m = Net()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    s = syre.attach(opt, m, sigma0=0.3)
    x, y = data()
    path = tmp_path / "log.jsonl"
    with Monitor(m, every=1, path=path, syre=s, probe=x,
                 metrics=("anchor_distance", "weight_effective_rank", "duplicate_fraction", "rankme")) as mon:
        for step in range(3):
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.step(step, lr=opt.param_groups[0]["lr"])  # the probe batch is used
    lines = [json.loads(l) for l in path.read_text().splitlines()]
    assert len(lines) == 3 and lines[-1]["lr"] == 1e-2
    d = math.sqrt(sum(float((getattr(m.fc1, a).detach() - s.anchor(f"fc1.{a}").theta0).double().norm()) ** 2
                      for a in ("weight", "bias")))
    assert lines[-1]["fc1/anchor_distance"] == pytest.approx(d, rel=1e-6)
    assert lines[-1]["fc1/weight_effective_rank"] == pytest.approx(M.effective_rank(m.fc1.weight), rel=1e-9)
    assert lines[-1]["fc1/duplicate_fraction"] == 0.0
    assert lines[-1]["fc2/duplicate_fraction"] is None  # the last layer has no next layer
    assert lines[0]["fc1/rankme"] > 1.0
    assert read_log(path) == lines


def test_duplicates_and_dead_units_show_up():
    m = Net()
    with torch.no_grad():
        m.fc1.weight[5], m.fc1.bias[5] = m.fc1.weight[4], m.fc1.bias[4]
        m.bn.weight[5], m.bn.bias[5] = m.bn.weight[4], m.bn.bias[4]
        m.fc2.weight[:, 5] = m.fc2.weight[:, 4]
        m.bn.bias[9], m.bn.weight[9] = -5.0, 0.0  # constant -5 before ReLU: never active
    mon = Monitor(m, every=1, metrics=("duplicate_fraction", "dead_fraction"))
    row = mon.step(0, batch=data()[0])
    assert row["fc1/duplicate_fraction"] == pytest.approx(2 / 32)
    assert row["fc1/dead_fraction"] == pytest.approx(1 / 32)
    assert mon.records == [row]


def test_plots(tmp_path):
    m = Net()
    x, _ = data()
    path = tmp_path / "log.jsonl"
    mon = Monitor(m, every=1, path=path)
    for s in range(3):
        mon.step(s, batch=x, loss=1.0 / (s + 1))
    mon.close()
    assert mon.overhead_s > 0
    mon.plot(tmp_path / "a.png")
    plot_log(path, tmp_path / "b.png")
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "b.png").stat().st_size > 1000


def test_errors(tmp_path):
    m = Net()
    with pytest.raises(ValueError, match="every"):
        Monitor(m, every=0)
    with pytest.raises(ValueError, match="metrics.*choose from"):
        Monitor(m, metrics=("effective_rank", "bogus"))
    with pytest.raises(ValueError, match="anchor_distance.*syre"):
        Monitor(m, metrics=("anchor_distance",))
    with pytest.raises(ValueError, match=r"suffix"):
        Monitor(m, path=tmp_path / "log.txt")
    with pytest.raises(ValueError, match="format"):
        Monitor(m, path=tmp_path / "log.txt", format="xml")
    with pytest.raises(ValueError, match="batch"):
        Monitor(m).step(0)
    with pytest.raises(ValueError, match="layers.*fc9"):
        Monitor(m, layers=["fc9"]).step(0, batch=data()[0])
    mon = Monitor(m, every=1, path=tmp_path / "l.csv")
    mon.step(0, batch=data()[0])
    with pytest.raises(ValueError, match="loss"):
        mon.step(1, batch=data()[0], loss=1.0)
    with pytest.raises(ValueError, match="one element"):
        Monitor(m).step(0, batch=data()[0], loss=torch.ones(2))
    assert set(METRICS) >= {"effective_rank", "low_rank_fraction", "dead_fraction", "anchor_distance"}
