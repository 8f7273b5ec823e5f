"""`reppo memory`: what REPPO keeps per iteration against what an off-policy replay buffer keeps.

Paper section 4.6 compares REPPO with FastTD3 holding a replay buffer of 10,485,760 or 32,768
transitions. This command computes, for one task and preset:

- REPPO's rollout storage: the arrays one iteration collects and trains on, with shapes taken
  from the real code (`jax.eval_shape` of `Agent.rollout` and of the TD(lambda) pass, so nothing
  is computed and nothing is assumed about the layout);
- the minibatch copy that `Agent.update` gathers from that storage once per epoch (transient);
- the bytes of an off-policy replay buffer of each size on the same task, assuming that every
  transition stores obs, next obs, action, reward, a done and a truncation flag, all float32;
- for reference, REPPO's parameters and optimizer state;
- FastTD3's replay buffer with each of those sizes as its real code allocates it, and the
  measured peak of a short FastTD3 run with each (`reppo.experiments.fasttd3_memory`);
- the measured peak memory of a short REPPO run in a fresh process, after set-up and
  compilation: the device allocator's `peak_bytes_in_use` on a GPU; on a CPU (where JAX has no
  memory statistics) the process's RSS before the iterations and its peak during them (Linux's
  reset high-water mark) and over the whole process (`getrusage`). RSS also counts Python,
  JAX, the simulator and memory the process freed but kept.

`python -m reppo.experiments.memory --measure CONFIG_JSON --iterations N` is the measuring
child; it prints one line starting with `REPPO_MEMORY ` followed by JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reppo.experiments.peak_memory import measure_peak

REPLAY_CAPACITIES: tuple[int, ...] = (10_485_760, 32_768)
FLOAT32_BYTES = 4
# Per replay transition: obs, next obs, action, reward, done, truncation.
REPLAY_ASSUMPTION = (
    "a replay transition holds obs, next obs, action, reward, done and truncation, float32: "
    "4 * (2 * obs + action + 3) bytes"
)
_RESULT_TAG = "REPPO_MEMORY "
# Fields `--set` may not change: the task has its own flag, and the figures are per seed.
_FIXED = {"env": "--env", "num_seeds": "(the figures are per seed)",
          "backend": "(the JAX backend is measured)"}


def _user_error(message: str) -> Exception:
    from reppo.errors import UserError

    return UserError(message)


# ---- byte counts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int

    @classmethod
    def of(cls, name: str, x: Any) -> ArrayInfo:
        import numpy as np

        shape = tuple(int(d) for d in x.shape)
        dtype = np.dtype(x.dtype)
        return cls(name, shape, dtype.name, math.prod(shape) * dtype.itemsize)


def replay_buffer_bytes(obs_size: int, action_size: int, capacity: int) -> int:
    """Bytes of a float32 replay buffer of `capacity` transitions (see REPLAY_ASSUMPTION)."""
    return capacity * FLOAT32_BYTES * (2 * obs_size + action_size + 3)


@dataclass(frozen=True)
class Storage:
    """REPPO's per-iteration arrays for one config, from the shapes of the real code."""

    obs_size: int
    action_size: int
    rollout: tuple[ArrayInfo, ...]  # what one iteration collects and keeps
    shuffled: tuple[ArrayInfo, ...]  # the per-epoch minibatch gather of the update
    train_state: int  # bytes of parameters, optimizer state, temperatures, obs statistics

    @property
    def rollout_bytes(self) -> int:
        return sum(a.nbytes for a in self.rollout)

    @property
    def shuffled_bytes(self) -> int:
        return sum(a.nbytes for a in self.shuffled)


def rollout_storage(config: Any) -> Storage:
    """Shapes of one iteration's arrays for `config` (one seed), traced but not computed."""
    import jax

    from reppo.envs import make_env
    from reppo.jax import losses as L
    from reppo.jax.agent import Agent

    env = make_env(config.env, config.num_envs, impl=config.impl)
    agent = Agent.create(config, env)
    key = jax.random.PRNGKey(0)
    state = jax.eval_shape(agent.init, key)
    _, _, data, raw_obs, _ = jax.eval_shape(agent.rollout, state, key)
    target = jax.eval_shape(
        lambda d: L.soft_td_lambda(d.soft_reward, d.next_value, d.terminated, d.truncated,
                                   agent.gamma, config.lam),
        data,
    )
    fields = [ArrayInfo.of(f"rollout.{name}", x) for name, x in data._asdict().items()]
    target_info = ArrayInfo.of("td_lambda_target", target)
    # Agent.iteration keeps the raw observations for the normalizer update, and Agent.update
    # gathers every transition field and the target into shuffled minibatches each epoch.
    rollout = (*fields, ArrayInfo.of("raw_obs", raw_obs), target_info)
    shuffled = tuple(
        ArrayInfo(f"shuffled.{a.name.split('.')[-1]}", a.shape, a.dtype, a.nbytes)
        for a in (*fields, target_info)
    )
    learner = [state.actor, state.behaviour, state.critic, state.temps, state.actor_opt,
               state.critic_opt, state.temp_opt, state.obs_stats]
    train_state = sum(ArrayInfo.of("", x).nbytes for x in jax.tree_util.tree_leaves(learner))
    return Storage(env.spec.obs_size, env.spec.action_size, rollout, shuffled, train_state)


# ---- the measured run (a child process) ------------------------------------------------------


def measure_in_this_process(config: Any, iterations: int) -> dict[str, Any]:
    """Train `iterations` iterations from scratch and report the peak memory while training.

    Setting up (imports, the simulator, initialization) and compiling come first. On a GPU
    the result is the allocator's peak; on a CPU the process's RSS before the iterations, its
    peak during them (Linux: the reset high-water mark, so XLA's compiler, which can take more
    memory than training on small configs, is not counted) and its peak over the whole run.
    """
    import time

    import jax

    from reppo.jax.train import JaxTrainer

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
    command = [sys.executable, "-m", "reppo.experiments.memory", "--measure",
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


# ---- the command -----------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Bytes that REPPO's rollout storage holds per iteration (from the real array shapes) "
        "against an off-policy replay buffer of 10,485,760 and 32,768 transitions on the same "
        "task, and the measured peak memory of a short REPPO run (JAX backend)."
    )
    parser.add_argument("--env", default="CheetahRun", help="Playground task (default CheetahRun)")
    parser.add_argument("--preset", default="paper",
                        help="REPPO preset whose num_envs x num_steps is measured (default paper)")
    parser.add_argument("--measure-steps", type=int, default=None, metavar="N",
                        help="env steps of the measured run, rounded up to whole iterations "
                             "(default: one iteration; 0: do not measure)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="change a config field (repeatable)")
    parser.add_argument("--fasttd3-preset", default="playground",
                        choices=("playground", "cpu", "none"),
                        help="FastTD3 preset whose buffers and runs are measured (default "
                             "playground: 1024 envs, batches of 32,768; none: leave FastTD3 "
                             "out)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the figures as JSON to PATH (never overwritten)")


def _config(args: argparse.Namespace) -> Any:
    import dataclasses

    from reppo.config import Config, coerce_field
    from reppo.envs.registry import DMC_TASKS
    from reppo.presets import get_preset

    if args.env not in DMC_TASKS:
        from reppo.envs.maniskill import MANISKILL_TASKS

        if args.env in MANISKILL_TASKS:
            raise _user_error(
                f"{args.env} is a ManiSkill3 task; reppo memory measures the JAX backend on "
                f"Playground tasks ({', '.join(DMC_TASKS[:3])}, ...)"
            )
    fields = {f.name for f in dataclasses.fields(Config)}
    overrides: dict[str, Any] = {}
    for pair in args.overrides:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            raise _user_error(f"--set {pair!r} is not FIELD=VALUE with a config field; "
                              "`reppo train --help` lists the fields")
        if name in _FIXED:
            raise _user_error(f"--set {name} cannot be changed here {_FIXED[name]}")
        overrides[name] = coerce_field(name, value.strip())
    return get_preset(args.preset, env=args.env).replace(backend="jax", num_seeds=1, **overrides)


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def _table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(f"{cell:>{w}}" if c in right else f"{cell:<{w}}"
                       for c, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def report(config: Any, preset: str, storage: Storage,
           measured: dict[str, Any] | None) -> dict[str, Any]:
    """Everything the command prints, as one JSON-ready dict."""
    replay = [
        {"transitions": n,
         "bytes": replay_buffer_bytes(storage.obs_size, storage.action_size, n)}
        for n in REPLAY_CAPACITIES
    ]
    return {
        "env": config.env,
        "preset": preset,
        "num_envs": config.num_envs,
        "num_steps": config.num_steps,
        "transitions_per_iteration": config.steps_per_iteration,
        "obs_size": storage.obs_size,
        "action_size": storage.action_size,
        "rollout_bytes": storage.rollout_bytes,
        "rollout_arrays": [
            {"name": a.name, "shape": list(a.shape), "dtype": a.dtype, "bytes": a.nbytes}
            for a in storage.rollout
        ],
        "shuffled_copy_bytes": storage.shuffled_bytes,
        "train_state_bytes": storage.train_state,
        "replay_buffers": replay,
        "replay_assumption": REPLAY_ASSUMPTION,
        "measured": measured,
    }


def format_report(rep: dict[str, Any]) -> str:
    n = rep["transitions_per_iteration"]
    lines = [
        f"memory on {rep['env']}, preset {rep['preset']}: obs {rep['obs_size']}, action "
        f"{rep['action_size']}; {rep['num_envs']} envs x {rep['num_steps']} steps = {n:,} "
        "transitions per iteration; bytes per seed",
        "",
    ]
    rows: list[tuple[str, ...]] = [("what", "transitions", "bytes", "MiB")]
    rows.append(("REPPO rollout storage (per iteration)", f"{n:,}", f"{rep['rollout_bytes']:,}",
                 _mib(rep["rollout_bytes"])))
    rows.append(("  + shuffled minibatch copy (per epoch)", f"{n:,}",
                 f"{rep['shuffled_copy_bytes']:,}", _mib(rep["shuffled_copy_bytes"])))
    for buf in rep["replay_buffers"]:
        rows.append((f"replay buffer, {buf['transitions']:,} transitions",
                     f"{buf['transitions']:,}", f"{buf['bytes']:,}", _mib(buf["bytes"])))
    rows.append(("REPPO parameters + optimizer state", "-", f"{rep['train_state_bytes']:,}",
                 _mib(rep["train_state_bytes"])))
    lines += _table(rows, right={1, 2, 3})
    lines += ["", "REPPO rollout arrays (time x envs x ...):"]
    arrays = [("array", "shape", "dtype", "bytes")] + [
        (a["name"], "x".join(map(str, a["shape"])), a["dtype"], f"{a['bytes']:,}")
        for a in rep["rollout_arrays"]
    ]
    lines += ["  " + line for line in _table(arrays, right={3})]
    lines += ["", f"assumed: {rep['replay_assumption']}"]
    from reppo.experiments.fasttd3_memory import format_section

    m = rep["measured"]
    lines += format_section(rep.get("fasttd3", []))
    if m is not None:
        where = m["platform"] if m["device"] == m["platform"] else f"{m['platform']} {m['device']}"
        lines += ["", f"measured in a fresh process on {where}, {m['iterations']} iteration(s) = "
                      f"{m['env_steps']:,} env steps:"]
        if m["kind"] == "device peak_bytes_in_use":
            lines.append(f"  device peak_bytes_in_use {_mib(m['peak_bytes'])} MiB (in use "
                         f"before the iterations: {_mib(m['before_bytes'])} MiB)")
        else:
            rows = []
            if m["kind"] == "process RSS":
                rows.append(("peak RSS during the iterations", m["peak_bytes"], ""))
            rows += [
                ("RSS before them (set up, compiled)", m["before_bytes"], ""),
                ("peak RSS of the whole process", m["process_peak_bytes"],
                 "  (compilation included)"),
            ]
            lines += [f"  {label:<36}{_mib(n):>10} MiB{note}" for label, n, note in rows]
            lines.append("  (JAX keeps no memory statistics on CPU; RSS also counts Python, "
                         "JAX, the simulator and memory the compiler freed but the process kept)")
    return "\n".join(lines)


def _fasttd3(config: Any, preset: str, measure_runs: bool) -> list[dict[str, Any]]:
    """Each FastTD3 buffer on the task: its arrays and, if asked, a measured run with it."""
    from reppo.experiments import fasttd3_memory
    from reppo.experiments.baseline_hyperparameters import FASTTD3

    if preset == "none":
        return []
    entries = []
    for algo in FASTTD3:
        entry: dict[str, Any] = {"buffer": fasttd3_memory.buffer_arrays(
            algo, config.env, preset, config.total_steps)}
        if measure_runs:
            print(f"measuring a short {algo} run ({preset} preset) in a fresh process ...",
                  flush=True)
            entry["measured"] = fasttd3_memory.measure(algo, config.env, preset,
                                                       config.total_steps)
        entries.append(entry)
    return entries


def run(args: argparse.Namespace) -> int:
    from reppo.runs import atomic_write_json

    if args.json is not None and args.json.exists():
        raise _user_error(f"{args.json} already exists; pick another --json path or delete it")
    if args.measure_steps is not None and args.measure_steps < 0:
        raise _user_error(f"--measure-steps must be >= 0, got {args.measure_steps}")
    config = _config(args)
    storage = rollout_storage(config)
    measured = None
    steps = config.steps_per_iteration if args.measure_steps is None else args.measure_steps
    if steps > 0:
        iterations = max(1, math.ceil(steps / config.steps_per_iteration))
        print(f"measuring {iterations} iteration(s) of {config.env} in a fresh process ...",
              flush=True)
        try:
            measured = measure(config, iterations)
        except RuntimeError as err:
            print(f"reppo: error: {err}", file=sys.stderr)
            return 1
    rep = report(config, args.preset, storage, measured)
    try:
        rep["fasttd3"] = _fasttd3(config, args.fasttd3_preset, measure_runs=steps > 0)
    except RuntimeError as err:
        print(f"reppo: error: {err}", file=sys.stderr)
        return 1
    print(format_report(rep))
    if args.json is not None:
        try:
            atomic_write_json(args.json, rep, overwrite=False)
        except FileExistsError:
            raise _user_error(f"{args.json} appeared while measuring; nothing was written "
                              "there") from None
        print(f"wrote {args.json}")
    return 0


def _child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reppo.experiments.memory")
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
