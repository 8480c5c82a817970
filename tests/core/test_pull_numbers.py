"""Does syre matter here? The two numbers of Syre.pull_report(), their thresholds against the committed
measurements, the verdict, and the warning that follows it."""
import json
import warnings

import pytest
import torch
from torch import nn

import syre
from repo import ROOT, load_script
from syre.core._checks import ANCHOR_SMALL, DECAY_WEAK, PROBE_STEPS, WeakPullWarning, verdict

SUMMARY = ROOT / "benchmarks" / "results" / "pull-numbers" / "pull_numbers.json"


def _script():
    return load_script("benchmarks/pull_numbers.py", "pull_numbers")


def test_thresholds_are_those_derived_from_the_committed_measurements():
    s = json.loads(SUMMARY.read_text())
    derived = _script().derive(s["decay_rows"], s["anchor_rows"])  # recomputed from the rows, by the stated rule
    assert derived["decay_weak"]["derived"] == DECAY_WEAK
    assert derived["anchor_small"]["derived"] == ANCHOR_SMALL
    # ... and what the rule promises holds in every committed row.
    assert all(not r["measurable"] for r in s["decay_rows"] if r["decay"] < DECAY_WEAK)
    assert all(r["measurable"] for r in s["decay_rows"] if r["decay"] >= DECAY_WEAK)
    assert all(r["undone"] < 0.10 for r in s["anchor_rows"] if r["anchor"] < ANCHOR_SMALL)


def test_the_docs_state_the_committed_thresholds_and_typical_numbers():
    s = json.loads(SUMMARY.read_text())
    text = (ROOT / "docs" / "does-syre-matter.md").read_text()
    assert f"`DECAY_WEAK` = {DECAY_WEAK:g}" in text and f"`ANCHOR_SMALL` = {ANCHOR_SMALL:g}" in text
    for r in s["typical"].values():
        assert f"{r['decay']:.2g}" in text and f"{r['anchor']:.2g}" in text
    rows = {(r["gamma"], r["scale"]): r for r in s["anchor_rows"]}
    assert f"anchors of {rows[10.0, 1.0]['anchor']:.2g} and {rows[10.0, 3.0]['anchor']:.2g} times" in text
    assert f"undid {rows[10.0, 1.0]['undone']:.0%} and all" in text and f"they undid {rows[1.0, 1.0]['undone']:.0%} and all" in text
    assert rows[10.0, 3.0]["undone"] >= 1.0 and rows[1.0, 3.0]["undone"] >= 1.0


def test_verdict_bands():
    assert verdict(None, None).startswith("not measured yet")
    assert verdict(DECAY_WEAK / 2, 10.0).startswith("decay too weak to collapse anything")
    assert verdict(DECAY_WEAK * 2, ANCHOR_SMALL / 2).startswith("decay strong, anchor small")
    assert verdict(DECAY_WEAK * 2, ANCHOR_SMALL * 2).startswith("decay strong, anchor comparable")


def _adam_run(gamma, sigma0, steps=PROBE_STEPS):
    m = nn.Sequential(nn.Linear(8, 4, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)) * 0.3)
    o = torch.optim.Adam(m.parameters(), lr=1e-3)
    s = syre.attach(o, m, gamma=gamma, sigma0=sigma0, d_spread=0.0)
    g = torch.Generator().manual_seed(0)
    rms = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(steps):
            o.zero_grad()
            m(torch.randn(16, 8, generator=g)).square().mean().backward()
            rms.append(float(m[0].weight.detach().square().mean().sqrt()))
            o.step()
    return s, rms, [w for w in caught if issubclass(w.category, WeakPullWarning)]


def test_nothing_is_reported_before_the_probe_steps():
    s, _, _ = _adam_run(gamma=2.0, sigma0=0.3, steps=PROBE_STEPS - 1)
    r = s.pull_report()
    assert r["params"] == {} and r["verdict"].startswith("not measured yet")


def test_reported_ratios_after_the_probe_steps():
    s, rms, caught = _adam_run(gamma=2.0, sigma0=0.3)
    r = s.pull_report()["params"]["0.weight"]
    # each step's update is at most lr per element (at the first step exactly lr): the medians are bounded
    p_rms = sorted(rms)[1]
    assert 2.0 * p_rms * (1 - 1e-2) <= r["decay"] <= 2.0 * p_rms * 3
    assert r["anchor"] == pytest.approx(0.3 / p_rms, rel=0.05)
    assert r["pull"] == pytest.approx(r["decay"] * r["anchor"], rel=1e-6)
    assert caught == []  # decay strong, anchor about the weights' size: syre differs from weight decay
    assert s.pull_report()["total"]["decay"] == pytest.approx(r["decay"])


def test_the_warning_fires_exactly_when_the_verdict_says_close_to_weight_decay():
    for gamma, sigma0 in ((2.0, 0.001), (2.0, 1.0), (0.001, 0.001), (2.0, 0.0)):
        s, _, caught = _adam_run(gamma, sigma0)
        close = s.pull_report()["verdict"].startswith("decay strong, anchor small") and sigma0 > 0
        assert len(caught) == int(close), (gamma, sigma0, s.pull_report()["verdict"])
    text = s.summary()
    assert "does syre matter here?" in text and "decay/update" in text and "anchor/weights" in text


def test_the_evidence_page_states_the_committed_numbers():
    s = json.loads(SUMMARY.read_text())
    text = (ROOT / "docs" / "evidence.md").read_text()
    assert f"decay/update of {DECAY_WEAK:g}" in text and f"anchor/weights of {ANCHOR_SMALL:g}" in text
    assert f"at {s['typical']['nanogpt_char_lm']['decay']:.2g}" in text and f"at {s['typical']['resnet_batchnorm']['decay']:.2g}" in text


def test_the_probe_counts_the_steps_syre_counts_a_step_gradscaler_skips_is_not_one():
    """The probe reads the step from the attachment's one Runtime: a skipped step (torch's fused AdamW takes
    GradScaler's found_inf and runs its step hooks) is no probe step, and the report comes after 3 steps taken."""
    m = nn.Sequential(nn.Linear(8, 4, bias=False))
    o = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.5, fused=True)
    s = syre.attach(o, m, sigma0=0.3)
    sc = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    for i, scale in enumerate((1.0, float("inf"), 1.0, 1.0)):
        o.zero_grad()
        sc.scale(m(x).square().mean() * scale).backward()
        sc.step(o)
        sc.update()
        taken = i if i else 1  # the second step is skipped
        assert s._rt.step == taken and s._probe.steps_since_attach == taken
        assert (s.pull_report()["params"] == {}) == (taken < PROBE_STEPS), i
    assert "at step" not in s.summary() and "right after them" in s.summary()
    o.zero_grad()
    m(x).square().mean().backward()
    o.step()
    assert s._probe.steps_since_attach == s._rt.step == 4 and "1 step(s) later, at step 4" in s.summary()
