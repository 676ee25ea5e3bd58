"""Writing outputs so that a kill or a full disk never leaves a broken or half-written file: every
file is written to a temporary file in the same folder, flushed to disk, and renamed over the
target (``os.replace`` is atomic on POSIX), so the target holds either the previous content or the
new one. A failed write removes its temporary file. `check_writable_dir` lets a command refuse a
bad output folder before any training.
"""

from __future__ import annotations

import errno
import glob
import os
import tempfile
from pathlib import Path

from optarena.console import UsageError


def check_writable_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Make sure `path` is a folder this process can write into, creating it (and its parents) if
    needed; raise UsageError naming the option and the path otherwise. Commands call this before
    any training, so a bad output folder costs nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: is a file, not a folder; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{option} {path}: cannot create the folder ({e.strerror or e}); "
                         f"give a folder in a writable place") from None
    # os.access misreads some filesystems (root, ACLs, read-only mounts): try a real file.
    try:
        fd, probe = tempfile.mkstemp(prefix=".optarena-write-check.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{option} {path}: the folder is not writable ({e.strerror or e}); "
                         f"give a writable folder") from None
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (creating its folder); return the path.

    A full disk, a read-only or forbidden folder raise UsageError naming the path, with the
    previous content left in place; no temporary file is left behind by any exception. A kill -9
    cannot clean up after itself: its temporary file (named after the writing process) is removed
    by the next write of the same path once that process is gone."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _usage_error(path, e) from None
    try:
        # fdopen owns fd from here on, so it comes first in the try: nothing can leak it.
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno in _USER_ERRNOS:
            raise _usage_error(path, e) from None
        raise
    return path


# Causes the user can fix (space, permissions, a read-only mount): one line, exit 2, not a traceback.
_USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST}


def _usage_error(path: Path, e: OSError) -> UsageError:
    return UsageError(f"cannot write {path}: {e.strerror or e}; its previous content (if any) is intact")


def _remove_orphans(path: Path) -> None:
    """Remove temporary files of `path` left by writers that were killed (their pid is gone)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                tmp.unlink()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))
