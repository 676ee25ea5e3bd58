"""Writing outputs so that a kill or a full disk never leaves a broken or half-written file: every
file is written to a temporary file in the same folder, flushed to disk, and renamed over the
target (``os.replace`` is atomic on POSIX), so the target holds either the previous content or the
new one. A failed write removes its temporary file.
"""

from __future__ import annotations

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
    """Write `data` to `path` atomically (creating its folder); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # fdopen owns fd from here on; if it raised, fd would leak, so it comes first in the try.
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))
