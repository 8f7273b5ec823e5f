"""Training metrics: `metrics.jsonl` in the run directory, plus optional TensorBoard and W&B.

`metrics.jsonl` holds one JSON object per line, appended and flushed as training goes, so it
can be tailed, plotted mid-run and survives a crash (at worst the last line is cut off, which
`read_metrics` tolerates). It is the source of truth; TensorBoard and Weights & Biases are
optional mirrors of the numeric scalars, imported only when asked for.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from reppo.runs.rundir import atomic_write_bytes

_MISSING_TENSORBOARD = (
    "--tensorboard needs the tensorboardX package: pip install tensorboardX "
    "(or pip install 'reppo[tensorboard]'), or run without --tensorboard"
)
_MISSING_WANDB = (
    "--wandb needs the wandb package: pip install wandb (or pip install 'reppo[wandb]'), "
    "or run without --wandb"
)

METRICS_FILE = "metrics.jsonl"

# The metric names of an evaluation record, written by every evaluator and read by progress
# lines, plots, sweeps and reports (docs/algorithm.md explains each logged metric).
EVAL_RETURN = "eval/return_mean"
EVAL_RETURN_STD = "eval/return_std"
EVAL_RETURN_PER_SEED = "eval/return_per_seed"
EVAL_STOCHASTIC_RETURN = "eval/stochastic_return_mean"
EVAL_STOCHASTIC_RETURN_STD = "eval/stochastic_return_std"
# Records are summaries; a bigger array is almost certainly a mistake that would bloat the file.
_MAX_LIST_LEN = 1024


class MetricsError(RuntimeError):
    """A metrics sink cannot be used (e.g. its package is missing); the message says the fix."""


def _jsonable(key: str, value: Any) -> Any:
    """`value` as plain JSON: numpy and 0-d arrays to Python numbers, non-finite floats to None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_LIST_LEN:
            raise TypeError(f"metric {key!r} has {len(value)} elements; log a summary instead")
        return [_jsonable(key, v) for v in value]
    if hasattr(value, "__array__"):  # numpy, JAX and torch (CPU) arrays
        array = np.asarray(value)
        if array.ndim == 0:
            return _jsonable(key, array.item())
        if array.size > _MAX_LIST_LEN:
            raise TypeError(f"metric {key!r} has {array.size} elements; log a summary instead")
        return _jsonable(key, array.tolist())
    raise TypeError(f"metric {key!r} has unsupported type {type(value).__name__}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric scalars of a (converted) record, the ones TensorBoard/W&B can plot."""
    return {k: float(v) for k, v in record.items() if _is_number(v) and math.isfinite(v)}


def _metrics_path(path_or_run_dir: str | os.PathLike[str]) -> Path:
    path = Path(path_or_run_dir)
    return path / METRICS_FILE if path.is_dir() else path


def _drop_partial_line(path: Path) -> None:
    """Cut a crash's half-written last line, so the next record does not get glued onto it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


class MetricsLogger:
    """Append records to `run_dir/metrics.jsonl`, mirroring scalars to TensorBoard and W&B.

    Use as a context manager or call `close()`. The step of TensorBoard/W&B points is the
    record's `env_steps` (a running count of `log` calls where a record has none).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        tensorboard: bool = False,
        wandb: bool = False,
        wandb_project: str = "reppo",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self._tb_writer: Any = None
        self._wandb_run: Any = None
        self._count = 0
        self._file: Any = None
        try:
            # Start the optional sinks first: if one is unavailable we fail before touching files.
            if tensorboard:
                self._tb_writer = self._open_tensorboard()
            if wandb:
                self._wandb_run = self._open_wandb(wandb_project, config)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _drop_partial_line(self.path)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - see close()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def check_available(*, tensorboard: bool = False, wandb: bool = False) -> None:
        """Raise the MetricsError that opening these sinks would raise for a missing package,
        without importing it (so that a run can refuse before it writes anything)."""
        if tensorboard and importlib.util.find_spec("tensorboardX") is None:
            raise MetricsError(_MISSING_TENSORBOARD)
        if wandb and importlib.util.find_spec("wandb") is None:
            raise MetricsError(_MISSING_WANDB)

    def _open_tensorboard(self) -> Any:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise MetricsError(_MISSING_TENSORBOARD) from None
        return SummaryWriter(logdir=str(self.run_dir / "tensorboard"))

    def _open_wandb(self, project: str, config: dict[str, Any] | None) -> Any:
        try:
            import wandb
        except ImportError:
            raise MetricsError(_MISSING_WANDB) from None
        # Offline by default so that no account or network is needed; `wandb sync` uploads later.
        mode = os.environ.get("WANDB_MODE", "offline")
        return wandb.init(
            project=project,
            name=self.run_dir.name,
            dir=str(self.run_dir),
            config=config,
            mode=mode,
        )

    def log(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append `record` as one JSON line (flushed) and mirror its scalars; returns it as written.

        Numpy scalars and 0-d arrays become Python numbers, small arrays lists, and NaN/inf
        become null (strict JSON has no NaN).
        """
        if self._file is None:
            raise MetricsError(f"MetricsLogger for {self.path} is closed")
        clean = {str(k): _jsonable(str(k), v) for k, v in record.items()}
        self._file.write(json.dumps(clean, allow_nan=False) + "\n")
        self._file.flush()
        self._count += 1
        step = clean.get("env_steps")
        if not _is_number(step):
            step = self._count
        scalars = _scalars(clean)
        if self._tb_writer is not None:
            for key, value in scalars.items():
                self._tb_writer.add_scalar(key, value, global_step=int(step))
            self._tb_writer.flush()
        if self._wandb_run is not None:
            self._wandb_run.log(scalars, step=int(step))
        return clean

    def _close_sinks(self) -> None:
        if self._tb_writer is not None:
            self._tb_writer.close()
            self._tb_writer = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def close(self) -> None:
        """Flush and close every sink; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._close_sinks()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(raw line, record) pairs of a metrics file; a cut-off last line is dropped silently."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    parsed = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            # The last line being cut off is the expected trace of a crash mid-write; anything
            # else is damage worth mentioning, but should not stop plots or a resume.
            if i != len(lines) - 1:
                warnings.warn(f"{path}: skipping unreadable line {i + 1}", stacklevel=3)
            continue
        parsed.append((line, record))
    return parsed


def read_metrics(path_or_run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl (or of that file itself); [] if there is none."""
    return [record for _, record in _parse_lines(_metrics_path(path_or_run_dir))]


def truncate_metrics(run_dir: str | os.PathLike[str], max_env_steps: int) -> int:
    """Drop records with `env_steps` > `max_env_steps`; returns how many were dropped.

    On resume from a checkpoint taken at `max_env_steps`, later records describe training that
    is about to be redone. The file is rewritten atomically; kept lines are kept byte for byte.
    """
    path = _metrics_path(run_dir)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line, record in _parse_lines(path):
        steps = record.get("env_steps")
        if _is_number(steps) and steps > max_env_steps:
            dropped += 1
        else:
            kept.append(line + "\n")
    atomic_write_bytes(path, "".join(kept).encode("utf-8"))
    return dropped


def evaluation_report(
    *,
    env: str,
    run_dir: Path,
    checkpoint: Path,
    env_steps: int,
    backend: str,
    returns: np.ndarray,
) -> dict[str, Any]:
    """What `reppo eval --json` prints, from the (seeds, episodes) returns of either backend."""
    returns = np.asarray(returns, dtype=np.float64)
    return {
        "env": env,
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint),
        "env_steps": env_steps,
        "backend": backend,
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "episodes": int(returns.size),
        "per_seed_mean_return": [float(x) for x in returns.mean(axis=1)],
        "returns": [float(x) for x in returns.reshape(-1)],
    }


def take_last_record(run_dir: Path, env_steps: int) -> dict[str, Any] | None:
    """Remove the metrics record at `env_steps` (the last one) from metrics.jsonl and return it,
    so that it can be logged again with the evaluation that was skipped; None if there is
    none."""
    last = next((r for r in reversed(read_metrics(run_dir)) if r.get("env_steps") == env_steps),
                None)
    if last is not None:
        truncate_metrics(run_dir, env_steps - 1)
    return last
