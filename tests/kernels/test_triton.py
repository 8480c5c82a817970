"""The Triton kernels (``syre.kernels._triton`` and ``syre.rng._triton``) under Triton's interpreter on CPU, against the CPU path:
``tl.philox`` word for word, format-2 anchors, stored and seeded decay bitwise, the fused
optimizer kernels to float32 rounding. (No GPU here: these are the gate; benchmarks/gpu_check.py
is the check for a CUDA machine.)"""
import json
import subprocess
import sys

import pytest

from repo import SUPPORT, clean_env

pytest.importorskip("triton")


@pytest.fixture(scope="module")
def result():
    env = dict(clean_env(), TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, str(SUPPORT / "triton_interp.py")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tl_philox_is_philox4x32_10_word_for_word(result):
    assert result["philox"] is True


def test_anchor_kernel_is_bitwise_the_cpu_generator(result):
    assert result["anchors"] is True


def test_stored_decay_kernel_is_bitwise_the_cpu_decay(result):
    assert result["decay"] and all(result["decay"].values()), result["decay"]


def test_seeded_decay_kernel_is_bitwise_stored_mode(result):
    assert result["seeded"] and all(result["seeded"].values()), result["seeded"]


def test_fused_optimizer_kernels_agree_to_float32_rounding(result):
    """Not bitwise: the Triton kernel and the eager CPU equations may round AdamW's own update differently. Against
    the equations in float64, each element within 4.8e-7 (two float32 ulps at the inputs' size) or no farther than
    the eager float32 path is there, doubled (torch's float32 sqrt is within an ulp, not correctly rounded)."""
    fused = result["fused"]
    assert len(fused) == 4 and all(r["ok"] for r in fused.values()), fused
    assert max(r["triton_err"] for r in fused.values()) < 1e-4, fused  # and never far, whatever the eager path did
