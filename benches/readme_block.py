"""Rewrites one marked block of the top-level README with a benchmark's table.

A block is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; the markers are
never created, only filled. The new README goes to a temp file in the same directory that is
fsynced and renamed over the old one, so a reader sees the old or the new file, never half.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def write_block(name: str, block: str, path: Path = README) -> bool:
    """Replaces the ``name`` block of ``path`` with ``block``; False (and a message) when the
    file or its markers are missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if not path.exists():
        print(f"{path} not found; not written", file=sys.stderr)
        return False
    text = path.read_text()
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        print(f"{path}: no {start} ... {end} block; not written", file=sys.stderr)
        return False
    new = text[: i + len(start)] + "\n" + block.rstrip("\n") + "\n" + text[j:]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote the {name} block of {path}", file=sys.stderr)
    return True


def publish(name: str, lines: list[str], write: bool) -> None:
    """Ends a benchmark: its table ``lines`` plus the command that produced them go to the
    README's ``name`` block when ``write`` is set."""
    script = Path(sys.argv[0]).resolve().relative_to(README.parent)
    command = " ".join(["python", str(script), *sys.argv[1:]])
    if write:
        write_block(name, "\n".join([*lines, "", f"`{command}`"]))
