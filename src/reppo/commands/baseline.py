"""`reppo baseline`: train one baseline run (Brax PPO or SAC, FastTD3, ManiSkill's PPO) into a
REPPO-format run directory; the baselines themselves are `reppo.experiments.baselines`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reppo.errors import UserError
from reppo.experiments.baselines.hyperparameters import (
    BASELINES,
    PRESETS,
    check_choice,
    check_preset,
    default_preset,
)
from reppo.experiments.baselines.run import run_baseline
from reppo.experiments.suites import EVALS_PER_RUN

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
    from reppo.runs.signals import StopSignals

    enable_compilation_cache()

    def echo(line: str) -> None:
        print(line, flush=True)

    def announce(name: str) -> None:
        echo(f"{name}: stopping at the end of this evaluation period (again to stop at once)")

    try:
        # A signal becomes a stop request that the run acts on between evaluation periods.
        with StopSignals(on_first=announce):
            record = run_baseline(
                algo, args.env, seed, steps, args.run_dir, preset=preset,
                eval_interval_steps=interval, eval_episodes=episodes, echo=echo,
                device=args.device,
            )
    except KeyboardInterrupt:
        # The command line then says "interrupted" and exits 130, which a sweep reads.
        print(f"reppo: {args.run_dir} is incomplete and cannot be resumed (a baseline keeps no "
              "checkpoint): run it again in a new directory", file=sys.stderr)
        raise
    success = record.get("eval/success_once")
    success = "" if success is None else f", success rate (once) {success:.2f}"
    echo(f"final evaluation at {record['env_steps']:,} env steps: return "
         f"{record[EVAL_RETURN]:.1f} ± {record[EVAL_RETURN_STD]:.1f}{success}; run saved in "
         f"{args.run_dir}")
    return 0
