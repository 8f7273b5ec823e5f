"""How a Brax baseline's budget is cut into evaluation periods (`plan_schedule`: the periods of
the one planner, `iterations.plan_iterations`, as Brax's arguments), and the checks that refuse
hyperparameters and budgets Brax would trip over or train far past.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from reppo.errors import UserError
from reppo.experiments.baselines.hyperparameters import check_int
from reppo.experiments.baselines.iterations import plan_iterations

# Brax trains in whole evaluation periods; a plan longer than this times the budget is refused.
MAX_OVERSHOOT = 1.25


# ---- the budget, cut into evaluation periods -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How Brax's trainer will spend the budget: `num_evals` evaluation periods (Brax's
    `num_evals` argument is one more: it counts an initial evaluation at step 0, which is
    skipped here), ending at `eval_steps`; the last one is `planned_env_steps >= total_steps`.
    """

    env_steps_per_update: int  # PPO: env steps per training step; SAC: per actor step
    updates_per_eval: int
    num_evals: int
    prefill_env_steps: int  # SAC's replay prefill (counted as env steps by Brax); PPO: 0
    planned_env_steps: int
    num_resets_per_eval: int | None  # PPO only

    def eval_steps(self) -> list[int]:
        per_eval = (self.planned_env_steps - self.prefill_env_steps) // self.num_evals
        return [self.prefill_env_steps + per_eval * (j + 1) for j in range(self.num_evals)]

    def brax_arguments(self) -> dict[str, int]:
        args = {"num_evals": self.num_evals + 1}
        if self.num_resets_per_eval is not None:
            args["num_resets_per_eval"] = self.num_resets_per_eval
        return args


def plan_schedule(
    algo: str, hp: Mapping[str, Any], total_steps: int, eval_interval_steps: int
) -> Schedule:
    """Evaluation periods of about `eval_interval_steps` (0: one period) covering `total_steps`.

    Brax trains in whole updates (PPO: `batch_size * unroll_length * num_minibatches` env
    steps; SAC: one step of every env) and in evaluation periods of equal length, so the run
    ends at the first period boundary at or after `total_steps`: at most one period (or one
    update, if that is longer) beyond it.

    PPO: Playground's preset (`num_resets_per_eval=10` with `num_evals=10` at its own budget)
    resets every env after every update; `num_resets_per_eval` is set to the updates per
    period so that this holds at any budget and cadence (a preset value of 0, no resets, is
    kept). SAC: Brax first fills the replay buffer with `min_replay_size` transitions, which
    count towards the budget.
    """
    if algo == "brax-ppo":
        per_update = int(hp["batch_size"]) * int(hp["unroll_length"]) * int(hp["num_minibatches"])
        per_update *= int(hp["action_repeat"])
        if per_update > total_steps:
            raise UserError(
                f"one brax-ppo update of these hyperparameters collects {per_update:,} env "
                f"steps (batch_size * unroll_length * num_minibatches), more than the budget "
                f"of {total_steps:,}; raise the budget or use --preset cpu"
            )
        periods = plan_iterations(per_update, total_steps, eval_interval_steps)
        updates, per_eval = periods.iterations, periods.iterations_per_eval
        num_evals = math.ceil(updates / per_eval)
        if int(hp.get("num_resets_per_eval", 0)) > 0:
            resets, epoch_updates = per_eval, 1  # one update per epoch, a reset after each
        else:
            resets = 0
            epoch_updates = math.ceil(total_steps / (num_evals * per_update))
        planned = num_evals * max(resets, 1) * epoch_updates * per_update
        return Schedule(per_update, max(resets, 1) * epoch_updates, num_evals, 0, planned, resets)

    num_envs = int(hp["num_envs"])
    per_step = num_envs * int(hp["action_repeat"])
    min_replay = int(hp.get("min_replay_size", 0))
    prefill = -(-min_replay // num_envs) * per_step
    if total_steps - prefill < per_step:
        raise UserError(
            f"brax-sac first collects min_replay_size={min_replay} transitions "
            f"({prefill:,} env steps with {num_envs} envs), which leaves no training within "
            f"{total_steps:,} steps; raise the budget above {prefill + per_step:,} steps"
        )
    periods = plan_iterations(per_step, total_steps - prefill, eval_interval_steps)
    num_evals = math.ceil(periods.iterations / periods.iterations_per_eval)
    epoch_steps = -(-(total_steps - prefill) // (num_evals * per_step))  # Brax's formula
    planned = prefill + num_evals * epoch_steps * per_step
    return Schedule(per_step, epoch_steps, num_evals, prefill, planned, None)


def check_overshoot(algo: str, schedule: Schedule, total_steps: int) -> None:
    """Refuse plans that would train far past the budget (comparisons at equal budgets)."""
    if schedule.planned_env_steps <= MAX_OVERSHOOT * total_steps:
        return
    raise UserError(
        f"{algo} trains in evaluation periods of whole updates ({schedule.updates_per_eval} x "
        f"{schedule.env_steps_per_update:,} env steps here), so it would run "
        f"{schedule.planned_env_steps:,} env steps for a budget of {total_steps:,}; choose a "
        f"budget close to a multiple of the period, a shorter --eval-interval-steps, or "
        f"--preset cpu"
    )


def check_hyperparameters(algo: str, hp: Mapping[str, Any], total_steps: int) -> None:
    """Brax asserts these deep inside train(); say what to change instead."""
    for key in ("num_envs", "batch_size") + (
        ("unroll_length", "num_minibatches", "num_updates_per_batch")
        if algo == "brax-ppo"
        else ("grad_updates_per_step",)
    ):
        check_int(f"hyperparameter {key}", hp.get(key), 1)
    if algo == "brax-ppo":
        if hp["batch_size"] * hp["num_minibatches"] % hp["num_envs"]:
            raise UserError(
                f"brax-ppo needs batch_size * num_minibatches ({hp['batch_size']} * "
                f"{hp['num_minibatches']}) to be a multiple of num_envs ({hp['num_envs']})"
            )
        return
    max_replay = hp.get("max_replay_size") or total_steps
    if max_replay < hp["num_envs"]:
        raise UserError(
            f"brax-sac's max_replay_size ({max_replay}) must hold one step of all "
            f"{hp['num_envs']} envs"
        )
