"""The baselines (Brax PPO, Brax SAC, FastTD3, ManiSkill's PPO) that write REPPO's run-directory
format.

FastTD3 is implemented here (`reppo.experiments.fasttd3`), ManiSkill's PPO runs rsl-rl-lib's
PPO on ManiSkill3 tasks (`reppo.experiments.maniskill_ppo`; docs/baselines.md for both); the
rest of this docstring is about the Brax ones.

The baselines are Brax's own trainers (`brax.training.agents.ppo.train`,
`brax.training.agents.sac.train`) with MuJoCo Playground's tuned per-task hyperparameters, on
the same Playground DM Control tasks with the same settings as REPPO runs (MJX physics, the
task's 1000-step episodes, no action repeat). What makes them comparable with REPPO is the
evaluation: at every evaluation point the current Brax policy is evaluated with this project's
protocol (`reppo.envs.evaluation.evaluate`: deterministic actions, `eval_episodes` fresh
episodes in parallel, undiscounted return of each env's first episode) on a
`reppo.envs.registry.make_env` batch, and the result is logged exactly as REPPO logs its own.
Brax's evaluation is not run (see `brax_compat.capture_evaluations`).

Run directory (see `reppo.runs`): `config.json` with `algo`, `env`, `seed`, `num_seeds` (1),
`total_steps`, `eval_episodes`, `eval_interval_steps`, `preset`, `hyperparameters` (the
preset's values after overrides) and `schedule` (how the budget is cut into evaluation
periods, including the `num_evals` and `num_resets_per_eval` actually given to Brax);
`versions.json`; `metrics.jsonl` with one record per evaluation point (`env_steps`,
`wall_time`, `sps`, `eval/*`, and Brax's training metrics under `brax/`). The last record has
`env_steps >= total_steps` and `"final": true`. Brax cannot resume a run from these files: an
interrupted run directory is incomplete for good and must be run again from scratch.

Usage: `python -m reppo.experiments.baselines --algo brax-ppo --env CartpoleBalance --seed 0
--steps 100000 --run-dir runs/ppo-cartpole --preset cpu`; docs/baselines.md has the details.

Nothing heavy is imported at module level (JAX, Brax and Playground load when a run starts).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from reppo.errors import UserError, exit_status
from reppo.experiments.baseline_evaluation import ProtocolEvaluator
from reppo.experiments.baseline_hyperparameters import (
    BASELINES,
    BRAX,
    FASTTD3,
    IMPL,
    PRESETS,
    check_choice,
    check_preset,
    default_preset,
    preset_hyperparameters,
    resolve_hyperparameters,
)
from reppo.experiments.baseline_run import BaselineResult, run_baseline, train_baseline
from reppo.experiments.baseline_schedule import MAX_OVERSHOOT, Schedule, plan_schedule
from reppo.experiments.suites import EVALS_PER_RUN

# The parts live in baseline_hyperparameters (baselines, presets, input checks) <-
# baseline_schedule (evaluation periods) and baseline_evaluation (the protocol, the recorder)
# <- baseline_run (one run); this module is the command and keeps exporting their names.
__all__ = [
    "BASELINES", "BRAX", "DEFAULT_NUM_EVALS", "FASTTD3", "IMPL", "MAX_OVERSHOOT", "PRESETS",
    "BaselineResult",
    "ProtocolEvaluator", "Schedule", "configure_parser", "main", "plan_schedule",
    "preset_hyperparameters", "resolve_hyperparameters", "run", "run_baseline",
    "train_baseline",
]


# Evaluations per run when no interval is given: Playground's presets use num_evals=10.
DEFAULT_NUM_EVALS = EVALS_PER_RUN


# ---- command line ----------------------------------------------------------------------------


def _parse_count(flag: str, text: str | None, minimum: int) -> int | None:
    """'100000', '100_000', '1e5', '100k', '1.5M' -> int; a UserError names the flag."""
    from reppo.config import parse_count

    if text is None:
        return None
    try:
        number = parse_count(text)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise UserError(f"{flag} must be an integer >= {minimum} (e.g. 100000 or 100k), "
                        f"got {text!r}")
    return number


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--algo", metavar="{" + ",".join(BASELINES) + "}",
                        help="the baseline to train")
    parser.add_argument("--env", metavar="TASK",
                        help="Playground DM Control task, e.g. CartpoleBalance (maniskill-ppo: "
                             "a ManiSkill3 task, e.g. PullCube-v1)")
    parser.add_argument("--seed", default="0", metavar="INT", help="random seed (default 0)")
    parser.add_argument("--steps", metavar="N",
                        help="env steps to train for, summed over envs (e.g. 100000 or 100k)")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help="new run directory (must not exist, or be empty)")
    parser.add_argument("--preset", default=None, metavar="{" + ",".join(PRESETS) + "}",
                        help="hyperparameters: playground (Playground's tuned values, the "
                             "default of the DM Control baselines), cpu (resized for a small "
                             "CPU), paper-tuned (brax-ppo only: the REPPO paper's PPO tuned "
                             "for sample efficiency) or maniskill (maniskill-ppo only, its "
                             "default: ManiSkill's published PPO)")
    parser.add_argument("--device", default="auto", metavar="{auto,cpu,cuda[:k]}",
                        help="maniskill-ppo: where the simulator and networks run (default "
                             "auto: the GPU where torch sees one)")
    parser.add_argument("--eval-interval-steps", default=None, metavar="N",
                        help=f"env steps between evaluations (default: total / "
                             f"{DEFAULT_NUM_EVALS}; 0: only at the end)")
    parser.add_argument("--eval-episodes", default="16", metavar="N",
                        help="deterministic evaluation episodes (default 16)")


def run(args: argparse.Namespace) -> int:
    missing = [flag for flag, value in (("--algo", args.algo), ("--env", args.env),
                                        ("--steps", args.steps), ("--run-dir", args.run_dir))
               if value is None]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (see --help)")
    algo = check_choice("baseline (--algo)", args.algo, BASELINES)
    preset = default_preset(algo) if args.preset is None else args.preset
    preset = check_preset(algo, check_choice("preset (--preset)", preset, PRESETS))
    steps = _parse_count("--steps", args.steps, 1)
    seed = _parse_count("--seed", args.seed, 0)
    interval = _parse_count("--eval-interval-steps", args.eval_interval_steps, 0)
    episodes = _parse_count("--eval-episodes", args.eval_episodes, 1)
    from reppo.compile_cache import enable_compilation_cache
    from reppo.runs.metrics import EVAL_RETURN, EVAL_RETURN_STD

    enable_compilation_cache()

    def echo(line: str) -> None:
        print(line, flush=True)

    record = run_baseline(
        algo, args.env, seed, steps, args.run_dir, preset=preset,
        eval_interval_steps=interval, eval_episodes=episodes, echo=echo, device=args.device,
    )
    success = record.get("eval/success_once")
    success = "" if success is None else f", success rate (once) {success:.2f}"
    echo(f"final evaluation at {record['env_steps']:,} env steps: return "
         f"{record[EVAL_RETURN]:.1f} ± {record[EVAL_RETURN_STD]:.1f}{success}; run saved in "
         f"{args.run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reppo.experiments.baselines",
        description="Train a baseline (Brax PPO or SAC, FastTD3, ManiSkill's PPO) into a "
                    "REPPO-format run directory.",
    )
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"reppo: interrupted; {args.run_dir} is incomplete and cannot be resumed (Brax "
              "keeps no checkpoint here): run it again in a new directory", file=sys.stderr)
        return 130
    except Exception as err:
        status = exit_status(err)
        if status is None:
            raise
        print(f"reppo: error: {err}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
