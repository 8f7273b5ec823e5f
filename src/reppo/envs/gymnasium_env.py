"""Gymnasium environments for the torch backend, behind the `TorchVecEnv` contract.

Three sources: a `gymnasium.Env` factory registered with `reppo.register_env(...,
backend="torch")`, any id of Gymnasium's registry (`HalfCheetah-v5`, built with
`gymnasium.make`), and a registered factory that takes `num_envs` and returns a
`gymnasium.vector.VectorEnv` built with `autoreset_mode=AutoresetMode.DISABLED` (a vectorized
simulator of the user's). reppo batches the first two `num_envs` copies in a `SyncVectorEnv`
with Gymnasium's auto-reset turned off, and resets ended envs itself (`reset_mask`), because the
contract needs, at the step that ends an episode, both the true final observation (to
bootstrap a truncation) and the next episode's first observation (to act on next); Gymnasium's
default next-step auto-reset returns them one step apart.

- Actions arrive in [-1, 1] and are rescaled affinely to the env's Box bounds.
- The time limit is reppo's: `spec.episode_length` steps (the env's own `max_episode_steps`
  for a Gymnasium id), counted per env so that training can stagger the counters. The env's
  own truncation (a `TimeLimit` wrapper) also counts as a truncation.
- Non-finite observations or rewards count as a termination with reward 0, as for JAX envs.
- `info["success"]` or `info["is_success"]`, when the env reports one, is the success flag.

Gymnasium envs keep their state in Python objects, so a resumed run starts fresh episodes
(the learner's state resumes exactly).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch

from reppo.envs.contract import EnvSpec, TorchStep
from reppo.envs.user import RegisteredEnv
from reppo.envs.user import env_error as _fail

GYMNASIUM_FAMILY = "gymnasium"


def _factory(name: str, entry: RegisteredEnv | None) -> Any:
    import gymnasium

    if entry is not None:
        return entry.factory
    return lambda: gymnasium.make(name)


def _make_one(name: str, entry: RegisteredEnv | None) -> Any:
    import gymnasium

    try:
        env = _factory(name, entry)()
    except Exception as err:  # noqa: BLE001 - the user's code: report what it raised
        raise _fail(name, f"building it raised {type(err).__name__}: {err}") from err
    if not isinstance(env, gymnasium.Env):
        raise _fail(name, f"the factory returned a {type(env).__name__}, not a gymnasium.Env "
                          "(a torch-backend env is one unbatched Gymnasium env; reppo batches it)")
    return env


def is_vector_factory(factory: Any) -> bool:
    """A factory called as `factory(num_envs=N)`, returning a Gymnasium vector env."""
    try:
        return "num_envs" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def make_vector(name: str, entry: RegisteredEnv, num_envs: int) -> Any:
    """The user's vector env of `num_envs` envs, checked to be one reppo can reset in part."""
    import gymnasium
    from gymnasium.vector import AutoresetMode

    try:
        vec = entry.factory(num_envs=num_envs)
    except Exception as err:  # noqa: BLE001 - the user's code: report what it raised
        raise _fail(name, f"factory(num_envs={num_envs}) raised {type(err).__name__}: {err}"
                    ) from err
    if not isinstance(vec, gymnasium.vector.VectorEnv):
        raise _fail(name, f"factory(num_envs=...) returned a {type(vec).__name__}, not a "
                          "gymnasium.vector.VectorEnv")
    if vec.num_envs != num_envs:
        raise _fail(name, f"factory(num_envs={num_envs}) returned {vec.num_envs} envs")
    mode = vec.metadata.get("autoreset_mode")
    if mode != AutoresetMode.DISABLED:
        raise _fail(name, f"its vector env auto-resets ({mode}); build it with autoreset_mode="
                          "gymnasium.vector.AutoresetMode.DISABLED: reppo resets ended envs "
                          "itself, to keep each episode's true last observation")
    return vec


class _FirstEnv:
    """Env 0 of a vector env, seen as one env, for `check_gymnasium_env`."""

    def __init__(self, vec: Any) -> None:
        self.vec = vec
        self.observation_space = vec.single_observation_space
        self.action_space = vec.single_action_space
        self.spec = getattr(vec, "spec", None)

    def reset(self, seed: int) -> tuple[Any, dict]:
        obs, info = self.vec.reset(seed=seed)
        return obs[0], info

    def step(self, action: Any) -> tuple[Any, ...]:
        obs, reward, terminated, truncated, info = self.vec.step(action[None])
        return obs[0], reward[0], terminated[0], truncated[0], info

    def close(self) -> None:
        self.vec.close()


def _box_bounds(name: str, space: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    from gymnasium.spaces import Box

    if not isinstance(space, Box):
        raise _fail(name, f"its {what} space is {space}; reppo needs a gymnasium.spaces.Box "
                          f"({'continuous actions' if what == 'action' else 'a flat vector'})")
    if len(space.shape) != 1 or space.shape[0] < 1:
        raise _fail(name, f"its {what} space has shape {space.shape}; reppo needs a flat vector "
                          f"(flatten it, e.g. gymnasium.wrappers.FlattenObservation)")
    return np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)


def check_gymnasium_env(name: str, env: Any) -> tuple[int, int]:
    """Check one Gymnasium env (Box spaces, finite action bounds, a reset and a step with a
    mid-range action that return finite values of the declared shapes); returns (obs_size,
    action_size)."""
    _box_bounds(name, env.observation_space, "observation")
    obs_size = int(env.observation_space.shape[0])
    low, high = _box_bounds(name, env.action_space, "action")
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise _fail(name, f"its action space {env.action_space} needs finite bounds with low < "
                          "high (reppo's actions are in [-1, 1], rescaled to the bounds)")
    obs, _ = env.reset(seed=0)
    _check_obs(name, obs, obs_size, "reset()")
    obs, reward, *_ = env.step(((low + high) / 2).astype(env.action_space.dtype))
    _check_obs(name, obs, obs_size, "step(action)")
    if not math.isfinite(float(reward)):
        raise _fail(name, f"step(action) returned a non-finite reward {reward}")
    return int(obs_size), int(low.shape[0])


def _check_obs(name: str, obs: Any, obs_size: int, where: str) -> None:
    array = np.asarray(obs)
    if array.shape != (obs_size,):
        raise _fail(name, f"{where} returned an observation of shape {array.shape}, but its "
                          f"observation space has shape ({obs_size},)")
    if not np.all(np.isfinite(array)):
        raise _fail(name, f"{where} returned a non-finite observation {array}")


_SPECS: dict[str, tuple[RegisteredEnv | None, EnvSpec]] = {}


def gymnasium_spec(name: str, entry: RegisteredEnv | None) -> EnvSpec:
    """The spec of a registered Gymnasium env (`entry`) or Gymnasium id (`entry` None),
    checked once per process (the check builds one env, resets and steps it once)."""
    cached = _SPECS.get(name)
    if cached is not None and cached[0] is entry:
        return cached[1]
    vector = entry is not None and is_vector_factory(entry.factory)
    env = _FirstEnv(make_vector(name, entry, 1)) if vector else _make_one(name, entry)
    try:
        obs_size, action_size = check_gymnasium_env(name, env)
        if entry is not None:
            episode_length, reward_range = entry.episode_length, entry.reward_range
        else:
            episode_length = env.spec.max_episode_steps if env.spec is not None else None
            if not episode_length:
                raise _fail(name, "it has no time limit (max_episode_steps); register it with "
                                  "reppo.register_env(..., episode_length=N, backend='torch')")
            reward_range = _reward_range_of(name, env)
    finally:
        env.close()
    spec = EnvSpec(
        name=name, obs_size=obs_size, action_size=action_size, episode_length=int(episode_length),
        reward_range=reward_range, family=entry.family if entry else GYMNASIUM_FAMILY,
    )
    _SPECS[name] = (entry, spec)
    return spec


def _reward_range_of(name: str, env: Any) -> tuple[float, float]:
    """A Gymnasium id's per-step reward bounds, for the critic's value support. Gymnasium 1.x
    no longer declares them; the bound below covers its MuJoCo and classic-control tasks
    (per-step rewards within about +-20), and `v_min`/`v_max` in the config override it."""
    low, high = getattr(env, "reward_range", (-math.inf, math.inf))
    if math.isfinite(low) and math.isfinite(high) and low < high:
        return float(low), float(high)
    return -20.0, 20.0


class GymnasiumTorchEnv:
    """`num_envs` copies of a Gymnasium env behind the `TorchVecEnv` contract (module doc)."""

    def __init__(
        self, name: str, entry: RegisteredEnv | None, num_envs: int, *,
        device: torch.device, seed: int = 0, evaluation: bool = False,
    ) -> None:
        # `seed` and `evaluation` are the factory's common arguments: reset(seed) seeds these
        # envs, and evaluation needs no other mode (only the first episode of each env counts).
        del seed, evaluation
        import gymnasium
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.spec = gymnasium_spec(name, entry)
        self.num_envs = num_envs
        self.device = torch.device(device)
        if entry is not None and is_vector_factory(entry.factory):
            self._vec = make_vector(name, entry, num_envs)
        else:
            self._vec = SyncVectorEnv(
                [lambda: _make_one(name, entry) for _ in range(num_envs)],
                autoreset_mode=AutoresetMode.DISABLED,
            )
        space = self._vec.single_action_space
        assert isinstance(space, gymnasium.spaces.Box)
        self._low = np.asarray(space.low, np.float64)
        self._scale = (np.asarray(space.high, np.float64) - self._low) / 2.0
        self._dtype = space.dtype
        self._count = np.zeros(num_envs, np.int64)
        self._seeded = False

    def _tensor(self, x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), dtype=dtype).to(self.device)

    def reset(self, seed: int) -> torch.Tensor:
        obs, _ = self._vec.reset(seed=int(seed) % 2**32)
        self._count[:] = 0
        self._seeded = True
        return self._tensor(obs)

    def stagger(self, seed: int) -> None:
        """Spread the step counters of the fresh batch over [0, episode_length) (training)."""
        if not self._seeded:
            raise RuntimeError("call reset(seed) before stagger(seed)")
        rng = np.random.default_rng([int(seed) % 2**32, 1])
        self._count[:] = rng.integers(0, self.spec.episode_length, self.num_envs)

    def step(self, action: torch.Tensor) -> TorchStep:
        if not self._seeded:
            raise RuntimeError("call reset(seed) before step(action)")
        a = np.clip(action.detach().cpu().numpy().astype(np.float64), -1.0, 1.0)
        env_action = (self._low + (a + 1.0) * self._scale).astype(self._dtype)
        obs, reward, terminated, truncated, info = self._vec.step(env_action)
        obs = np.asarray(obs, np.float32)
        reward = np.asarray(reward, np.float32)
        obs_ok = np.all(np.isfinite(obs), axis=-1)
        finite = obs_ok & np.isfinite(reward)
        terminated = np.asarray(terminated, bool) | ~finite
        self._count += 1
        limit = self._count >= self.spec.episode_length
        truncated = (np.asarray(truncated, bool) | limit) & ~terminated
        reward = np.where(finite, reward, 0.0).astype(np.float32)
        final_obs = np.where(obs_ok[:, None], obs, 0.0).astype(np.float32)
        done = terminated | truncated
        next_obs = final_obs
        if done.any():
            fresh, _ = self._vec.reset(options={"reset_mask": done})
            next_obs = np.where(done[:, None], np.asarray(fresh, np.float32), final_obs)
            self._count[done] = 0
        return TorchStep(
            obs=self._tensor(next_obs),
            reward=self._tensor(reward),
            terminated=self._tensor(terminated),
            truncated=self._tensor(truncated),
            final_obs=self._tensor(final_obs),
            success=self._success(info),
        )

    def _success(self, info: dict[str, Any]) -> torch.Tensor | None:
        for key in ("success", "is_success"):
            if key in info:
                flags = np.asarray(info[key], bool)
                mask = np.asarray(info.get(f"_{key}", np.ones_like(flags)), bool)
                return self._tensor(flags & mask, torch.bool)
        return None

    def close(self) -> None:
        self._vec.close()
