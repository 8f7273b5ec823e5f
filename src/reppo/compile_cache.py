"""JAX's persistent compilation cache, shared by every command that compiles."""

from __future__ import annotations

import os
from pathlib import Path


def enable_compilation_cache() -> None:
    """Repeated runs skip most of the compile time. `REPPO_JAX_CACHE` names the directory
    (default ~/.cache/reppo/jax); "", "0", "off" or "none" turn the cache off."""
    import jax

    cache = os.environ.get("REPPO_JAX_CACHE", str(Path.home() / ".cache" / "reppo" / "jax"))
    if cache.lower() in ("", "0", "off", "none"):
        return
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
