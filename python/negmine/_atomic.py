"""Crash-safe writes. A file: a temp file in the destination's directory, fsync, rename, fsync
of the directory, so that a reader sees the old file or the complete new one, never a partial
one. A directory of files that belong together (a mining result): every file written into a
hidden sibling directory, fsynced, then swapped in as a whole.

Files and directories get the modes ``open`` and ``mkdir`` would give them (0o666 / 0o777
less the umask), not the 0600 / 0700 of ``tempfile``. A failed write raises an ``OSError``
(the subclass its errno maps to) whose message names the destination and whose ``errno`` is
the system's, e.g. ``EFBIG`` or ``ENOSPC``.

Every temporary name is ``.<destination's name>.<12 hex digits>.tmp`` (a temp file, a staging
directory), or ``.old`` for an old directory renamed aside, and its writer holds an exclusive
``flock`` on it while it lives. A writer killed (``kill -9``, power loss) leaves it behind;
the next write to the same destination removes every such name whose lock it can take
(:func:`sweep`): a lock it cannot take belongs to a live writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import os
import re
import secrets
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_umask_lock = threading.Lock()


def _umask() -> int:
    # /proc reads it without changing it; the os.umask round trip briefly sets 0o077 for the
    # whole process, which the lock makes safe among callers of this function only.
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~_umask()


def located(e: OSError, dest: Path) -> OSError:
    """``e`` again, its message naming ``dest``; numpy's short-write error has no errno."""
    if e.errno is None:
        return OSError(f"{e} (writing {dest})")
    return OSError(e.errno, f"{e.strerror or os.strerror(e.errno)} (writing {dest})", str(dest))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[bytes]]:
    """Opens a temp file for writing; on success it replaces ``path``, on error it vanishes.

    Write large buffers with ``f.write`` (see :class:`HashingWriter`), not ``ndarray.tofile``:
    the C stdio path loses the errno of a failed write."""
    dest = Path(path)
    directory = dest.parent if str(dest.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(2, "output directory does not exist", str(directory))
    sweep(dest)
    fd, tmp = locked_temp_file(dest)
    try:
        try:
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except OSError as e:
            raise located(e, dest) from e
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)


class HashingWriter:
    """Writes through to ``file`` and digests what it wrote (sha256). Not a real file object
    to numpy, so ``np.save`` writes through ``write`` and a failed write keeps its errno."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@contextlib.contextmanager
def new_file(path: Path) -> Iterator[IO[bytes]]:
    """Creates ``path`` (which must not exist) for writing, fsyncs it when the block ends; for
    files inside a directory that :func:`atomic_directory` swaps in as a whole."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, file_mode())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise located(e, path) from e


_TEMP_SUFFIX = re.compile(r"[0-9a-f]{12}\.(tmp|old)")


def temp_name(dest: Path, kind: str = "tmp") -> Path:
    return dest.parent / f".{dest.name}.{secrets.token_hex(6)}.{kind}"


def _lock_at(fd: int, path: Path) -> bool:
    """Takes ``fd``'s exclusive lock (waiting, briefly, for a sweeper that took it first);
    whether ``path`` is still ``fd``'s file, i.e. no sweeper removed it meanwhile."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def locked_temp_file(dest: Path) -> tuple[int, Path]:
    """A new temp file for ``dest`` (``.<name>.<hex>.tmp`` beside it, mode as ``open`` gives)
    open for writing, and locked so that :func:`sweep` leaves it alone; the lock goes with
    the file descriptor."""
    while True:
        tmp = temp_name(dest)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, file_mode())
        except FileExistsError:
            continue
        try:
            if _lock_at(fd, tmp):
                return fd, tmp
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def locked_directory(path: Path, stack: contextlib.ExitStack) -> bool:
    """Locks the directory at ``path`` until ``stack`` closes; False if it is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    stack.callback(os.close, fd)
    return _lock_at(fd, path)


def sweep(dest: str | os.PathLike[str]) -> None:
    """Removes what killed writers to ``dest`` left beside it: every temp file and staging
    directory of it (``.<name>.<hex>.tmp``) owned by this user whose lock is free, i.e. whose
    writer is gone; and, while ``dest`` exists (the new version is in place), every old
    directory renamed aside (``.<name>.<hex>.old``) alike. Errors are ignored: a name that
    cannot be removed now is swept by a later write."""
    dest = Path(dest)
    directory = dest.parent if str(dest.parent) else Path(".")
    prefix = f".{dest.name}."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = name.startswith(prefix) and _TEMP_SUFFIX.fullmatch(name, len(prefix))
        if not match or (match.group(1) == "old" and not os.path.lexists(dest)):
            continue
        with contextlib.suppress(OSError):
            _remove_unlocked(directory / name)


def _remove_unlocked(path: Path) -> None:
    """Removes the file or directory ``path`` if it is this user's and nobody holds its lock."""
    mode = os.lstat(path).st_mode
    if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        return  # never opened: a device or FIFO is no temp name of ours
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its writer is alive
        if not os.path.samestat(info, os.lstat(path)):
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        elif stat.S_ISREG(info.st_mode):
            os.unlink(path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike[str], *, staging: Path | None = None
) -> Iterator[Path]:
    """Yields an empty directory to fill with :func:`new_file`; when the block ends without an
    error, that directory replaces ``path`` as a whole, and the old ``path`` is removed.

    The directory is a hidden sibling of ``path`` (``.<name>.<random>.tmp``), or ``staging``
    (on the same file system; removed first if present). It is fsynced before the swap, which
    on Linux is one atomic ``renameat2(RENAME_EXCHANGE)``: a reader sees the old directory or
    the complete new one. Where that is unavailable the old directory is renamed aside first,
    so that a crash between the two renames leaves it as ``.<name>.<random>.old``, complete.
    On an error nothing temporary is left and ``path`` is unchanged; an ``OSError`` names the
    file of ``path`` that could not be written. What killed saves to ``path`` left is swept
    first (:func:`sweep`), and old directories again once the new one is in place. Parent
    directories are created. The caller decides whether ``path`` may be replaced."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep(dest)
    with contextlib.ExitStack() as locks:
        if staging is not None:
            if os.path.lexists(staging):
                shutil.rmtree(staging)
            os.mkdir(staging)  # 0o777 less the umask, like the directory it becomes
        else:
            while True:  # until a new name is made and locked before any sweep took it
                staging = temp_name(dest)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(staging)
                    if locked_directory(staging, locks):
                        break
        old = None
        try:
            try:
                yield staging
                fsync_directory(staging)
                # The old directory stays locked (at the staging name after an exchange, or
                # aside) until it is removed, so that no sweep takes it from under us.
                while os.path.lexists(dest) and not locked_directory(dest, locks):
                    pass
                old = _swap_in(staging, dest)
                fsync_directory(dest.parent)
            except OSError as e:
                renamed = _unstaged(e, staging, dest)
                if renamed is e:
                    raise
                raise renamed from e
        except BaseException:
            # After a swap the staging name holds the old directory: removing it is right too.
            shutil.rmtree(old or staging, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old)
    sweep(dest)


def _unstaged(e: OSError, staging: Path, dest: Path) -> OSError:
    """``e`` with the staging directory's file named as the destination's."""
    name = os.fspath(e.filename) if e.filename is not None else ""
    if e.errno is None or not isinstance(name, str):
        return e
    if name != str(staging) and not name.startswith(str(staging) + os.sep):
        return e
    target = dest / os.path.relpath(name, staging)
    strerror = e.strerror or os.strerror(e.errno)
    return OSError(e.errno, f"{strerror} (writing {target}; {dest} is unchanged)", str(target))


def _swap_in(new: Path, dest: Path) -> Path | None:
    """Puts ``new`` at ``dest``; returns where the old ``dest`` went (to remove), if any."""
    if _exchange(new, dest):
        return new
    if not os.path.lexists(dest):
        os.rename(new, dest)
        return None
    aside = temp_name(dest, "old")
    os.rename(dest, aside)
    try:
        os.rename(new, dest)
    except BaseException:
        os.rename(aside, dest)
        raise
    return aside


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        fn = ctypes.CDLL(None, use_errno=True).renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
        return fn
    return None


def _exchange(a: Path, b: Path) -> bool:
    """Swaps ``a`` and ``b`` atomically where the system can; False when it cannot or ``b``
    does not exist."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOENT, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Makes a rename inside ``directory`` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
