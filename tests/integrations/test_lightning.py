"""SyreCallback on a real Lightning Trainer: decay at every step, takeover, checkpoint resume."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

pl = pytest.importorskip("lightning.pytorch")

import syre  # noqa: E402
from attach_keywords import ONE_OF_EACH, check_attached  # noqa: E402
from syre.anchors import DEFAULT_SIGMA0_SCALE  # noqa: E402
from syre.integrations.lightning import SyreCallback  # noqa: E402
from syre_probe import DecayProbe  # noqa: E402


def _data(n=48, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = torch.tanh(x @ torch.randn(5, 2, generator=g))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=False)


class Tiny(pl.LightningModule):
    def __init__(self, opt="sgd", lr=0.2, wd=0.0, sched=True, n_opts=1):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
        self.opt, self.lr, self.wd, self.sched, self.n_opts = opt, lr, wd, sched, n_opts
        if n_opts > 1:
            self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        if self.n_opts > 1:
            for o in self.optimizers():
                o.zero_grad()
            self.manual_backward(loss)
            for o in self.optimizers():
                o.step()
            return None
        return loss

    def configure_optimizers(self):
        if self.n_opts > 1:
            return [torch.optim.SGD(self.net[0].parameters(), lr=self.lr), torch.optim.SGD(self.net[2].parameters(), lr=self.lr)]
        if self.opt == "adamw":
            opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.wd)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        if not self.sched:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Probe(pl.Callback):
    """Installs a DecayProbe once SyreCallback (listed before it) has attached."""

    def __init__(self, syre_cb):
        self.syre_cb = syre_cb
        self.probes = []

    def on_fit_start(self, trainer, pl_module):
        self.probes = [DecayProbe().install(s, pl_module) for s in self.syre_cb.syres]

    def on_fit_end(self, trainer, pl_module):
        for p in self.probes:
            p.remove()


def _trainer(tmp_path, callbacks, max_steps, **kw):
    return pl.Trainer(
        max_steps=max_steps, accelerator="cpu", devices=1, logger=kw.pop("logger", False), enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks,
        enable_checkpointing=kw.pop("enable_checkpointing", False), **kw,
    )


def test_decay_at_every_step_follows_the_lr_schedule(tmp_path):
    cb = SyreCallback(gamma=0.5, sigma0=0.3, d_spread=0.2, seed=11)
    probe = Probe(cb)
    _trainer(tmp_path, [cb, probe], 6).fit(Tiny(), _data())
    s = cb.syres[0]
    assert s.names() == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    lrs = probe.probes[0].check(min_steps=6)
    assert lrs == {0.2, 0.1, 0.05}  # StepLR halves the lr every 2 steps; the decay uses it


def test_gamma_none_takes_over_adamw_weight_decay(tmp_path):
    cb = SyreCallback(sigma0="kaiming", d_spread=0.0)
    probe = Probe(cb)
    _trainer(tmp_path, [cb, probe], 4).fit(Tiny(opt="adamw", lr=0.05, wd=0.3, sched=False), _data())
    group = cb.syres[0].optimizer.param_groups[0]
    assert group["weight_decay"] == 0.0 and group["syre_gamma"] == 0.3
    rows = {r["name"]: r for r in cb.syres[0].coverage()}
    # kaiming at the default scale, fan_in 5 of nn.Linear(5, 8)
    assert rows["net.0.weight"]["sigma0"] == pytest.approx(DEFAULT_SIGMA0_SCALE * (2 / 5) ** 0.5)
    probe.probes[0].check(min_steps=4)


def test_checkpoint_resume_keeps_anchors_and_is_bitwise(tmp_path):
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    cb_full = SyreCallback(gamma=0.5, sigma0=0.3, d_spread=0.2, seed=7)
    full = Tiny()
    # 3 batches per epoch: the checkpoint at step 3 ends an epoch (Lightning restarts an epoch
    # that was cut short, so a mid-epoch checkpoint would not resume bitwise with or without syre).
    _trainer(tmp_path / "a", [cb_full, ckpt], 6, enable_checkpointing=True).fit(full, _data(24))
    path = sorted((tmp_path / "ckpt").glob("*step=3*.ckpt"))
    assert len(path) == 1, list((tmp_path / "ckpt").iterdir())
    saved = torch.load(path[0], weights_only=True)
    assert saved["callbacks"]["SyreCallback"]["syre"][0]["seed"] == 7
    assert saved["optimizer_states"][0]["syre"]["seed"] == 7

    cb_resumed = SyreCallback(gamma=0.01, sigma0=0.001, d_spread=0.0, seed=999)  # all overridden by the checkpoint
    resumed = Tiny()
    _trainer(tmp_path / "b", [cb_resumed], 6).fit(resumed, _data(24), ckpt_path=path[0])
    s_full, s_res = cb_full.syres[0], cb_resumed.syres[0]
    assert s_res.seed == 7 and s_res.d_spread == 0.2 and s_res.group_gamma(0) == 0.5
    for name in s_full.names():
        assert torch.equal(s_full.anchor(name).theta0, s_res.anchor(name).theta0)
        assert torch.equal(s_full.anchor(name).d, s_res.anchor(name).d)
    for (n, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n


def test_several_optimizers_share_the_anchors(tmp_path):
    cb = SyreCallback(gamma=0.5, sigma0=0.3, seed=4)
    probe = Probe(cb)
    _trainer(tmp_path, [cb, probe], 6).fit(Tiny(n_opts=2), _data())  # max_steps counts both optimizers
    assert [s.names() for s in cb.syres] == [["net.0.weight", "net.0.bias"], ["net.2.weight", "net.2.bias"]]
    assert isinstance(cb.syre, syre.MultiSyre) and cb.syre.syres == cb.syres  # what syre.attach returned
    for p in probe.probes:
        p.check(min_steps=3)


def test_parameters_no_optimizer_holds_are_named(tmp_path):
    class Partial(Tiny):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.net[0].parameters(), lr=0.1), torch.optim.SGD([self.net[2].weight], lr=0.1)]

    with pytest.raises(ValueError, match=r"1 trainable parameter\(s\) are held by none of the 2 optimizers: 'net.2.bias'"):
        _trainer(tmp_path, [SyreCallback(gamma=0.1)], 2).fit(Partial(n_opts=2), _data())


def test_every_attach_keyword_is_taken_target_and_rounding_included(tmp_path):
    cb = SyreCallback(**ONE_OF_EACH)
    _trainer(tmp_path, [cb], 2).fit(Tiny(), _data())
    assert cb.syre is cb.syres[0] and isinstance(cb.syre, syre.Syre)  # the transformers callback's attribute
    check_attached(cb.config, cb.syres)
    assert cb.state_dict()["syre"][0]["target"]["kind"] == "pretrained"  # rides along in the checkpoint


class ListLogger(pl.loggers.Logger):
    """Keeps every ``log_metrics`` call: what TensorBoard, CSV or W&B loggers would receive."""

    def __init__(self):
        super().__init__()
        self.rows = []

    @property
    def name(self):
        return "list"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_monitor_callback_logs_to_the_trainers_loggers(tmp_path):
    from syre.integrations.lightning import MonitorCallback

    logger = ListLogger()
    cb = MonitorCallback(every=2, metrics=("rank", "effective_rank"), inputs=lambda b: b[0], module="net")
    _trainer(tmp_path, [cb], max_steps=6, logger=logger).fit(Tiny(opt="adamw", wd=0.1), _data())
    logged = {step: m for step, m in logger.rows if any(k.startswith("collapse/") for k in m)}
    assert sorted(logged) == [0, 2, 4] == [r["step"] for r in cb.monitor.records]
    for r in cb.monitor.records:  # what the loggers got is the monitor's row, under collapse/<layer>/<metric>
        assert logged[r["step"]]["collapse/0/rank"] == r["0/rank"]
        assert logged[r["step"]]["collapse/2/effective_rank"] == pytest.approx(r["2/effective_rank"])
        assert logged[r["step"]]["collapse/alarms"] == 0.0
    with pytest.raises(TypeError, match="bogus"):
        MonitorCallback(bogus=1)
    with pytest.raises(ValueError, match="no forward.*net"):  # Tiny has none: say which submodule to use
        _trainer(tmp_path, [MonitorCallback(every=2)], max_steps=1).fit(Tiny(), _data())


def test_syre_callback_monitor_passes_its_syre(tmp_path):
    logger = ListLogger()
    cb = SyreCallback(gamma=0.05, sigma0=0.3, monitor={"every": 3, "metrics": ("anchor_distance",), "module": "net"})
    _trainer(tmp_path, [cb], max_steps=4, logger=logger).fit(Tiny(), _data())
    assert [r["step"] for r in cb.monitor_callback.monitor.records] == [0, 3]
    # measured against syre's anchors of net.0.* (the monitor sees the submodule "net", syre the LightningModule)
    s = cb.syres[0]
    net = cb.monitor_callback.monitor.model
    d = torch.cat([(getattr(net[0], a).detach() - s.anchor(f"net.0.{a}").theta0).flatten() for a in ("weight", "bias")])
    now = cb.monitor_callback.monitor.record(4)  # after fit: the parameters as they are now
    assert now["0/anchor_distance"] == pytest.approx(float(d.double().norm()), rel=1e-6)
    assert [s for s, m in logger.rows if "collapse/0/anchor_distance" in m] == [0, 3, 4]
    with pytest.raises(TypeError, match="monitor"):
        SyreCallback(monitor="yes")


def test_a_pretrained_run_resumes_through_the_callback_from_its_starting_weights_as_a_mapping(tmp_path):
    """The callback attaches after Lightning restored the trained weights: target='pretrained' is refused (it would
    copy those), and the remedy the error names, the starting weights as target={name: tensor}, resumes bitwise."""
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    full = Tiny(sched=False)
    start = {n: p.detach().clone() for n, p in full.named_parameters()}
    _trainer(tmp_path / "a", [SyreCallback(gamma=0.5, target="pretrained"), ckpt], 6,
             enable_checkpointing=True).fit(full, _data(24))
    path = sorted((tmp_path / "ckpt").glob("*step=3*.ckpt"))[0]
    with pytest.raises(ValueError, match=r"checksum.*target=\{name: tensor\}"):
        _trainer(tmp_path / "b", [SyreCallback(gamma=0.5, target="pretrained")], 6).fit(Tiny(sched=False), _data(24),
                                                                                         ckpt_path=path)
    cb = SyreCallback(gamma=0.5, target=start)
    resumed = Tiny(sched=False)
    _trainer(tmp_path / "c", [cb], 6).fit(resumed, _data(24), ckpt_path=path)
    for (n, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n
    assert cb.syre.state_dict()["target"]["kind"] == "pretrained"
