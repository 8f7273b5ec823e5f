"""Environments: the task catalogue, the user's registered envs, which episodes an evaluation
runs, the env contract; and, built on them, the auto-reset wrapper, the registries
(Playground, ManiSkill3, Gymnasium), evaluation and the DLPack bridge.

Importing `reppo.envs` loads no framework: the catalogue (`catalog`), the user's envs
(`user`), the evaluation seed (`eval_seed`) and the contract (`contract`) are plain Python,
so `reppo envs`, `reppo --help` and a user's `register_env` call stay fast. The names below
that build or step envs (JAX) load their module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reppo.envs.catalog import DMC_TASKS, list_envs
from reppo.envs.contract import EnvSpec, EnvState, StepOutput
from reppo.envs.user import (
    EnvRegistrationError,
    UnknownEnvError,
    WrongBackendError,
    register_env,
    unregister_env,
)
from reppo.lazy import lazy_names

__all__ = [
    "DMC_TASKS",
    "AutoResetVecEnv",
    "EnvRegistrationError",
    "EnvSpec",
    "EnvState",
    "EvalResult",
    "StepOutput",
    "UnknownEnvError",
    "WrongBackendError",
    "env_spec",
    "evaluate",
    "evaluate_stochastic",
    "flat_obs",
    "list_envs",
    "make_env",
    "record_video",
    "register_env",
    "unregister_env",
]

# Public name -> the module (which imports JAX) that defines it, imported on first access.
_LAZY = {
    "AutoResetVecEnv": "reppo.envs.autoreset",
    "flat_obs": "reppo.envs.autoreset",
    "EvalResult": "reppo.envs.evaluation",
    "evaluate": "reppo.envs.evaluation",
    "evaluate_stochastic": "reppo.envs.evaluation",
    "record_video": "reppo.envs.evaluation",
    "env_spec": "reppo.envs.registry",
    "make_env": "reppo.envs.registry",
}

if TYPE_CHECKING:
    from reppo.envs.autoreset import AutoResetVecEnv, flat_obs
    from reppo.envs.evaluation import EvalResult, evaluate, evaluate_stochastic, record_video
    from reppo.envs.registry import env_spec, make_env


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
