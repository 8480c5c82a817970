"""The building blocks of E6 to E9 (their quick runs are in test_quick_runs.py)."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

# ----------------------------------------------------------------------------- building blocks
def test_e7_augment_is_seeded_and_changes_the_image():
    from syre.bench.e7 import DEFAULTS, augment

    x = torch.rand(4, 1, 14, 14, generator=torch.Generator().manual_seed(0))
    a = augment(x, torch.Generator().manual_seed(1), DEFAULTS)
    b = augment(x, torch.Generator().manual_seed(1), DEFAULTS)
    c = augment(x, torch.Generator().manual_seed(2), DEFAULTS)
    assert a.shape == x.shape and torch.equal(a, b)
    assert (a - x).abs().mean() > 0.05 and (a - c).abs().mean() > 0.05


def test_e7_nt_xent_extremes():
    from syre.bench.e7 import nt_xent

    n = 8
    z = torch.eye(n)  # matched views, every other pair orthogonal
    good = float(nt_xent(z, z.clone(), 0.5))
    # the positive has similarity 1/tau, the 2n - 2 negatives 0: loss = -log(e^2 / (e^2 + 2n - 2))
    assert good == pytest.approx(-math.log(math.e**2 / (math.e**2 + 2 * n - 2)), rel=1e-5)
    bad = float(nt_xent(z, -z, 0.5))  # the "positive" view points the other way
    assert bad > good + 3.0


def test_e7_linear_probe_separable_and_random():
    from syre.bench.e7 import linear_probe

    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    f = torch.nn.functional.one_hot(y, 4).float() * 3 + 0.1 * torch.randn(200, 4, generator=g)
    assert linear_probe(f[:100], y[:100], f[100:], y[100:], 50) == 1.0
    noise = torch.randn(200, 4, generator=g)
    assert linear_probe(noise[:100], y[:100], noise[100:], y[100:], 50) < 0.5


def test_e8_shrink_and_perturb_noise_has_the_stated_scale():
    from syre.bench.arms import init_stds
    from syre.bench.common import mlp
    from syre.bench.e8 import _add_perturb

    net = mlp(50, 400, 1, 10, seed=0)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    _add_perturb(net, opt, 0.1, seed=0)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # lr 0: only the perturbation moves the weights
    stds = init_stds(net)
    w = "hidden.0.weight"
    moved = dict(net.named_parameters())[w].detach() - before[w]
    assert float(moved.std()) == pytest.approx(0.1 * stds[w], rel=0.05)


def test_e8_rejects_bad_configuration():
    from syre.bench.arms import ARMS
    from syre.bench.e8 import EXPERIMENT, trial

    with pytest.raises(ValueError, match="n_per_task"):
        trial(EXPERIMENT.config(overrides={"n_per_task": 10**9}), ARMS["wd"], 0)
    with pytest.raises(ValueError, match="tasks"):
        trial(EXPERIMENT.config(overrides={"tasks": 2, "last_tasks": 3}), ARMS["wd"], 0)


def test_e9_cartpole_physics():
    from syre.bench.e9 import CartPoles

    env = CartPoles(2, np.random.default_rng(0))
    env.state = np.zeros((2, 4))
    obs, rew, done, finished = env.step(np.array([1, 0]))
    # from rest, a push of +-10 N on cart + pole (1.1 kg): x_acc = F/M - ... > 0 for action 1, the mirror for action 0
    assert obs[0, 1] > 0 and obs[1, 1] == pytest.approx(-obs[0, 1]) and obs[0, 3] == pytest.approx(-obs[1, 3])
    assert obs[0, 3] < 0  # the pole tips against the push
    env.set_physics(force_mag=-10.0, length=0.5, masspole=0.1, gravity=9.8)
    env.state = np.zeros((2, 4))
    obs, *_ = env.step(np.array([1, 0]))
    assert obs[0, 1] < 0  # the motor reversed: action 1 now pushes left
    # the episode ends when the pole passes 12 degrees; the env resets and reports the return
    env = CartPoles(2, np.random.default_rng(0))
    env.state = np.array([[0, 0, 0.25, 0], [0, 0, 0, 0]])
    obs, rew, done, finished = env.step(np.array([1, 1]))
    assert done.tolist() == [True, False] and finished == [1.0] and abs(obs[0, 2]) <= 0.05


def test_e9_cartpole_matches_gymnasium():
    gym = pytest.importorskip("gymnasium")
    from syre.bench.e9 import CartPoles

    ref = gym.make("CartPole-v1").unwrapped
    ref.reset(seed=0)
    ours = CartPoles(1, np.random.default_rng(0))
    start = np.array([0.01, -0.02, 0.03, 0.04])
    ref.state = start.copy()
    ours.state = start[None].copy()
    actions = np.random.default_rng(1).integers(0, 2, size=40)
    for a in actions:
        r_obs, _, r_term, _, _ = ref.step(int(a))
        o_obs, _, o_done, _ = ours.step(np.array([a]))
        if r_term:
            assert o_done[0]
            break
        np.testing.assert_allclose(o_obs[0], r_obs, rtol=1e-5, atol=1e-6)
        assert not o_done[0]


def test_e9_physics_schedule_reverses_the_motor_and_depends_on_the_seed_only():
    from syre.bench.e9 import EXPERIMENT, physics_schedule

    cfg = EXPERIMENT.config()
    a, b, c = physics_schedule(cfg, 0), physics_schedule(cfg, 0), physics_schedule(cfg, 1)
    assert a == b and a != c and len(a) == cfg["phases"]
    assert [p["force_mag"] for p in a[:4]] == [10.0, -10.0, 10.0, -10.0]
    for p in a:
        assert cfg["length_range"][0] <= p["length"] <= cfg["length_range"][1]
        assert cfg["gravity_range"][0] <= p["gravity"] <= cfg["gravity_range"][1]


def test_e9_rejects_bad_configuration():
    from syre.bench.arms import ARMS
    from syre.bench.e9 import EXPERIMENT, trial

    with pytest.raises(ValueError, match="phase_steps"):
        trial(EXPERIMENT.config(overrides={"phase_steps": 1000}), ARMS["none"], 0)
    with pytest.raises(ValueError, match="activation"):
        trial(EXPERIMENT.config(quick=True, overrides={"activation": "gelu", "engine": "torch"}), ARMS["none"], 0)
    with pytest.raises(ValueError, match="engine"):
        trial(EXPERIMENT.config(quick=True, overrides={"engine": "rllib"}), ARMS["none"], 0)


def test_e9_sb3_engine_missing_names_the_extra(monkeypatch):
    import sys

    from syre.bench.arms import ARMS
    from syre.bench.e9 import EXPERIMENT, trial

    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # import fails as if not installed
    assert EXPERIMENT.config()["engine"] == "torch"  # the default needs nothing beyond the bench extra
    with pytest.raises(ImportError, match=r"torch-syre\[sb3\].*engine=torch"):
        trial(EXPERIMENT.config(quick=True, overrides={"engine": "sb3"}), ARMS["none"], 0)


TINY = {"phases": 2, "phase_steps": 512, "n_envs": 4, "n_steps": 64, "epochs": 2, "last_phases": 1}


@pytest.mark.parametrize("engine", ["torch", "sb3"])
def test_e9_trials_are_reproducible_and_leave_the_global_rngs_alone(engine):
    if engine == "sb3":
        pytest.importorskip("stable_baselines3")
    import random

    from syre.bench.arms import ARMS
    from syre.bench.e9 import EXPERIMENT, trial

    cfg = EXPERIMENT.config(overrides={**TINY, "engine": engine})
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    a, b = trial(cfg, ARMS["syre"], 3), trial(cfg, ARMS["syre"], 3)
    assert a == b
    assert trial(cfg, ARMS["syre"], 4) != a
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
