"""stable-baselines3: attach syre to a model's policy optimizer(s) in one line.

::

    from stable_baselines3 import PPO
    from syre.integrations import sb3

    model = PPO("MlpPolicy", "CartPole-v1", learning_rate=3e-4)
    sb3.attach(model, gamma=2e-3)            # the added line
    model.learn(100_000)

``attach`` calls ``syre.attach(optimizer, model.policy, ...)`` on each optimizer that trains the
policy: ``policy.optimizer`` for PPO, A2C and DQN, ``actor.optimizer`` and
``critic.optimizer`` for SAC, TD3 and DDPG. Parameter names are those of
``model.policy.named_parameters()`` (``mlp_extractor.policy_net.0.weight``,
``actor.mu.weight``, ...). Every optimizer step then first applies the decoupled decay
``p <- p - lr * gamma * D * (p - theta0)`` with the current ``lr``, which stable-baselines3
updates from its ``learning_rate`` schedule before each round of updates. Target networks
(updated by Polyak averaging, not by an optimizer) and SAC's entropy coefficient are left alone.

The policy optimizers are Adam by default, whose ``weight_decay`` is coupled, so ``gamma`` is
required (AdamW's convention: the pull per step is ``lr * gamma``); keep
``optimizer_kwargs["weight_decay"]`` at 0.

Saving and loading: ``model.save(path)`` stores syre's state (seed, gamma, ``d_spread``,
per-parameter sigma0; never anchors) inside each optimizer's state dict (key ``"syre"``).
``PPO.load`` builds the optimizers before syre is attached, so pass the file again::

    model = PPO.load(path)
    sb3.attach(model, gamma=2e-3, restore=path)   # the saved seed and sigma0 win: same anchors

Install: ``pip install 'torch-syre[sb3]'``.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple, Union

import torch

from ._common import attach_all, attach_config, require

_sb3 = require("stable_baselines3", "sb3", "syre.integrations.sb3")
from stable_baselines3.common.save_util import load_from_zip_file, recursive_getattr  # noqa: E402

__all__ = ["attach", "policy_optimizers"]


def policy_optimizers(model) -> List[Tuple[str, torch.optim.Optimizer]]:
    """``(attribute path, optimizer)`` of each optimizer that trains ``model.policy``, in save order.

    Read from the model's own list of saved state dicts (``policy.optimizer``,
    ``actor.optimizer``, ...); optimizers of tensors outside the policy (SAC's entropy
    coefficient) are not included.
    """
    if not isinstance(getattr(model, "policy", None), torch.nn.Module) or not hasattr(model, "_get_torch_save_params"):
        raise TypeError(
            f"Invalid model: {type(model).__name__}; expected a stable-baselines3 algorithm (PPO, A2C, DQN, SAC, TD3, ...) "
            "with a .policy"
        )
    policy_params = {id(p) for p in model.policy.parameters()}
    found = []
    seen = set()
    for name in model._get_torch_save_params()[0]:
        obj = recursive_getattr(model, name)
        if not isinstance(obj, torch.optim.Optimizer) or id(obj) in seen:
            continue
        params = [p for g in obj.param_groups for p in g["params"]]
        if params and all(id(p) in policy_params for p in params):
            found.append((name, obj))
            seen.add(id(obj))
    if not found:
        raise ValueError(f"{type(model).__name__} has no optimizer over its policy's parameters; nothing to attach syre to")
    return found


def attach(model, *, gamma: Optional[float], restore: Union[str, os.PathLike, None] = None, **attach_kwargs) -> List[Any]:
    """Attach syre to every optimizer that trains ``model.policy``; returns the ``Syre`` objects.

    Args:
        model: a stable-baselines3 algorithm (``PPO``, ``A2C``, ``DQN``, ``SAC``, ``TD3``, ...).
        gamma: decoupled strength, AdamW's convention (the pull per step is ``lr * gamma``);
            ``None`` takes over the optimizers' ``weight_decay`` (only for AdamW or plain SGD).
        restore: a file written by ``model.save``; syre's state saved in it is restored (the
            saved seed, gamma, ``d_spread`` and sigma0 replace the arguments above).
        attach_kwargs: every other keyword of ``syre.attach`` (``sigma0``, ``d_spread``, ``seed``,
            ``mode``, ``include``, ``exclude``, ``foreach``, ``target``, ``rounding``, ``strict``),
            validated by ``syre.config.Config`` before anything is attached. ``strict`` is off by
            default here (target networks are held by no optimizer); ``True`` asks that every
            trainable parameter of the policy is held by one of the optimizers.

    Returns:
        One ``Syre`` per optimizer, in the order of ``policy_optimizers(model)``
        (``(s,) = attach(ppo, gamma=...)`` for on-policy algorithms).
    """
    config = attach_config({"gamma": gamma, "strict": False, **attach_kwargs}, "syre.integrations.sb3.attach",
                           ("model", "restore"))
    named = policy_optimizers(model)
    saved = None
    if restore is not None:
        _, params, _ = load_from_zip_file(restore, load_data=False, device="cpu")
        missing = [name for name, _ in named if not isinstance((params or {}).get(name), dict) or "syre" not in params[name]]
        if missing:
            raise ValueError(f"Invalid restore file {str(restore)!r}: it holds no syre state for {missing}; "
                             "was syre attached when it was saved?")
        saved = [params[name]["syre"] for name, _ in named]
    _, syres = attach_all([o for _, o in named], model.policy, config)
    if saved is not None:
        try:
            for s, sd in zip(syres, saved):
                s.check_state_dict(sd)
        except (TypeError, ValueError):
            for s in syres:
                s.remove()
            raise
        for s, sd in zip(syres, saved):
            s.load_state_dict(sd)
    return syres
