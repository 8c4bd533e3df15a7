"""Every Python block of the README runs as written (each in a fresh interpreter, in an empty
directory): the examples are self-contained and keep up with the API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group(1))
        for m in re.finditer(r"```python\n(.*?)```", text, re.S)
    ]


def test_the_readme_has_python_examples() -> None:
    assert len(_blocks()) >= 8


@pytest.mark.parametrize(("line", "code"), _blocks(), ids=[f"line{n}" for n, _ in _blocks()])
def test_readme_block_runs_as_written(line: int, code: str, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_DISABLE_USAGE_STATS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"README.md line {line}:\n{proc.stderr[-3000:]}"
