"""The torch backend against the JAX backend: steady env steps/s of both in one process.

    python benchmarks/bench_torch.py --env CartpoleBalance --preset cpu
    python benchmarks/bench_torch.py --modes eager --threads 1 --rounds 3 --no-record

Builds one JAX trainer and one torch trainer per torch mode (eager; compile, where a C++
compiler exists) on the same task and preset, and lets each compile and warm up. Then come
`--rounds` rounds; in each, every setting (JAX, then each torch mode at each thread count)
trains `--iterations` iterations in turn, so load from other processes falls on all of them
alike. Prints each setting's median env steps/s over the rounds and its ratio to JAX (the
median of the per-round ratios), and the ratio of each torch mode at every thread count to
the same mode at one thread (the torch backend's default). Appends the table to results.md
unless --no-record.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

RESULTS = Path(__file__).with_name("results.md")
REFERENCE = "jax"


class Row(NamedTuple):
    setting: str
    median_sps: float
    ratio: float  # to the reference setting, median over rounds
    lowest_sps: float
    highest_sps: float


def summarize(samples: dict[str, list[float]], reference: str = REFERENCE) -> list[Row]:
    """One row per setting, in the order given: the median of its env steps/s over the rounds
    and the median over rounds of its ratio to `reference` in the same round (a per-round
    ratio cancels load that changes from round to round)."""
    base = samples[reference]
    rows = []
    for setting, values in samples.items():
        if len(values) != len(base):
            raise ValueError(f"{setting!r} has {len(values)} rounds, {reference!r} {len(base)}")
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        rows.append(Row(
            setting, statistics.median(values), statistics.median(ratios), min(values),
            max(values),
        ))
    return rows


def thread_ratios(samples: dict[str, list[float]]) -> dict[str, float]:
    """For every torch setting 'torch MODE, N threads' with N > 1: the median over rounds of
    its env steps/s over that of 'torch MODE, 1 thread'."""
    out = {}
    for setting, values in samples.items():
        mode, _, threads = setting.rpartition(", ")
        one = samples.get(f"{mode}, 1 thread")
        if not setting.startswith("torch ") or threads == "1 thread" or one is None:
            continue
        out[setting] = statistics.median(v / o for v, o in zip(values, one, strict=True))
    return out


def markdown(rows: list[Row], threads: dict[str, float]) -> str:
    lines = [
        "| setting | steady env steps/s (median) | lowest - highest | ratio to JAX |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.setting} | {r.median_sps:,.0f} | {r.lowest_sps:,.0f} - {r.highest_sps:,.0f} "
            f"| {r.ratio:.2f} |"
        )
    if threads:
        lines += ["", "| torch setting | ratio to the same mode at 1 thread |", "|---|---|"]
        lines += [f"| {s} | {ratio:.2f} |" for s, ratio in threads.items()]
    return "\n".join(lines) + "\n"


def setting_name(mode: str, threads: int) -> str:
    return f"torch {mode}, {threads} thread{'s' if threads != 1 else ''}"



def _timed(trainer, state, iterations: int, steps: int):
    start = time.perf_counter()
    state, _ = trainer.run_chunk(state, iterations)
    return state, iterations * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=2, help="per setting and round")
    parser.add_argument("--modes", default="eager,compile", help="torch modes, comma-separated")
    parser.add_argument(
        "--threads", default=f"1,{os.cpu_count() or 1}",
        help="torch CPU thread counts, comma-separated (1: the torch backend's default; one "
        "per core: torch's own)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    if any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        parser.error("unset OMP_NUM_THREADS / MKL_NUM_THREADS: the script sets torch's threads")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    import torch

    from reppo.compile_cache import enable_compilation_cache
    from reppo.config import ConfigError
    from reppo.jax.trainer import JaxTrainer
    from reppo.presets import get_preset
    from reppo.torch.agent import require_compile_toolchain
    from reppo.torch.trainer import TorchTrainer

    enable_compilation_cache()
    load_before = os.getloadavg()
    modes = [m for m in args.modes.split(",") if m]
    if "compile" in modes:
        try:
            require_compile_toolchain(torch.device("cpu"))
        except ConfigError:
            print("no C++ compiler: skipping the compile mode")
            modes.remove("compile")
    thread_counts = [int(t) for t in args.threads.split(",")]
    fields = dict(eval_interval_steps=0)
    trainers = {
        REFERENCE: JaxTrainer(get_preset(args.preset, "jax", env=args.env).replace(**fields))
    }
    for mode in modes:
        config = get_preset(args.preset, "torch", env=args.env).replace(
            backend="torch", device="cpu", torch_compile=mode == "compile", **fields
        )
        trainers[mode] = TorchTrainer(config.validated())
    steps = trainers[REFERENCE].config.steps_per_iteration
    settings = [(REFERENCE, REFERENCE, 1)] + [
        (setting_name(mode, n), mode, n) for mode in modes for n in thread_counts
    ]
    # A warm-up chunk of every setting: compilation, and the recompile torch.compile makes for
    # each new thread count (it guards on it).
    states = {}
    for name, trainer_name, threads in settings:
        torch.set_num_threads(threads)
        trainer = trainers[trainer_name]
        if trainer_name not in states:
            states[trainer_name] = trainer.init_state()
        start = time.perf_counter()
        states[trainer_name], _ = trainer.run_chunk(states[trainer_name], args.iterations)
        print(f"{name}: warm-up of {args.iterations} iterations "
              f"{time.perf_counter() - start:.1f} s", flush=True)

    samples: dict[str, list[float]] = {name: [] for name, _, _ in settings}
    for r in range(args.rounds):
        for name, trainer_name, threads in settings:
            torch.set_num_threads(threads)
            trainer = trainers[trainer_name]
            states[trainer_name], sps = _timed(
                trainer, states[trainer_name], args.iterations, steps
            )
            samples[name].append(sps)
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in samples.items()),
              flush=True)
    torch.set_num_threads(1)

    table = markdown(summarize(samples), thread_ratios(samples))
    load_after = os.getloadavg()
    from reppo.runs.versions import cpu_model

    machine = f"{cpu_model()}, {os.cpu_count()} cores"
    print(table)
    if args.no_record:
        return
    command = "python benchmarks/bench_torch.py " + " ".join(sys.argv[1:])
    section = (
        f"\n### Torch against JAX on {args.env}, `{args.preset}` preset "
        f"({dt.date.today().isoformat()}, {machine})\n\n"
        f"`{command.strip()}`: torch {torch.__version__}; {args.rounds} rounds of "
        f"{args.iterations} iterations ({args.iterations * steps:,} env steps) per setting, "
        f"after a warm-up; load average (1 min) {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after.\n\n" + table
    )
    with RESULTS.open("a") as f:
        f.write(section)
    print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
