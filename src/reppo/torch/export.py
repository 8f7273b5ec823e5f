"""`reppo export DIR --onnx PATH`: the deterministic policy as an ONNX graph.

The graph maps a batch of raw observations (batch, obs_size) to actions (batch, action_size)
in [-1, 1]: the run's observation normalization (running mean/variance, clipped to +-10) is
baked in as constants, followed by the actor and tanh(mean). Runs of either backend export the
same way.

The model is built in memory, with its weights inside the one .onnx file (no external data
file) and `metadata_props` saying what it is (`onnx_metadata`), and checked with onnxruntime
against the torch policy on random observations. Only then is it written: to a temporary file
in the target's directory, given the mode a plain open() would (the umask's), fsynced and
linked into place, never replacing a file. A mismatch, a full disk or an unwritable directory
leaves nothing behind; the directory is checked for writability before the export starts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reppo._version import __version__
from reppo.runs import CheckpointError, atomic_write_bytes
from reppo.runs.outputs import check_output_path, output_error
from reppo.torch.policy import SavedPolicy, load_policy

_CHECK_BATCH = 64
_TOLERANCE = 1e-4
# Protobuf cannot serialize a model of 2 GiB or more in one piece; no REPPO policy comes close.
_MAX_BYTES = 2**31 - 1


def _missing(name: str) -> CheckpointError:
    return CheckpointError(
        f"exporting to ONNX needs the {name} package: pip install -e \".[export]\""
    )


def _export_packages() -> tuple[Any, Any]:
    """onnx and onnxruntime, after checking that each package the export needs is installed
    (onnxscript is what torch's exporter writes the graph with)."""
    import importlib.util

    for name in ("onnx", "onnxscript", "onnxruntime"):
        if importlib.util.find_spec(name) is None:
            raise _missing(name)
    import onnx
    import onnxruntime

    return onnx, onnxruntime


def onnx_metadata(saved: SavedPolicy, seed_index: int) -> dict[str, str]:
    """The `metadata_props` of an exported policy (ONNX metadata values are strings; lists
    are JSON)."""
    config = saved.config
    n = saved.action_size
    return {
        "producer": "reppo",
        "reppo_version": __version__,
        "env": config.env,
        "backend": saved.backend,  # the backend the run was trained with
        "obs_size": str(saved.obs_size),
        "action_size": str(n),
        "action_low": json.dumps([-1.0] * n),
        "action_high": json.dumps([1.0] * n),
        "action_bounds": "the policy emits actions in [-1, 1] per dimension (tanh of the "
                         "Gaussian mean), the range the env was trained with",
        "normalize_obs": "true" if config.normalize_obs else "false",
        "obs_normalization": (
            "included: the run's running mean/variance, clipped to +-10; feed raw observations"
            if config.normalize_obs else "none: the run trained on raw observations"
        ),
        "inputs": f"obs: float32 (batch, {saved.obs_size})",
        "outputs": f"action: float32 (batch, {n})",
        "env_steps": str(saved.env_steps),
        "checkpoint": saved.checkpoint.name,
        "seed_index": str(seed_index),
        "num_seeds": str(len(saved.policies)),
        "seed": str(config.seed + seed_index),
    }


def export_onnx(
    run_dir: Path,
    path: Path,
    *,
    checkpoint: Path | None = None,
    seed_index: int = 0,
    opset: int = 18,
) -> dict[str, Any]:
    """Write the policy of seed `seed_index` of `run_dir` to `path`; returns what was checked."""
    onnx, ort = _export_packages()
    path = Path(path)
    # Before the slow part: an existing file, a missing, read-only or full directory.
    check_output_path(path, "--onnx")
    saved = load_policy(run_dir, checkpoint)
    if not 0 <= seed_index < len(saved.policies):
        raise CheckpointError(
            f"--seed-index {seed_index} is out of range: the run has {len(saved.policies)} "
            "seed(s)"
        )
    policy = saved.policies[seed_index].cpu().eval()
    metadata = onnx_metadata(saved, seed_index)
    data = _onnx_model(onnx, policy, saved, metadata, opset, path)
    error = _check_in_onnxruntime(ort, data, policy, saved.obs_size)
    _write_new_file(path, data)
    return {
        "path": str(path),
        "obs_size": saved.obs_size,
        "action_size": saved.action_size,
        "max_abs_error": error,
        "checkpoint": str(saved.checkpoint),
        "env_steps": saved.env_steps,
        "trained_with": saved.backend,
        "normalize_obs": saved.config.normalize_obs,
        "metadata": metadata,
    }


def _onnx_model(onnx: Any, policy: Any, saved: SavedPolicy, metadata: dict[str, str],
                opset: int, path: Path) -> bytes:
    """The serialized ONNX model of `policy`, with its metadata, in memory."""
    example = torch.zeros(1, saved.obs_size)
    # The exporter logs a line per optional op library it does not find (torchvision, ...).
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    program = torch.onnx.export(
        policy,
        (example,),
        None,  # kept in memory: the weights stay inside the one file written below
        input_names=["obs"],
        output_names=["action"],
        dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
        opset_version=opset,
        dynamo=True,
        verbose=False,
    )
    model = program.model_proto
    onnx.helper.set_model_props(model, metadata)
    model.doc_string = (
        f"REPPO policy for {saved.config.env}: obs (batch, {saved.obs_size}) -> action "
        f"(batch, {saved.action_size}) in [-1, 1]"
    )
    if model.ByteSize() > _MAX_BYTES:
        raise CheckpointError(f"the policy is too large for one ONNX file; {path} not written")
    return model.SerializeToString()


def _check_in_onnxruntime(ort: Any, data: bytes, policy: Any, obs_size: int) -> float:
    """The largest difference between the graph in onnxruntime and the torch policy on
    observations spread around the normalization's statistics; refused above tolerance."""
    rng = np.random.default_rng(0)
    stats_scale = (
        np.sqrt(policy.obs_var.numpy()) if policy.normalize_obs else np.ones(obs_size)
    )
    stats_mean = policy.obs_mean.numpy() if policy.normalize_obs else 0.0
    obs = (stats_mean + 3.0 * stats_scale * rng.standard_normal(
        (_CHECK_BATCH, obs_size))).astype(np.float32)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(["action"], {"obs": obs})[0]
    with torch.no_grad():
        want = policy(torch.from_numpy(obs)).numpy()
    error = float(np.max(np.abs(got - want)))
    if not error <= _TOLERANCE:
        raise CheckpointError(
            f"the exported graph differs from the torch policy by {error:.2e} "
            f"(> {_TOLERANCE}); nothing was written"
        )
    return error


def _write_new_file(path: Path, data: bytes) -> None:
    try:
        # Temp file beside `path`, umask mode, fsync, hard link (never replaces), temp removed.
        atomic_write_bytes(path, data, overwrite=False)
    except FileExistsError:
        raise CheckpointError(
            f"--onnx {path} appeared while the policy was being exported; nothing was "
            "replaced, pick another path"
        ) from None
    except OSError as err:
        raise output_error(path, err, "--onnx") from None
