"""Rewrites one marked block of the documentation with a benchmark's table.

A block is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; the markers are
never created, only filled. Each block lives in one file (:data:`BLOCK_FILES`: the README keeps
the summary table, docs/performance.md the others). The new file goes to a temp file in the
same directory that is fsynced and renamed over the old one, so a reader sees the old or the
new file, never half.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PERFORMANCE = ROOT / "docs" / "performance.md"
# Where each block's markers are; a block not listed is the README's.
BLOCK_FILES = {
    "bench": README,
    "kmeans-bench": PERFORMANCE,
    "mine-bench": PERFORMANCE,
    "sampler-bench": PERFORMANCE,
    "topic-bench": PERFORMANCE,
}


def write_block(name: str, block: str, path: Path | None = None) -> bool:
    """Replaces the ``name`` block of ``path`` (default: the file :data:`BLOCK_FILES` names)
    with ``block``; False (and a message) when the file or its markers are missing."""
    if path is None:
        path = BLOCK_FILES.get(name, README)
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
    ``name`` block (in the file :data:`BLOCK_FILES` names) when ``write`` is set."""
    script = Path(sys.argv[0]).resolve().relative_to(ROOT)
    command = " ".join(["python", str(script), *sys.argv[1:]])
    if write:
        write_block(name, "\n".join([*lines, "", f"`{command}`"]))
