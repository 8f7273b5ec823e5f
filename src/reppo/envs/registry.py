"""Names of the supported environments and how to build them.

`mujoco_playground` is imported inside the functions: importing it takes seconds, and tools
that only list names or parse configs should not pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import jax

from reppo.envs.autoreset import AutoResetVecEnv, flat_obs
from reppo.envs.catalog import DMC_TASKS, list_envs
from reppo.envs.contract import EnvSpec
from reppo.envs.user import (
    RegisteredEnv,
    UnknownEnvError,
    WrongBackendError,
    gymnasium_id,
    lookup,
)

__all__ = ["DMC_TASKS", "UnknownEnvError", "WrongBackendError", "env_spec", "list_envs", "make_env"]

_DMC_REWARD_RANGE = (0.0, 1.0)  # DM Control rewards are in [0, 1] per step.
IMPLS = ("auto", "jax", "warp")


def _check_name(name: str) -> RegisteredEnv | None:
    """None for a Playground task, the registration of a user's JAX env; else an error."""
    if name in DMC_TASKS:
        return None
    if name in list_envs("maniskill"):
        raise WrongBackendError(
            f"{name} is a ManiSkill3 task, which the torch backend trains: add --backend torch"
        )
    entry = lookup(name)
    if entry is not None:
        if entry.backend != "jax":
            raise WrongBackendError(
                f"{name} was registered for the {entry.backend} backend (a Gymnasium env): add "
                f"--backend {entry.backend}, or register a functional JAX env for backend 'jax'"
            )
        return entry
    if gymnasium_id(name):
        raise WrongBackendError(
            f"{name} is a Gymnasium env, which the torch backend trains: add --backend torch"
        )
    raise UnknownEnvError(name)


def _resolve_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    # MJX ('jax') is 10-40x faster than MuJoCo Warp on CPU, and fine on GPU.
    return "jax" if impl == "auto" else impl


def _import_playground_registry() -> Any:
    try:
        from mujoco_playground import registry
    except (AttributeError, ImportError, RuntimeError) as e:
        # MuJoCo sets up MUJOCO_GL's OpenGL backend on import, e.g. MUJOCO_GL=osmesa without
        # libOSMesa fails here, before any rendering is asked for.
        gl = os.environ.get("MUJOCO_GL")
        if not gl:
            raise
        raise RuntimeError(
            f"Importing MuJoCo failed with MUJOCO_GL={gl!r} ({type(e).__name__}: {e}). Unset "
            "MUJOCO_GL, or install that backend (egl: libegl1, osmesa: libosmesa6)."
        ) from e
    return registry


@contextlib.contextmanager
def _this_process_first() -> Iterator[None]:
    """In a multi-process run, `jax.devices()` answers this process's devices while the
    simulator is built: MJX places its model on `jax.devices()[0]`, the first device of all
    processes, which no other process can read, so their programs could not use the model.
    One process: nothing changes."""
    if jax.process_count() == 1:
        yield
        return
    all_devices = jax.devices
    jax.devices = jax.local_devices
    try:
        yield
    finally:
        jax.devices = all_devices


@functools.cache
def load_playground_env(name: str, impl: str) -> Any:
    """The Playground env (cached: loading compiles the MuJoCo model, which takes a second)."""
    registry = _import_playground_registry()
    with _this_process_first():
        return registry.load(name, config_overrides={"impl": impl})


def _spec(name: str, inner: Any, episode_length: int | None) -> EnvSpec:
    if episode_length is None:
        episode_length = int(inner._config.episode_length)  # 1000 for every DMC task
    if episode_length < 1:
        raise ValueError(f"episode_length must be >= 1, got {episode_length}")
    # Shapes only: eval_shape traces reset without compiling or running it.
    state = jax.eval_shape(inner.reset, jax.random.key(0))
    return EnvSpec(
        name=name,
        obs_size=int(jax.eval_shape(flat_obs, state.obs).shape[-1]),
        action_size=int(inner.action_size),
        episode_length=episode_length,
        reward_range=_DMC_REWARD_RANGE,
        family="dm_control",
    )


def env_spec(name: str, impl: str = "auto", episode_length: int | None = None) -> EnvSpec:
    """The static facts of env `name`, without building a batch."""
    entry = _check_name(name)
    if entry is not None:
        from reppo.envs.custom import build

        return build(entry, episode_length)[1]
    return _spec(name, load_playground_env(name, _resolve_impl(impl)), episode_length)


def make_env(
    name: str, num_envs: int, *, impl: str = "auto", episode_length: int | None = None
) -> AutoResetVecEnv:
    """A batch of `num_envs` auto-resetting envs `name` (see `reppo.envs.contract`).

    `impl` picks Playground's physics: 'jax' (MJX), 'warp' (MuJoCo Warp) or 'auto' (MJX).
    `episode_length` None keeps the task's own time limit (1000 steps for DM Control).
    A name registered with `reppo.register_env(..., backend="jax")` batches the user's env
    (`impl` does not apply to it).
    """
    entry = _check_name(name)
    impl = _resolve_impl(impl)
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
    if entry is not None:
        from reppo.envs.custom import build

        inner, spec = build(entry, episode_length)
        return AutoResetVecEnv(inner, num_envs, spec)
    inner = load_playground_env(name, impl)
    return AutoResetVecEnv(inner, num_envs, _spec(name, inner, episode_length))
