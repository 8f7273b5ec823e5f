"""Published final returns of the REPPO paper, for reference rows next to measured results.

The numbers are final mean evaluation returns at the end of training (50M environment steps,
batch of 131,072 transitions per iteration) on the MuJoCo Playground DM Control tasks, from the
authors' result files and the paper's aggregate figures. They are someone else's measurements:
other hardware, other seeds (10 per task for REPPO), and their own code. A report shows them
marked "published" and never mixes them into the statistics computed from run directories.
"""

from __future__ import annotations

from dataclasses import dataclass

from reppo.envs.catalog import DMC23

SOURCE = "REPPO paper / authors' result files (50M env steps, 131,072 transitions per iteration)"
REPPO = "REPPO (published)"

# The 23 DM Control tasks of the paper's benchmark (its "23-task mean" is over these).
PAPER_DMC_TASKS: tuple[str, ...] = DMC23


@dataclass(frozen=True)
class PublishedReturn:
    """One published final mean return; `approximate` where the source only gives it as ≈."""

    task: str
    method: str
    final_return: float
    approximate: bool = False


# REPPO's per-task final returns, where the source gives a number for the task.
REPPO_FINAL_RETURNS: tuple[PublishedReturn, ...] = (
    PublishedReturn("CheetahRun", REPPO, 933.0),
    PublishedReturn("WalkerRun", REPPO, 894.0),
    PublishedReturn("HopperHop", REPPO, 164.0),
    PublishedReturn("FingerSpin", REPPO, 661.0),
    PublishedReturn("FishSwim", REPPO, 677.0),
    PublishedReturn("HumanoidRun", REPPO, 748.0),
    PublishedReturn("HumanoidWalk", REPPO, 991.0),
    PublishedReturn("CartpoleSwingupSparse", REPPO, 711.0, approximate=True),
    PublishedReturn("PendulumSwingup", REPPO, 627.0, approximate=True),
    PublishedReturn("AcrobotSwingup", REPPO, 402.0, approximate=True),
)

# Mean final return over the 23 tasks, per algorithm (full training budget).
SUITE_MEAN_RETURNS: dict[str, float] = {
    "REPPO": 775.0,
    "Brax SAC": 659.0,
    "Brax PPO": 596.0,
}

# Published statements that are not one number per task.
NOTES: tuple[str, ...] = (
    "Most Walker, Reacher and Cartpole tasks end between 860 and 1000 for REPPO (no per-task "
    "numbers published).",
    "On an L40S GPU the JAX version reaches its final return within about 5 minutes on 17 of "
    "the 23 tasks.",
)


@dataclass(frozen=True)
class ReferenceRuns:
    """Final deterministic evaluation returns of the authors' released code, run by us at one
    of our presets' settings, per seed: a like-for-like reference for our own runs."""

    task: str
    method: str
    settings: str
    env_steps: int
    seeds: tuple[int, ...]
    final_returns: tuple[float, ...]
    episodes: int  # deterministic evaluation episodes per seed

    @property
    def mean(self) -> float:
        return sum(self.final_returns) / len(self.final_returns)


AUTHORS_CODE = "REPPO (authors' code)"

# The authors' JAX code with exactly the `cpu` preset's settings (128 envs x 64 steps, 8 epochs
# x 16 minibatches, 128-wide networks, learning rate 1e-3, everything else Table 1).
AUTHORS_CODE_RUNS: tuple[ReferenceRuns, ...] = (
    ReferenceRuns(
        "CartpoleBalance", AUTHORS_CODE, "cpu preset", 507_904, (0, 1, 2),
        (988.0, 973.0, 872.0), 128,
    ),
)


def published_return(task: str) -> PublishedReturn | None:
    """REPPO's published final return on `task`, or None where none is given."""
    for row in REPPO_FINAL_RETURNS:
        if row.task == task:
            return row
    return None


def format_published(row: PublishedReturn) -> str:
    """'933' or '≈ 711'."""
    return ("≈ " if row.approximate else "") + f"{row.final_return:.0f}"
