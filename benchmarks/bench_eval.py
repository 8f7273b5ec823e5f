"""Time the JAX backend's evaluation against its training, at the paper preset scaled down.

    python benchmarks/bench_eval.py --env CheetahRun --scale 32
    python benchmarks/bench_eval.py --env CheetahRun --scale 1 --json eval.json   # on a GPU

The paper preset with `num_envs`, `eval_episodes` and `num_minibatches` divided by `--scale`
(the minibatch size, the networks and the episode length stay), evaluating every
`--iterations` iterations: the work of one evaluation against the training between two, in the
proportions of a paper-preset run that evaluates 128 episodes every 1,048,576 env steps
(`--scale 1`). Prints the training time of those iterations, the evaluation time of the
batched evaluation (`JaxTrainer.evaluate`: deterministic and sampled episodes in one rollout)
and of the two separate rollouts it replaced (`evaluate_separately`, unless `--skip-old`),
each with its compile time, and the evaluation's share of the wall time. Extra `--field
value` pairs override config fields. Records nothing: the figures go to benchmarks/results.md
by hand, with the date and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def paper_scaled(env: str, scale: int, overrides: dict[str, str]):
    """The paper preset on `env`, `scale` times smaller in envs, episodes and minibatches."""
    from reppo.config import coerce_field
    from reppo.presets import get_preset

    paper = get_preset("paper", "jax", env=env)
    fields = {
        "env": env,
        "num_envs": max(1, paper.num_envs // scale),
        "num_minibatches": max(1, paper.num_minibatches // scale),
        "eval_episodes": max(1, 128 // scale),
    }
    fields.update({k: coerce_field(k, v) for k, v in overrides.items()})
    return paper.replace(**fields)


def measure(config, iterations: int, old: bool) -> dict:
    """Compile, train `iterations` iterations, evaluate; every time in seconds."""
    import jax

    from reppo.jax.trainer import JaxTrainer

    trainer = JaxTrainer(config)
    state = trainer.init_state()
    jax.block_until_ready(state)
    # `prepare` compiles the training chunk and the batched evaluation (as the loop does).
    start = time.perf_counter()
    trainer.chunk_fn(state, iterations)
    chunk_compile = time.perf_counter() - start
    _, eval_compile = _timed(trainer.eval_fn, state)
    (state, _), train_s = _timed(trainer.run_chunk, state, iterations)
    jax.block_until_ready(state)
    report, eval_s = _timed(trainer.evaluate, state)
    figures = {
        "env": config.env,
        "num_envs": config.num_envs,
        "eval_episodes": config.eval_episodes,
        "env_steps_trained": iterations * config.steps_per_iteration * config.num_seeds,
        "eval_env_steps": 2 * config.eval_episodes * config.num_seeds
        * trainer.eval_env.spec.episode_length,
        "device": str(jax.devices()[0].device_kind),
        "train_compile_s": chunk_compile,
        "train_s": train_s,
        "eval_compile_s": eval_compile,
        "eval_s": eval_s,
        "eval_over_train": eval_s / train_s,
        "eval_share_of_wall": eval_s / (eval_s + train_s),
        "eval_return": float(report.returns.mean()),
        "eval_stochastic_return": float(report.stochastic_returns.mean()),
    }
    if old:
        # The first call compiles both programs; the second runs them as a later evaluation.
        _, first = _timed(trainer.evaluate_separately, state)
        separate, old_s = _timed(trainer.evaluate_separately, state)
        figures.update({
            "old_eval_compile_s": max(0.0, first - old_s),
            "old_eval_s": old_s,
            "old_eval_over_train": old_s / train_s,
            "old_eval_share_of_wall": old_s / (old_s + train_s),
            "speedup": old_s / eval_s,
            "same_returns": bool(
                abs(float(separate.returns.mean()) - figures["eval_return"]) < 1e-3
                * max(1.0, abs(figures["eval_return"]))
            ),
        })
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CheetahRun")
    parser.add_argument("--scale", type=int, default=32,
                        help="divide num_envs, eval_episodes (128) and num_minibatches by it")
    parser.add_argument("--iterations", type=int, default=8,
                        help="iterations between two evaluations (8: every 1,048,576 env "
                        "steps at the paper preset)")
    parser.add_argument("--skip-old", action="store_true",
                        help="time only the batched evaluation")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args, rest = parser.parse_known_args()
    if len(rest) % 2:
        parser.error("overrides come as --field value pairs")
    overrides = {rest[i].lstrip("-").replace("-", "_"): rest[i + 1]
                 for i in range(0, len(rest), 2)}

    import jax

    cache = os.environ.get("REPPO_JAX_CACHE", str(Path.home() / ".cache" / "reppo" / "jax"))
    if cache.lower() not in ("", "0", "off", "none"):
        jax.config.update("jax_compilation_cache_dir", cache)
    config = paper_scaled(args.env, args.scale, overrides)
    figures = measure(config, args.iterations, old=not args.skip_old)
    for key, value in figures.items():
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{key:>24}: {text}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
