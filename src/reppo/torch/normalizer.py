"""Running mean/variance observation normalization (paper appendix D), as `reppo.jax.normalizer`.

The statistics are part of the policy: evaluation and export apply the same ones.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

_EPS = 1e-8
# Normalized observations are clipped: a rare outlier (e.g. a physics blow-up) cannot push
# inputs far outside the range the networks saw.
CLIP = 10.0


class RunningStats(NamedTuple):
    mean: Tensor  # (obs_size,)
    var: Tensor  # (obs_size,)
    count: Tensor  # () float32, observations seen


def init_stats(obs_size: int, device: Any = None) -> RunningStats:
    return RunningStats(
        torch.zeros((obs_size,), dtype=torch.float32, device=device),
        torch.ones((obs_size,), dtype=torch.float32, device=device),
        torch.zeros((), dtype=torch.float32, device=device),
    )


def update_stats(stats: RunningStats, batch: Tensor) -> RunningStats:
    """Merge a batch (..., obs_size) into the statistics (Chan et al.'s parallel update)."""
    batch = batch.reshape(-1, batch.shape[-1])
    n = float(batch.shape[0])
    batch_mean = torch.mean(batch, dim=0)
    batch_var = torch.var(batch, dim=0, correction=0)
    return merge_moments(stats, n, batch_mean, batch_var)


def merge_moments(
    stats: RunningStats, n: float | Tensor, batch_mean: Tensor, batch_var: Tensor
) -> RunningStats:
    """Merge `n` observations with mean `batch_mean` and population variance `batch_var` into
    the statistics: the exact combination of two sets' counts, means and sums of squared
    deviations (M2 = var * count), as if their observations had been seen together."""
    total = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.var * stats.count + batch_var * n + delta**2 * stats.count * n / total
    return RunningStats(mean, m2 / total, total)


def normalize(stats: RunningStats, obs: Tensor) -> Tensor:
    z = (obs - stats.mean) / torch.sqrt(stats.var + _EPS)
    return torch.clamp(z, -CLIP, CLIP)
