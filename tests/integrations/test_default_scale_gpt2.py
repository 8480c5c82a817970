"""The default study's GPT-2 setting on the real transformers: a GPT2Config model with Conv1D layers, no downloads.

Skipped where transformers is not installed (the ``dev`` venv); ci/integrations.sh installs it, so it runs there."""
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("scipy")

from syre.bench import default_scale as ds, get_experiment, gpt2lm  # noqa: E402


def _cfg():
    cfg = get_experiment("default-scale").config(quick=True)
    return {**cfg, "setting": "gpt2"}


def test_the_gpt2_setting_builds_a_conv1d_model_at_gpt2s_init_and_trains_every_arm():
    cfg = _cfg()
    sub = cfg["settings"]["gpt2"]["config"]
    net = gpt2lm.build(sub, 0)
    conv = [m for m in net.modules() if type(m).__name__ == "Conv1D"]
    assert conv, "the GPT-2 model has Conv1D layers"
    w = net.transformer.h[0].mlp.c_fc.weight.detach()
    assert w.shape == (sub["n_embd"], 4 * sub["n_embd"])  # [in, out]
    assert abs(float(w.std()) - sub["init_std"]) < 0.3 * sub["init_std"]
    assert net.lm_head.weight is net.transformer.wte.weight
    # the same seed builds the same model; another seed another one
    assert torch.equal(gpt2lm.build(sub, 0).transformer.wte.weight, net.transformer.wte.weight)
    assert not torch.equal(gpt2lm.build(sub, 1).transformer.wte.weight, net.transformer.wte.weight)
    out = {}
    for a in ("none", "wd", "lecun", "match", "l2init"):
        out[a] = ds.trial({**cfg, "gamma": 10.0}, ds.ARMS_DS[a], 0)
        assert math.isfinite(out[a]["val_loss"]) and out[a]["qk_rank"] > 0
    # the decay acts: at gamma 10 weight decay moves the weights somewhere else than no decay
    assert out["wd"]["val_loss"] != out["none"]["val_loss"]
    # a trial is reproducible
    assert ds.trial({**cfg, "gamma": 10.0}, ds.ARMS_DS["match"], 0)["val_loss"] == out["match"]["val_loss"]
