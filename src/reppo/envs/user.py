"""The user's own environments: `register_env` and name lookup (docs/envs.md).

A registered env is a name bound to a factory that builds one unbatched env; reppo batches it,
checks it, and trains, evaluates, exports and reports it like a built-in task:

- backend "jax": `factory()` returns a functional env with the Brax / MuJoCo Playground API
  (`reset(rng) -> state`, `step(state, action) -> state`, `state.obs`, `state.reward`,
  `state.done`, `action_size`). Both backends train it (torch through the DLPack bridge).
- backend "torch": `factory()` returns a `gymnasium.Env` with Box observation and action
  spaces. The torch backend trains it, batched in a Gymnasium vector env. A factory with a
  `num_envs` parameter instead returns the whole batch, `factory(num_envs=N)`: a
  `gymnasium.vector.VectorEnv` built with `autoreset_mode=AutoresetMode.DISABLED`.

A name may carry the module that registers it, as Gymnasium's ids do: `"my_pkg.envs:Maze"`
imports `my_pkg.envs` (which calls `register_env("Maze", ...)` when imported) and then looks
up `Maze`. Runs record the name as given, so a run trained on `"my_pkg.envs:Maze"` is
evaluated, resumed and swept by the command line in any process, while a run of a name
registered by a script can be reopened only by a program that registers it again.

Any id in Gymnasium's own registry (e.g. `HalfCheetah-v5`) also works with the torch backend,
without registering it (`gymnasium_id`).

This module imports no framework: registering and looking up names is cheap.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reppo.envs.catalog import list_envs
from reppo.errors import UserError

__all__ = [
    "BACKENDS",
    "EnvRegistrationError",
    "RegisteredEnv",
    "UnknownEnvError",
    "WrongBackendError",
    "gymnasium_id",
    "lookup",
    "register_env",
    "registered_names",
    "unregister_env",
]

BACKENDS = ("jax", "torch")


class EnvRegistrationError(UserError, ValueError):
    """A `register_env` call, a `module:Name` env name or a user env that reppo cannot use."""


@dataclass(frozen=True)
class RegisteredEnv:
    """One registered environment (see `register_env`)."""

    name: str
    factory: Callable[[], Any]
    episode_length: int
    reward_range: tuple[float, float]
    backend: str  # "jax": functional (Brax / Playground API); "torch": gymnasium.Env

    @property
    def family(self) -> str:
        return "custom"


_REGISTRY: dict[str, RegisteredEnv] = {}


def register_env(
    name: str,
    factory: Callable[[], Any],
    *,
    episode_length: int,
    reward_range: tuple[float, float],
    backend: str = "jax",
) -> RegisteredEnv:
    """Make `name` an environment reppo can train (`Config.env`, `reppo train --env`).

    - `factory()`, called with no arguments, returns one unbatched env: for `backend="jax"` a
      functional env with the Brax / MuJoCo Playground API, for `backend="torch"` a
      `gymnasium.Env` with Box spaces. It is called when a run builds its envs, not here.
    - `episode_length`: the time limit in steps; an episode that reaches it is truncated
      (bootstrapped), one whose env reports `done` / `terminated` is terminated.
    - `reward_range`: (low, high), the bounds of one step's reward. REPPO derives its
      critic's value support from them (`v_min`, `v_max` in the config override it).

    Registering a name again replaces its entry (re-running a notebook cell is harmless); a
    built-in name, or a name with ':' (which separates a module from a name), is refused.
    The env itself is checked when a run first builds it (shapes, finite values, Box spaces).
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise EnvRegistrationError(f"register_env: name must be a non-empty string, got {name!r}")
    if ":" in name or "/" in name:
        raise EnvRegistrationError(
            f"register_env: name {name!r} may not contain ':' or '/' (a ':' separates a module "
            "from a name, as in 'my_pkg.envs:Maze'); register it as the part after the ':'"
        )
    if name in list_envs():
        raise EnvRegistrationError(
            f"register_env: {name!r} is a built-in environment; choose another name"
        )
    if not callable(factory):
        raise EnvRegistrationError(
            f"register_env({name!r}): factory must be callable with no arguments and return "
            f"one env, got {type(factory).__name__}"
        )
    if backend not in BACKENDS:
        raise EnvRegistrationError(
            f"register_env({name!r}): backend must be one of {BACKENDS}, got {backend!r}"
        )
    if isinstance(episode_length, bool) or not isinstance(episode_length, int) or (
        episode_length < 1
    ):
        raise EnvRegistrationError(
            f"register_env({name!r}): episode_length must be an integer >= 1, got "
            f"{episode_length!r}"
        )
    entry = RegisteredEnv(
        name, factory, episode_length, check_reward_range(reward_range, name), backend
    )
    _REGISTRY[name] = entry
    return entry


def env_error(name: str, problem: str) -> EnvRegistrationError:
    """The error for a user's env that reppo cannot use: the env, the problem, the contract."""
    return EnvRegistrationError(f"environment {name!r}: {problem} (docs/envs.md has the contract)")


def check_reward_range(reward_range: Any, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in reward_range)
    except (TypeError, ValueError):
        raise EnvRegistrationError(
            f"{name}: reward_range must be a pair (low, high) of numbers, got {reward_range!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise EnvRegistrationError(
            f"{name}: reward_range must be finite with low < high, got {reward_range!r}"
        )
    return low, high


def unregister_env(name: str) -> None:
    """Forget a registered name (a no-op for a name that is not registered)."""
    _REGISTRY.pop(name, None)


def registered_names() -> list[str]:
    """The names registered in this process, in registration order."""
    return list(_REGISTRY)


def _import_env_module(module: str, name: str) -> None:
    # The directory a command runs in is where users keep their env modules; a console script
    # (`reppo ...`) does not put it on sys.path the way `python -m` does.
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and module.split(".")[0] == err.name.split(".")[0]:
            raise EnvRegistrationError(
                f"environment {name!r}: no module named {module!r} (looked in the current "
                "directory and on sys.path); add its directory to PYTHONPATH"
            ) from None
        raise
    finally:
        if added:
            sys.path.remove(cwd)


def lookup(name: str) -> RegisteredEnv | None:
    """The registered env `name` ('Name' or 'module:Name', importing the module), or None
    when `name` is not registered (it may still be a built-in or a Gymnasium id)."""
    if ":" not in name:
        return _REGISTRY.get(name)
    module, _, short = name.partition(":")
    if not module or not short:
        raise EnvRegistrationError(
            f"environment {name!r}: a module-qualified name is 'module:Name', e.g. "
            "'my_pkg.envs:Maze'"
        )
    if short not in _REGISTRY:
        _import_env_module(module, name)
    entry = _REGISTRY.get(short)
    if entry is None:
        raise EnvRegistrationError(
            f"environment {name!r}: importing {module!r} did not register {short!r} (it should "
            f"call reppo.register_env({short!r}, ...) when imported); registered: "
            f"{', '.join(registered_names()) or 'none'}"
        )
    return entry


def _shaped_like_gymnasium_id(name: str) -> bool:
    """Whether `name` ends in '-v<N>' like Gymnasium's ids, and is no built-in task."""
    head, sep, version = name.rpartition("-v")
    return bool(sep and head and version.isdigit()) and name not in list_envs()


def gymnasium_id(name: str) -> str | None:
    """`name` if it is an id of Gymnasium's registry (e.g. 'HalfCheetah-v5'), else None.
    Gymnasium is imported only for names that look like its ids (they end in '-v<N>')."""
    if not _shaped_like_gymnasium_id(name):
        return None
    try:
        import gymnasium
    except ImportError:
        return None
    return name if name in gymnasium.registry else None


def gymnasium_missing(name: str) -> bool:
    """Whether `name` looks like a Gymnasium id while Gymnasium cannot be imported (so it
    cannot be looked up)."""
    if not _shaped_like_gymnasium_id(name):
        return False
    try:
        import gymnasium  # noqa: F401
    except ImportError:
        return True
    return False


def not_found_hint(name: str) -> str:
    """What to tell a user whose env name is neither built-in nor registered."""
    return (
        f" If {name!r} is your own environment, register it with reppo.register_env (docs/"
        "envs.md) and, for the command line, name it with its module: 'my_module:"
        f"{name}'."
    )


class UnknownEnvError(ValueError):
    """An environment name that is not in `list_envs()`."""

    def __init__(self, name: str) -> None:
        self.name = name
        if gymnasium_missing(name):
            super().__init__(
                f"{name!r} looks like a Gymnasium id, but Gymnasium is not installed: install "
                'reppo\'s torch extra (pip install -e ".[torch]"), or pip install '
                '"gymnasium[mujoco]", and train it with --backend torch.'
            )
            return
        valid = list_envs()
        close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(
            f"Unknown environment {name!r}.{hint} Valid names: {', '.join(valid)}."
            + not_found_hint(name)
        )


class WrongBackendError(ValueError):
    """An environment that the chosen backend cannot train (ManiSkill3 needs torch)."""
