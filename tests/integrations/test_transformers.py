"""SyreCallback on a real transformers Trainer: a tiny BERT built from a config, no downloads."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from attach_keywords import ONE_OF_EACH, check_attached  # noqa: E402
from syre.integrations.transformers import SyreCallback  # noqa: E402
from syre_probe import DecayProbe  # noqa: E402


class Tokens(torch.utils.data.Dataset):
    """16 sequences of 8 random token ids with a label that depends on them."""

    def __init__(self, n=16, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 32, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] < 16).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert():
    config = transformers.BertConfig(
        vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    transformers.set_seed(0)
    return transformers.BertForSequenceClassification(config)


def train(tmp_path, callbacks, *, max_steps=6, resume=None, **kw):
    """Train a fresh tiny BERT; returns the Trainer (``trainer.model`` is the trained model)."""
    options = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=max_steps, learning_rate=0.02,
        weight_decay=0.5, lr_scheduler_type="linear", warmup_steps=2, save_strategy="steps", save_steps=3,
        report_to="none", logging_strategy="no", disable_tqdm=True, seed=0, use_cpu=True, dataloader_num_workers=0,
    )
    options.update(kw)
    trainer = transformers.Trainer(
        model=tiny_bert(), args=transformers.TrainingArguments(**options), train_dataset=Tokens(), callbacks=callbacks
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


class Probe(transformers.TrainerCallback):
    def __init__(self, syre_cb):
        self.syre_cb = syre_cb
        self.probe = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.probe = DecayProbe().install(self.syre_cb.syre, model)

    def on_train_end(self, args, state, control, **kwargs):
        self.probe.remove()


def test_takes_over_weight_decay_per_group_and_follows_the_schedule(tmp_path):
    cb = SyreCallback(sigma0=0.2, d_spread=0.1, seed=5)
    probe = Probe(cb)
    train(tmp_path, [cb, probe], save_strategy="no")
    s = cb.syre
    assert type(s.optimizer) is torch.optim.AdamW  # the torch optimizer inside accelerate's wrapper
    groups = s.optimizer.param_groups
    assert [g["syre_gamma"] for g in groups] == [0.5, 0.0] and [g["weight_decay"] for g in groups] == [0.0, 0.0]
    rows = {r["name"]: r for r in s.coverage()}
    assert rows["bert.encoder.layer.0.attention.self.query.weight"]["gamma"] == 0.5
    assert rows["bert.encoder.layer.0.attention.self.query.bias"]["gamma"] == 0.0  # Trainer's no-decay group
    assert rows["bert.embeddings.LayerNorm.weight"]["gamma"] == 0.0
    lrs = probe.probe.check(min_steps=6)
    assert len(lrs) >= 5 and max(lrs) == pytest.approx(0.02)  # warmup then linear decay, applied to syre too


def test_resume_from_a_checkpoint_keeps_the_anchors_and_is_bitwise(tmp_path):
    cb_full = SyreCallback(sigma0=0.2, d_spread=0.1, seed=5)
    full = train(tmp_path / "a", [cb_full]).model
    ckpt = tmp_path / "a" / "checkpoint-3"
    saved = json.loads((ckpt / "trainer_state.json").read_text())["stateful_callbacks"]["SyreCallback"]
    assert saved["attributes"]["syre_state"][0]["seed"] == 5
    assert torch.load(ckpt / "optimizer.pt", weights_only=True)["syre"]["seed"] == 5

    cb_res = SyreCallback(sigma0=0.001, d_spread=0.0, seed=999)  # overridden by the checkpoint
    resumed = train(tmp_path / "b", [cb_res], resume=str(ckpt)).model
    assert cb_res.syre.seed == 5 and cb_res.syre.d_spread == 0.1
    for name in cb_full.syre.names():
        assert torch.equal(cb_full.syre.anchor(name).theta0, cb_res.syre.anchor(name).theta0), name
    for (n, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n


def test_restore_callback_states_rebuilds_the_callback(tmp_path):
    train(tmp_path / "a", [SyreCallback(gamma=0.3, sigma0=0.2, seed=5, exclude="*.bias")], weight_decay=0.0)
    cb = SyreCallback(gamma=0.3, seed=999)
    trainer = train(
        tmp_path / "b", [cb], resume=str(tmp_path / "a" / "checkpoint-3"), weight_decay=0.0,
        restore_callback_states_from_checkpoint=True,
    )
    # The Trainer replaced `cb` by a callback rebuilt from the saved arguments and state.
    (rebuilt,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, SyreCallback)]
    assert rebuilt is not cb and cb.syre is None
    assert rebuilt.syre.seed == 5 and not any(n.endswith(".bias") for n in rebuilt.syre.names())


def test_gamma_none_with_no_weight_decay_is_refused_with_the_remedy(tmp_path):
    with pytest.raises(ValueError, match=r"weight_decay=0, so syre would decay nothing.*TrainingArguments\(weight_decay"):
        train(tmp_path, [SyreCallback()], max_steps=1, weight_decay=0.0, save_strategy="no")


def test_every_attach_keyword_is_taken_target_and_rounding_included(tmp_path):
    cb = SyreCallback(**ONE_OF_EACH)
    train(tmp_path, [cb], max_steps=2, save_strategy="no", weight_decay=0.0)
    assert cb.syres == [cb.syre]  # the Lightning callback's attribute
    check_attached(cb.config, cb.syres)
    args = cb.state()["args"]  # what restore_callback_states_from_checkpoint rebuilds the callback from
    assert args["target"] == "pretrained" and args["rounding"] == "stochastic"
    assert SyreCallback(**args).config.as_kwargs() == ONE_OF_EACH


def _monitored_trainer(tmp_path, callbacks, max_steps=4):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=max_steps, learning_rate=0.02,
        weight_decay=0.5, save_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True, seed=0,
        use_cpu=True, dataloader_num_workers=0,
    )
    return transformers.Trainer(model=tiny_bert(), args=args, train_dataset=Tokens(), callbacks=callbacks)


def _probe():
    ds = Tokens()
    return {"input_ids": torch.stack([ds[i]["input_ids"] for i in range(16)])}


def test_monitor_callback_logs_through_the_trainer(tmp_path):
    from syre.integrations.transformers import MonitorCallback

    cb = MonitorCallback(probe=_probe(), every=2, metrics=("rank", "dead_fraction"))
    trainer = _monitored_trainer(tmp_path, [])
    trainer.add_callback(cb.bind(trainer))
    seen = []

    class Reporter(transformers.TrainerCallback):  # stands for TensorBoard, W&B...: what on_log receives
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append(dict(logs))

    trainer.add_callback(Reporter())
    trainer.train()
    rows = cb.monitor.records
    assert [r["step"] for r in rows] == [0, 2, 4]
    logged = [h for h in trainer.state.log_history if any(k.startswith("collapse/") for k in h)]
    assert [h["step"] for h in logged] == [0, 2, 4]
    key = next(k for k in rows[0] if k.endswith("/rank"))  # e.g. bert.encoder.layer.0.intermediate.dense/rank
    assert [h[f"collapse/{key}"] for h in logged] == [r[key] for r in rows]
    assert sum(f"collapse/{key}" in logs for logs in seen) == 3  # the reporters got every recording
    with pytest.raises(ValueError, match="probe"):
        MonitorCallback(every=2)


def test_unbound_monitor_warns_and_keeps_the_log_history(tmp_path):
    cb = SyreCallback(monitor={"probe": _probe(), "every": 3, "metrics": ("anchor_distance",)})
    with pytest.warns(UserWarning, match="not bound"):
        trainer = _monitored_trainer(tmp_path, [cb])
        trainer.train()
    logged = [h for h in trainer.state.log_history if any(k.startswith("collapse/") for k in h)]
    assert [h["step"] for h in logged] == [0, 3]
    key = next(k for k in logged[0] if k.endswith("/anchor_distance"))
    assert logged[0][key] > 0
    with pytest.raises(TypeError, match="monitor"):
        SyreCallback(monitor=True)


def test_a_fresh_bert_is_healthy_in_the_audit():
    """A real architecture at init: attention outputs whose spectra have tails near the tolerance,
    a token-type embedding looked up with one id, fused heads: no false alarm."""
    from syre.diagnostics import audit

    config = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=256, max_position_embeddings=64, num_labels=2)
    transformers.set_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    ids = torch.randint(0, 100, (32, 24), generator=torch.Generator().manual_seed(0))
    r = audit(model, {"input_ids": ids})
    assert not r.collapsed, str(r)
    tt = r["bert.embeddings.token_type_embeddings"]
    assert tt.representation["rank"] == 0 and tt.representation["max_rank"] == 0  # one distinct id: no spread
