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

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: more threads only add overhead


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
        f"{layer}/{k}" for layer in ("fc1", "fc2") for k in ("effective_rank", "low_rank_fraction", "dead_fraction")}
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
    lines = [json.loads(line) for line in path.read_text().splitlines()]
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


# ---------------------------------------------------------------- alarms
from syre.diagnostics._alarms import ALARMS, DEAD_MARGIN, SOFT_SHARE, TREND_RANK_SHARE, AlarmTracker  # noqa: E402


def _run(values, metric="rank", reference=None, patience=2, scale=1.0):
    t = AlarmTracker(patience, {"fc/" + metric: reference * scale} if reference is not None else None)
    fired = []
    for step, v in enumerate(values):
        fired += [(a["step"], round(a["baseline"] / scale, 9)) for a in t.update(step, {"fc/" + metric: v * scale})]
    return fired


def test_alarm_is_relative_to_history_and_reference_not_absolute():
    assert TREND_RANK_SHARE == 0.8 and SOFT_SHARE == pytest.approx(1 / 3) and DEAD_MARGIN == pytest.approx(0.1)
    assert "low_rank_fraction" not in ALARMS  # it rises in healthy runs
    healthy = [100, 110, 104, 108, 100, 96]  # rises, dips 13% below its peak: not collapse
    assert _run(healthy, reference=100) == []
    assert _run([100, 110, 80, 80, 80], reference=100, patience=1) == []  # limit 80, strict
    collapse = [100, 110, 81, 70, 60, 50]  # baseline min(peak 110, init 100) = 100: limit 80
    assert _run(collapse, reference=100) == [(4, 100.0)]  # two recordings below 80 (patience 2): steps 3, 4
    assert _run(collapse, reference=100, patience=1) == [(3, 100.0)]
    for scale in (1e-3, 1e3):  # the same trajectory at any scale: the same alarms (no absolute threshold)
        assert _run(collapse, reference=100, scale=scale) == [(4, 100.0)]
    # a peak above what a fresh layer has is not the baseline: falling back to the fresh level is fine
    assert _run([150, 110, 110, 110], reference=100) == []
    assert _run([150, 110, 110, 110], reference=None) == [(2, 150.0)]  # history alone would alarm
    # once fired, an alarm waits for the metric to recover before it can fire again
    assert _run([100, 70, 70, 70, 95, 70, 70], reference=None) == [(2, 100.0), (6, 100.0)]
    # a share that rises: dead units, above the higher of the lowest so far and the fresh value + margin
    assert _run([0.05, 0.1, 0.2, 0.3], metric="dead_fraction", reference=0.06) == [(3, 0.06)]


def test_alarms_on_the_e5_runs(tmp_path):
    """E5 (digits, gamma 10): weight decay's effective ranks fall below a third of their baseline in
    every hidden layer and alarm; without decay, and with syre at sigma0 = the init std, nothing does,
    although their ranks and effective ranks move up and down during training."""
    pytest.importorskip("sklearn")
    from e5_runs import e5_run

    runs = {arm: e5_run(arm)[1] for arm in ("none", "wd", "syre")}
    fired = {arm: {(a["layer"], a["metric"]) for a in m.alarms} for arm, m in runs.items()}
    assert fired["none"] == set() and fired["syre"] == set(), fired
    assert {(f"hidden.{i}", "effective_rank") for i in range(3)} <= fired["wd"], fired["wd"]
    assert ("hidden.1", "rank") in fired["wd"]
    warned = runs["wd"].warned
    assert len(warned) == len(runs["wd"].alarms) > 0  # one warning per alarm, each naming its layer and metric
    assert all("collapse alarm at step" in str(w.message) for w in warned)
    none = runs["none"]
    ranks = [r["hidden.1/rank"] for r in none.records]
    assert max(ranks) > ranks[-1] and min(ranks) < ranks[-1]  # non-monotone, and no alarm
    assert none.reference is not None and "hidden.0/rank" in none.reference  # the fresh-init values
    assert all(r["alarms"] == 0 for r in none.records)
    assert runs["wd"].records[-1]["alarms"] >= 3
    assert runs["wd"].plot(tmp_path / "wd.png").endswith("wd.png")  # alarms are marked on their panels
    assert (tmp_path / "wd.png").stat().st_size > 1000


class _Writer:
    """What a torch.utils.tensorboard.SummaryWriter receives."""

    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, global_step=None):
        self.scalars.append((tag, value, global_step))


def test_metrics_go_to_a_writer_and_a_logger(tmp_path):
    m = Net()
    x, _ = data()
    w, logged, seen = _Writer(), [], []
    mon = Monitor(m, every=2, metrics=("rank", "dead_fraction"), writer=w, logger=lambda d, s: logged.append((s, d)),
                  on_alarm=seen.append, tag="diag")
    for step in range(5):
        mon.step(step, batch=x, loss=1.0)
    assert [s for s, _ in logged] == [0, 2, 4]
    first = mon.records[0]
    assert logged[0][1] == {"diag/fc1/rank": first["fc1/rank"], "diag/fc1/dead_fraction": first["fc1/dead_fraction"],
                            "diag/fc2/rank": first["fc2/rank"], "diag/fc2/dead_fraction": first["fc2/dead_fraction"],
                            "diag/alarms": 0.0}
    assert sorted(w.scalars) == sorted((k, v, s) for s, d in logged for k, v in d.items())
    with pytest.raises(TypeError, match="writer"):
        Monitor(m, writer=object())
    with pytest.raises(ValueError, match="patience"):
        Monitor(m, patience=0)
    with pytest.raises(ValueError, match="reference"):
        Monitor(m, reference="fresh")


def test_metrics_reach_a_real_tensorboard_writer(tmp_path):
    tb = pytest.importorskip("torch.utils.tensorboard")
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    m = Net()
    x, _ = data()
    writer = tb.SummaryWriter(str(tmp_path / "tb"))
    mon = Monitor(m, every=1, metrics=("effective_rank",), writer=writer)
    for step in range(3):
        mon.step(step, batch=x)
    writer.close()
    acc = ea_mod.EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    events = acc.Scalars("collapse/fc1/effective_rank")
    assert [e.step for e in events] == [0, 1, 2]
    assert [e.value for e in events] == pytest.approx([r["fc1/effective_rank"] for r in mon.records], rel=1e-6)
    assert "collapse/alarms" in acc.Tags()["scalars"]


def test_reference_values_are_those_of_the_reference_model():
    m = Net()
    x, _ = data()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        fresh = Net()
    mon = Monitor(m, every=1, metrics=("rank", "effective_rank"), reference=fresh)
    mon.step(0, batch=x)
    fresh.eval()
    with torch.no_grad():  # the reference's BatchNorm is calibrated on the batch, as the audit's
        fresh.bn.reset_running_stats()
        fresh.bn.momentum = None
        fresh.bn.train()
        fresh(x)
        fresh.eval()
        h = fresh.act(fresh.bn(fresh.fc1(x)))
    assert mon.reference["fc1/effective_rank"] == pytest.approx(M.effective_rank(h), rel=1e-6)
    none = Monitor(m, every=1, reference=None)
    none.step(0, batch=x)
    assert none.reference is None
    silent = Monitor(m, every=1, alarms=False)
    silent.step(0, batch=x)
    assert silent.reference is None and silent.alarms == []
