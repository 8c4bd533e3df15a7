"""The training example runs end to end and prints its comparison table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # trains end to end in subprocesses (see `make test-quick`)

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
        timeout=300,  # generous: CI machines are shared
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


MINED = "+ mined hard negatives"
TEACHER = "+ mined, teacher-filtered"


def row(lines: list[str], label: str) -> list[float]:
    line = next((ln for ln in lines if ln.startswith(label)), None)
    assert line is not None, "\n".join(lines)
    return [float(x) for x in line[len(label) :].split()]


def test_train_example_teacher_agreeing_with_the_retriever_changes_nothing() -> None:
    # A teacher scoring with the retriever's own starting embeddings applies the same
    # margins to the same scores: the same negatives, so the same training run.
    lines = run("--epochs", "2", "--teacher", "retriever").splitlines()
    assert row(lines, TEACHER)[:2] == row(lines, MINED)[:2]
    assert not any(ln.startswith("teacher alone") for ln in lines)


def test_train_example_every_recipe() -> None:
    out = run(
        "--epochs", "1", "--seeds", "2", "--many", "6", "--refresh",
        "--teacher", "strong", "--teacher-percentile", "99",
    )  # fmt: skip
    lines = out.splitlines()
    summary = lines[next(i for i, ln in enumerate(lines) if ln.startswith("summary over 2")) :]
    labels = (
        "teacher alone (no training)",
        "+ mined once, 6 negatives",
        REFRESHED,
        "+ refreshed + topic batches + mask",
        TEACHER,
    )
    rows = {label: row(summary, label) for label in (*LABELS, *labels)}
    for label, (mrr, recall, *_) in rows.items():
        assert 0.0 <= mrr <= 1.0 and 0.0 <= recall <= 1.0, label
    # The generated source's teacher sees the queries before the distortion the adapter has
    # to learn: a stronger scorer than the starting retriever.
    assert rows["teacher alone (no training)"][0] > rows["base (no adapter)"][0]
    # One epoch: nothing is refreshed before it, so the refreshed runs are the mined-once runs.
    assert rows[REFRESHED][:4] == rows[MINED][:4]
    assert (
        rows["+ refreshed + topic batches + mask"][:4]
        == (rows["+ topic batches + false-negative mask"][:4])
    )
    assert "paired difference vs '+ mined hard negatives'" in out
    diffs = [ln for ln in lines if ln.startswith("  + ") and " higher, " in ln]
    assert len(diffs) == 7 + 6, out  # 7 recipes vs in-batch only, 6 vs mined once
    assert any(ln.startswith("against '+ mined hard negatives'") for ln in lines), out


@pytest.mark.parametrize(
    "args",
    [
        ("--teacher-percentile", "90"),
        ("--many", "-1"),
        ("--teacher", "strong", "--source", "stdlib", "--snippet-words", "-2"),
    ],
)
def test_train_example_rejects_bad_recipes(args: tuple[str, ...]) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "error:" in proc.stderr, proc.stdout + proc.stderr
