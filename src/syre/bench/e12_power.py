"""E12's underpowered test at the seed count its pilot asks for: syre's node accuracy against weight decay's at gamma 10.

E12 (v1) ran 10 evaluation seeds, the cap of its power rule; its pilot (seeds 900-902) gave the test "syre's accuracy
above weight decay's" at the collapsing gamma a power of 0.27 there. Its mean lay on the claimed side (not significant),
so E12 could not decide it. This follow-up trains only the two cells of that test, with E12's trial and configuration,
at the seed count ``n_needed`` of E12's pilot effect (power 0.8), on seeds E12 never used (0 to n - 1: the "sweep"
range, which no study of E12 drew from). The syre arm draws its anchors at today's anchor format (E12 v1 ran at
format 1): the follow-up tests syre as it is now. The embedding-rank test rides along as a secondary test.
"""
from __future__ import annotations

from typing import Any, Dict

from . import fmt, pilots
from .arms import arms as get_arms
from .e12 import DEFAULTS, QUICK, trial
from .power import TARGET_POWER, n_needed, power_t
from .protocol import Design, Test, cell
from .registry import Experiment

CLAIM = ("At E12's collapsing gamma (10), a GCN trained with syre has a higher node accuracy on SBM graphs than one trained with "
         "weight decay at the same gamma (E12's underpowered test, at the seed count its pilot asks for).")
TEST = "gamma 10: syre's accuracy above weight decay's"


def design(cfg: Dict[str, Any]) -> Design:
    g = float(cfg["gamma"])
    a, b = cell("syre", gamma=g), cell("wd", gamma=g)
    return Design(arms=get_arms(["wd", "syre"]), cells=[b, a], tests=[
        Test(f"gamma {g:g}: syre's accuracy above weight decay's", "test_acc", a, b, key="perf"),
        Test(f"gamma {g:g}: syre's embedding rank above weight decay's", "emb_rank", a, b, role="secondary", key="rank"),
    ], notes=["E12's trial and configuration; only the cells of its underpowered test; seeds 0 to n - 1, which E12 never used."])


def plan(pilot, design_, exp, quick) -> Dict[str, Any]:
    """n from E12's recorded pilot of this test: the smallest n with power >= 0.8 (the follow-up's own rule)."""
    rec = pilots.load().get("e12", {}).get("tests", {}).get(TEST)
    if quick or rec is None:
        return {"n": exp.n_min, "statement": f"no E12 pilot of {TEST!r}: n = {exp.n_min}", "tests": {}}
    eff, sd = rec["mean"] - rec["threshold"], rec["sd"]
    n = n_needed(eff, sd)
    return {"n": n, "target": TARGET_POWER, "pilot": {k: pilots.load()["e12"].get(k) for k in ("seeds", "git_revision", "date")},
            "tests": {TEST: {"pilot_mean": rec["mean"], "pilot_sd": sd, "pilot_n": rec["n"], "effect_toward_h1": eff,
                             "power": power_t(eff, sd, n)}},
            "statement": f"n = {n} evaluation seeds: the smallest n at which E12's pilot effect ({eff:.4g}, sd {sd:.4g}, seeds "
                         f"900-902) gives the test power >= {TARGET_POWER:g} (E12 v1 ran 10: power {power_t(eff, sd, 10):.2f})"}


def report(ctx) -> Dict[str, Any]:
    """The headline: the two cells' mean accuracy and embedding rank."""
    g = float(ctx.config["gamma"])
    keys = [cell(a, gamma=g).key for a in ("syre", "wd")]
    head = "; ".join(f"{fmt.md_cell(k)} acc {fmt.num(ctx.arms[k]['test_acc']['mean'])}, emb rank "
                     f"{fmt.num(ctx.arms[k]['emb_rank']['mean'])}" for k in keys)
    return {"findings": {"headline": head}}


EXPERIMENT = Experiment(id="e12-power", title="E12's underpowered accuracy test at adequate power (GCN on SBM graphs, gamma 10)",
                        claim=CLAIM, trial=trial, design=design, report=report, defaults=DEFAULTS,
                        quick={k: v for k, v in QUICK.items() if k in DEFAULTS},
                        perf="test_acc", better="max", n_min=5, n_max=100, seed_range="sweep", plan=plan)
