"""`reppo export DIR --onnx PATH`: the deterministic policy as an ONNX graph.

The graph maps a batch of raw observations (batch, obs_size) to actions (batch, action_size)
in [-1, 1]: the run's observation normalization (running mean/variance, clipped to +-10) is
baked in as constants, followed by the actor and tanh(mean). After writing, the file is loaded
with onnxruntime and checked against the torch policy on random observations; a mismatch
deletes the file and raises. Runs of either backend export the same way.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reppo.runs import CheckpointError
from reppo.torch.policy import load_policy

_CHECK_BATCH = 64
_TOLERANCE = 1e-4


def _missing(name: str) -> CheckpointError:
    return CheckpointError(
        f"exporting to ONNX needs the {name} package: pip install -e \".[torch]\""
    )


def export_onnx(
    run_dir: Path,
    path: Path,
    *,
    checkpoint: Path | None = None,
    seed_index: int = 0,
    opset: int = 18,
) -> dict[str, Any]:
    """Write the policy of seed `seed_index` of `run_dir` to `path`; returns what was checked."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise _missing("onnxruntime") from None
    path = Path(path)
    if path.exists():
        raise CheckpointError(f"{path} already exists; pick another path or delete it first")
    saved = load_policy(run_dir, checkpoint)
    if not 0 <= seed_index < len(saved.policies):
        raise CheckpointError(
            f"--seed-index {seed_index} is out of range: the run has {len(saved.policies)} "
            "seed(s)"
        )
    policy = saved.policies[seed_index].cpu().eval()
    example = torch.zeros(1, saved.obs_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the target and renamed once verified: a failed export leaves nothing.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".onnx", dir=path.parent)
    os.close(fd)
    # The exporter logs a line per optional op library it does not find (torchvision, ...).
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        torch.onnx.export(
            policy,
            (example,),
            tmp,
            input_names=["obs"],
            output_names=["action"],
            dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
        rng = np.random.default_rng(0)
        stats_scale = (
            np.sqrt(policy.obs_var.numpy()) if policy.normalize_obs else np.ones(saved.obs_size)
        )
        stats_mean = policy.obs_mean.numpy() if policy.normalize_obs else 0.0
        obs = (stats_mean + 3.0 * stats_scale * rng.standard_normal(
            (_CHECK_BATCH, saved.obs_size))).astype(np.float32)
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        got = session.run(["action"], {"obs": obs})[0]
        with torch.no_grad():
            want = policy(torch.from_numpy(obs)).numpy()
        error = float(np.max(np.abs(got - want)))
        if not error <= _TOLERANCE:
            raise CheckpointError(
                f"the exported graph differs from the torch policy by {error:.2e} "
                f"(> {_TOLERANCE}); nothing was written"
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {
        "path": str(path),
        "obs_size": saved.obs_size,
        "action_size": saved.action_size,
        "max_abs_error": error,
        "checkpoint": str(saved.checkpoint),
        "env_steps": saved.env_steps,
        "trained_with": saved.backend,
    }
