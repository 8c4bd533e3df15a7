"""The training example runs end to end and prints its comparison table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train.py"
LABELS = (
    "base (no adapter)",
    "in-batch negatives only (random batches)",
    "+ mined hard negatives",
    "+ mined + false-negative mask (random)",
    "+ topic batches + false-negative mask",
)


def run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--source", "generated", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def table(lines: list[str]) -> dict[str, list[float]]:
    """Label -> the numbers after it, from the first line starting with each label."""
    rows = {}
    for label in LABELS:
        line = next((ln for ln in lines if ln.startswith(label)), None)
        assert line is not None, "\n".join(lines)
        rows[label] = [float(x) for x in line[len(label) :].split()]
    return rows


def test_train_example_quick() -> None:
    out = run("--epochs", "3")
    assert "MRR@10" in out and "R@10" in out
    for mrr, recall, *_ in table(out.splitlines()).values():
        assert 0.0 <= mrr <= 1.0 and 0.0 <= recall <= 1.0


def test_train_example_seeds() -> None:
    out = run("--epochs", "2", "--seeds", "2")
    lines = out.splitlines()
    assert sum(ln.startswith("seed ") for ln in lines) == 2, out
    summary = lines[
        next(i for i, ln in enumerate(lines) if ln.startswith("summary over 2 seeds")) :
    ]
    for label, numbers in table(summary).items():
        mrr, recall, sd_mrr, sd_recall, _ = numbers
        assert 0.0 <= mrr <= 1.0 and 0.0 <= recall <= 1.0, label
        assert 0.0 <= sd_mrr <= 1.0 and 0.0 <= sd_recall <= 1.0, label
    assert "paired difference vs 'in-batch negatives only (random batches)'" in out
    diffs = [ln for ln in lines if ln.startswith("  + ") and " higher, " in ln]
    assert len(diffs) == 3, out  # one row per configuration other than in-batch only
    for ln in diffs:
        d_mrr = float(ln.split("MRR@10 ")[1].split()[0])
        d_recall = float(ln.split(" R@10 ")[1].split()[0])
        assert -1.0 <= d_mrr <= 1.0 and -1.0 <= d_recall <= 1.0, ln
    assert any(ln.startswith("best by mean MRR@10: '") for ln in lines), out


REFRESHED = "+ mined, refreshed every epoch"


@pytest.mark.parametrize("epochs", [1, 2])
def test_train_example_refresh(epochs: int) -> None:
    out = run("--epochs", str(epochs), "--refresh")
    rows = table(out.splitlines())
    line = next(ln for ln in out.splitlines() if ln.startswith(REFRESHED))
    mrr, recall, _ = (float(x) for x in line[len(REFRESHED) :].split())
    assert 0.0 <= mrr <= 1.0 and 0.0 <= recall <= 1.0
    if epochs == 1:  # nothing to refresh before the only epoch: the same run as mined once
        assert [mrr, recall] == rows["+ mined hard negatives"][:2]
