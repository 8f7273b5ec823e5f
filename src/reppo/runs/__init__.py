"""Run bookkeeping shared by every backend: run directories, checkpoints, metrics, plots.

Everything here works on numpy arrays and plain JSON; nothing imports JAX or torch.
"""

from reppo.runs.checkpoint import (
    CheckpointError,
    checkpoint_path,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_run_checkpoint,
    policy_sizes,
    save_checkpoint,
)
from reppo.runs.directory import EXPERIMENT_FILE, RunDir
from reppo.runs.metrics import (
    MetricsError,
    MetricsLogger,
    evaluation_report,
    read_metrics,
    truncate_metrics,
)
from reppo.runs.plots import plot_learning_curve
from reppo.runs.progress import format_count, format_duration, format_progress
from reppo.runs.rundir import (
    RunDirError,
    atomic_write_bytes,
    atomic_write_json,
    create_run_dir,
    default_run_dir,
    open_run_dir,
)
from reppo.runs.versions import collect_versions

__all__ = [
    "EXPERIMENT_FILE",
    "CheckpointError",
    "MetricsError",
    "MetricsLogger",
    "RunDir",
    "RunDirError",
    "atomic_write_bytes",
    "atomic_write_json",
    "checkpoint_path",
    "checkpoint_step",
    "collect_versions",
    "create_run_dir",
    "default_run_dir",
    "evaluation_report",
    "format_count",
    "format_duration",
    "format_progress",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_run_checkpoint",
    "open_run_dir",
    "plot_learning_curve",
    "policy_sizes",
    "read_metrics",
    "save_checkpoint",
    "truncate_metrics",
]
