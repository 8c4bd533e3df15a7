"""The training example runs end to end and prints its comparison table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train.py"


def test_train_example_quick() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--source", "generated", "--epochs", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "MRR@10" in out and "R@10" in out
    for label in (
        "base (no adapter)",
        "in-batch negatives only (random batches)",
        "+ mined hard negatives",
        "+ topic batches + false-negative mask",
    ):
        line = next((ln for ln in out.splitlines() if ln.startswith(label)), None)
        assert line is not None, out
        mrr, recall = (float(x) for x in line[len(label) :].split()[:2])
        assert 0.0 <= mrr <= 1.0 and 0.0 <= recall <= 1.0
