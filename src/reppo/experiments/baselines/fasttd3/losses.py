"""FastTD3's math as pure JAX functions (Seo et al. 2025, "FastTD3: Simple, Fast, and Capable
Reinforcement Learning for Humanoid Control"): the categorical (C51) projection of the
distributional TD target, clipped double Q on distributions, the critic and actor losses,
target policy smoothing, per-env exploration noise and the soft target update.

Shapes: B samples, N atoms on the fixed support `linspace(v_min, v_max, N)`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def support(v_min: float, v_max: float, num_atoms: int) -> jax.Array:
    """The (N,) atom locations."""
    return jnp.linspace(v_min, v_max, num_atoms, dtype=jnp.float32)


def project(
    probs: jax.Array,
    reward: jax.Array,
    discount: jax.Array,
    bootstrap: jax.Array,
    v_min: float,
    v_max: float,
) -> jax.Array:
    """The distribution of `reward + bootstrap * discount * Z`, Z ~ `probs` (B, N) on the
    support, projected back onto the support (C51): each shifted atom, clipped to
    [v_min, v_max], splits its mass between its two neighbouring atoms in proportion to
    closeness. An atom landing exactly on a support point gives it all its mass; the total mass
    (1 per row) is kept exactly. `reward`, `discount`, `bootstrap`: (B,)."""
    n = probs.shape[-1]
    z = support(v_min, v_max, n)
    delta = (v_max - v_min) / (n - 1)
    target = reward[:, None] + (bootstrap * discount)[:, None] * z[None, :]
    b = (jnp.clip(target, v_min, v_max) - v_min) / delta  # fractional atom index in [0, N-1]
    lower = jnp.clip(jnp.floor(b), 0, n - 1)
    upper_weight = b - lower  # in [0, 1); 0 when b is a whole index
    lower_i = lower.astype(jnp.int32)
    upper_i = jnp.minimum(lower_i + 1, n - 1)
    rows = jnp.broadcast_to(jnp.arange(probs.shape[0])[:, None], lower_i.shape)
    out = jnp.zeros_like(probs)
    out = out.at[rows, lower_i].add(probs * (1.0 - upper_weight))
    return out.at[rows, upper_i].add(probs * upper_weight)


def expected_value(probs: jax.Array, v_min: float, v_max: float) -> jax.Array:
    """(B, N) probabilities -> (B,) means on the support."""
    return probs @ support(v_min, v_max, probs.shape[-1])


def clipped_double_q_target(
    projected_1: jax.Array, projected_2: jax.Array, v_min: float, v_max: float
) -> jax.Array:
    """Clipped double Q on distributions: per sample, the projected target distribution of the
    target critic whose mean is lower (FastTD3's CDQ); both critics regress on it."""
    lower_1 = expected_value(projected_1, v_min, v_max) < expected_value(
        projected_2, v_min, v_max
    )
    return jnp.where(lower_1[:, None], projected_1, projected_2)


def cross_entropy(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
    """Mean over the batch of -sum_j target_j log softmax(logits)_j; the target is constant."""
    target_probs = jax.lax.stop_gradient(target_probs)
    return -jnp.mean(jnp.sum(target_probs * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def actor_objective(
    logits_1: jax.Array, logits_2: jax.Array, v_min: float, v_max: float, use_cdq: bool
) -> jax.Array:
    """The actor's loss: minus the mean over the batch of min(Q1, Q2) (with CDQ) or of their
    average, each Q the mean of the critic's distribution at the actor's action."""
    q1 = expected_value(jax.nn.softmax(logits_1, axis=-1), v_min, v_max)
    q2 = expected_value(jax.nn.softmax(logits_2, axis=-1), v_min, v_max)
    q = jnp.minimum(q1, q2) if use_cdq else 0.5 * (q1 + q2)
    return -jnp.mean(q)


def smoothed_target_action(
    action: jax.Array, key: jax.Array, noise_std: float, noise_clip: float
) -> jax.Array:
    """Target policy smoothing: `action` plus Gaussian noise of std `noise_std` clipped to
    +-`noise_clip`, the sum clipped to the action box [-1, 1]."""
    noise = jnp.clip(noise_std * jax.random.normal(key, action.shape), -noise_clip, noise_clip)
    return jnp.clip(action + noise, -1.0, 1.0)


def draw_noise_scales(key: jax.Array, num_envs: int, std_min: float, std_max: float) -> jax.Array:
    """(num_envs, 1) exploration noise stds, uniform in [std_min, std_max): each env explores
    with its own scale, redrawn when its episode ends."""
    return jax.random.uniform(key, (num_envs, 1), minval=std_min, maxval=std_max)


def refresh_noise_scales(
    scales: jax.Array, ended: jax.Array, key: jax.Array, std_min: float, std_max: float
) -> jax.Array:
    """`scales` with a fresh draw for the envs whose episode `ended` (num_envs,)."""
    fresh = draw_noise_scales(key, scales.shape[0], std_min, std_max)
    return jnp.where(ended[:, None] > 0, fresh, scales)


def soft_update(target: Any, online: Any, tau: float) -> Any:
    """Polyak averaging: target <- (1 - tau) target + tau online, leaf by leaf."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)
