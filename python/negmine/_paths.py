"""Path arguments: what a path must be before negmine reads it, with errors that name it."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from negmine.errors import InvalidArgumentError, InvalidTypeError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def regular_file(path: object, what: str) -> Path:
    """``path`` as a ``Path`` once it is known to name an existing regular file (symlinks
    followed). A FIFO, a device or a directory is refused without being opened, so that
    reading never blocks forever (a FIFO) or grows without bound (``/dev/zero``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidTypeError(f"{what} must be a path, got {type(path).__name__}")
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"{what} not found: {os.strerror(errno.ENOENT)}", str(p)
        ) from None
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise InvalidArgumentError(f"{what} {p} is {kind}; a regular file is needed")
    return p
