"""What the commands that load a run need to know about the backends, without importing them."""

from __future__ import annotations

import os
from pathlib import Path

from reppo.config import Config
from reppo.policy import check_torch_installed

__all__ = ["check_torch_installed", "run_backend"]


def run_backend(run_dir: Path, requested: str | None) -> str:
    """The backend that runs a saved run's policy: `requested`, else the one that trained it."""
    from reppo.runs import open_run_dir

    backend = requested or Config.from_dict(open_run_dir(run_dir)).backend
    if backend == "torch":
        check_torch_installed()
        # JAX (Playground through DLPack) must leave the GPU's memory to torch.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return backend
