"""What `reppo report` computes, as data: the result types of a report (`TaskResult`,
`Aggregate`, `AblationBar`, `Improvement`, the whole `Report`), its `Options`, and the constants
and labels that computing and writing share. Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reppo.analysis.runs import Run, Skipped
    from reppo.analysis.stats import CurveEstimate, Estimate

CONFIDENCE = 0.95
AUTO = "auto"
# The suites of `reppo sweep` whose reports follow the paper (and rliable) by default.
PAPER_SUITES: tuple[str, ...] = ("dmc23", "maniskill", "ablations")


# ---- what the report holds --------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    """The final evaluations of one method's runs on one task."""

    family: str
    task: str
    method: str
    n_runs: int
    final_steps: int  # the smallest final env-step count among the runs
    final_return: Estimate
    final_score: Estimate
    final_success_at_end: Estimate | None = None  # ManiSkill3 runs that recorded it, all of them


@dataclass(frozen=True)
class Aggregate:
    """One method's aggregate statistics over the tasks of one family."""

    family: str
    method: str
    n_tasks: int
    n_runs: int
    estimates: dict[str, Estimate]


@dataclass(frozen=True)
class AblationBar:
    family: str
    transitions_per_iteration: int | None
    variant: str
    methods: tuple[str, ...]
    n_tasks: int
    n_runs: int
    iqm: Estimate


@dataclass(frozen=True)
class Improvement:
    """P(X > Y) of the final normalized scores of two methods on the tasks both cover."""

    family: str
    method_x: str
    method_y: str
    n_tasks: int
    n_runs_x: int
    n_runs_y: int
    probability: Estimate


@dataclass
class Report:
    """Everything `reppo report` computes, before any of it is written."""

    runs: list[Run]
    skipped: list[Skipped]
    methods: list[str]
    families: list[str]
    tasks: dict[str, list[str]]  # family -> its tasks
    task_results: list[TaskResult]
    aggregates: list[Aggregate]
    sample_efficiency: dict[str, dict[str, CurveEstimate]]  # family -> method -> IQM curve
    reliable: dict[str, dict[str, CurveEstimate]]
    task_curves: dict[str, tuple[dict[str, Any], dict[str, Any]]]  # task -> (by steps, by time)
    ablations: list[AblationBar]
    notes: list[str] = field(default_factory=list)
    stats_mode: str = "weighted"  # the aggregation mode used (reppo.analysis.stats.MODES)
    stats_reason: str = ""  # why: the option, or what `auto` found
    stats_fallback: str | None = None  # `auto`'s note when unequal run counts forced weighted
    profiles: dict[str, dict[str, CurveEstimate]] = field(default_factory=dict)
    improvements: list[Improvement] = field(default_factory=list)
    # ManiSkill3 tasks: success at the episodes' last step, as task_curves (methods whose runs
    # all recorded it)
    end_success_curves: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(
        default_factory=dict)


@dataclass(frozen=True)
class Options:
    tau: float = 0.9
    reps: int = 2000
    seed: int = 0
    grid_points: int = 50
    reference: bool = False
    stats: str = AUTO  # "auto", "weighted" or "rliable"


def tpi_label(tpi: int | None) -> str:
    return "unknown batch" if tpi is None else f"{tpi:,} transitions / iteration"
