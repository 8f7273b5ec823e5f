"""Train for a fixed budget and record throughput, compile time, memory and return.

    python benchmarks/bench_train.py --env CartpoleBalance --preset cpu --total-steps 262144
    python benchmarks/bench_train.py --env CheetahRun --preset paper --total-steps 5000000
    python benchmarks/bench_train.py --env CartpoleBalance --preset cpu --total-steps 262144 \
        --backend torch --torch-compile true

Prints the figures and adds one row to the table in benchmarks/results.md (date, machine, device).
Extra `--field value` pairs override config fields, as for `reppo train`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).with_name("results.md")
HEADER = (
    "| date | machine | device | env | preset | overrides | env steps | steady sps | "
    "end-to-end sps | compile s | peak host MiB | peak device MiB | final return |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
)



def _insert_row(path: Path, line: str) -> None:
    """Add a row at the end of this script's table (the one under HEADER), above the notes
    and the other tables that follow it."""
    lines = path.read_text().splitlines()
    header = HEADER.splitlines()[0]
    if header not in lines:
        raise SystemExit(f"{path} has no table headed {header!r}; restore it or move the file")
    at = lines.index(header) + 1
    while at < len(lines) and lines[at].startswith("|"):
        at += 1
    lines.insert(at, line)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartpoleBalance")
    parser.add_argument("--preset", default="auto")
    parser.add_argument("--total-steps", type=int, required=True)
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument(
        "--run-dir", type=Path, default=None,
        help="keep the run (metrics.jsonl, config.json, checkpoints) here; must not exist "
        "(default: a temporary directory, removed afterwards)",
    )
    args, rest = parser.parse_known_args()
    if len(rest) % 2:
        parser.error("overrides come as --field value pairs")
    overrides = {rest[i].lstrip("-").replace("-", "_"): rest[i + 1] for i in range(0, len(rest), 2)}
    if args.run_dir is not None and args.run_dir.exists():
        parser.error(f"--run-dir {args.run_dir} exists; name a new directory")

    import jax

    cache = os.environ.get("REPPO_JAX_CACHE", str(Path.home() / ".cache" / "reppo" / "jax"))
    if cache.lower() not in ("", "0", "off", "none"):
        jax.config.update("jax_compilation_cache_dir", cache)
    from reppo.config import coerce_field
    from reppo.loop.runner import train
    from reppo.presets import default_preset_name, get_preset
    from reppo.runs.versions import cpu_model

    typed = {k: coerce_field(k, v) for k, v in overrides.items()}
    backend = typed.get("backend", "jax")
    if backend == "torch":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    preset = default_preset_name(backend) if args.preset == "auto" else args.preset
    # One evaluation at the end unless an override asks for a learning curve.
    fields = {"env": args.env, "total_steps": args.total_steps, "eval_interval_steps": 0}
    config = get_preset(preset, backend, env=args.env).replace(**{**fields, **typed})
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp) / "run"
        result = train(config, run_dir, echo=lambda line: print(line, flush=True))

    chunk_sps = sorted(r["sps"] for r in result.history[1:] or result.history)
    steady = chunk_sps[len(chunk_sps) // 2]
    end_to_end = result.env_steps * config.num_seeds / result.wall_time
    host_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if backend == "torch":
        import torch

        on_gpu = torch.cuda.is_available() and config.device != "cpu"
        device_name = torch.cuda.get_device_name() if on_gpu else "cpu (torch)"
        device_mib = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else 0
    else:
        device = jax.devices()[0]
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        device_mib = (stats or {}).get("peak_bytes_in_use", 0) / 2**20
        device_name = getattr(device, "device_kind", str(device))
    row = {
        "date": dt.date.today().isoformat(),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "device": device_name,
        "env": config.env,
        "preset": preset,
        "overrides": " ".join(f"{k}={v}" for k, v in overrides.items()) or "-",
        "env steps": f"{result.env_steps:,}",
        "steady sps": f"{steady:,.0f}",
        "end-to-end sps": f"{end_to_end:,.0f}",
        "compile s": f"{result.compile_seconds:.1f}",
        "peak host MiB": f"{host_mib:,.0f}",
        "peak device MiB": f"{device_mib:,.0f}" if device_mib else "-",
        "final return": f"{result.eval_return_mean:.1f}",
    }
    for key, value in row.items():
        print(f"{key:>16}: {value}")
    if not args.no_record:
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\nWritten by `bench_train.py`.\n\n" + HEADER)
        _insert_row(RESULTS, "| " + " | ".join(row.values()) + " |")
        print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
