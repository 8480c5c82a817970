"""sb3.attach on real stable-baselines3 runs: PPO on CartPole, SAC on Pendulum (no downloads)."""
import pytest
import torch

pytest.importorskip("stable_baselines3")
gymnasium = pytest.importorskip("gymnasium")

from stable_baselines3 import PPO, SAC  # noqa: E402

import syre  # noqa: E402
from attach_keywords import ONE_OF_EACH, check_attached  # noqa: E402
from syre.integrations import sb3  # noqa: E402
from syre_probe import DecayProbe  # noqa: E402


def ppo(seed=0):
    return PPO(
        "MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=2, seed=seed, device="cpu",
        learning_rate=lambda progress: 1e-3 * (0.5 + progress),  # a schedule: the lr changes between rollouts
        policy_kwargs=dict(net_arch=[16]),
    )


def test_one_line_on_ppo_decays_every_update_with_the_scheduled_lr():
    model = ppo()
    (s,) = sb3.attach(model, gamma=0.5, sigma0=0.3, d_spread=0.1, seed=3)
    assert s.optimizer is model.policy.optimizer
    assert "mlp_extractor.policy_net.0.weight" in s.names() and "action_net.weight" in s.names()
    probe = DecayProbe().install(s, model.policy)
    model.learn(total_timesteps=96)  # 3 rollouts x 2 epochs x 2 minibatches
    probe.remove()
    lrs = probe.check(min_steps=12)
    assert len(lrs) == 3  # one lr per rollout, from the schedule


def test_save_load_restore_gives_the_same_anchors(tmp_path):
    model = ppo()
    (s,) = sb3.attach(model, gamma=0.5, sigma0=0.3, seed=21)
    model.learn(total_timesteps=32)
    model.save(tmp_path / "ppo.zip")

    loaded = PPO.load(tmp_path / "ppo.zip", env=gymnasium.make("CartPole-v1"), device="cpu")
    (s2,) = sb3.attach(loaded, gamma=0.01, sigma0=0.001, seed=999, restore=tmp_path / "ppo.zip")
    assert s2.seed == 21 and s2.group_gamma(0) == 0.5
    for name in s.names():
        assert torch.equal(s.anchor(name).theta0, s2.anchor(name).theta0), name
    probe = DecayProbe().install(s2, loaded.policy)
    loaded.learn(total_timesteps=64)
    probe.remove()
    probe.check(min_steps=4)


def test_restore_from_a_file_saved_without_syre_is_refused(tmp_path):
    model = ppo()
    model.save(tmp_path / "plain.zip")
    with pytest.raises(ValueError, match=r"holds no syre state for \['policy.optimizer'\]"):
        sb3.attach(ppo(), gamma=0.1, restore=tmp_path / "plain.zip")


def test_sac_actor_and_critic_optimizers_target_left_alone():
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=0, batch_size=8, buffer_size=64, seed=0, device="cpu",
                policy_kwargs=dict(net_arch=[8]))
    actor, critic = sb3.attach(model, gamma=0.5, sigma0=0.3, seed=1)
    assert actor.optimizer is model.actor.optimizer and critic.optimizer is model.critic.optimizer
    assert all(n.startswith("actor.") for n in actor.names())
    assert all(n.startswith("critic.") for n in critic.names())
    probes = [DecayProbe().install(s, model.policy) for s in (actor, critic)]
    model.learn(total_timesteps=6)
    for p in probes:
        p.remove()
        p.check(min_steps=4)
    covered = set(actor.names()) | set(critic.names())
    assert not any(n.startswith("critic_target.") for n in covered)  # moved by Polyak averaging only
    assert {r["reason"] for r in critic.coverage() if r["name"].startswith("critic_target.")} == {"not in optimizer"}


def test_bad_model_is_refused():
    with pytest.raises(TypeError, match="expected a stable-baselines3 algorithm"):
        sb3.attach(torch.nn.Linear(2, 2), gamma=0.1)


def test_every_attach_keyword_is_taken_target_and_rounding_included():
    model = ppo()
    syres = sb3.attach(model, **ONE_OF_EACH)
    check_attached(syre.config.Config(**ONE_OF_EACH), syres)
    model.learn(total_timesteps=32)
