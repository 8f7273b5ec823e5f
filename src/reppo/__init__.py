"""REPPO: Relative Entropy Pathwise Policy Optimization.

The library API (docs/api.md)::

    import reppo

    config = reppo.preset("cpu", env="CartpoleBalance", total_steps=200_000)
    result = reppo.train(config)              # in memory: no files are left behind
    action = result.policy(obs)               # NumPy in, NumPy out
    policy = reppo.load_policy("runs/cheetah")  # a run saved by `reppo train`
    reppo.register_env("Maze", make_maze, episode_length=200, reward_range=(0, 1))

`import reppo` imports neither JAX nor torch: the names below are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reppo._version import __version__ as __version__
from reppo.lazy import lazy_names

__all__ = [
    "Config",
    "ConfigError",
    "Policy",
    "StopTraining",
    "TrainResult",
    "load_policy",
    "preset",
    "register_env",
    "train",
    "unregister_env",
]

# Public name -> the module that defines it (imported on first access).
_LAZY = {
    "Config": "reppo.config",
    "ConfigError": "reppo.config",
    "Policy": "reppo.policy",
    "StopTraining": "reppo.loop.callbacks",
    "TrainResult": "reppo.api",
    "load_policy": "reppo.api",
    "preset": "reppo.api",
    "register_env": "reppo.envs.user",
    "train": "reppo.api",
    "unregister_env": "reppo.envs.user",
}

if TYPE_CHECKING:
    from reppo.api import TrainResult, load_policy, preset, train
    from reppo.config import Config, ConfigError
    from reppo.envs.user import register_env, unregister_env
    from reppo.loop.callbacks import StopTraining
    from reppo.policy import Policy


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
