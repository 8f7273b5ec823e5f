"""Handing a sweep's runs to SLURM through submitit (`reppo sweep --launcher slurm`).

Every run that the local sweep would start, resume or restart becomes one job of a job array:
the job runs the same child command (`reppo train ...`, or the baseline's), appends its output
to the run's log beside the run dir, as the local sweep does, and writes the run's
experiment.json. The sweep submits and returns. Running the same command again skips finished
runs, resumes interrupted ones from their checkpoints (a preempted job's `reppo train` saves one
on SLURM's SIGTERM), restarts runs that stopped before their first checkpoint, and leaves alone
the runs whose job is still queued or running: the job ids are kept in OUT/slurm/jobs.json, and
submitit's job folder (scripts and SLURM logs) is OUT/slurm/.

submitit is an optional dependency (`pip install "reppo[slurm]"`); a dry run needs neither it
nor SLURM.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reppo.errors import UserError
from reppo.experiments.sweep.outdir import now_stamp
from reppo.experiments.sweep.plan import (
    PlannedRun,
    inspect,
    move_aside,
    resume_command,
    start_command,
)
from reppo.experiments.sweep.settings import Echo, Settings

SLURM_DIR = "slurm"
# submitit's cluster: "slurm", or "local" (each job a local process; the tests use it).
CLUSTER = "slurm"
JOBS_FILE = "jobs.json"
# SLURM states of a job that is not over yet (squeue / sacct spellings, as submitit reports).
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
    "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT",
})


@dataclass(frozen=True)
class SlurmOptions:
    """The resources of each job (one run: a task, or a task's seeds batched)."""

    partition: str | None = None
    account: str | None = None
    time_min: int = 24 * 60
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: float | None = None
    array_parallelism: int = 64

    def executor_parameters(self, name: str) -> dict[str, Any]:
        """Keyword arguments of submitit's `AutoExecutor.update_parameters` (the `slurm_`
        ones apply on SLURM only)."""
        params: dict[str, Any] = {
            "name": name,
            "timeout_min": self.time_min,
            "nodes": 1,
            "tasks_per_node": 1,
            "cpus_per_task": self.cpus_per_task,
            "gpus_per_node": self.gpus_per_node,
            "stderr_to_stdout": True,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.account:
            params["slurm_account"] = self.account
        return params


class RunJob:
    """What one job does: the run's child command, its output appended to the run's log, then
    the run's experiment.json (picklable, so that submitit can ship it to the node)."""

    def __init__(self, command: list[str], log_path: Path, run_dir: Path,
                 record: dict[str, Any]) -> None:
        self.command = command
        self.log_path = log_path
        self.run_dir = run_dir
        self.record = record

    def __call__(self) -> int:
        from reppo.runs.directory import RunDir

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        job = os.environ.get("SLURM_JOB_ID", "")
        with open(self.log_path, "a", encoding="utf-8") as log:
            where = f" (SLURM job {job})" if job else ""
            log.write(f"# {now_stamp()} $ {shlex.join(self.command)}{where}\n")
            log.flush()
            code = subprocess.run(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False,
            ).returncode
        if self.run_dir.is_dir():
            RunDir(self.run_dir).write_experiment(self.record)
        if code:
            raise RuntimeError(
                f"{shlex.join(self.command)} exited with status {code}; its output is in "
                f"{self.log_path}"
            )
        return code


@dataclass
class PlannedJob:
    run: PlannedRun
    action: str  # start | resume | restart
    command: list[str]


def _jobs_path(settings: Settings) -> Path:
    return settings.out / SLURM_DIR / JOBS_FILE


def _recorded_jobs(settings: Settings) -> dict[str, str]:
    path = _jobs_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def _job_states(settings: Settings, jobs: dict[str, str]) -> dict[str, str]:
    """SLURM's state of each recorded job (through submitit: squeue, then sacct)."""
    if not jobs:
        return {}
    import submitit

    folder = settings.out / SLURM_DIR
    return {name: submitit.SlurmJob(folder, job_id).state for name, job_id in jobs.items()}


def plan_jobs(settings: Settings, runs: list[PlannedRun], echo: Echo,
              states: dict[str, str]) -> list[PlannedJob]:
    """The runs to submit, with their commands (as the local sweep would run them); says why
    each other run is left alone."""
    jobs = []
    for run in runs:
        state = inspect(run, settings)
        job_state = states.get(run.name, "")
        if job_state.upper() in ACTIVE_STATES:
            echo(f"{run.name}: left alone: its SLURM job is {job_state.lower()}")
        elif state.action == "skip":
            echo(f"{run.name}: skip (finished)")
        elif state.action == "mismatch":
            echo(f"{run.name}: not run: {state.reason}")
        elif state.action == "running":
            echo(f"{run.name}: left alone: {state.reason}")
        elif state.action == "resume":
            jobs.append(PlannedJob(run, "resume", resume_command(run)))
        else:
            jobs.append(PlannedJob(run, state.action, start_command(run, settings)))
    return jobs


def require_submitit() -> Any:
    """submitit, on a machine that can submit to SLURM; else a UserError saying what to do
    (checked before the sweep writes anything)."""
    try:
        import submitit
    except ImportError:
        raise UserError(
            "--launcher slurm needs submitit: pip install \"reppo[slurm]\" (or use --dry-run "
            "to see the jobs without it)"
        ) from None
    if CLUSTER == "slurm" and shutil.which("srun") is None:
        raise UserError(
            "--launcher slurm submits from a machine of the SLURM cluster, and this one has no "
            "srun; run the sweep on a login node, or add --dry-run to see the jobs"
        )
    return submitit


def dry_run(settings: Settings, runs: list[PlannedRun], echo: Echo,
            options: SlurmOptions) -> int:
    """Print the job array that would be submitted, and each job's command; submits nothing."""
    jobs = plan_jobs(settings, runs, echo, {})
    params = options.executor_parameters(f"reppo-{settings.suite.name}")
    echo(f"SLURM job array of {len(jobs)} job(s), submitit folder {settings.out / SLURM_DIR}, "
         f"sbatch settings: {json.dumps(params, sort_keys=True)}")
    for i, job in enumerate(jobs):
        extra = ""
        if job.action == "restart":
            extra = f" (first moved to {job.run.run_dir.name}.partial-<time>)"
        echo(f"  job {i}: {job.run.name}: {job.action}{extra}: {shlex.join(job.command)}")
    return 0


def submit(settings: Settings, runs: list[PlannedRun], echo: Echo, options: SlurmOptions) -> int:
    """Submit the runs that need to run as one job array; returns the exit status."""
    submitit = require_submitit()
    folder = settings.out / SLURM_DIR
    recorded = _recorded_jobs(settings)
    states = _job_states(settings, recorded) if CLUSTER == "slurm" else {}
    jobs = plan_jobs(settings, runs, echo, states)
    if not jobs:
        echo("nothing to submit")
        return 0
    executor = submitit.AutoExecutor(folder=folder, cluster=CLUSTER)
    executor.update_parameters(**options.executor_parameters(f"reppo-{settings.suite.name}"))
    calls = []
    for job in jobs:
        if job.action == "restart":
            moved = move_aside(job.run.run_dir)
            echo(f"{job.run.name}: unfinished before its first checkpoint: moved to {moved.name}")
        job.run.run_dir.parent.mkdir(parents=True, exist_ok=True)
        calls.append(RunJob(job.command, job.run.log_path, job.run.run_dir,
                            job.run.experiment(settings.suite)))
    with executor.batch():
        submitted = [executor.submit(call) for call in calls]
    for job, handle in zip(jobs, submitted, strict=True):
        recorded[job.run.name] = str(handle.job_id)
        echo(f"{job.run.name}: {job.action}: submitted as job {handle.job_id}")
    _jobs_path(settings).write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    echo(f"{len(jobs)} job(s) submitted; their logs are beside the run dirs and in {folder}; "
         "run the same command again once they end to submit what is left (or resume "
         "interrupted runs)")
    return 0
