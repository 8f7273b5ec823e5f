"""How many fresh initial states a rollout draws ahead for its episode ends (no framework:
both backends' agents size their pools with it; `AutoResetVecEnv.with_reset_pool` draws them)."""

from __future__ import annotations

import math


def reset_pool_size(num_envs: int, num_steps: int, episode_length: int) -> int:
    """Fresh initial states to draw for a rollout of `num_steps` steps of a staggered batch:
    its expected episode ends (num_envs * num_steps / episode_length, where no env terminates)
    plus three standard deviations and a margin of 4, at most num_envs; 0 (no pool) where the
    pool would cost more resets than it saves, i.e. where ends are rarer than once a rollout
    per env of the pool. Ends beyond the pool fall back to a batch reset, so the size only
    matters for speed."""
    expected = num_envs * num_steps / episode_length
    size = min(num_envs, math.ceil(expected + 3.0 * math.sqrt(expected)) + 4)
    # Without the pool, each step with an end resets all num_envs envs: about
    # expected * num_envs env resets a rollout (fewer where ends share a step), against `size`.
    return size if size < expected * num_envs else 0
