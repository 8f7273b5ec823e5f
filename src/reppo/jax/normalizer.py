"""Running mean/variance observation normalization (paper appendix D).

The statistics are part of the policy: evaluation and export apply the same ones.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_EPS = 1e-8
# Normalized observations are clipped: a rare outlier (e.g. a physics blow-up) cannot push
# inputs far outside the range the networks saw.
CLIP = 10.0


class RunningStats(NamedTuple):
    mean: jax.Array  # (obs_size,)
    var: jax.Array  # (obs_size,)
    count: jax.Array  # () float32, observations seen


def init_stats(obs_size: int) -> RunningStats:
    return RunningStats(
        jnp.zeros((obs_size,), jnp.float32),
        jnp.ones((obs_size,), jnp.float32),
        jnp.zeros((), jnp.float32),
    )


def update_stats(stats: RunningStats, batch: jax.Array) -> RunningStats:
    """Merge a batch (..., obs_size) into the statistics (Chan et al.'s parallel update)."""
    batch = batch.reshape(-1, batch.shape[-1])
    n = jnp.asarray(batch.shape[0], jnp.float32)
    batch_mean = jnp.mean(batch, axis=0)
    batch_var = jnp.var(batch, axis=0)
    total = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + batch_var * n + delta**2 * stats.count * n / total
    return RunningStats(mean, m2 / total, total)


def normalize(stats: RunningStats, obs: jax.Array) -> jax.Array:
    z = (obs - stats.mean) / jnp.sqrt(stats.var + _EPS)
    return jnp.clip(z, -CLIP, CLIP)
