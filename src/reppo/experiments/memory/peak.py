"""The peak memory of a piece of work in this process: the device allocator's statistics where
JAX keeps them (GPUs), else the process's resident set size (Linux's high-water mark, reset
just before the work). Shared by `reppo memory`'s REPPO and FastTD3 measurements.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def _process_peak_rss() -> int:
    """Peak RSS of this process since it started, in bytes (getrusage)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _proc_status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status (Linux) in bytes, else None."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def _reset_peak_rss() -> bool:
    """Reset Linux's RSS high-water mark (VmHWM), so it then measures what follows alone."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measure_peak(work: Any) -> dict[str, Any]:
    """Run `work()` (set up and compiled beforehand) and report its peak memory: the device
    allocator's `peak_bytes_in_use` where JAX keeps memory statistics (GPUs), else the
    process's RSS before it, its peak during it (Linux's reset high-water mark) and over the
    whole process. Also `platform` and `device`."""
    import jax

    device = jax.devices()[0]

    def stats() -> dict[str, Any]:
        try:
            return device.memory_stats() or {}
        except Exception:  # some backends raise instead of returning None
            return {}

    ready_device = stats().get("bytes_in_use")
    ready_rss = _proc_status_bytes("VmRSS")
    hwm_reset = _reset_peak_rss()
    work()
    result: dict[str, Any] = {
        "platform": device.platform,
        "device": getattr(device, "device_kind", str(device)),
    }
    peak_device = stats().get("peak_bytes_in_use")
    if peak_device is not None:
        result.update(kind="device peak_bytes_in_use", peak_bytes=int(peak_device),
                      before_bytes=ready_device, process_peak_bytes=None)
    else:
        process_peak = _process_peak_rss()
        during = _proc_status_bytes("VmHWM") if hwm_reset else None
        result.update(
            kind="process RSS" if during is not None else "process peak RSS",
            peak_bytes=during if during is not None else process_peak,
            before_bytes=ready_rss,
            process_peak_bytes=process_peak,
        )
    return result
