"""Which baseline, on which task, with which hyperparameters: the checks of a baseline run's
inputs, and `resolve_hyperparameters` / `preset_hyperparameters`, which ask the baseline's
module (`registry.REGISTRY`) for its preset's values with the user's overrides. Nothing here
imports a framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reppo.envs.catalog import FAMILIES, family_of
from reppo.errors import UserError
from reppo.experiments.baselines.registry import REGISTRY, baselines_of

BASELINES: tuple[str, ...] = tuple(REGISTRY)
BRAX = ("brax-ppo", "brax-sac")
FASTTD3 = ("fasttd3", "fasttd3-small")
MANISKILL_PPO = "maniskill-ppo"
DMC_BASELINES = baselines_of("dm_control")
MANISKILL_BASELINES = baselines_of("maniskill")
# Every preset some baseline has (`REGISTRY` says whose), in a stable order.
PRESETS: tuple[str, ...] = tuple(dict.fromkeys(p for b in REGISTRY.values() for p in b.presets))
ALGO_PRESETS: dict[str, tuple[str, ...]] = {name: b.presets for name, b in REGISTRY.items()}


# ---- input checks ----------------------------------------------------------------------------


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        import difflib

        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"unknown {name} {value!r}{hint}; choose one of {', '.join(choices)}")
    return value


def check_baseline(algo: Any) -> str:
    """`algo` is a registered baseline (`registry.REGISTRY`)."""
    return check_choice("baseline", algo, tuple(REGISTRY))


def default_preset(algo: str) -> str:
    """The preset `algo` runs with when none is named."""
    return REGISTRY[check_baseline(algo)].default_preset


def check_preset(algo: str, preset: Any) -> str:
    """`preset` is one of `algo`'s presets (its registry entry)."""
    every = tuple(dict.fromkeys(p for b in REGISTRY.values() for p in b.presets))
    check_choice("preset", preset, every)
    valid = REGISTRY[algo].presets
    if preset not in valid:
        owners = [name for name, b in REGISTRY.items() if preset in b.presets]
        whose = f"{owners[0]}'s only" if len(owners) == 1 else f"for {', '.join(owners)}"
        raise UserError(
            f"preset {preset!r} is {whose}; {algo} has the presets {', '.join(valid)}"
        )
    return preset


def check_env(algo: str, env: str) -> None:
    """`env` is a task of the catalogue family that `algo` trains (its registry entry): the
    Playground DM Control tasks (JAX envs) or the ManiSkill3 tasks (torch)."""
    from reppo.envs.user import UnknownEnvError

    family = REGISTRY[algo].family
    if family_of(env) == family:
        return
    other = family_of(env)
    if other is None:
        raise UserError(str(UnknownEnvError(env)))
    theirs = baselines_of(other)
    raise UserError(
        f"{env} is a {FAMILIES[other].title} task; {algo} trains the {FAMILIES[family].title} "
        f"tasks only (`reppo envs --family {family}` lists them); {FAMILIES[other].title}'s "
        f"{'baseline is' if len(theirs) == 1 else 'baselines are'} {', '.join(theirs)}"
    )


# ---- hyperparameters -------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """JSON-friendly copy: tuples to lists, nested dicts copied."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def preset_hyperparameters(algo: str, env: str, preset: str | None = None) -> dict[str, Any]:
    """`algo`'s hyperparameters on `env` under `preset` (None: its default), before a budget
    is known: Brax's `train` keyword arguments (`brax.hyperparameters`), or the fields of
    FastTD3's / ManiSkill PPO's `Hyperparameters`."""
    check_baseline(algo)
    preset = default_preset(algo) if preset is None else preset
    check_preset(algo, preset)
    check_env(algo, env)
    return REGISTRY[algo].load().resolve_hyperparameters(algo, env, preset, None, None)


def resolve_hyperparameters(
    algo: str,
    env: str,
    preset: str,
    total_steps: int | None,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The preset's hyperparameters with `overrides` applied, checked by the baseline's
    module (Brax: against Brax's `train` and network-factory signatures)."""
    check_baseline(algo)
    check_preset(algo, preset)
    check_env(algo, env)
    return REGISTRY[algo].load().resolve_hyperparameters(algo, env, preset, total_steps, overrides)
