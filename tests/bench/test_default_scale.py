"""The default study (``syre bench run default-scale``): its design, its selection rule, its power rule, a quick run,
and ``--jobs`` giving the records of a sequential run."""
import json

import pytest

pytest.importorskip("scipy")
pytest.importorskip("sklearn")

from quick_runs import default_scale_settings as _quick_settings, quick_run  # noqa: E402
from syre.bench import build_protocol, default_scale as ds, get_experiment, run_experiment  # noqa: E402

EXP = get_experiment("default-scale")


def test_the_design_judges_the_chosen_candidate_on_settings_it_was_not_chosen_on():
    cfg = EXP.config()
    d = EXP.design(cfg)
    prim = [t for t in d.tests if t.role == "primary"]
    held = {s for s, st in cfg["settings"].items() if st["role"] == "heldout"}
    sel = {s for s, st in cfg["settings"].items() if st["role"] == "selection"}
    assert held == {"gpt2", "resnet", "gcn"} and sel == {"mlp", "charlm"}
    assert len(prim) == 2 * len(held)
    for t in prim:
        # no primary test holds by construction: the chosen candidate against another arm (weight decay), same setting and gamma
        assert t.a.arm == "chosen" and t.b.arm == "wd" and t.a.where == t.b.where
        assert t.a.where["setting"] in held and t.family == "heldout"
        assert t.a in d.cells and t.b in d.cells
    typical = [t for t in prim if "(typical)" in t.name]
    assert all(t.threshold < 0 or t.ratio > 1 for t in typical), "the no-harm tests are non-inferiority tests with a margin"
    # the selection settings are judged too, on evaluation seeds, as secondary tests
    assert {t.a.where["setting"] for t in d.tests if t.a.arm == "chosen" and t.role == "secondary"} >= sel
    # every candidate is reported against weight decay and against lecun
    names = [t.name for t in d.tests]
    for a in ("match", "match0.3", "l2init"):
        assert any(f"{a}'s" in n and "better than lecun's" in n for n in names)
    p = build_protocol(EXP, cfg)
    assert p.selection_seeds and not set(p.selection_seeds) & set(p.evaluation_seeds)
    assert p.declaration()["config"]["selection_rule"] == ds.SELECTION_RULE


def _values(table):
    return lambda a, s, g: table[(a, s, g)]


def _table(cfg, gains, seeds=4):
    """wd at 0.5 (accuracy) or 2.0 (loss) with seed noise; each candidate at wd + its gain (signed: positive is better)."""
    out = {}
    noise = [0.01, -0.01, 0.005, -0.005][:seeds]
    for s, st in cfg["settings"].items():
        for g in st["gammas"]:
            base = 0.5 if st["better"] == "max" else 2.0
            out[("wd", s, float(g))] = [base + e for e in noise]
            for c in cfg["candidates"]:
                gain = gains.get(c, 0.0)
                if callable(gain):
                    gain = gain(s, float(g), st)
                sign = 1.0 if st["better"] == "max" else -1.0
                out[(c, s, float(g))] = [base + e + sign * gain + 0.003 * (i % 2) for i, e in enumerate(noise)]
    return out


def test_the_selection_rule_picks_the_best_unharmed_candidate_and_breaks_ties_toward_lecun():
    cfg = EXP.config()
    assert ds.choose(cfg, _values(_table(cfg, {"match": 0.05, "match0.3": 0.02})))["chosen"] == "match"
    # harmed at a typical gamma (the first of each setting's gammas): excluded, however good elsewhere
    harm = lambda s, g, st: -0.05 if g == float(st["gammas"][0]) else 0.5  # noqa: E731
    out = ds.choose(cfg, _values(_table(cfg, {"match": harm, "match0.3": 0.02})))
    assert out["chosen"] == "match0.3" and out["harmed"]["match"]
    # within tie_margin of lecun: lecun, the existing default
    tiny = 1e-4
    out = ds.choose(cfg, _values(_table(cfg, {"match": tiny})))
    assert out["chosen"] == "lecun" and "tie" in out["why"]
    # every candidate harmed: lecun
    bad = lambda s, g, st: -0.05  # noqa: E731
    out = ds.choose(cfg, _values(_table(cfg, {"lecun": bad, "match": bad, "match0.3": bad})))
    assert out["chosen"] == "lecun" and "every candidate" in out["why"]


def test_the_power_rule_reads_the_pilot_and_states_the_power_of_every_primary_test():
    cfg = EXP.config()
    tab = _table(cfg, {"match": 0.05}, seeds=3)
    cells = {}
    for (a, s, g), v in tab.items():
        cells[ds._c(a, s, g).key] = {cfg["settings"][s]["metric"]: v}
    plan = ds.plan({"cells": cells, "seeds": [900, 901, 902]}, EXP.design(cfg), EXP, False)
    assert plan["predicted"] == "match" and EXP.n_min <= plan["n"] <= EXP.n_max
    prim = [t.name for t in EXP.design(cfg).tests if t.role == "primary"]
    for c in cfg["candidates"]:
        assert sorted(plan["candidates"][c]) == sorted(prim)
    for name, p in plan["candidates"]["match"].items():
        assert p["power"] is not None and 0 <= p["power"] <= 1
        assert p["basis"] == ("the margin (equal arms)" if "(typical)" in name else "the pilot effect")
    # a larger n never lowers the power
    big = ds.plan({"cells": cells, "seeds": [900, 901, 902]}, EXP.design(cfg),
                  type(EXP)(**{**EXP.__dict__, "n_min": 20, "n_max": 20}), False)
    for name, p in plan["candidates"]["match"].items():
        assert big["candidates"]["match"][name]["power"] >= p["power"] - 1e-12


def test_a_quick_run_completes_and_writes_the_summary_fields(tmp_path_factory):
    _, out, s = quick_run("default-scale", tmp_path_factory)  # the run test_quick_runs.py checks too
    assert s["chosen"]["candidate"] in ("lecun", "match", "match0.3")
    assert s["chosen"]["sigma0"] == ds.CANDIDATES[s["chosen"]["candidate"]]
    assert s["heldout_verdict"] is None  # a quick run decides nothing
    prim = [t for t in s["tests"] if t["role"] == "primary"]
    assert prim and set(s["power"]) == {t["name"] for t in prim}
    rows = s["table"]
    assert {r["arm"] for r in rows} >= {"wd", "lecun", "match", "match0.3", "l2init", "none", "chosen"}
    for r in rows:
        if r["n"] >= 2:
            assert r["lo"] <= r["mean"] <= r["hi"]
    # the chosen cells are the chosen candidate's trials (run once, recorded under both names)
    c = s["chosen"]["candidate"]
    for k, v in s["arms"].items():
        if k.startswith("chosen["):
            assert v[next(iter(v))]["mean"] == s["arms"][k.replace("chosen", c, 1)][next(iter(v))]["mean"]
    assert "default_scale.png" in s["plots"] and (out / "default_scale.png").is_file()
    assert len(s["seeds"]["selection"]) == EXP.selection and s["selection"]["chosen"] == c


def test_jobs_give_the_records_of_a_sequential_run(tmp_path):
    over = {"settings": _quick_settings("mlp", "gcn")}

    def recs(d):
        out = []
        for line in (d / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            r.pop("time_s", None)
            out.append(r)
        return out

    one = run_experiment("default-scale", quick=True, out=tmp_path / "one", verbose=False, overrides=over, jobs=1)
    two = run_experiment("default-scale", quick=True, out=tmp_path / "two", verbose=False, overrides=over, jobs=2)
    assert recs(tmp_path / "one") == recs(tmp_path / "two")
    assert one["chosen"] == two["chosen"]
    with pytest.raises(ValueError, match="jobs"):
        run_experiment("default-scale", quick=True, out=tmp_path / "bad", verbose=False, overrides=over, jobs=0)
