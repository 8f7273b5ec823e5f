"""Output files of `reppo eval --video` and `reppo export --onnx`, shared by both backends:
the destination is checked before the slow work, and a file is written whole (temp file in the
same directory, then linked into place, never replacing one) or not at all, with one-line
errors that name the path and the fix. (Output directories: `reppo.runs.rundir`.)"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from reppo.runs.checkpoint import CheckpointError

# Errors of writing a file that the user fixes by freeing space or choosing another place.
# (Not ENOENT: the directory is checked beforehand, and a missing file read while rendering
# must not pass for a missing output directory.)
WRITE_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO,
})


def output_error(path: Path, err: OSError, flag: str) -> CheckpointError:
    """A one-line error for a failure to write `path` (given as `flag PATH`), with the fix."""
    directory = path.parent
    nothing = "nothing was written"
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        text = (f"no space left for it in {directory} ({err.strerror}); free some space there "
                f"or pick a path on another disk; {nothing}")
    elif code in (errno.EACCES, errno.EPERM):
        text = (f"{directory} is not writable (permission denied); pick a directory you can "
                f"write to, or make it writable (chmod u+w {directory}); {nothing}")
    elif code == errno.EROFS:
        text = f"{directory} is on a read-only file system; pick a path on a writable disk"
        text += f"; {nothing}"
    elif code == errno.ENOENT:
        text = (f"the directory {directory} does not exist; create it first (mkdir -p "
                f"{directory}) or pick another path")
    elif code == errno.ENOTDIR:
        text = f"{directory} is not a directory; pick a path inside an existing directory"
    else:
        text = (f"cannot write it ({err.strerror or err}); check the path, its permissions "
                f"and the free space; {nothing}")
    return CheckpointError(f"{flag} {path}: {text}")


def check_output_path(path: Path, flag: str) -> None:
    """Before any slow work: refuse an existing `path` and a directory that is missing or that
    cannot take a new file (read-only, no permission, no space for a file entry), by creating
    and removing a temporary file there."""
    path = Path(path)
    directory = path.parent
    if path.exists() or path.is_symlink():
        raise CheckpointError(
            f"{flag} {path} already exists; pick another path or delete it first"
        )
    try:
        if not directory.exists():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(directory))
        if not directory.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory))
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise output_error(path, err, flag) from None


def finish_file(tmp: Path) -> None:
    """Give a finished temp file the mode a plain open() gives (mkstemp makes it 0600), as
    `reppo.runs.atomic_write_bytes` does, and flush it to disk."""
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())


def publish_new(tmp: Path, path: Path, flag: str) -> None:
    """Put the finished `tmp` at `path` (same directory), never replacing a file there."""
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
                raise
            # File systems without hard links: a checked rename (a tiny race window).
            if path.exists():
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
            os.replace(tmp, path)
    except FileExistsError:
        raise CheckpointError(
            f"{flag} {path} appeared while it was being written; nothing was replaced, pick "
            "another path"
        ) from None
    except OSError as err:
        raise output_error(path, err, flag) from None
