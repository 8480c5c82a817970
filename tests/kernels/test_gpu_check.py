"""benchmarks/gpu_check.py is known to run before it meets a GPU: its ``--dry-run`` runs every part
(the bitwise checks of the Triton kernels under Triton's interpreter on CPU tensors, the interleaved
timings with a CPU clock, the JSON and its table) and every check passes."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from repo import clean_env

pytest.importorskip("triton")
pytestmark = pytest.mark.slow  # Triton's interpreter: ~40 s

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "gpu_check.json"
    env = clean_env()
    env.pop("TRITON_INTERPRET", None)  # the script sets it itself for --dry-run
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), run.stdout


def test_dry_run_passes_every_bitwise_check(dry):
    res, _ = dry
    assert res["dry_run"] is True
    for part, n in (("anchors", 8), ("decay", 11), ("fused", 4)):
        assert len(res[part]) == n and all(res[part].values()), (part, res[part])


def test_dry_run_times_every_variant_and_renders_the_table(dry):
    res, stdout = dry
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gc)
    rows = res["timings"]["64k"]["variants"]
    assert set(rows) == set(gc.BYTES)
    assert all(r["median_ms"] > 0 and r["GB_per_s"] > 0 for r in rows.values())
    assert rows["torch fused AdamW(wd)"]["x_base"] == 1.0
    assert gc.table(res) in stdout
    # the peak of a device is looked up by name, and the percentage follows from it
    assert gc.peak_of("NVIDIA H100 80GB HBM3", None) == 3350.0 and gc.peak_of("Unknown", None) is None
