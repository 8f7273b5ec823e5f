"""How REPPO's JAX backend scales with batched seeds and envs, as ratios measured in one run.

    python benchmarks/bench_scaling.py --env CheetahRun
    python benchmarks/bench_scaling.py --env CartpoleBalance --seeds 1,2,4,8 --envs 64,128,256
    python benchmarks/bench_scaling.py --env CheetahRun --devices 2   # forced host devices
    python benchmarks/bench_scaling.py --env CartpoleBalance --seeds 1 \
        --xla-flags="--xla_cpu_multi_thread_eigen=false;--xla_cpu_use_xnnpack=false"

Every setting trains in a fresh process (so that peak memory and compile caches do not carry
over) with the `cpu` preset (or `--preset`): a warm-up chunk, then `--iterations` iterations
timed. It prints, and appends to benchmarks/results.md, env steps per second over all seeds
and the process's peak memory, each with its ratio to the first setting (one seed, the
preset's envs). Ratios taken in one invocation cancel most of a shared machine's drift; the
absolute figures do not. Settings:

- seeds 1, 2, 4, 8 (`--seeds`) batched with jax.vmap (`seed_batching=vmap`, the default), and
  the largest also one after another (`seed_batching=map`), the comparison that matters;
- num_envs (`--envs`) for one seed;
- devices (`--devices`) for one seed, its envs split over them (`num_devices`): on a machine
  with several GPUs their count, on a CPU forced host devices
  (`--xla_force_host_platform_device_count`), which share the same cores, so a CPU figure
  measures the cost of the partitioned program, not a speed-up;
- XLA flag sets (`--xla-flags`, separated by `;`) for one seed, each added to the process's
  `XLA_FLAGS`: how XLA's CPU client threads the program.

Each row also gives the cores the process kept busy while timed (its CPU time over the wall
time): 1.0 is one core's worth of work, the machine's core count is all of them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results.md")


def _child(args: argparse.Namespace) -> None:
    import jax

    from reppo.compile_cache import enable_compilation_cache
    from reppo.jax.trainer import JaxTrainer
    from reppo.presets import get_preset

    enable_compilation_cache()
    config = get_preset(args.preset, env=args.env).replace(
        num_seeds=args.num_seeds, seed_batching=args.batching, num_devices=args.num_devices,
        **({"num_envs": args.num_envs} if args.num_envs else {}),
    )
    trainer = JaxTrainer(config)
    state = trainer.init_state()
    start = time.perf_counter()
    trainer.prepare(state, 1)
    compile_s = time.perf_counter() - start
    # Warm-up: the first iterations of staggered episodes end more episodes than later ones.
    for _ in range(2):
        state, _ = trainer.run_chunk(state, 1)
    jax.block_until_ready(state.iteration)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.iterations):
        state, _ = trainer.run_chunk(state, 1)
    jax.block_until_ready(state.iteration)
    seconds = time.perf_counter() - start
    cores_busy = (time.process_time() - cpu_start) / seconds
    steps = args.iterations * config.steps_per_iteration * config.num_seeds
    print(json.dumps({
        "sps": steps / seconds,
        "seconds_per_iteration": seconds / args.iterations,
        "compile_s": compile_s,
        "cores_busy": cores_busy,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "num_envs": config.num_envs,
        "num_devices": trainer.num_devices,
        "device": jax.devices()[0].device_kind,
    }))


def _measure(
    args: argparse.Namespace, seeds: int, batching: str, num_envs: int, devices: int,
    xla_flags: str = "",
) -> dict:
    command = [
        sys.executable, __file__, "--child", "--env", args.env, "--preset", args.preset,
        "--iterations", str(args.iterations), "--num-seeds", str(seeds),
        "--batching", batching, "--num-envs", str(num_envs), "--num-devices", str(devices),
    ]
    env = dict(os.environ)
    flags = f"{env.get('XLA_FLAGS', '')} {xla_flags}"
    if devices > 1 and args.forced_devices:
        flags += f" --xla_force_host_platform_device_count={devices}"
    env["XLA_FLAGS"] = flags.strip()
    out = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"setting failed: {' '.join(command)}\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    from reppo.runs.versions import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CheetahRun")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations a setting")
    parser.add_argument("--seeds", default="1,2,4,8", help="seed counts, batched with vmap")
    parser.add_argument("--envs", default="", help="num_envs values for one seed, e.g. 64,256")
    parser.add_argument(
        "--devices", default="", help="device counts for one seed, e.g. 2,4 (CPU: forced)"
    )
    parser.add_argument(
        "--xla-flags", default="",
        help="XLA flag sets for one seed, separated by ';' (each added to XLA_FLAGS)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--num-seeds", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--batching", default="vmap", help=argparse.SUPPRESS)
    parser.add_argument("--num-envs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--num-devices", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)

    import jax

    # Forced host devices on a CPU; real ones where the machine has several accelerators.
    args.forced_devices = jax.default_backend() == "cpu"
    seeds = [int(x) for x in args.seeds.split(",") if x]
    settings = [(k, "vmap", 0, 1, "") for k in seeds]
    if max(seeds) > 1:
        settings.append((max(seeds), "map", 0, 1, ""))
    settings += [(1, "vmap", int(n), 1, "") for n in args.envs.split(",") if n]
    settings += [(1, "vmap", 0, int(d), "") for d in args.devices.split(",") if d]
    settings += [(1, "vmap", 0, 1, f.strip()) for f in args.xla_flags.split(";") if f.strip()]
    rows = []
    for k, batching, envs, devices, xla_flags in settings:
        figures = _measure(args, k, batching, envs, devices, xla_flags)
        rows.append((k, batching, xla_flags, figures))
        base = rows[0][3]
        f = figures
        print(
            f"seeds {k} ({batching}), {f['num_envs']} envs on {f['num_devices']} device(s)"
            f"{', ' + xla_flags if xla_flags else ''}: {f['sps']:,.0f} env steps/s "
            f"({f['sps'] / base['sps']:.2f}x), {f['seconds_per_iteration']:.2f} s/iteration, "
            f"{f['cores_busy']:.2f} cores busy, "
            f"peak {f['peak_mib']:,.0f} MiB ({f['peak_mib'] / base['peak_mib']:.2f}x), "
            f"compile {f['compile_s']:.0f} s",
            flush=True,
        )
    if args.no_record:
        return
    base = rows[0][3]
    table = [
        f"\n### Scaling on {args.env}, `{args.preset}` preset ({dt.date.today().isoformat()}, "
        f"{cpu_model()}, {os.cpu_count()} cores, {base['device']})\n",
        f"`python benchmarks/bench_scaling.py --env {args.env} --preset {args.preset} "
        f"--seeds {args.seeds}" + (f" --envs {args.envs}" if args.envs else "")
        + (f" --devices {args.devices}" if args.devices else "")
        + (f' --xla-flags="{args.xla_flags}"' if args.xla_flags else "") + "`; "
        "ratios to the first row, measured in the same run"
        + ("; devices are forced host devices sharing the cores" if args.forced_devices else "")
        + ".\n",
        "| seeds | batching | envs per seed | devices | XLA flags | env steps/s (all seeds) | "
        "ratio | s/iteration | cores busy | peak MiB | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, batching, xla_flags, f in rows:
        table.append(
            f"| {k} | {batching} | {f['num_envs']} | {f['num_devices']} | "
            f"{'`' + xla_flags + '`' if xla_flags else '-'} | {f['sps']:,.0f} | "
            f"{f['sps'] / base['sps']:.2f} | {f['seconds_per_iteration']:.2f} | "
            f"{f['cores_busy']:.2f} | {f['peak_mib']:,.0f} | "
            f"{f['peak_mib'] / base['peak_mib']:.2f} |"
        )
    with RESULTS.open("a") as out:
        out.write("\n".join(table) + "\n")
    print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
