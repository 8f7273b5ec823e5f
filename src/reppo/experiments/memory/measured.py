"""The measured run: a short REPPO run in a fresh process (this module is that process's entry
point), its peak memory printed as one `REPPO_MEMORY {json}` line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from reppo.experiments.memory.peak import measure_peak

_RESULT_TAG = "REPPO_MEMORY "


def measure_in_this_process(config: Any, iterations: int) -> dict[str, Any]:
    """Train `iterations` iterations from scratch and report the peak memory while training.

    Setting up (imports, the simulator, initialization) and compiling come first. On a GPU
    the result is the allocator's peak; on a CPU the process's RSS before the iterations, its
    peak during them (Linux: the reset high-water mark, so XLA's compiler, which can take more
    memory than training on small configs, is not counted) and its peak over the whole run.
    """
    import time

    import jax

    from reppo.jax.trainer import JaxTrainer

    start = time.perf_counter()
    trainer = JaxTrainer(config)
    state = trainer.init_state()
    program = trainer.chunk_fn(state, iterations)  # compiled here

    def chunk(s):
        return program(s, jax.numpy.asarray(iterations, jax.numpy.int32))

    jax.block_until_ready(state)
    done: dict[str, Any] = {}

    def work() -> None:
        done["out"] = chunk(state)
        jax.block_until_ready(done["out"])

    result = measure_peak(work)
    result.update(iterations=iterations, env_steps=iterations * config.steps_per_iteration,
                  seconds=time.perf_counter() - start)
    return result


def measure(config: Any, iterations: int) -> dict[str, Any]:
    """`measure_in_this_process` in a fresh Python process, so nothing else is counted."""
    command = [sys.executable, "-m", "reppo.experiments.memory.measured", "--measure",
               json.dumps(config.to_dict()), "--iterations", str(iterations)]
    proc = subprocess.run(command, capture_output=True, text=True, errors="replace",
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise RuntimeError(
        f"the measuring process failed (exit {proc.returncode}): " + " | ".join(tail)
    )


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reppo.experiments.memory.measured")
    parser.add_argument("--measure", required=True, metavar="CONFIG_JSON")
    parser.add_argument("--iterations", type=int, default=1)
    args = parser.parse_args(argv)
    from reppo.config import Config

    cache = os.environ.get("REPPO_JAX_CACHE", "")
    if cache and cache.lower() not in ("0", "off", "none"):
        # Only when asked for: a cache hit skips compilation, which lowers the CPU peak RSS.
        import jax

        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    result = measure_in_this_process(Config.from_dict(json.loads(args.measure)), args.iterations)
    print(_RESULT_TAG + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
