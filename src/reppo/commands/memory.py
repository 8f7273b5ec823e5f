"""`reppo memory`: its flags, the report it prints and writes; the figures come from
`reppo.experiments.memory`."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from reppo.errors import UserError
from reppo.experiments.memory import fasttd3 as fasttd3_memory
from reppo.experiments.memory.measured import measure
from reppo.experiments.memory.storage import (
    REPLAY_ASSUMPTION,
    REPLAY_CAPACITIES,
    Storage,
    replay_buffer_bytes,
    rollout_storage,
)

# Fields `--set` may not change: the task has its own flag, and the figures are per seed.
_FIXED = {"env": "--env", "num_seeds": "(the figures are per seed)",
          "backend": "(the JAX backend is measured)"}


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
            raise UserError(
                f"{args.env} is a ManiSkill3 task; reppo memory measures the JAX backend on "
                f"Playground tasks ({', '.join(DMC_TASKS[:3])}, ...)"
            )
    fields = {f.name for f in dataclasses.fields(Config)}
    overrides: dict[str, Any] = {}
    for pair in args.overrides:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in fields:
            raise UserError(f"--set {pair!r} is not FIELD=VALUE with a config field; "
                              "`reppo train --help` lists the fields")
        if name in _FIXED:
            raise UserError(f"--set {name} cannot be changed here {_FIXED[name]}")
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

    m = rep["measured"]
    lines += fasttd3_memory.format_section(rep.get("fasttd3", []))
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
    from reppo.experiments.baselines.hyperparameters import FASTTD3

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
        raise UserError(f"{args.json} already exists; pick another --json path or delete it")
    if args.measure_steps is not None and args.measure_steps < 0:
        raise UserError(f"--measure-steps must be >= 0, got {args.measure_steps}")
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
            raise UserError(f"{args.json} appeared while measuring; nothing was written "
                              "there") from None
        print(f"wrote {args.json}")
    return 0
