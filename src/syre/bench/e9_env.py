"""E9's world (``syre.bench.e9``): CartPole-v1 physics in numpy whose parameters change by phase, and the PPO agent's network."""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np
import torch
from torch import nn

__all__ = ["CartPoles", "physics_schedule", "Agent"]


# ----------------------------------------------------------------------------- the environment
class CartPoles:
    """``n`` CartPole-v1 environments with settable physics, stepped together (numpy, float64).

    ``step(actions)`` returns ``(obs, reward, done, episode_returns)`` with automatic reset:
    ``obs`` is the next observation (the reset state where an episode ended), ``done`` marks
    termination or the 500-step truncation, and ``episode_returns`` lists the returns of the
    episodes that ended. Truncated episodes are treated as terminal (no value bootstrap), as in
    many compact PPO implementations; with the 500-step cap this rarely matters.
    """

    x_threshold = 2.4
    theta_threshold = 12 * 2 * math.pi / 360
    max_steps = 500
    tau = 0.02

    def __init__(self, n: int, rng: np.random.Generator):
        self.n = n
        self.rng = rng
        self.set_physics(force_mag=10.0, length=0.5, masspole=0.1, gravity=9.8)
        self.state = rng.uniform(-0.05, 0.05, size=(n, 4))
        self.t = np.zeros(n, dtype=np.int64)
        self.ret = np.zeros(n)

    def set_physics(self, *, force_mag: float, length: float, masspole: float, gravity: float, masscart: float = 1.0) -> None:
        self.force_mag, self.length, self.masspole, self.gravity, self.masscart = force_mag, length, masspole, gravity, masscart
        self.total_mass = masspole + masscart
        self.polemass_length = masspole * length

    def step(self, actions: np.ndarray):
        x, x_dot, th, th_dot = self.state.T
        force = np.where(actions == 1, self.force_mag, -self.force_mag)
        cos, sin = np.cos(th), np.sin(th)
        temp = (force + self.polemass_length * th_dot**2 * sin) / self.total_mass
        th_acc = (self.gravity * sin - cos * temp) / (self.length * (4.0 / 3.0 - self.masspole * cos**2 / self.total_mass))
        x_acc = temp - self.polemass_length * th_acc * cos / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * x_acc
        th = th + self.tau * th_dot
        th_dot = th_dot + self.tau * th_acc
        self.state = np.stack([x, x_dot, th, th_dot], axis=1)
        self.t += 1
        self.ret += 1.0
        terminated = (np.abs(x) > self.x_threshold) | (np.abs(th) > self.theta_threshold)
        done = terminated | (self.t >= self.max_steps)
        finished = self.ret[done].tolist()
        if done.any():
            k = int(done.sum())
            self.state[done] = self.rng.uniform(-0.05, 0.05, size=(k, 4))
            self.t[done] = 0
            self.ret[done] = 0.0
        return self.state.astype(np.float32), np.ones(self.n, dtype=np.float32), done, finished


def physics_schedule(cfg: Dict[str, Any], seed: int) -> List[Dict[str, float]]:
    """The physics of each phase: the motor alternates direction; length, pole mass and gravity are drawn."""
    rng = np.random.default_rng(50_000 + seed)
    out = []
    for k in range(int(cfg["phases"])):
        out.append({
            "force_mag": 10.0 * (1.0 if k % 2 == 0 else -1.0),
            "length": float(rng.uniform(*cfg["length_range"])),
            "masspole": float(rng.uniform(*cfg["masspole_range"])),
            "gravity": float(rng.uniform(*cfg["gravity_range"])),
        })
    return out


# ----------------------------------------------------------------------------- the agent
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class Agent(nn.Module):
    """Separate actor and critic MLPs (obs -> width -> width -> 2 logits / 1 value)."""

    def __init__(self, width: int, activation: str):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"Invalid activation: {activation!r}; expected one of {sorted(_ACTIVATIONS)}")
        act = _ACTIVATIONS[activation]
        self.actor_body = nn.Sequential(nn.Linear(4, width), act(), nn.Linear(width, width), act())
        self.actor_head = nn.Linear(width, 2)
        self.critic = nn.Sequential(nn.Linear(4, width), act(), nn.Linear(width, width), act(), nn.Linear(width, 1))

    def forward(self, obs: torch.Tensor):
        return self.actor_head(self.actor_body(obs)), self.critic(obs).squeeze(-1)
