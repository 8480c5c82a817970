"""benchmarks/targets_cost.py in its quick mode: every row runs, and the anchor bytes per parameter are exact
(they are deterministic: fp32 theta0 or a copied target is 4 bytes, AR's stored xi 4 more, seeded mode 0 for what it
regenerates). No timing is asserted."""
import json

from repo import load_script

BYTES = {
    "random, stored, basic": 4, "random, stored, AR": 8,
    "random, seeded, basic": 0, "random, seeded, AR": 0,
    "init via syre.init_, seeded, basic": 0, "init via syre.init_, seeded, AR": 0,  # recomputed from init_'s seed
    "init copy, stored, basic": 4, "init copy, stored, AR": 8,
    "pretrained, stored, basic": 4, "pretrained, stored, AR": 8,
    "mapping, stored, basic": 4, "mapping, stored, AR": 8,
    "bf16 params, rounding nearest, basic": 4, "bf16 params, rounding stochastic, basic": 4,  # an fp32 anchor
}


def test_quick_mode_runs_every_target_and_counts_its_bytes_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("SYRE_COMPILE", "0")  # perf.py (imported by the script) would build the compiled kernels
    mod = load_script("benchmarks/targets_cost.py", "targets_cost")
    assert mod.main(["--quick", "--reps", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "targets_cost.json").read_text())
    run = res["run"]
    assert run["params"] == 2 * (32 * 32 + 32) and res["config"]["quick"]
    assert run["bytes_per_param"] == BYTES
    assert set(run["ratio"]) == set(BYTES) and all(r > 0 for r in run["ratio"].values())
    assert run["base"]["bf16 params, rounding stochastic, basic"] == mod.BASE_BF16
    md = (tmp_path / "results.md").read_text()
    assert all(f"| {k} | {b} |" in md for k, b in BYTES.items())
