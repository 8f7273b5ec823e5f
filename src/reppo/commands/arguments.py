"""Argument types shared by commands: argparse turns their refusals into a usage error that
names the flag."""

from __future__ import annotations

import argparse
from pathlib import Path

from reppo.config import parse_count
from reppo.experiments.sweep.execute import usable_cores


def jobs_argument(text: str) -> int:
    """--jobs: a positive count, or auto (one per usable core; 1 with an NVIDIA GPU, which the
    runs would share)."""
    if text == "auto":
        gpus = Path("/proc/driver/nvidia/gpus")
        if gpus.is_dir() and any(gpus.iterdir()):
            return 1
        return len(usable_cores())
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"expected a count >= 1 or auto, got {text!r}")
    return jobs


def count_argument(text: str) -> int:
    """A positive integer, also written like 1e6, 500k or 50_000_000."""
    try:
        value = parse_count(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer (e.g. 500000, 500k or 5e5), got {text!r}")
    return value
