"""Adapters at the boundary between this project and Brax 0.14.2's PPO and SAC trainers.

Two things are needed to run `brax.training.agents.{ppo,sac}.train` here, both applied only
while a baseline trains (context managers that undo themselves on exit, exceptions included):

`jax_compat()`: Brax 0.14.2 places its training state on the devices with
`jax.device_put_replicated`, which JAX 0.10 removed (the attribute lookup raises
AttributeError before the first update). Where JAX lacks it, an equivalent built on public
JAX (`jax.device_put` with a `NamedSharding`) is installed for the duration. The replicas are
sharded over a mesh axis with the name Brax gives its `pmap` axis ('i'): JAX 0.10's `pmap` is
built on `jit` + `shard_map` over a mesh axis of that name, and arrays already sharded that
way are passed through as they are; a different axis name makes the first update's outputs
look differently placed from its inputs, which recompiles the whole training epoch once more.
`jax.pmap` itself still exists in JAX 0.10 and needs no shim.

`capture_evaluations(capture)`: the reported evaluation is this project's protocol
(`reppo.envs.evaluation.evaluate`), not Brax's. Brax's SAC trainer has no
`policy_params_fn` hook, but both trainers hand the current parameters to an
`acting.Evaluator` at every evaluation point, right before calling `progress_fn`. Inside this
context that evaluator is replaced by one that passes (policy factory, params) to `capture`
and runs no rollout of its own, which also saves the cost of Brax's evaluation episodes.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

# The axis name Brax's PPO and SAC trainers give `jax.pmap` (`_PMAP_AXIS_NAME` in both).
BRAX_PMAP_AXIS = "i"

PolicyFactory = Callable[[Any], Callable]
Capture = Callable[[PolicyFactory, Any], None]


def device_put_replicated(x: Any, devices: Sequence[Any], axis_name: str = BRAX_PMAP_AXIS) -> Any:
    """Stack one copy of every leaf of `x` per device along a new leading axis, each copy
    resident on its own device (what `jax.device_put_replicated` did before JAX 0.10).

    The result's leaves are sharded over a one-axis mesh named `axis_name`, so that
    `x.addressable_shards[i].data` is the copy on `devices[i]` with a leading axis of 1.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(devices)
    if not devices:
        raise ValueError("device_put_replicated needs a non-empty sequence of devices")
    sharding = NamedSharding(Mesh(np.array(devices), (axis_name,)), PartitionSpec(axis_name))

    def replicate(leaf: Any) -> Any:
        leaf = jnp.asarray(leaf)
        stacked = jnp.broadcast_to(leaf[None], (len(devices), *leaf.shape))
        return jax.device_put(stacked, sharding)

    return jax.tree.map(replicate, x)


def _jax_has(name: str) -> bool:
    import jax

    try:
        getattr(jax, name)
    except AttributeError:  # removed names raise from JAX's module __getattr__
        return False
    return True


@contextlib.contextmanager
def jax_compat() -> Iterator[None]:
    """Provide `jax.device_put_replicated` inside the block if this JAX lacks it.

    Nothing is changed where JAX still has it. On exit the attribute that was added is removed
    again, so code outside a baseline run sees JAX exactly as installed.
    """
    import jax

    added = not _jax_has("device_put_replicated")
    if added:
        jax.device_put_replicated = device_put_replicated
    try:
        yield
    finally:
        if added and jax.__dict__.get("device_put_replicated") is device_put_replicated:
            del jax.device_put_replicated


class _CapturingEvaluator:
    """Stands in for `brax.training.acting.Evaluator` (same constructor and `run_evaluation`
    signature): hands each evaluation's params to the capture callback instead of rolling out.

    `eval_policy_fn` is what the trainer built: `functools.partial(make_policy,
    deterministic=deterministic_eval)`. The factory passed on always builds the deterministic
    policy (the mean action), whatever `deterministic_eval` the trainer was given.
    """

    def __init__(
        self,
        eval_env: Any,
        eval_policy_fn: PolicyFactory,
        num_eval_envs: int,
        episode_length: int,
        action_repeat: int,
        key: Any,
        *,
        capture: Capture,
    ) -> None:
        del eval_env, num_eval_envs, episode_length, action_repeat, key  # no rollouts here
        self._capture = capture
        self._policy_factory = _deterministic(eval_policy_fn)

    def run_evaluation(
        self,
        policy_params: Any,
        training_metrics: Mapping[str, Any],
        aggregate_episodes: bool = True,
    ) -> dict[str, Any]:
        del aggregate_episodes
        self._capture(self._policy_factory, policy_params)
        # The trainer passes what this returns to progress_fn: the training metrics alone.
        return dict(training_metrics)


def _deterministic(eval_policy_fn: PolicyFactory) -> PolicyFactory:
    """`make_policy(params, deterministic=True)` from the trainer's evaluation policy factory."""
    if isinstance(eval_policy_fn, functools.partial) and "deterministic" in eval_policy_fn.keywords:
        return functools.partial(eval_policy_fn.func, *eval_policy_fn.args,
                                 **{**eval_policy_fn.keywords, "deterministic": True})
    raise RuntimeError(
        "this Brax version builds its evaluation policy differently from Brax 0.14.2 "
        "(expected functools.partial(make_policy, deterministic=...)); the baselines need "
        "updating for it"
    )


@contextlib.contextmanager
def capture_evaluations(capture: Capture) -> Iterator[None]:
    """Inside the block, Brax trainers give every evaluation's params to `capture(factory,
    params)` instead of running Brax's evaluation; `factory(params)` is the deterministic
    Brax policy `policy(obs_batch, key) -> (actions, extras)` (observation normalization
    included). `acting.Evaluator` is restored on exit.
    """
    from brax.training import acting

    original = acting.Evaluator
    acting.Evaluator = functools.partial(_CapturingEvaluator, capture=capture)
    try:
        yield
    finally:
        acting.Evaluator = original
