"""The user-facing errors and the one mapping from an error to the command line's exit status.

Every error a user can fix (bad input, an occupied run directory, a corrupt checkpoint, a
missing optional package, ...) is printed as one line, `reppo: error: ...`, with exit status
2; a run stopped by non-finite numbers exits with 1; Ctrl-C with 130. The classes live with
the code that raises them; this module names them by module, so that it imports none of
them (nor JAX or torch): an error of a class whose module was never imported cannot have been
raised.
"""

from __future__ import annotations

import sys


class UserError(RuntimeError):
    """Bad input to a command; printed as one line with exit status 2."""


# (module, class) of every error that is the user's to fix.
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("reppo.errors", "UserError"),
    ("reppo.config", "ConfigError"),
    ("reppo.envs.registry", "UnknownEnvError"),
    ("reppo.envs.registry", "WrongBackendError"),
    ("reppo.envs.maniskill", "ManiSkillError"),
    ("reppo.runs.rundir", "RunDirError"),
    ("reppo.runs.checkpoint", "CheckpointError"),
    ("reppo.runs.metrics", "MetricsError"),
    ("reppo.analysis.stats", "UnequalRunCounts"),
)
# Errors of a run that went wrong through no fault of the input (exit status 1).
RUN_ERRORS: tuple[tuple[str, str], ...] = (("reppo.loop.seam", "NonFiniteError"),)


def _loaded(names: tuple[tuple[str, str], ...]) -> tuple[type[BaseException], ...]:
    found = []
    for module, name in names:
        loaded = sys.modules.get(module)
        cls = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def exit_status(err: BaseException) -> int | None:
    """The exit status for `err` printed as one line, or None for a bug (show the traceback)."""
    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, _loaded(USER_ERRORS)):
        return 2
    if isinstance(err, _loaded(RUN_ERRORS)):
        return 1
    return None
