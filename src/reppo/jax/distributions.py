"""The tanh-squashed diagonal Gaussian policy (docs/algorithm.md, "Policy") as pure functions.

Sampling carries the pre-tanh sample `u` so log-probabilities never need atanh of a clipped
action. All log-probabilities, entropies and KLs are summed over action dimensions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

# Python floats, not arrays: an array at import would start JAX's backends, which a
# multi-process run must not do before its processes meet.
_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# exp(log_std) is bounded above so a diverging head cannot produce inf; the lower end is
# governed by min_std.
_LOG_STD_MAX = 2.0


class Gaussian(NamedTuple):
    """Pre-tanh diagonal Gaussian; mean and std have shape (..., action_dim)."""

    mean: jax.Array
    std: jax.Array


def gaussian_from_head(mean: jax.Array, log_std: jax.Array, min_std: float) -> Gaussian:
    """sigma = exp(log sigma) + min_std, as the released code."""
    std = jnp.exp(jnp.minimum(log_std, _LOG_STD_MAX)) + min_std
    return Gaussian(mean, std)


def gaussian_log_prob(dist: Gaussian, u: jax.Array) -> jax.Array:
    """log N(u; mean, std) summed over the last axis."""
    z = (u - dist.mean) / dist.std
    return jnp.sum(-0.5 * z**2 - jnp.log(dist.std) - _HALF_LOG_2PI, axis=-1)


def tanh_log_det_jacobian(u: jax.Array) -> jax.Array:
    """log |d tanh(u) / du| summed over the last axis, in the stable softplus form.

    log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)).
    """
    return jnp.sum(2.0 * (_LOG_2 - u - jax.nn.softplus(-2.0 * u)), axis=-1)


def log_prob_from_pre_tanh(dist: Gaussian, u: jax.Array) -> jax.Array:
    """log pi(tanh(u)) of the squashed policy, from the pre-tanh sample u."""
    return gaussian_log_prob(dist, u) - tanh_log_det_jacobian(u)


def sample(dist: Gaussian, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Reparameterised sample: (action = tanh(u), pre-tanh u, log pi(action))."""
    noise = jax.random.normal(key, dist.mean.shape, dist.mean.dtype)
    return sample_from_noise(dist, noise)


def sample_from_noise(
    dist: Gaussian, noise: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    u = dist.mean + dist.std * noise
    return jnp.tanh(u), u, log_prob_from_pre_tanh(dist, u)


def deterministic_action(dist: Gaussian) -> jax.Array:
    """The evaluation action tanh(mean)."""
    return jnp.tanh(dist.mean)


def sampled_forward_kl(old: Gaussian, new: Gaussian, noise: jax.Array) -> jax.Array:
    """Monte-Carlo forward KL(pi_old || pi_new) per state.

    `noise` has shape (num_samples, ..., action_dim); samples are drawn from `old`. tanh is a
    bijection, so the Jacobian terms of both log-probs cancel at the same pre-tanh point and the
    KL of the squashed policies equals that of the pre-tanh Gaussians.
    """
    u = old.mean + old.std * noise
    log_ratio = gaussian_log_prob(old, u) - gaussian_log_prob(new, u)
    return jnp.mean(log_ratio, axis=0)


def analytic_kl(old: Gaussian, new: Gaussian) -> jax.Array:
    """Closed-form KL(old || new) of diagonal Gaussians, summed over the last axis."""
    var_ratio = (old.std / new.std) ** 2
    mean_term = ((old.mean - new.mean) / new.std) ** 2
    return 0.5 * jnp.sum(var_ratio + mean_term - 1.0 - jnp.log(var_ratio), axis=-1)
