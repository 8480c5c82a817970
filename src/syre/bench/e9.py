"""E9: loss of plasticity in reinforcement learning: PPO on a CartPole whose physics keep changing.

The environment is gymnasium's CartPole-v1. Every ``phase_steps`` environment steps its physics
change: the motor **reverses** (``force_mag`` changes sign, so the action that pushed right now
pushes left and the policy has to be relearned: that is what measures plasticity) and the pole's
half-length, the pole's mass and gravity are drawn afresh from ``length_range``,
``masspole_range`` and ``gravity_range``. The sequence of physics is a function of the seed only,
shared by every arm.

Two engines (``engine``), the same PPO hyperparameters (clipped surrogate, GAE, separate actor
and critic MLPs of two hidden layers of ``width`` units, Adam with eps 1e-5, gradient clipping,
advantage normalisation, entropy bonus):

* ``"torch"`` (default): a compact PPO written here (below); needs nothing beyond torch and numpy.
* ``"sb3"``: stable-baselines3's ``PPO("MlpPolicy", ...)`` on ``n_envs`` gymnasium
  CartPole-v1 environments; syre is attached to its policy optimizer by one line
  (``apply_arm(arm, model.policy, model.policy.optimizer, ...)``, i.e. ``syre.attach``), so the
  training loop is someone else's. Needs ``pip install 'torch-syre[sb3]'`` (the run stops with that
  hint and the ``engine=torch`` alternative where it is missing).

The built-in engine runs a batch of CartPoles in numpy with the same
  equations, thresholds, reward and 500-step limit (tested against gymnasium step by step). No
  dependency beyond torch and numpy. Differences: LeCun-normal init (sb3: orthogonal), and a
  truncated episode is treated as terminal (sb3 bootstraps it).

Measured on this machine with matched settings (16 environments x 64 steps, 8 epochs x 4
minibatches), both run at about 4,500 environment steps per CPU second.

Decay is decoupled (AdamW's convention) and applies to every parameter of actor and critic.
Arms: ``none`` (PPO), ``wd`` (PPO + weight decay), ``syre`` (PPO + syre, library default sigma0),
``syre_ar`` (PPO + syre AR), and the tuned arms.

Metrics per trial: per phase, the mean return of the episodes finished in the phase
(``phase_return``), the mean return of those finished in the last quarter of the phase
(``phase_final_return``), the effective rank of the actor's last hidden layer on the states of
the phase's last rollout (``phase_eff_rank``) and its share of dead units (never active on those
states); summarised as ``return_last`` (mean ``phase_final_return`` over the last
``last_phases`` phases), ``return_first`` (the same over the first ``last_phases`` phases),
``return_all`` (mean over all phases), ``eff_rank_last`` (the last phase), ``eff_rank_first``
and ``dead_last``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from syre.diagnostics.metrics import effective_rank

from . import fmt
from .arms import ARM_DEFAULTS, apply_arm, arms as get_arms
from .common import lecun_init_, trial_rng, tuned_cells
from .e9_env import _ACTIVATIONS, Agent, CartPoles, physics_schedule  # noqa: F401  (the world, kept importable from here)
from .protocol import Design, Test, Tuning, cell
from .registry import Experiment

CLAIM = ("PPO on a task whose dynamics change periodically loses the rank of its features and its return; PPO + syre keeps "
         "both, weight decay alone helps partly.")

DEFAULTS: Dict[str, Any] = {
    **ARM_DEFAULTS,
    "arms": ["none", "wd", "syre", "syre_ar"],
    "engine": "torch",
    "gamma": 1.0,
    "tune_arms": ["wd", "syre", "syre_ar"],
    "tune_gammas": [0.01, 0.1, 1.0],
    "tune_sigma0s": ["lecun:0.3", ARM_DEFAULTS["sigma0"], "lecun:3"],
    "phases": 8,
    "phase_steps": 20480,
    "length_range": [0.25, 1.0],
    "masspole_range": [0.05, 0.5],
    "gravity_range": [7.0, 13.0],
    "n_envs": 16,
    "n_steps": 64,
    "epochs": 8,
    "minibatches": 4,
    "lr": 1e-3,
    "discount": 0.99,
    "gae_lambda": 0.95,
    "clip": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
    "width": 64,
    "activation": "relu",
    "last_phases": 2,
}
QUICK = {"arms": ["none", "wd", "syre"], "tune_arms": ["wd", "syre"], "tune_gammas": [1.0], "tune_sigma0s": [ARM_DEFAULTS["sigma0"]],
         "phases": 2, "phase_steps": 1024, "n_envs": 8, "epochs": 4, "last_phases": 1}


def _check(cfg: Dict[str, Any]) -> None:
    if cfg["engine"] not in ("sb3", "torch"):
        raise ValueError(f"Invalid engine: {cfg['engine']!r}; expected 'sb3' (stable-baselines3 and gymnasium) or 'torch' (built in)")
    for key in ("phases", "phase_steps", "n_envs", "n_steps", "epochs", "minibatches", "width", "last_phases"):
        v = cfg[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"Invalid {key}: {v!r}; expected an int >= 1")
    batch = cfg["n_envs"] * cfg["n_steps"]
    if cfg["phase_steps"] % batch:
        raise ValueError(f"Invalid phase_steps: {cfg['phase_steps']!r}; expected a multiple of n_envs * n_steps = {batch}")
    if batch % cfg["minibatches"]:
        raise ValueError(f"Invalid minibatches: {cfg['minibatches']!r}; expected a divisor of n_envs * n_steps = {batch}")
    if cfg["last_phases"] > cfg["phases"]:
        raise ValueError(f"Invalid last_phases: {cfg['last_phases']!r}; expected at most phases = {cfg['phases']}")


def trial(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """Train PPO with ``arm`` through every phase of the physics schedule of ``seed`` (engine ``cfg["engine"]``)."""
    _check(cfg)
    if cfg["engine"] == "sb3":
        return _trial_sb3(cfg, arm, seed)
    with trial_rng(seed):  # module constructors draw from the global generator (their init is then overwritten)
        return _trial_torch(cfg, arm, seed)


def _summary(cfg, phase_return, phase_final, phase_rank, phase_dead) -> Dict[str, Any]:
    k = int(cfg["last_phases"])
    return {
        "return_last": float(np.nanmean(phase_final[-k:])),
        "return_first": float(np.nanmean(phase_final[:k])),
        "return_all": float(np.nanmean(phase_final)),
        "eff_rank_last": phase_rank[-1],
        "eff_rank_first": phase_rank[0],
        "dead_last": phase_dead[-1],
        "phase_return": phase_return,
        "phase_final_return": phase_final,
        "phase_eff_rank": phase_rank,
        "phase_dead": phase_dead,
    }


def _features_stats(feats: torch.Tensor):
    return effective_rank(feats), float((feats.max(dim=0).values <= 0).float().mean())


def _trial_torch(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """The built-in PPO and the numpy CartPoles."""
    n_envs, n_steps = cfg["n_envs"], cfg["n_steps"]
    batch = n_envs * n_steps
    mb = batch // cfg["minibatches"]
    agent = lecun_init_(Agent(cfg["width"], cfg["activation"]), torch.Generator().manual_seed(seed), gain=math.sqrt(2.0))
    with torch.no_grad():  # small initial policy and value heads, as is usual for PPO
        agent.actor_head.weight.mul_(0.01)
        agent.critic[-1].weight.mul_(0.1)
    opt = torch.optim.Adam(agent.parameters(), lr=cfg["lr"], eps=1e-5)
    apply_arm(arm, agent, opt, seed=seed, cfg=cfg)  # the one added line

    env = CartPoles(n_envs, np.random.default_rng(seed))
    gen = torch.Generator().manual_seed(20_000 + seed)
    obs = torch.from_numpy(env.state.astype(np.float32))
    g, lam = float(cfg["discount"]), float(cfg["gae_lambda"])
    rollouts = cfg["phase_steps"] // batch
    quarter = max(1, rollouts // 4)
    phase_return, phase_final, phase_rank, phase_dead = [], [], [], []
    for physics in physics_schedule(cfg, seed):
        env.set_physics(**physics)
        returns: List[float] = []
        final: List[float] = []
        for r in range(rollouts):
            obs_buf = torch.empty(n_steps, n_envs, 4)
            act_buf = torch.empty(n_steps, n_envs, dtype=torch.int64)
            logp_buf = torch.empty(n_steps, n_envs)
            val_buf = torch.empty(n_steps + 1, n_envs)
            done_buf = torch.empty(n_steps, n_envs)
            with torch.no_grad():
                for t in range(n_steps):
                    logits, value = agent(obs)
                    logp_all = torch.log_softmax(logits, dim=-1)
                    action = (torch.rand(n_envs, generator=gen) < logp_all[:, 1].exp()).long()
                    obs_buf[t], act_buf[t], val_buf[t] = obs, action, value
                    logp_buf[t] = logp_all.gather(1, action[:, None]).squeeze(1)
                    nxt, _, done, finished = env.step(action.numpy())
                    done_buf[t] = torch.from_numpy(done.astype(np.float32))
                    returns += finished
                    if r >= rollouts - quarter:
                        final += finished
                    obs = torch.from_numpy(nxt)
                val_buf[n_steps] = agent(obs)[1]
                adv = torch.zeros(n_steps, n_envs)
                last = torch.zeros(n_envs)
                for t in reversed(range(n_steps)):
                    nonterminal = 1.0 - done_buf[t]
                    delta = 1.0 + g * val_buf[t + 1] * nonterminal - val_buf[t]
                    last = delta + g * lam * nonterminal * last
                    adv[t] = last
                ret = adv + val_buf[:n_steps]
            b_obs, b_act, b_logp = obs_buf.reshape(batch, 4), act_buf.reshape(batch), logp_buf.reshape(batch)
            b_adv, b_ret = adv.reshape(batch), ret.reshape(batch)
            for _ in range(cfg["epochs"]):
                perm = torch.randperm(batch, generator=gen)
                for i in range(0, batch, mb):
                    idx = perm[i : i + mb]
                    logits, value = agent(b_obs[idx])
                    logp_all = torch.log_softmax(logits, dim=-1)
                    logp = logp_all.gather(1, b_act[idx, None]).squeeze(1)
                    a = b_adv[idx]
                    a = (a - a.mean()) / (a.std() + 1e-8)
                    ratio = torch.exp(logp - b_logp[idx])
                    pg = -torch.min(ratio * a, ratio.clamp(1 - cfg["clip"], 1 + cfg["clip"]) * a).mean()
                    v_loss = 0.5 * (value - b_ret[idx]).pow(2).mean()
                    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                    loss = pg + cfg["vf_coef"] * v_loss - cfg["ent_coef"] * entropy
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), cfg["max_grad_norm"])
                    opt.step()
        with torch.no_grad():
            rank, dead = _features_stats(agent.actor_body(b_obs))
        phase_return.append(float(np.mean(returns)) if returns else float("nan"))
        phase_final.append(float(np.mean(final)) if final else float(np.mean(returns)) if returns else float("nan"))
        phase_rank.append(rank)
        phase_dead.append(dead)
    return _summary(cfg, phase_return, phase_final, phase_rank, phase_dead)


def _require_sb3():
    try:
        import gymnasium  # noqa: F401
        import stable_baselines3  # noqa: F401
    except ImportError as exc:
        raise ImportError("E9's default engine needs stable-baselines3 and gymnasium: pip install 'torch-syre[sb3]' "
                          "(or run the built-in PPO: syre bench run e9 --set engine=torch)") from exc


def _trial_sb3(cfg: Dict[str, Any], arm, seed: int) -> Dict[str, Any]:
    """stable-baselines3's PPO on gymnasium's CartPole-v1 with the physics of each phase set on every environment."""
    _require_sb3()
    import random

    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class EpisodeReturns(BaseCallback):
        def __init__(self):
            super().__init__()
            self.items: List[tuple] = []  # (timestep at the end of the episode, return)

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.items.append((self.num_timesteps, float(info["episode"]["r"])))
            return True

    batch = cfg["n_envs"] * cfg["n_steps"]
    quarter = max(1, (cfg["phase_steps"] // batch) // 4) * batch
    width = cfg["width"]
    act = _ACTIVATIONS[cfg["activation"]] if cfg["activation"] in _ACTIVATIONS else None
    if act is None:
        raise ValueError(f"Invalid activation: {cfg['activation']!r}; expected one of {sorted(_ACTIVATIONS)}")
    py_state, np_state = random.getstate(), np.random.get_state()  # stable-baselines3 seeds the global generators
    try:
        with trial_rng(seed):
            env = make_vec_env("CartPole-v1", n_envs=cfg["n_envs"], seed=seed)
            model = PPO("MlpPolicy", env, learning_rate=cfg["lr"], n_steps=cfg["n_steps"], batch_size=batch // cfg["minibatches"],
                        n_epochs=cfg["epochs"], gamma=cfg["discount"], gae_lambda=cfg["gae_lambda"], clip_range=cfg["clip"],
                        ent_coef=cfg["ent_coef"], vf_coef=cfg["vf_coef"], max_grad_norm=cfg["max_grad_norm"],
                        policy_kwargs={"net_arch": {"pi": [width, width], "vf": [width, width]}, "activation_fn": act},
                        seed=seed, device="cpu", verbose=0)
            apply_arm(arm, model.policy, model.policy.optimizer, seed=seed, cfg=cfg)  # the one added line
            episodes = EpisodeReturns()
            phase_return, phase_final, phase_rank, phase_dead = [], [], [], []
            for k, physics in enumerate(physics_schedule(cfg, seed)):
                for e in env.envs:
                    _set_physics(e.unwrapped, physics)
                start = model.num_timesteps
                model.learn(cfg["phase_steps"], reset_num_timesteps=(k == 0), callback=episodes)
                end = model.num_timesteps
                returns = [r for t, r in episodes.items if start < t <= end]
                final = [r for t, r in episodes.items if end - quarter < t <= end]
                obs = torch.as_tensor(model.rollout_buffer.observations, dtype=torch.float32).reshape(-1, 4)
                with torch.no_grad():
                    rank, dead = _features_stats(model.policy.mlp_extractor.policy_net(obs))
                phase_return.append(float(np.mean(returns)) if returns else float("nan"))
                phase_final.append(float(np.mean(final)) if final else phase_return[-1])
                phase_rank.append(rank)
                phase_dead.append(dead)
            env.close()
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return _summary(cfg, phase_return, phase_final, phase_rank, phase_dead)


def _set_physics(env, physics: Dict[str, float]) -> None:
    """Set the physics of a gymnasium ``CartPoleEnv`` (and the two quantities it derives from them)."""
    env.force_mag = physics["force_mag"]
    env.length = physics["length"]
    env.masspole = physics["masspole"]
    env.gravity = physics["gravity"]
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


_ENGINES = {"sb3": "stable-baselines3 PPO on gymnasium CartPole-v1", "torch": "built-in PPO, CartPole-v1 physics in numpy"}


def design(cfg: Dict[str, Any]) -> Design:
    _check(cfg)
    arm_list = get_arms(cfg["arms"])
    names = [a.name for a in arm_list]
    tun = Tuning(metric="return_last", better="max", arms=tuple(a for a in cfg["tune_arms"] if a in names),
                 gammas=tuple(cfg["tune_gammas"]), sigma0s=tuple(cfg["tune_sigma0s"]))
    k = cfg["last_phases"]
    c = cell
    tests: List[Test] = []
    if "none" in names:
        tests += [Test(f"PPO loses return: last {k} phases below the first {k}", "return_last", c("none"), c("none"),
                       metric_b="return_first", direction="less", role="secondary"),
                  Test("PPO loses feature rank: last phase below the first", "eff_rank_last", c("none"), c("none"),
                       metric_b="eff_rank_first", direction="less", role="secondary")]
        for arm in [n for n in names if n != "none"]:
            role = "primary" if arm == "syre" else "secondary"
            tests += [Test(f"{arm}: return over the last {k} phases above PPO's", "return_last", c(arm), c("none"), role=role),
                      Test(f"{arm}: feature rank in the last phase above PPO's", "eff_rank_last", c(arm), c("none"), role=role)]
    for arm in [n for n in names if n.startswith("syre")]:
        if "wd" in names:
            tests.append(Test(f"{arm}: return over the last {k} phases above weight decay's", "return_last", c(arm), c("wd"),
                              role="secondary"))
    if "syre" in tun.arms:
        for ref in [r for r in tun.arms if r != "syre"]:
            tests.append(Test(f"tuned: syre's return over the last {k} phases above {ref}'s", "return_last", c("syre@tuned"),
                              c(f"{ref}@tuned"), family="tuned", role="primary" if ref == "wd" else "secondary"))
        if "none" in names:
            tests.append(Test(f"tuned: syre's return over the last {k} phases above PPO's", "return_last", c("syre@tuned"), c("none"),
                              family="tuned"))
    return Design(arms=arm_list, cells=[c(n) for n in names] + tuned_cells(tun), tests=tests, tuning=tun, notes=[
        f"engine {cfg['engine']} ({_ENGINES[cfg['engine']]}), {cfg['n_envs']} environments; {cfg['phases']} phases of "
        f"{cfg['phase_steps']} steps; the motor reverses every phase; pole half-length in {cfg['length_range']}, pole mass in "
        f"{cfg['masspole_range']}, gravity in {cfg['gravity_range']}, drawn per phase from the seed.",
        f"PPO: actor and critic MLPs 4-{cfg['width']}-{cfg['width']} ({cfg['activation']}), rollouts of {cfg['n_steps']} steps x "
        f"{cfg['n_envs']} envs, {cfg['epochs']} epochs x {cfg['minibatches']} minibatches, Adam lr {cfg['lr']:g}, clip {cfg['clip']:g}, "
        f"GAE ({cfg['discount']:g}, {cfg['gae_lambda']:g}), entropy {cfg['ent_coef']:g}, gradient norm <= {cfg['max_grad_norm']:g}; "
        f"shared decay gamma {cfg['gamma']:g} (decoupled) on every parameter of actor and critic.",
        "phase return: mean return of the episodes that finished in the last quarter of each phase (500 is the maximum). Returns "
        "come from training episodes; the selection seeds have their own physics schedules."])


def report(ctx) -> Dict[str, Any]:
    keys = [c.key for c in ctx.protocol.design.cells if c.key in ctx.arms]
    k = ctx.config["last_phases"]
    _plot(ctx, ctx.config, keys)
    head = "; ".join(f"{a} return first {k} {fmt.num(ctx.arms[a]['return_first']['mean'])} -> last {k} "
                     f"{fmt.num(ctx.arms[a]['return_last']['mean'])}, eff rank last {fmt.num(ctx.arms[a]['eff_rank_last']['mean'])}"
                     for a in keys)
    return {"tables": [_table(ctx, ctx.config, keys)], "findings": {"headline": head}}


def _curves(ctx, arm: str, key: str) -> np.ndarray:
    rows = ctx.rows(cell(arm))
    return np.array([[np.nan if v is None else v for v in r[key]] for r in rows], dtype=float)


def _table(ctx, cfg, names: Sequence[str]) -> str:
    data = {n: (_curves(ctx, n, "phase_final_return"), _curves(ctx, n, "phase_eff_rank")) for n in names}
    rows = [[p + 1] + [v for n in names for v in (fmt.ms(data[n][0][:, p]), fmt.ms(data[n][1][:, p]))] for p in range(int(cfg["phases"]))]
    return ("## Return (last quarter of each phase) and feature rank per phase\n\n"
            + fmt.md_table(["phase"] + [f"{n} {m}" for n in names for m in ("return", "eff rank")], rows))


def _plot(ctx, cfg, names) -> None:
    fig, axes = ctx.subplots(1, 3, figsize=(13, 3.5))
    phases = np.arange(1, int(cfg["phases"]) + 1)
    for i, name in enumerate(names):
        for ax, key in zip(axes, ("phase_final_return", "phase_eff_rank", "phase_dead")):
            c = _curves(ctx, name, key)
            if c.size == 0:
                continue
            m, s = np.nanmean(c, axis=0), np.nanstd(c, axis=0)
            ax.plot(phases, m, marker="o", color=f"C{i}", label=name)
            ax.fill_between(phases, m - s, m + s, color=f"C{i}", alpha=0.15)
    for ax, label in zip(axes, ("return (last quarter of the phase)", "effective rank of actor features", "dead actor units (share)")):
        ax.set_xlabel("phase (physics change; motor reverses)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    ctx.save(fig, "e9_ppo_plasticity")


EXPERIMENT = Experiment(id="e9", title="PPO on CartPole with changing physics: return and feature rank over time", claim=CLAIM,
                        trial=trial, design=design, report=report, defaults=DEFAULTS, quick=QUICK, perf="return_last", better="max",
                        rank="eff_rank_last", n_min=5, n_max=6, selection=2)
