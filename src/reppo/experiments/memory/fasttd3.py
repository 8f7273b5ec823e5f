"""FastTD3's memory, for `reppo memory`: the bytes of its replay buffer as the real code lays it
out (`jax.eval_shape` of `baselines.fasttd3.buffer.init_buffer` for the preset's settings), and the
measured peak of a short FastTD3 run with each buffer in a fresh process (the buffer allocated,
`learning_starts` iterations of collection and two of updates).

As for REPPO's measurement (`reppo.experiments.memory.measured`): on a GPU the device allocator's
`peak_bytes_in_use`; on a CPU the process's RSS before the iterations (set up, buffer
allocated, compiled), its peak during them (Linux's reset high-water mark) and over the whole
process. `python -m reppo.experiments.memory.fasttd3 --algo A --env E --preset P` is the
measuring child; it prints one line starting with `FASTTD3_MEMORY ` followed by JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

_RESULT_TAG = "FASTTD3_MEMORY "
UPDATE_ITERATIONS = 2  # measured iterations with updates, after learning_starts without


def buffer_arrays(algo: str, env: str, preset: str, total_steps: int,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The replay buffer's arrays (name, shape, dtype, bytes) for `algo` under `preset`, from
    the shapes of the real code: nothing is allocated."""
    import jax
    import numpy as np

    from reppo.envs.registry import env_spec
    from reppo.experiments.baselines.fasttd3 import buffer as B
    from reppo.experiments.baselines.fasttd3.agent import preset_hyperparameters

    hp = preset_hyperparameters(algo, preset, total_steps, overrides)
    spec = env_spec(env, impl="jax")
    shapes = jax.eval_shape(
        lambda: B.init_buffer(hp.buffer_per_env, hp.num_envs, spec.obs_size, spec.action_size))
    arrays = [
        {"name": f"buffer.{name}", "shape": [int(d) for d in x.shape],
         "dtype": np.dtype(x.dtype).name,
         "bytes": int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize}
        for name, x in zip(B.ReplayBuffer._fields, shapes, strict=True)
    ]
    return {
        "algo": algo, "preset": preset, "num_envs": hp.num_envs,
        "transitions": hp.buffer_per_env * hp.num_envs, "per_env": hp.buffer_per_env,
        "bytes": sum(a["bytes"] for a in arrays), "arrays": arrays,
    }


def measure_in_this_process(algo: str, env: str, preset: str, total_steps: int,
                            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    import time

    import jax
    import numpy as np

    from reppo.envs.registry import make_env
    from reppo.experiments.baselines.fasttd3.agent import FastTD3, preset_hyperparameters
    from reppo.experiments.memory.peak import measure_peak

    start = time.perf_counter()
    hp = preset_hyperparameters(algo, preset, total_steps, overrides)
    agent = FastTD3(hp, make_env(env, hp.num_envs, impl="jax"))
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    # Donated as in training (`baselines.fasttd3.run`), so the buffer is not held twice.
    run = jax.jit(agent.run, donate_argnums=0).lower(state, np.int32(1)).compile()
    jax.block_until_ready(state)
    iterations = hp.learning_starts + UPDATE_ITERATIONS
    done: dict[str, Any] = {}

    def work() -> None:
        done["state"] = run(state, np.int32(iterations))
        jax.block_until_ready(done["state"])

    result = measure_peak(work)
    final = done["state"]
    result.update(algo=algo, iterations=iterations, updates=int(final.updates),
                  env_steps=iterations * hp.num_envs, seconds=time.perf_counter() - start,
                  buffer_bytes=final.buffer.nbytes())
    return result


def measure(algo: str, env: str, preset: str, total_steps: int,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """`measure_in_this_process` in a fresh Python process, so nothing else is counted."""
    command = [sys.executable, "-m", "reppo.experiments.memory.fasttd3", "--algo", algo,
               "--env", env, "--preset", preset, "--total-steps", str(total_steps),
               "--overrides", json.dumps(overrides or {})]
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace",
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise RuntimeError(f"the FastTD3 measuring process failed (exit {proc.returncode}): "
                       + " | ".join(tail))


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def format_section(entries: list[dict[str, Any]]) -> list[str]:
    """Lines for `reppo memory`: each FastTD3 buffer's bytes and, where measured, its run."""
    if not entries:
        return []
    first = entries[0]["buffer"]
    lines = ["", f"FastTD3 ({first['preset']} preset, {first['num_envs']} envs), replay buffer "
                 "as allocated by the real code:"]
    for entry in entries:
        buf = entry["buffer"]
        lines.append(f"  {buf['algo']:<14} {buf['transitions']:>12,} transitions "
                     f"({buf['per_env']:,} per env)  {buf['bytes']:>15,} bytes  "
                     f"{_mib(buf['bytes']):>9} MiB")
    for entry in entries:
        m = entry.get("measured")
        if m is None:
            continue
        lines.append(f"  measured, {m['algo']}: {m['iterations']} iterations "
                     f"({m['updates']} updates) in a fresh process on {m['platform']}:")
        if m["kind"] == "device peak_bytes_in_use":
            lines.append(f"    device peak_bytes_in_use {_mib(m['peak_bytes'])} MiB (in use "
                         f"before the iterations: {_mib(m['before_bytes'])} MiB)")
            continue
        if m["kind"] == "process RSS":
            lines.append(f"    peak RSS during the iterations      {_mib(m['peak_bytes']):>10} MiB")
        lines.append(f"    RSS before them (buffer allocated)  {_mib(m['before_bytes']):>10} MiB")
        lines.append(f"    peak RSS of the whole process       "
                     f"{_mib(m['process_peak_bytes']):>10} MiB  (compilation included)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reppo.experiments.memory.fasttd3")
    parser.add_argument("--algo", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--total-steps", type=int, default=50_000_000)
    parser.add_argument("--overrides", default="{}", help="hyperparameters, as JSON")
    args = parser.parse_args(argv)
    result = measure_in_this_process(args.algo, args.env, args.preset, args.total_steps,
                                     json.loads(args.overrides))
    print(_RESULT_TAG + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
