"""The JAX training loop: jitted chunks of iterations driven from Python.

The Python side logs, evaluates, checkpoints, watches for non-finite values and stops cleanly on
Ctrl-C (saving a checkpoint of the last completed chunk). All randomness lives in the training
state, so chunking, evaluation and resuming do not change what is learned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reppo.config import Config
from reppo.envs import make_env
from reppo.envs.evaluation import evaluate
from reppo.jax import tree_io
from reppo.jax.agent import Agent, TrainState
from reppo.runs import (
    CheckpointError,
    MetricsLogger,
    RunDirError,
    create_run_dir,
    format_progress,
    latest_checkpoint,
    load_checkpoint,
    plot_learning_curve,
    read_metrics,
    save_checkpoint,
    truncate_metrics,
)
from reppo.runs.versions import collect_versions

# Evaluation keys come from their own stream so evaluating never perturbs training.
_EVAL_STREAM = 0x5EED


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, parameter or observation."""


@dataclass
class TrainResult:
    run_dir: Path
    env_steps: int
    iterations: int
    wall_time: float
    interrupted: bool = False
    eval_returns: np.ndarray | None = None  # (num_seeds, episodes)
    compile_seconds: float = 0.0
    sps: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eval_return_mean(self) -> float:
        return float(np.mean(self.eval_returns)) if self.eval_returns is not None else math.nan


def seed_keys(config: Config) -> jax.Array:
    seeds = jnp.arange(config.seed, config.seed + config.num_seeds, dtype=jnp.uint32)
    return jax.vmap(jax.random.PRNGKey)(seeds)


def device_description() -> dict[str, Any]:
    return {
        "jax_backend": jax.default_backend(),
        "devices": [getattr(d, "device_kind", str(d)) for d in jax.devices()],
    }


class Trainer:
    """Builds the env, agent and jitted functions for one config."""

    def __init__(self, config: Config):
        self.config = config
        self.env = make_env(config.env, config.num_envs, impl=config.impl)
        self.eval_env = make_env(config.env, config.eval_episodes, impl=config.impl)
        self.agent = Agent.create(config, self.env)
        self._chunks: dict[int, Callable] = {}
        self.compile_seconds = 0.0
        agent = self.agent

        def eval_one(actor, stats, key):
            return evaluate(
                self.eval_env, lambda obs: agent.act_deterministic(actor, stats, obs), key
            )

        self._evaluate = jax.jit(jax.vmap(eval_one))
        self._init = jax.jit(jax.vmap(agent.init))

    def init_state(self) -> TrainState:
        return self._init(seed_keys(self.config))

    def chunk_fn(self, state: TrainState, num_iterations: int) -> Callable:
        """The compiled vmapped chunk of `num_iterations` iterations (compiled once per size)."""
        if num_iterations not in self._chunks:
            start = time.perf_counter()
            fn = jax.jit(jax.vmap(lambda s: self.agent.chunk(s, num_iterations)))
            self._chunks[num_iterations] = fn.lower(state).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._chunks[num_iterations]

    def evaluate(self, state: TrainState) -> np.ndarray:
        """Deterministic returns, shape (num_seeds, eval_episodes)."""
        keys = jax.vmap(
            lambda k, it: jax.random.fold_in(jax.random.fold_in(k, _EVAL_STREAM), it)
        )(seed_keys(self.config), state.iteration)
        result = self._evaluate(state.actor, state.obs_stats, keys)
        return np.asarray(result.returns)

    # ---- checkpoints ---------------------------------------------------------------------------
    def save(self, run_dir: Path, state: TrainState, wall_time: float) -> Path:
        iteration = int(np.asarray(state.iteration).reshape(-1)[0])
        metadata = {
            "backend": "jax",
            "env_steps": iteration * self.config.steps_per_iteration,
            "iteration": iteration,
            "wall_time": wall_time,
            "num_seeds": self.config.num_seeds,
            "config": self.config.to_dict(),
        }
        return save_checkpoint(
            run_dir,
            metadata["env_steps"],
            tree_io.flatten(state),
            metadata,
            keep=self.config.keep_checkpoints,
        )

    def restore(self, path: Path) -> tuple[TrainState, dict[str, Any]]:
        arrays, metadata = load_checkpoint(path)
        try:
            state = tree_io.unflatten(jax.eval_shape(self.init_state), arrays)
        except tree_io.TreeMismatchError as err:
            raise CheckpointError(
                f"{path}: does not match this run's config ({err}); was it written by another "
                "version or config? Delete it to resume from an earlier checkpoint."
            ) from None
        return state, metadata


def _summarize(metrics: dict[str, np.ndarray]) -> dict[str, float]:
    """Chunk metrics (num_seeds, iterations) -> scalars: means, and last values of temps."""
    record = {}
    for name, values in metrics.items():
        if name.startswith("finite/"):
            continue
        values = values[:, -1] if name.startswith("temp/") else values
        finite = values[np.isfinite(values)]
        record[name] = float(np.mean(finite)) if finite.size else math.nan
    return record


def _check_finite(metrics: dict[str, np.ndarray], first_iteration: int, config: Config) -> None:
    flags = {k.removeprefix("finite/"): v for k, v in metrics.items() if k.startswith("finite/")}
    bad = ~np.stack(list(flags.values()))  # (flags, seeds, iterations)
    if not bad.any():
        return
    _, seed, it = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 2])]
    what = [name for name, ok in flags.items() if not ok[seed, it]]
    raise NonFiniteError(
        f"non-finite {', '.join(what)} at iteration {first_iteration + it + 1} "
        f"(seed {config.seed + seed}); training stopped and the last checkpoint is kept. "
        "Try lower learning rates (--actor-lr/--critic-lr) or check the environment."
    )


def train(
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Train (or resume) a run in `run_dir`; returns when done, interrupted or failed."""
    run_dir = Path(run_dir)
    trainer = Trainer(config)
    state = trainer.init_state()
    wall_offset = 0.0
    if resume:
        path = latest_checkpoint(run_dir)
        if path is None:
            raise RunDirError(
                f"{run_dir}: no checkpoint to resume from (the run stopped before its first "
                "one); start it again with `reppo train --run-dir NEW_DIR`"
            )
        state, metadata = trainer.restore(path)
        if metadata["iteration"] >= config.num_iterations:
            echo(
                f"{run_dir} already holds {metadata['env_steps']:,} env steps of "
                f"{config.total_steps:,}; extend it with `--resume {run_dir} --total-steps N`"
            )
        wall_offset = float(metadata.get("wall_time", 0.0))
        truncate_metrics(run_dir, metadata["env_steps"])
        echo(f"resuming {run_dir} from {path.name} ({metadata['env_steps']:,} env steps)")
    else:
        create_run_dir(run_dir, config.to_dict(), collect_versions(device_description()))

    logger = MetricsLogger(
        run_dir,
        tensorboard=config.tensorboard,
        wandb=config.wandb,
        wandb_project=config.wandb_project,
        config=config.to_dict(),
    )
    per_iteration = config.steps_per_iteration
    chunk_size = max(1, config.log_interval_steps // per_iteration)
    iteration = int(np.asarray(state.iteration)[0])
    start_time = time.perf_counter()
    last_eval: float | None = None
    eval_returns = None
    interrupted = False
    history: list[dict[str, Any]] = []
    sps = 0.0

    def wall() -> float:
        return wall_offset + time.perf_counter() - start_time

    def run_eval(record: dict[str, Any]) -> None:
        nonlocal last_eval, eval_returns
        eval_returns = trainer.evaluate(state)
        last_eval = float(eval_returns.mean())
        record.update({
            "eval/return_mean": last_eval,
            "eval/return_std": float(eval_returns.std()),
            "eval/return_per_seed": [float(x) for x in eval_returns.mean(axis=1)],
            "eval/episodes": int(eval_returns.size),
        })

    try:
        while iteration < config.num_iterations:
            n = min(chunk_size, config.num_iterations - iteration)
            chunk = trainer.chunk_fn(state, n)
            t0 = time.perf_counter()
            new_state, metrics = chunk(state)
            metrics = jax.device_get(metrics)
            elapsed = time.perf_counter() - t0
            _check_finite(metrics, iteration, config)
            state = new_state
            previous_steps = iteration * per_iteration
            iteration += n
            env_steps = iteration * per_iteration
            sps = n * per_iteration * config.num_seeds / elapsed
            record = {
                "env_steps": env_steps,
                "iteration": iteration,
                "wall_time": wall(),
                "sps": sps,
                **_summarize(metrics),
            }
            interval = config.eval_interval_steps
            if interval and env_steps // interval > previous_steps // interval:
                run_eval(record)
            if iteration >= config.num_iterations and "eval/return_mean" not in record:
                run_eval(record)
            record["wall_time"] = wall()
            logger.log(record)
            history.append(record)
            echo(format_progress(record, config.total_steps, last_eval, config.num_seeds))
            ckpt = config.checkpoint_interval_steps
            if iteration >= config.num_iterations or (
                env_steps // ckpt > previous_steps // ckpt
            ):
                trainer.save(run_dir, state, wall())
            if "eval/return_mean" in record:
                plot_learning_curve(read_metrics(run_dir), run_dir / "learning_curve.png",
                                    f"REPPO on {config.env}")
    except KeyboardInterrupt:
        interrupted = True
        path = trainer.save(run_dir, state, wall())
        echo(f"\ninterrupted: saved {path.name}; continue with `reppo train --resume {run_dir}`")
    finally:
        logger.close()

    plot_learning_curve(read_metrics(run_dir), run_dir / "learning_curve.png",
                        f"REPPO on {config.env}")
    return TrainResult(
        run_dir=run_dir,
        env_steps=iteration * per_iteration,
        iterations=iteration,
        wall_time=wall(),
        interrupted=interrupted,
        eval_returns=eval_returns,
        compile_seconds=trainer.compile_seconds,
        sps=sps,
        history=history,
    )
