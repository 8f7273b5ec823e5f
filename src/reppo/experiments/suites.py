"""Named benchmark suites: which tasks `reppo sweep` trains, with which preset, for how long.

A suite is data, not code: a tuple of tasks, the backend that trains them, the REPPO preset and
step budget the paper (or a CPU) uses, the preset of the baselines where they apply, and,
for ablation suites, the REPPO variants compared with each other. `reppo sweep --suite NAME`
runs every task x variant x seed of one; docs/experiments.md lists them.

This module imports nothing heavy, so `reppo --help` and planning a sweep stay fast.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Literal

from reppo.envs.catalog import DMC23, MANISKILL9
from reppo.experiments.baselines.hyperparameters import (
    ALGO_PRESETS,
    BASELINES,
    DMC_BASELINES,
    MANISKILL_BASELINES,
    PRESETS,
)
from reppo.presets import ABLATIONS, ablation_preset

Backend = Literal["jax", "torch"]

REPPO = "reppo"
# The baselines of `reppo.experiments.baselines` and the presets it knows (some presets belong
# to some baselines only: `baseline_presets`).
BASELINE_ALGOS: tuple[str, ...] = BASELINES
BASELINE_PRESETS: tuple[str, ...] = PRESETS
ALGOS: tuple[str, ...] = (REPPO, *BASELINE_ALGOS)

# Playground tasks cheap enough for minutes per 1M-step run on a 2-core CPU with the `cpu`
# preset (docs/experiments.md has what one seed of each reached): the tuning suite.
CPU_TASKS: tuple[str, ...] = ("CartpoleBalance", "PendulumSwingup", "ReacherEasy")
# Playground DM Control tasks that no preset was tuned or screened on, to evaluate the `cpu`
# preset (and whatever `reppo tune` finds) on tasks it was not chosen for: the evaluation
# suite. Nothing may be tuned on them, or they stop being a fair test.
CPU_EVAL_TASKS: tuple[str, ...] = (
    "CartpoleSwingup", "AcrobotSwingup", "PointMass", "FingerTurnEasy", "HopperStand",
    "WalkerStand",
)

# ManiSkill3 tasks whose episodes are short enough (50 steps) and whose scenes are cheap enough
# for ManiSkill's CPU simulator (docs/maniskill.md).
MANISKILL_CPU_TASKS: tuple[str, ...] = ("PushCube-v1", "PickCube-v1", "PullCube-v1")

PAPER_STEPS = 50_000_000  # Table 1: 50M env steps per task
CPU_STEPS = 1_000_000
MANISKILL_CPU_STEPS = 507_904
# The budget of the comparisons on the evaluation suite: the `cpu` preset's own (62
# iterations of 8,192 transitions), the same for REPPO and the baselines.
CPU_EVAL_STEPS = 507_904
# Seeds below this are for tuning, screening and development; an evaluation suite's runs use
# seeds from here on, which no choice of a setting has seen.
EVALUATION_FIRST_SEED = 100

Role = Literal["tuning", "evaluation"]
# Every algorithm of a sweep is evaluated about this many times per run (Playground's
# `num_evals`), so that learning curves of REPPO and the baselines have the same resolution.
EVALS_PER_RUN = 10


def baseline_presets(algo: str) -> tuple[str, ...]:
    """The presets baseline `algo` has."""
    return ALGO_PRESETS[algo]


def baseline_label(algo: str, preset: str, suite_preset: str | None) -> str:
    """A baseline's method name in a sweep: the algo under the suite's own baseline preset,
    `algo-preset` under another one (so that, e.g., Brax PPO with its cpu preset and with the
    paper's tuned one are two methods of one sweep, in two directories)."""
    return algo if preset == suite_preset else f"{algo}-{preset}"


# ... but never more often than every MIN_EVAL_INTERVAL env steps: a short run's tenth of the
# budget would step the envs more evaluating (16 DM Control episodes are 16,000 env steps per
# policy) than training.
MIN_EVAL_INTERVAL = 50_000


def default_eval_interval(total_steps: int) -> int:
    """Env steps between evaluations of a run of `total_steps`: about `EVALS_PER_RUN` of them,
    at least `MIN_EVAL_INTERVAL` apart (a run shorter than that evaluates at its end only)."""
    return max(1, min(total_steps, max(MIN_EVAL_INTERVAL,
                                       math.ceil(total_steps / EVALS_PER_RUN))))


FULL = "full"  # the variant name of the unablated algorithm in an ablation suite


@dataclass(frozen=True)
class Variant:
    """One method of a suite: its label, its preset and, in ablation suites, its variant."""

    label: str  # the method: experiment.json "method" and the directory OUT/<label>/
    preset: str
    # experiment.json "variant": "full" or an ablation (a key of presets.ABLATIONS) in an
    # ablation suite, so that reports can pair each ablation with the full algorithm at the
    # same batch size; None outside ablation suites.
    variant: str | None

    @property
    def ablation(self) -> str | None:
        """The component switched off, if any."""
        return None if self.variant in (None, FULL) else self.variant


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: tuple[str, ...]  # () for the custom suites: --tasks names them
    backend: Backend
    preset: str  # REPPO preset of a suite without variants
    steps: int  # default env steps per run (per seed)
    baseline_preset: str | None = None  # None: the baselines cannot run these tasks
    baselines: tuple[str, ...] = ()  # the baselines that train these tasks
    variants: tuple[Variant, ...] = ()  # ablation suites: the REPPO methods compared
    # "tuning": settings may be chosen on it (`reppo tune`); "evaluation": it reports settings
    # chosen elsewhere, on seeds from `first_seed` on, and `reppo tune` refuses it.
    role: Role | None = None
    first_seed: int = 0  # the first seed `reppo sweep --seeds K` trains (seeds first..first+K-1)

    @property
    def is_evaluation(self) -> bool:
        return self.role == "evaluation"

    def methods(self, algo: str) -> tuple[Variant, ...]:
        """The methods `algo` trains on this suite (one for a suite without variants)."""
        if algo != REPPO:
            return (Variant(algo, self.baseline_preset or "", None),)  # its label: the algo
        return self.variants or (Variant(REPPO, self.preset, None),)


def ablation_variants(bases: tuple[str, ...]) -> tuple[Variant, ...]:
    """For each base preset: the full algorithm, then each ablation, labelled by preset."""
    return tuple(
        Variant(ablation_preset(base, ablation), ablation_preset(base, ablation),
                ablation or FULL)
        for base in bases
        for ablation in (None, *ABLATIONS)
    )


SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite(
            name="dmc23",
            description="the paper's 23 Playground DM Control tasks",
            tasks=DMC23,
            backend="jax",
            preset="paper",
            steps=PAPER_STEPS,
            baseline_preset="playground",
            baselines=DMC_BASELINES,
        ),
        Suite(
            name="maniskill",
            description="the paper's ManiSkill3 tasks and OpenCabinetDrawer (torch backend)",
            tasks=MANISKILL9,
            backend="torch",
            preset="maniskill",
            steps=PAPER_STEPS,
            baseline_preset="maniskill",
            baselines=MANISKILL_BASELINES,
        ),
        Suite(
            name="cpu-smoke",
            description="the tuning suite: three cheap Playground tasks, minutes per run on a "
                        "2-core CPU",
            tasks=CPU_TASKS,
            backend="jax",
            preset="cpu",
            steps=CPU_STEPS,
            baseline_preset="cpu",
            baselines=DMC_BASELINES,
            role="tuning",
        ),
        Suite(
            name="cpu-eval",
            description="the evaluation suite: six Playground DM Control tasks nothing was "
                        f"tuned on, seeds from {EVALUATION_FIRST_SEED}",
            tasks=CPU_EVAL_TASKS,
            backend="jax",
            preset="cpu",
            steps=CPU_EVAL_STEPS,
            baseline_preset="cpu",
            baselines=DMC_BASELINES,
            role="evaluation",
            first_seed=EVALUATION_FIRST_SEED,
        ),
        Suite(
            name="maniskill-cpu",
            description="three ManiSkill3 tasks on ManiSkill's CPU simulator, about half an "
                        "hour per run on one core (torch backend)",
            tasks=MANISKILL_CPU_TASKS,
            backend="torch",
            preset="maniskill-cpu",
            steps=MANISKILL_CPU_STEPS,
            baseline_preset="cpu",
            baselines=MANISKILL_BASELINES,
        ),
        Suite(
            name="ablations",
            description="figure 7: REPPO without each component at 131,072 (paper) and "
                        "32,768 (small) transitions per iteration, on the 23 DMC tasks",
            tasks=DMC23,
            backend="jax",
            preset="paper",
            steps=PAPER_STEPS,
            variants=ablation_variants(("paper", "small")),
        ),
        Suite(
            name="custom",
            description="your own JAX envs, named in --tasks as module:Name (docs/envs.md)",
            tasks=(),
            backend="jax",
            preset="cpu",
            steps=CPU_STEPS,
        ),
        Suite(
            name="custom-torch",
            description="your own Gymnasium envs (module:Name) or Gymnasium ids in --tasks, "
                        "torch backend",
            tasks=(),
            backend="torch",
            preset="cpu",
            steps=CPU_STEPS,
        ),
        Suite(
            name="cpu-ablations",
            description="the ablations with the cpu preset on the cheap CPU tasks",
            tasks=CPU_TASKS,
            backend="jax",
            preset="cpu",
            steps=CPU_STEPS,
            variants=ablation_variants(("cpu",)),
        ),
    )
}


def get_suite(name: str) -> Suite:
    """The suite `name`, or a ConfigError listing the valid names."""
    from reppo.config import ConfigError

    if name not in SUITES:
        close = difflib.get_close_matches(name, SUITES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown suite {name!r}{hint}; valid suites: {', '.join(SUITES)}")
    return SUITES[name]
