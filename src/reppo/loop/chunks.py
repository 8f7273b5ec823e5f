"""What the training loop computes about a chunk of iterations: its length, its metrics as
one record, and whether they are finite and healthy; the evaluation cadence.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from reppo.config import Config
from reppo.loop.seam import NonFiniteError
from reppo.runs.checkpoint import best_record

__all__ = [
    "COMPILED_CHUNK_STEPS", "DIVERGENCE_LIMITS", "check_finite", "chunk_length",
    "compiled_chunk_iterations", "crossed", "joined", "divergence_warning", "divergent_metrics",
    "first_log_before_first_eval", "remaining_evals", "summarize",
]


def joined(chunks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The metrics of consecutive chunks as those of one: joined along the iterations axis."""
    if len(chunks) == 1:
        return chunks[0]
    return {name: np.concatenate([c[name] for c in chunks], axis=1) for name in chunks[0]}


def summarize(metrics: dict[str, np.ndarray]) -> dict[str, float]:
    """Chunk metrics (num_seeds, iterations) -> scalars: means, and last values of temps."""
    record = {}
    for name, values in metrics.items():
        if name.startswith("finite/"):
            continue
        values = values[:, -1] if name.startswith("temp/") else values
        finite = values[np.isfinite(values)]
        record[name] = float(np.mean(finite)) if finite.size else math.nan
    return record


def check_finite(metrics: dict[str, np.ndarray], first_iteration: int, config: Config) -> None:
    flags = {k.removeprefix("finite/"): v for k, v in metrics.items() if k.startswith("finite/")}
    if not flags:
        return
    bad = ~np.stack([np.asarray(v, bool) for v in flags.values()])  # (flags, seeds, iters)
    if not bad.any():
        return
    where = np.argwhere(bad)
    _, seed, it = where[np.argmin(where[:, 2])]
    what = [name for name, ok in flags.items() if not ok[seed, it]]
    raise NonFiniteError(
        f"non-finite {', '.join(what)} at iteration {first_iteration + it + 1} "
        f"(seed {config.seed + seed}); training stopped"
    )


# Values a healthy run never reaches: past them training has diverged even while every number
# is still finite (alpha ~ 5e24 and a critic error ~ 1e27 were seen before an overflow).
# Temperatures start at 0.01 and settle around 1e-3..1; errors and losses are in units of the
# (normalized-reward) return.
DIVERGENCE_LIMITS: dict[str, float] = {
    "temp/alpha": 1e4,
    "temp/beta": 1e4,
    "critic/value_error": 1e8,
    "loss/critic": 1e8,
    "loss/aux": 1e8,
    "loss/actor": 1e8,
}


def divergent_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The entries of `record` beyond `DIVERGENCE_LIMITS` (empty for a healthy record)."""
    out = {}
    for name, limit in DIVERGENCE_LIMITS.items():
        value = record.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value) and abs(value) > limit:
            out[name] = float(value)
    return out


# Env steps of the longest chunk the compiled training program runs per call. It depends on
# nothing a resumed run may change (the log, evaluation and checkpoint cadences, the budget):
# a chunk ends early at each of those boundaries instead, so a new cadence reuses the compiled
# program (and JAX's persistent cache) rather than compiling another.
COMPILED_CHUNK_STEPS = 1_048_576


def compiled_chunk_iterations(config: Config) -> int:
    """Iterations of the compiled chunk program: about `COMPILED_CHUNK_STEPS` env steps, set
    by the batch of an iteration only (num_envs x num_steps, fixed for a run)."""
    return max(1, COMPILED_CHUNK_STEPS // config.steps_per_iteration)


def chunk_length(config: Config, iteration: int, capacity: int) -> int:
    """Iterations of the next chunk from `iteration`: at most `capacity`, ending at the budget
    and at the first iteration where a log line, an evaluation or a checkpoint falls due, so
    that each happens at its promised cadence."""
    per_iteration = config.steps_per_iteration
    n = min(capacity, config.num_iterations - iteration)
    for interval in (config.log_interval_steps, config.eval_interval_steps,
                     config.checkpoint_interval_steps):
        if interval > 0:
            next_boundary = (iteration * per_iteration // interval + 1) * interval
            n = min(n, max(1, -(-next_boundary // per_iteration) - iteration))
    return n


def crossed(interval: int, before: int, after: int) -> bool:
    return interval > 0 and after // interval > before // interval


def _next_boundary_iteration(config: Config, interval: int, env_steps: int) -> int:
    """The iteration at whose end the next `interval` boundary after `env_steps` falls (the
    last iteration when there is none before it)."""
    if interval <= 0:
        return config.num_iterations
    boundary = (env_steps // interval + 1) * interval
    return min(config.num_iterations, -(-boundary // config.steps_per_iteration))


def first_log_before_first_eval(config: Config, env_steps: int) -> bool:
    """Whether a progress line falls due before the next evaluation (from `env_steps`)."""
    return (_next_boundary_iteration(config, config.log_interval_steps, env_steps)
            < _next_boundary_iteration(config, config.eval_interval_steps, env_steps))


def remaining_evals(config: Config, env_steps: int) -> int:
    """Evaluations still to come after `env_steps` (interval ones and the final one)."""
    final = config.num_iterations * config.steps_per_iteration
    interval = config.eval_interval_steps
    count = final // interval - env_steps // interval if interval > 0 else 0
    on_boundary = interval > 0 and crossed(
        interval, final - config.steps_per_iteration, final
    )
    return count + (0 if on_boundary else 1) if env_steps < final else 0


def divergence_warning(divergent: dict[str, float], env_steps: int, run_dir: Path) -> str:
    values = ", ".join(
        f"{name} = {value:.3g} (healthy below {DIVERGENCE_LIMITS[name]:.0e})"
        for name, value in divergent.items()
    )
    best = best_record(run_dir)
    kept = (
        f"the best checkpoint so far, {best['checkpoint']} (eval {best['eval_return_mean']:.1f}"
        f" at {best['env_steps']:,} steps), is kept whatever keep_checkpoints says"
        if best else "no evaluated checkpoint exists yet"
    )
    return (
        f"  warning: training looks divergent at {env_steps:,} env steps: {values}; {kept}. "
        "Lower learning rates (--actor-lr/--critic-lr) usually prevent this."
    )
