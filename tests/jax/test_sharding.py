"""Data parallelism over devices: the device count, its errors, and a 2-device CPU run that
computes what the 1-device run computes and shares its checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from reppo.config import ConfigError
from reppo.jax.sharding import resolve_num_devices
from tests.conftest import TINY
from tests.fakes import STILL_ENV

ROOT = Path(__file__).resolve().parents[2]


def _devices(platform: str, count: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(platform=platform) for _ in range(count)]


def test_auto_uses_one_device_on_a_cpu():
    assert resolve_num_devices(TINY, _devices("cpu", 8)) == 1


def test_auto_uses_the_most_accelerators_that_divide_the_batch():
    assert resolve_num_devices(TINY, _devices("gpu", 8)) == 8
    # 8 envs and minibatches of 64: 3 GPUs cannot split them, 2 can.
    assert resolve_num_devices(TINY, _devices("gpu", 3)) == 2


def test_explicit_count_beyond_the_machine_is_refused():
    with pytest.raises(ConfigError, match="has 2 GPU device"):
        resolve_num_devices(TINY.replace(num_devices=4), _devices("gpu", 2))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_devices": 3}, r"num_envs \(8\) is not divisible by num_devices = 3"),
        ({"num_devices": -1}, "num_devices must be >= 0"),
        ({"num_devices": 2, "backend": "torch"}, "needs --backend jax"),
        ({"num_devices": 4, "num_envs": 4, "num_minibatches": 32},
         r"the minibatch \(2\) is not divisible"),
    ],
)
def test_config_refuses_counts_that_cannot_split_the_batch(changes, message):
    with pytest.raises(ConfigError, match=message):
        TINY.replace(**changes)


# Runs in a fresh interpreter: the forced host device count must be set before JAX starts.
TWO_DEVICES = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    import jax
    from reppo.compile_cache import enable_compilation_cache
    from reppo.config import Config
    from reppo.jax.trainer import JaxTrainer
    from reppo.loop.runner import train
    from tests.fakes import still_env

    # The run below compiles the programs of the comparison again: the cache serves them.
    enable_compilation_cache()
    assert jax.local_device_count() == 2, jax.local_devices()
    # The still env: how the batch is split does not depend on the physics, and its programs
    # build in seconds where a simulated task's take minutes.
    registered = still_env()
    registered.__enter__()
    tiny = Config.from_dict(json.loads(sys.argv[1]))
    run = Path(sys.argv[2])
    out = {}

    # The same two iterations on one device and split over two, two seeds batched.
    arrays = {}
    for devices in (1, 2):
        trainer = JaxTrainer(tiny.replace(num_devices=devices))
        state, _ = trainer.run_chunk(trainer.init_state(), 2)
        arrays[devices] = trainer.state_arrays(state)
        if devices == 2:
            out["env_sharding"] = str(state.episode_return.sharding.spec)
            out["actor_sharding"] = str(
                jax.tree_util.tree_leaves(state.actor)[0].sharding.spec)
    out["same_names"] = sorted(arrays[1]) == sorted(arrays[2])
    out["same_shapes"] = all(arrays[1][k].shape == arrays[2][k].shape for k in arrays[1])
    floats = [k for k in arrays[1] if arrays[1][k].dtype.kind == "f" and arrays[1][k].size]
    out["max_float_diff"] = max(
        float(np.max(np.abs(arrays[1][k] - arrays[2][k]))) for k in floats)
    out["ints_equal"] = all(
        np.array_equal(arrays[1][k], arrays[2][k]) for k in arrays[1] if k not in floats)

    # A 2-device run directory, resumed and extended on one device.
    two = tiny.replace(num_devices=2)
    result = train(two, run, echo=lambda _: None)
    out["first_steps"] = result.env_steps
    longer = two.replace(num_devices=1, total_steps=2 * two.total_steps)
    result = train(longer, run, resume=True, echo=lambda _: None)
    out["resumed_steps"] = result.env_steps
    out["versions_devices"] = json.loads((run / "versions.json").read_text()).get(
        "num_devices_used")
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.multiprocess
@pytest.mark.timeout(900)
def test_two_cpu_devices_compute_the_one_device_program(tmp_path):
    config = TINY.replace(num_seeds=2, total_steps=256, env=STILL_ENV)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES, json.dumps(config.to_dict()),
         str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=880, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    # The envs are split over the devices; the networks are replicated.
    assert out["env_sharding"] == "P(None, 'envs')"
    assert out["actor_sharding"] == "P()"
    # The same checkpoint arrays, equal up to the order of floating-point sums.
    assert out["same_names"] and out["same_shapes"] and out["ints_equal"]
    assert out["max_float_diff"] < 1e-3
    # A 2-device run resumes on one device.
    assert out["first_steps"] == 256
    assert out["resumed_steps"] == 512
    assert out["versions_devices"] == 2
