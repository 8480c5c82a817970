"""syre with stable-baselines3: one line after building the model.

    pip install 'torch-syre[sb3]'
    python examples/sb3_example.py

PPO on CartPole (gymnasium's classic control, nothing to download) with syre pulling the
policy and value networks toward fixed random anchors (gamma = 2e-3, the weight decay of the
paper's PPO experiment), then save, load and restore syre's state from the saved file.
"""
import tempfile
from pathlib import Path

import gymnasium as gym
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy

from syre.integrations import sb3


def main():
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=256, batch_size=64, seed=0, device="cpu",
                policy_kwargs=dict(net_arch=[32, 32]))
    (s,) = sb3.attach(model, gamma=2e-3, sigma0="kaiming", seed=1)  # the added line
    print(s.summary().splitlines()[1])
    model.learn(total_timesteps=4_096)
    mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=10)
    print(f"mean episode return after 4096 steps: {mean:.1f} +- {std:.1f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ppo_cartpole.zip"
        model.save(path)
        loaded = PPO.load(path, env=gym.make("CartPole-v1"), device="cpu")
        (s2,) = sb3.attach(loaded, gamma=2e-3, restore=path)  # the saved seed and sigma0 win
        same = all(torch.equal(s.anchor(n).theta0, s2.anchor(n).theta0) for n in s.names())
        print(f"loaded: seed {s2.seed}, same anchors: {same}")


if __name__ == "__main__":
    main()
