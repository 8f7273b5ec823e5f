"""The seam between the training loop and the backends: what a backend provides (`Trainer`),
what it reports (`EvalReport`), what a run returns (`TrainResult`), and the error that stops a
run whose numbers are no longer finite.

`reppo.loop.runner` (the loop) and the backends (`reppo.jax.trainer`, `reppo.torch.trainer`) both
import this module and not each other, except that the loop builds a backend's trainer by
name (`reppo.loop.runner.make_trainer`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from reppo.config import Config
from reppo.envs.eval_seed import eval_seed  # noqa: F401  (the seam names it for the backends)
from reppo.runs.metrics import (
    EVAL_RETURN,
    EVAL_RETURN_PER_SEED,
    EVAL_RETURN_STD,
    EVAL_STOCHASTIC_RETURN,
    EVAL_STOCHASTIC_RETURN_STD,
)


class StateMismatchError(ValueError):
    """Checkpoint arrays that do not fit the trainer (another config or version wrote them)."""


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, parameter or observation."""


@dataclass
class EvalReport:
    """Evaluation of every seed: arrays of shape (num_seeds, episodes).

    `returns` are the deterministic policy's (action tanh(mean)); `stochastic_returns`, where
    given, the sampling policy's on the same episodes (the same initial states).
    """

    returns: np.ndarray
    success_once: np.ndarray | None = None  # tasks with a success condition (ManiSkill)
    success_at_end: np.ndarray | None = None
    stochastic_returns: np.ndarray | None = None

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            EVAL_RETURN: float(self.returns.mean()),
            EVAL_RETURN_STD: float(self.returns.std()),
            EVAL_RETURN_PER_SEED: [float(x) for x in self.returns.mean(axis=1)],
            "eval/episodes": int(self.returns.size),
        }
        if self.stochastic_returns is not None:
            out[EVAL_STOCHASTIC_RETURN] = float(self.stochastic_returns.mean())
            out[EVAL_STOCHASTIC_RETURN_STD] = float(self.stochastic_returns.std())
        if self.success_once is not None:
            out["eval/success_once"] = float(self.success_once.mean())
        if self.success_at_end is not None:
            out["eval/success_at_end"] = float(self.success_at_end.mean())
        return out


class SingleProcess:
    """The processes of a run trained by one process: this one. A backend whose trainer runs
    one run over several processes gives it a `processes` object with the same interface
    (`reppo.torch.distributed.TorchProcesses`); the loop drives both alike."""

    index = 0
    count = 1

    def share(self, value: Any) -> Any:
        """Process 0's `value` on every process."""
        return value

    def any_of(self, flag: bool) -> bool:
        """Whether `flag` is true on any process."""
        return flag

    def gather_to_leader(self, value: Any) -> list[Any] | None:
        """Every process's `value` on process 0 (None on the others)."""
        return [value]


class Trainer(Protocol):
    """What a backend provides to the loop. Metrics arrays have shape (num_seeds, iterations);
    names starting with `finite/` are booleans checked and not logged."""

    config: Config
    compile_seconds: float

    def init_state(self) -> Any: ...

    def iteration_of(self, state: Any) -> int: ...

    def run_chunk(self, state: Any, num_iterations: int) -> tuple[Any, dict[str, np.ndarray]]: ...

    def evaluate(self, state: Any) -> EvalReport: ...

    # Checkpoints: the loop writes and reads them (reppo.loop.runner) and builds their metadata; a
    # backend only turns its state into named arrays and back.
    backend: str  # "jax" or "torch": recorded in each checkpoint; resuming needs the same one

    def policy_sizes(self) -> tuple[int, int]:
        """(obs_size, action_size): recorded so that a policy loads without building the env."""
        ...

    def state_arrays(self, state: Any) -> dict[str, np.ndarray]:
        """Everything a bit-exact resume needs, as named arrays with a leading seed axis."""
        ...

    def load_state(self, arrays: dict[str, np.ndarray], iteration: int) -> Any:
        """The state `state_arrays` was given; StateMismatchError when the arrays do not fit
        this trainer's config."""
        ...

    def device_description(self) -> dict[str, Any]: ...

    # Optional, read with getattr: a trainer that runs one run over several processes says
    # where this process stands (`process_index` of `process_count`, default 0 of 1) and gives
    # the loop its `processes` (default `SingleProcess()`). Process 0 (the leader) writes the
    # run directory; the others (followers) make the same calls in the same order and write
    # nothing. `setup_lines` (a list of str): what the loop prints before training, such as
    # the torch trainer's device and CPU threads.


@dataclass
class TrainResult:
    run_dir: Path
    env_steps: int
    iterations: int
    wall_time: float
    interrupted: bool = False
    eval_returns: np.ndarray | None = None  # (num_seeds, episodes)
    compile_seconds: float = 0.0
    sps: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_signal: int | None = None  # the signal that interrupted the run (SIGINT, SIGTERM)

    @property
    def eval_return_mean(self) -> float:
        return float(np.mean(self.eval_returns)) if self.eval_returns is not None else math.nan
