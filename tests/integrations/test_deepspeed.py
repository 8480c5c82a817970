"""syre under DeepSpeed ZeRO 0-3: 2 gloo processes on CPU against one process + ``syre.attach``.

One spawn of 2 processes (``ds_worker.worker``, ``DS_ACCELERATOR=cpu``) runs every scenario; the
one-process reference runs in this process, single-threaded like the workers (a multi-threaded
reduction in the backward pass rounds differently). Every rank feeds the same micro-batch, so the
averaged gradient is the one-process gradient and the parameters must agree bitwise.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("needs torch.distributed with the gloo backend", allow_module_level=True)
pytest.importorskip("deepspeed", reason="needs DeepSpeed: pip install 'torch-syre[deepspeed]'")

import ds_worker as W  # noqa: E402
from spawn import spawn  # noqa: E402

try:
    import accelerate  # noqa: F401
    import transformers  # noqa: F401
    HAS_TRAINER = True
except ImportError:  # the transformers extra: its test skips alone
    HAS_TRAINER = False

WORLD = 2
SPAWN_TIMEOUT_S = 240
RUNS = [("run", 0, False), ("run", 1, False), ("run", 2, False), ("run", 3, False), ("run", 2, True), ("run", 3, True)]
RESUMES = [("resume", 2, False), ("resume", 3, True)]  # the second in seeded mode
REFUSALS = ("refusals", 2, False)
TRAINER = ("trainer", 3, False)
UNIVERSAL = ("universal_save", 3, False)  # saved on 2 processes, converted, loaded on 1
NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias", "5.weight", "5.bias"]
NUMEL = {"0.weight": 30, "0.bias": 5, "2.weight": 5, "2.bias": 5, "3.weight": 15, "3.bias": 3, "5.weight": 3, "5.bias": 1}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    jobs = RUNS + RESUMES + [REFUSALS, UNIVERSAL] + ([TRAINER] if HAS_TRAINER else [])
    t0 = time.monotonic()
    spawn(W.worker, WORLD, (str(out), jobs), SPAWN_TIMEOUT_S)
    # DeepSpeed refuses a ZeRO checkpoint of another world size; its universal checkpoint converts one.
    ckpt = out / f"universal{UNIVERSAL[1]}"
    subprocess.run([sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(ckpt / "t2"),
                    "--output_folder", str(ckpt / "t2_universal")], check=True, capture_output=True,
                   env=dict(os.environ, DS_ACCELERATOR="cpu"), timeout=SPAWN_TIMEOUT_S)
    spawn(W.universal_load, 1, (str(out), UNIVERSAL[1]), SPAWN_TIMEOUT_S)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = W.single()
        trainer = W.trainer_run(str(out / "trainer_single")) if HAS_TRAINER else None
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    universal = torch.load(out / "universal_rank0.pt", weights_only=False)
    return {"single": single, "trainer": trainer, "ranks": ranks, "universal": universal, "seconds": time.monotonic() - t0}


def _assert_bitwise(got: dict, want: dict):
    assert list(got) == NAMES
    for n in NAMES:
        assert torch.equal(got[n], want[n]), f"{n}: max diff {(got[n] - want[n]).abs().max().item():.3g}"


def test_reference_moves_the_weights_and_the_anchor_matters():
    # Guards the tests below: a missed decay, or a decay toward the origin, must change the parameters.
    torch.set_num_threads(1)
    ref = W.single()
    start = dict(W.make_model().named_parameters())
    assert min((ref[W.STEPS][n] - start[n]).abs().max().item() for n in NAMES) > 1e-3
    origin = dict(W.KW, sigma0=0.0, d_spread=0.0)
    kw, W.KW = W.KW, origin
    try:
        plain = W.single()
    finally:
        W.KW = kw
    assert all(not torch.equal(plain[W.STEPS][n], ref[W.STEPS][n]) for n in NAMES)


@pytest.mark.parametrize("job", RUNS, ids=lambda j: f"stage{j[1]}{'-offload' if j[2] else ''}")
def test_zero_params_equal_one_process_bitwise(runs, job):
    for rank in range(WORLD):
        got = runs["ranks"][rank][job]
        for step in range(1, W.STEPS + 1):
            _assert_bitwise(got[step], runs["single"][step])
        assert got["names"] == NAMES
        assert got["wd"] == [0.0]  # gamma=None took over AdamW's weight decay


@pytest.mark.parametrize("job", [j for j in RUNS if j[1]], ids=lambda j: f"stage{j[1]}{'-offload' if j[2] else ''}")
def test_fragments_split_tensors_and_cover_each_element_once(runs, job):
    seen = {n: [] for n in NAMES}
    split = set()
    for rank in range(WORLD):
        frags = runs["ranks"][rank][job]["fragments"]
        for name, start, stop in frags:
            assert 0 <= start < stop <= NUMEL[name]
            seen[name].append((start, stop))
            if stop - start < NUMEL[name]:
                split.add(name)
    for n in NAMES:
        assert sorted(seen[n])[0][0] == 0 and sum(b - a for a, b in seen[n]) == NUMEL[n], (n, seen[n])
    assert split  # some tensor is split across the two partitions
    for rank in range(WORLD):
        summary = runs["ranks"][rank][job]["summary"].splitlines()
        mine = sum(b - a for _, a, b in runs["ranks"][rank][job]["fragments"])
        assert f"this rank decays {mine:,} of 67 covered elements" in summary[0]
        assert [line.split()[0] for line in summary[1:]] == NAMES and "gamma 0.5" in summary[1]
    flat = [runs["ranks"][r][job]["flat"] for r in range(WORLD)]
    held = sum(b - a for r in range(WORLD) for _, a, b in runs["ranks"][r][job]["fragments"])
    assert held == sum(NUMEL.values()) == 67
    assert sum(sum(f) for f in flat) > held  # the partitions end in padding


@pytest.mark.parametrize("job", RESUMES, ids=lambda j: f"stage{j[1]}{'-offload' if j[2] else ''}")
def test_checkpoint_resumes_bitwise_with_the_saved_state(runs, job):
    for rank in range(WORLD):
        got = runs["ranks"][rank][job]
        _assert_bitwise(got["resumed"], got["straight"])
        _assert_bitwise(got["straight"], runs["single"][W.STEPS])
        assert got["seed_after_load"] == W.KW["seed"]  # attached with seed 99: the checkpoint's came back
        sd = got["saved_state"]["optimizer_state_dict"]
        inner = sd["base_optimizer_state"] if "base_optimizer_state" in sd else sd["optimizer_state_dict"]
        state = inner["syre"]
        assert state["seed"] == W.KW["seed"] and state["d_spread"] == W.KW["d_spread"]
        assert [p["name"] for p in state["params"]] == NAMES
        assert state == runs["single"]["state"] | {"mode": "seeded" if job[2] else "stored"}


REFUSED = {
    "version": "0.20.0 is untested",
    "bf16": "bf16",
    "fp16": "fp16",
    "moe": "MoE",
    "pipeline": "pipeline parallelism",
    "nvme": "NVMe",
    "ratio": "partial optimizer offload",
    "target": "target='init'",
    "rounding": "rounding='stochastic'",
    "bad_arg": "Invalid gamma value: -1.0",
    "unknown_arg": "['colour']",
    "client": "NotTorchAdamW, not a torch.optim optimizer",
    "elastic": "elastic checkpoints",
}


@pytest.mark.parametrize("key", list(REFUSED))
def test_refused_before_anything_changes(runs, key):
    got = runs["ranks"][0][REFUSALS]
    assert got[key] is not None and REFUSED[key] in got[key], got[key]
    assert got[key + ":unchanged"]  # weight_decay and the hooks as they were


def test_not_an_engine_is_a_type_error(runs):
    got = runs["ranks"][0][REFUSALS]
    assert "expected the deepspeed.DeepSpeedEngine" in got["not_engine"]
    # The ZeRO optimizer (what a framework hands out as "the optimizer") is named, with the remedy.
    assert "DeepSpeedZeroOptimizer" in got["zero_optimizer"] and "syre.attach(engine, ...)" in got["zero_optimizer"]
    assert "must be engine.module" in got["wrong_model"]


def test_a_client_step_outside_engine_step_decays_nothing(runs):
    for rank in range(WORLD):
        got = runs["ranks"][rank][REFUSALS]
        assert got["synthetic_unchanged"]
        assert got["engine_step_changed"]  # the same step inside engine.step() does decay



def test_transformers_trainer_under_zero3_with_the_plain_callback(runs):
    # TrainingArguments(deepspeed=...) through accelerate: SyreCallback() finds the engine behind the
    # Trainer's optimizer and attaches there; the Trainer's two groups (decay / no decay) keep their gammas.
    if not HAS_TRAINER:
        pytest.skip("needs transformers and accelerate: pip install 'torch-syre[transformers]'")
    want = runs["trainer"]
    assert want["syre"] == "Syre" and want["gammas"] == [W.WD, 0.0]
    for rank in range(WORLD):
        got = runs["ranks"][rank][TRAINER]
        assert got["syre"] == "ZeroSyre" and got["gammas"] == [W.WD, 0.0]
        assert sorted(got["names"]) == sorted(want["names"])
        # accelerate on CPU counts one process and does not shard the data: every rank trains on the
        # one-process run's batches, so the runs agree bitwise.
        assert got["processes"] == 1
        assert list(got["params"]) == list(want["params"])
        for n, p in want["params"].items():
            assert torch.equal(got["params"][n], p), n


def test_universal_checkpoint_resumes_on_another_world_size_bitwise(runs):
    got = runs["universal"]
    _assert_bitwise(got["params"], runs["single"][W.STEPS])
    assert got["seed"] == W.KW["seed"]  # attached with seed 99: client_state["syre"] brought 11 back
    assert len(got["warned"]) == 1 and "client_state" in got["warned"][0]  # attach says how, under load_universal


def test_one_attachment_per_engine_and_remove_gives_back(runs):
    got = runs["ranks"][0][REFUSALS]
    assert got["again_same"]  # syre.attach(engine, same arguments) returns the one attached
    assert "already has syre attached" in got["again_other"]
    assert got["removed"] == (W.WD, 0)  # weight decay given back, no hook left
