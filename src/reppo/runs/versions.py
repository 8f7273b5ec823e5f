"""What produced a run: package versions and a machine description, saved as versions.json.

Versions come from installed package metadata (importlib.metadata), never by importing the
packages: importing JAX or torch here would be slow and, for JAX, would grab the accelerator.
The hostname is deliberately left out so run directories can be shared.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from importlib import metadata
from typing import Any

from reppo._version import __version__

# Distribution names as pip knows them (not import names).
TRACKED_PACKAGES = (
    "reppo",
    "numpy",
    "jax",
    "jaxlib",
    "optax",
    "mujoco",
    "mujoco-mjx",
    "playground",
    "brax",
    "torch",
    "mani-skill",
    "sapien",
    "rsl-rl-lib",
    "tensordict",
    "onnxruntime",
    "safetensors",
    "matplotlib",
    "tensorboardX",
    "wandb",
)


def package_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None if it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's marketing name; platform.processor() is often empty on Linux."""
    name = platform.processor()
    if name and name != platform.machine():
        return name
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or "unknown"


def collect_versions(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Describe the software and machine of this run; `extra` (e.g. device info) is merged in.

    Keys: python, python_implementation, platform, machine, processor, cpu_count, reppo,
    packages (installed tracked distributions only), timestamp_utc, then those of `extra`.
    """
    packages = {name: v for name in TRACKED_PACKAGES if (v := package_version(name)) is not None}
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "reppo": __version__,
        "packages": packages,
        "timestamp_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if extra:
        info.update(extra)
    return info
