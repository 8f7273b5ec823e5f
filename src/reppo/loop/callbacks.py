"""Training callbacks: what `reppo.train` (and `reppo.loop.runner.train`) call with each metrics
record, and how one asks the run to stop. Imports nothing heavy (`import reppo` stays light)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Callback", "StopTraining"]


class StopTraining(Exception):  # noqa: N818 (a request, like StopIteration, not an error)
    """Raised by a training callback to stop the run at this record (as returning True does):
    a checkpoint is saved and the result says `interrupted`."""


# Called with every metrics record (a copy of the dict logged to metrics.jsonl); returning
# True, or raising StopTraining, asks the run to stop there as a stop request would.
Callback = Callable[[dict[str, Any]], Any]
