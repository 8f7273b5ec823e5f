"""A saved policy: the actor's weights and observation statistics, rebuilt from config.json.

Only the `actor/...` and `obs_stats/...` arrays of a checkpoint are read, so evaluation needs
neither the critic nor the optimizer states.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reppo import pytrees
from reppo.config import Config
from reppo.envs import env_spec, evaluate, make_env, record_video
from reppo.envs.autoreset import AutoResetVecEnv
from reppo.envs.evaluation import EvalResult, Policy, StochasticPolicy, action_keys, eval_key
from reppo.jax import distributions as D
from reppo.jax import normalizer as N
from reppo.jax.networks import Networks, Params
from reppo.jax.seeds import over_seeds
from reppo.runs import CheckpointError, evaluation_report, load_run_checkpoint, policy_sizes
from reppo.runs.outputs import (
    WRITE_ERRNOS,
    check_output_path,
    finish_file,
    output_error,
    publish_new,
)


@dataclass
class SavedPolicy:
    config: Config
    nets: Networks
    actor: Params  # leading axis: seeds
    obs_stats: N.RunningStats  # leading axis: seeds
    env_steps: int
    checkpoint: Path

    @property
    def num_seeds(self) -> int:
        return int(jax.tree_util.tree_leaves(self.actor)[0].shape[0])

    def act(self, seed_index: int):
        """Deterministic policy of one seed: obs batch -> action batch."""
        actor = jax.tree_util.tree_map(lambda x: x[seed_index], self.actor)
        stats = jax.tree_util.tree_map(lambda x: x[seed_index], self.obs_stats)
        return lambda obs: act_deterministic(self.nets, self.config, actor, stats, obs)


def act_deterministic(nets: Networks, config: Config, actor: Params, stats, obs: jax.Array):
    if config.normalize_obs:
        obs = N.normalize(stats, obs)
    return D.deterministic_action(nets.policy(actor, obs))


def act_stochastic(
    nets: Networks, config: Config, actor: Params, stats, obs: jax.Array, key: jax.Array
) -> jax.Array:
    """An action sampled from the tanh-Gaussian policy (what training acts with)."""
    if config.normalize_obs:
        obs = N.normalize(stats, obs)
    return D.sample(nets.policy(actor, obs), key)[0]


def evaluate_both(
    env: AutoResetVecEnv, act: Policy, act_stochastic: StochasticPolicy, key: jax.Array
) -> tuple[EvalResult, EvalResult]:
    """`evaluate(env, act, key)` and `evaluate_stochastic(env, act_stochastic, key)` as one
    rollout of twice `env.num_envs` envs: the first half acts deterministically, the second
    samples, and both halves start from the states `env.reset(key)` draws.

    The same episodes, the same action-sampling keys and the same arithmetic per env as the
    two separate evaluations, so the same returns; but one scan of `episode_length` steps
    instead of two after each other. Where a step's cost hardly grows with the batch (a GPU
    stepping a few hundred envs) that halves the evaluation's time, and one program compiles
    once instead of two. Pure and jittable, like `evaluate`.
    """
    n = env.num_envs
    step_keys = action_keys(key, env.spec.episode_length)
    start = env.reset(key)
    # Both halves from the same initial states; the reset key stream (`key`, used only by
    # auto-resets, which evaluation never takes) stays one key.
    twice = jax.tree_util.tree_map(lambda x: jnp.concatenate([x, x]), start._replace(key=None))
    state = twice._replace(key=start.key)

    def body(carry: tuple, step_key: jax.Array) -> tuple[tuple, None]:
        state, returns, lengths, running = carry
        # Each half's actions from its own rows only: a row's action never depends on the
        # batch it is computed in, as in the separate evaluations.
        action = jnp.concatenate(
            [act(state.obs[:n]), act_stochastic(state.obs[n:], step_key)]
        )
        # Only each env's first episode counts: ended envs need no new one.
        state, out = env.step(state, action, autoreset=False)
        returns = returns + running * out.reward
        lengths = lengths + running.astype(jnp.int32)
        ended = jnp.maximum(out.terminated, out.truncated)
        return (state, returns, lengths, running * (1.0 - ended)), None

    init = (state, jnp.zeros(2 * n, jnp.float32), jnp.zeros(2 * n, jnp.int32), jnp.ones(2 * n))
    (_, returns, lengths, _), _ = jax.lax.scan(body, init, step_keys)
    return (
        EvalResult(returns=returns[:n], lengths=lengths[:n]),
        EvalResult(returns=returns[n:], lengths=lengths[n:]),
    )


def load_policy(run_dir: Path, checkpoint: Path | None = None) -> SavedPolicy:
    saved_config, path, arrays, metadata = load_run_checkpoint(run_dir, checkpoint)
    return policy_from_arrays(
        Config.from_dict(saved_config), arrays, path, int(metadata.get("env_steps", 0)),
        sizes=policy_sizes(metadata),
    )


def policy_from_arrays(
    config: Config, arrays: dict[str, np.ndarray], path: Path, env_steps: int = 0,
    sizes: tuple[int, int] | None = None,
) -> SavedPolicy:
    """The policy in the `actor/...` and `obs_stats/...` arrays of a checkpoint of either
    backend (`path` names the checkpoint in errors). `sizes` (obs_size, action_size), from
    the checkpoint's metadata, spare building the env; None asks the env."""
    if sizes is None:
        spec = env_spec(config.env, impl=config.impl)
        sizes = spec.obs_size, spec.action_size
    obs_size, action_size = sizes
    nets = Networks.from_config(config, obs_size, action_size)
    seeds = config.num_seeds

    def stacked(tree: Any) -> Any:
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct((seeds, *x.shape), x.dtype), tree
        )

    actor_template = stacked(jax.eval_shape(nets.init_actor, jax.random.PRNGKey(0)))
    stats_template = stacked(jax.eval_shape(lambda: N.init_stats(obs_size)))
    try:
        actor = pytrees.unflatten(actor_template, arrays, prefix="actor/")
        stats = pytrees.unflatten(stats_template, arrays, prefix="obs_stats/")
    except pytrees.TreeMismatchError as err:
        raise CheckpointError(
            f"{path}: does not match the run's config.json ({err})"
        ) from None
    return SavedPolicy(config, nets, actor, stats, env_steps, path)


def evaluate_run(
    run_dir: Path, *, episodes: int = 16, seed: int | None = None,
    checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Deterministic evaluation of every seed's policy, `episodes` episodes each.

    Seed i of the run is evaluated on the episodes of `eval_key(seed + i, env_steps)`: with
    `seed` None (the run's own seed) and the run's `eval_episodes`, exactly the episodes its
    own evaluation at that checkpoint ran."""
    policy = load_policy(run_dir, checkpoint)
    first = policy.config.seed if seed is None else seed
    env = make_env(policy.config.env, episodes, impl=policy.config.impl)

    def one(actor, stats, key):
        act = lambda obs: act_deterministic(policy.nets, policy.config, actor, stats, obs)
        return evaluate(env, act, key).returns

    keys = jnp.stack([eval_key(first + i, policy.env_steps) for i in range(policy.num_seeds)])

    run = over_seeds(one, policy.num_seeds, "map")
    returns = np.asarray(jax.jit(run)(policy.actor, policy.obs_stats, keys))
    return evaluation_report(
        env=policy.config.env, run_dir=run_dir, checkpoint=policy.checkpoint,
        env_steps=policy.env_steps, backend="jax", returns=returns,
    )


def record_run_video(
    run_dir: Path, path: Path, *, seed: int | None = None, checkpoint: Path | None = None
) -> dict[str, float]:
    """One episode of seed 0's policy as a video at `path` (.gif or .mp4), never overwritten.

    The video is written to a temporary file beside `path` and linked into place when whole, so
    a failure (disk full, Ctrl-C, a render error) leaves neither a partial video nor the
    temporary file; write errors are a CheckpointError naming the path and the fix.
    """
    path = Path(path)
    check_output_path(path, "--video")
    policy = load_policy(run_dir, checkpoint)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix,
                                        dir=path.parent)
    except OSError as err:
        raise output_error(path, err, "--video") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            info = record_video(
                policy.config.env, policy.act(0),
                eval_key(policy.config.seed if seed is None else seed, policy.env_steps), tmp,
                impl=policy.config.impl,
            )
            finish_file(tmp)
        except OSError as err:
            if err.errno not in WRITE_ERRNOS:
                raise
            raise output_error(path, err, "--video") from None
        publish_new(tmp, path, "--video")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return info
