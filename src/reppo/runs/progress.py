"""One-line human progress reports printed during training.

Example::

      1.23M/5.00M (25%) | 45.1k sps | ETA 1m23s | eval 812.3 | alpha 0.0123 beta 0.0310 | KL 0.081 H -1.20 | critic err 0.41

Every field is optional: a key missing from the record (or null, as NaN is logged) is simply
left out, so the same formatter serves every backend and the first log line.
"""  # noqa: E501

from __future__ import annotations

import math
from typing import Any

from reppo.runs.metrics import EVAL_RETURN


def _number(value: Any) -> float | None:
    """A finite float, averaging lists (one value per seed); None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (list, tuple)):
        items = [v for v in (_number(x) for x in value) if v is not None]
        return sum(items) / len(items) if items else None
    try:
        number = float(value)  # also numpy scalars and 0-d arrays
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_count(n: float, digits: int = 2) -> str:
    """1234567 -> '1.23M', 45100 -> '45.1k' (digits=1), 512 -> '512'."""
    units = ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T"))
    if abs(n) < 1e3 - 0.5:
        return f"{n:.0f}"
    for i, (factor, suffix) in enumerate(units):
        text = f"{n / factor:.{digits}f}"
        # Rounding may carry into the next unit: 999_999 is '1.00M', not '1000.00k'.
        if abs(float(text)) < 1000 or i == len(units) - 1:
            return text + suffix
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """45 -> '45s', 83 -> '1m23s', 7500 -> '2h05m', 273600 -> '3d04h'; '?' if unknown."""
    seconds = _number(seconds)
    if seconds is None or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_progress(
    record: dict[str, Any],
    total_steps: int,
    last_eval: float | None,
    num_seeds: int = 1,
    *,
    extra_seconds: float | None = 0.0,
) -> str:
    """Summarize a metrics record as one line: progress, speed, ETA, eval, temperatures, ...

    `env_steps` and `total_steps` count one seed's steps while `sps` counts all `num_seeds`
    seeds' steps, so the ETA divides by the per-seed rate. `extra_seconds` is the time still
    to be spent outside training steps (the evaluations to come); None when it is not known
    yet, which the ETA says ("+ evals").

    Reads `env_steps`, `sps` (or derives it from `wall_time`), `temp/alpha`, `temp/beta`,
    `kl`, `entropy` and `critic/value_error`; `last_eval` is the latest evaluation return
    (falling back to the record's `eval/return_mean`).
    """

    def get(key: str) -> float | None:
        return _number(record.get(key))

    parts: list[str] = []

    steps = get("env_steps")
    if steps is not None:
        head = f"{format_count(steps)}/{format_count(total_steps)}"
        if total_steps > 0:
            percent = round(100 * steps / total_steps)
            # Do not claim 100% while steps remain.
            if steps < total_steps:
                percent = min(percent, 99)
            head += f" ({percent}%)"
        parts.append(head)

    sps = get("sps")
    wall = get("wall_time")
    if sps is None and steps is not None and wall:
        sps = steps / wall
    if sps is not None:
        parts.append(f"{format_count(sps, 1)} sps")
        if steps is not None and sps > 0:
            remaining = max(0.0, total_steps - steps) * num_seeds / sps
            if extra_seconds is None:
                eta = f"ETA {format_duration(remaining)}"
                parts.append(eta + (" + evals" if remaining > 0 else ""))
            else:
                parts.append(f"ETA {format_duration(remaining + extra_seconds)}")

    evaluation = _number(last_eval)
    if evaluation is None:
        evaluation = get(EVAL_RETURN)
    if evaluation is not None:
        parts.append(f"eval {evaluation:.1f}")

    temps = [
        f"{name} {v:.4f}"
        for name, v in (("alpha", get("temp/alpha")), ("beta", get("temp/beta")))
        if v is not None
    ]
    if temps:
        parts.append(" ".join(temps))

    policy = [
        f"{name} {v:{fmt}}"
        for name, v, fmt in (("KL", get("kl"), ".3f"), ("H", get("entropy"), ".2f"))
        if v is not None
    ]
    if policy:
        parts.append(" ".join(policy))

    critic = get("critic/value_error")
    if critic is not None:
        parts.append(f"critic err {critic:.2f}")

    return "  " + " | ".join(parts)
