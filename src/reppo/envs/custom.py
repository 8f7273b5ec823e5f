"""Registered JAX environments (`reppo.register_env(..., backend="jax")`): building and checking.

A user's functional env has the Brax / MuJoCo Playground single-env API (the `InnerEnv` of
`reppo.envs.autoreset`); `AutoResetVecEnv` batches it like a Playground task. Before its first
use it is checked once per process (`check_functional_env`), so that a wrong shape or a NaN
shows up as one sentence naming the problem instead of a tracing error deep inside a jitted
training step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reppo.envs.autoreset import flat_obs
from reppo.envs.contract import EnvSpec
from reppo.envs.user import RegisteredEnv
from reppo.envs.user import env_error as _fail

_BUILT: dict[str, tuple[RegisteredEnv, Any, EnvSpec]] = {}


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else type(x).__name__


def _policy_obs(name: str, obs: Any, where: str) -> Any:
    if isinstance(obs, Mapping):
        if "state" not in obs:
            raise _fail(name, f"{where} returned a dict observation without a 'state' entry "
                              f"(keys: {', '.join(map(str, obs))}); reppo trains on obs['state']")
        obs = obs["state"]
    shape = getattr(obs, "shape", None)
    if shape is None or len(shape) != 1 or shape[0] < 1:
        raise _fail(name, f"{where} returned an observation of {_describe(obs)}; one env's "
                          "observation must be a flat vector, shape (obs_size,)")
    return obs


def _scalar(name: str, state: Any, field: str, where: str) -> None:
    value = getattr(state, field)
    shape = getattr(value, "shape", None)
    if shape is None or tuple(shape) != ():
        raise _fail(name, f"{where} returned state.{field} of {_describe(value)}; one env's "
                          f"{field} must be a scalar")


def _check_state(name: str, state: Any, where: str) -> Any:
    for field in ("obs", "reward", "done"):
        if not hasattr(state, field):
            raise _fail(name, f"{where} returned a {type(state).__name__} without .{field}; the "
                              "state needs obs, reward and done")
    _scalar(name, state, "reward", where)
    _scalar(name, state, "done", where)
    return _policy_obs(name, state.obs, where)


def check_functional_env(name: str, inner: Any) -> tuple[int, int]:
    """Check one unbatched functional env and return its (obs_size, action_size).

    Shapes are checked by tracing (`jax.eval_shape`), then `reset` and one `step` with a zero
    action run once to check that their observations and reward are finite.
    """
    for method in ("reset", "step"):
        if not callable(getattr(inner, method, None)):
            raise _fail(name, f"the factory returned a {type(inner).__name__} without a "
                              f"{method} method")
    action_size = getattr(inner, "action_size", None)
    if isinstance(action_size, bool) or not isinstance(action_size, (int, np.integer)) or (
        action_size < 1
    ):
        raise _fail(name, f"action_size must be an integer >= 1, got {action_size!r}")
    action_size = int(action_size)
    key = jax.random.key(0)
    try:
        state = jax.eval_shape(inner.reset, key)
    except Exception as err:  # noqa: BLE001 - the user's code: report what it raised
        raise _fail(name, f"reset(rng) failed: {type(err).__name__}: {err}") from err
    obs = _check_state(name, state, "reset(rng)")
    action = jnp.zeros((action_size,), jnp.float32)
    try:
        stepped = jax.eval_shape(inner.step, state, action)
    except Exception as err:  # noqa: BLE001
        raise _fail(name, f"step(state, action) with an action of shape ({action_size},) "
                          f"failed: {type(err).__name__}: {err}") from err
    _check_state(name, stepped, "step(state, action)")
    shapes = lambda tree: jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)
    if jax.tree.structure(stepped) != jax.tree.structure(state) or shapes(stepped) != shapes(
        state
    ):
        raise _fail(name, "step(state, action) must return a state of the same structure, shapes "
                          "and dtypes as reset(rng) returns (the batch is stepped under jit)")

    first = jax.jit(inner.reset)(key)
    second = jax.jit(inner.step)(first, action)
    for where, s in (("reset(rng)", first), ("step(state, zero action)", second)):
        values = np.asarray(flat_obs(s.obs))
        if not np.all(np.isfinite(values)):
            raise _fail(name, f"{where} returned a non-finite observation {values}")
        if not np.isfinite(float(s.reward)):
            raise _fail(name, f"{where} returned a non-finite reward {float(s.reward)}")
    return int(obs.shape[0]), action_size


def build(entry: RegisteredEnv, episode_length: int | None = None) -> tuple[Any, EnvSpec]:
    """The env of `entry` (its factory called once per registration and process), checked,
    and its spec (`episode_length` None keeps the registered one)."""
    built = _BUILT.get(entry.name)
    if built is None or built[0] is not entry:
        try:
            inner = entry.factory()
        except Exception as err:  # noqa: BLE001
            raise _fail(entry.name, f"its factory raised {type(err).__name__}: {err}") from err
        obs_size, action_size = check_functional_env(entry.name, inner)
        spec = EnvSpec(
            name=entry.name, obs_size=obs_size, action_size=action_size,
            episode_length=entry.episode_length, reward_range=entry.reward_range,
            family=entry.family,
        )
        built = _BUILT[entry.name] = (entry, inner, spec)
    _, inner, spec = built
    if episode_length is not None:
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        spec = dataclasses.replace(spec, episode_length=episode_length)
    return inner, spec
