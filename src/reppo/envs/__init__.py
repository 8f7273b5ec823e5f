"""Environments: the contract, the auto-reset wrapper, the registries (Playground, ManiSkill3,
the user's registered envs, Gymnasium), evaluation."""

from reppo.envs.autoreset import AutoResetVecEnv, flat_obs
from reppo.envs.contract import EnvSpec, EnvState, StepOutput
from reppo.envs.evaluation import EvalResult, evaluate, evaluate_stochastic, record_video
from reppo.envs.registry import (
    DMC_TASKS,
    UnknownEnvError,
    WrongBackendError,
    env_spec,
    list_envs,
    make_env,
)

__all__ = [
    "DMC_TASKS",
    "AutoResetVecEnv",
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
]
