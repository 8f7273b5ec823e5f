"""A multi-process JAX run on the CPU: two `reppo train` processes (one device each, Gloo
between them) train one run, written by process 0 alone, and compute exactly what one process
with two (forced) devices computes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from reppo.config import ConfigError
from reppo.jax.multihost import join_processes
from reppo.runs.checkpoint import latest_checkpoint, load_checkpoint
from tests.conftest import TINY, tiny_flags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_partial_process_description_is_refused():
    with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID not set"):
        join_processes({"JAX_COORDINATOR_ADDRESS": "localhost:1234"})


def test_no_description_is_a_single_process_run():
    assert join_processes({"SLURM_STEP_NUM_TASKS": "1"}) is False


def _fresh(run_dir) -> list[str]:
    """`reppo train` arguments of a fresh tiny run (two batched seeds, two iterations)."""
    return [*tiny_flags(TINY.replace(num_seeds=2, total_steps=256)), "--run-dir", str(run_dir)]


def _train(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "reppo.cli", "train", *args],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _two_processes(args: list[str]) -> list[tuple[int, str, str]]:
    port = _free_port()
    procs = [
        _train(args, {
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i),
        })
        for i in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        results.append((proc.returncode, out, err))
    return results


# CI's tier checks the data-parallel program on two devices of one process
# (tests/jax/test_sharding.py) and a run over two processes with the torch backend.
@pytest.mark.multiprocess
@pytest.mark.extended
@pytest.mark.timeout(1800)
def test_two_processes_train_one_run_like_two_devices(tmp_path):
    results = _two_processes(_fresh(tmp_path / "multi"))
    for code, _, err in results:
        assert code == 0, err[-3000:]
    leader, follower = results
    assert "final evaluation" in leader[1]
    # Process 0 reports the run; the others print nothing (Gloo itself says it connected).
    assert [line for line in follower[1].splitlines() if not line.startswith("[Gloo]")] == []
    # One process with two forced CPU devices: the same program, the same arrays.
    single = _train([*_fresh(tmp_path / "single"), "--num-devices", "2"],
                    {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    _, err = single.communicate(timeout=900)
    assert single.returncode == 0, err[-3000:]
    multi_arrays, _ = load_checkpoint(latest_checkpoint(tmp_path / "multi"))
    single_arrays, _ = load_checkpoint(latest_checkpoint(tmp_path / "single"))
    assert sorted(multi_arrays) == sorted(single_arrays)
    for name, value in single_arrays.items():
        np.testing.assert_array_equal(multi_arrays[name], value, err_msg=name)
    # The two processes resume and extend their run.
    results = _two_processes(["--resume", str(tmp_path / "multi"), "--total-steps", "512"])
    for code, _, err in results:
        assert code == 0, err[-3000:]
    _, metadata = load_checkpoint(latest_checkpoint(tmp_path / "multi"))
    assert metadata["env_steps"] == 512
