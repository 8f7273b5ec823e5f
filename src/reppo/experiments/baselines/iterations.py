"""How a baseline that trains in fixed iterations (FastTD3, ManiSkill's PPO) spends its budget:
whole iterations, cut into evaluation periods."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class IterationSchedule:
    """`iterations` iterations of `steps_per_iteration` env steps each, evaluated after every
    `iterations_per_eval` of them and at the end (the last period may be shorter)."""

    steps_per_iteration: int
    iterations: int
    iterations_per_eval: int

    @property
    def planned_env_steps(self) -> int:
        return self.iterations * self.steps_per_iteration

    def eval_iterations(self) -> list[int]:
        marks = list(range(self.iterations_per_eval, self.iterations, self.iterations_per_eval))
        return [*marks, self.iterations]

    def eval_steps(self) -> list[int]:
        return [i * self.steps_per_iteration for i in self.eval_iterations()]

    def as_config(self) -> dict:
        """The schedule as run directories record it (config.json "schedule")."""
        return {**dataclasses.asdict(self), "planned_env_steps": self.planned_env_steps,
                "eval_steps": self.eval_steps()}


def plan_iterations(
    steps_per_iteration: int, total_steps: int, eval_interval_steps: int
) -> IterationSchedule:
    """Whole iterations covering `total_steps` (at most one iteration's steps more), evaluated
    about every `eval_interval_steps` (0: only at the end)."""
    iterations = math.ceil(total_steps / steps_per_iteration)
    if eval_interval_steps == 0:
        per_eval = iterations
    else:
        per_eval = min(iterations, max(1, round(eval_interval_steps / steps_per_iteration)))
    return IterationSchedule(steps_per_iteration, iterations, per_eval)
