"""Hostile inputs handled in the core (issue 8): dot products that could overflow float32, k-means
with squared norms that overflow, OS error wording, and a ``.npy`` shape written as ``-0``."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine.errors import InvalidArgumentError

F32_MAX = float(np.finfo(np.float32).max)


def score_limit(dim: int) -> float:
    """``negmine_core::search::score_limit``: the largest product of norms that is scored."""
    return F32_MAX / 2.0 / math.exp(dim * float(np.finfo(np.float32).eps))


# --- scores that could overflow ---------------------------------------------------------------


def test_search_refuses_a_dot_product_that_overflows_naming_both_rows() -> None:
    queries = np.array([[1e20, 1e20]], np.float32)
    corpus = np.array([[1e20, -1e20], [1, 1]], np.float32)
    with pytest.raises(InvalidArgumentError, match="could overflow float32") as info:
        negmine.search(queries, corpus, 2)
    message = str(info.value)
    assert "queries row 0" in message
    assert "corpus row 0" in message
    # Cosine scores are bounded by 1: the same rows are scored.
    scores, ids = negmine.search(queries, corpus, 2, metric="cosine")
    assert np.isfinite(scores).all()
    assert ids.tolist() == [[1, 0]]


def test_mine_refuses_a_dot_product_that_overflows() -> None:
    queries = np.array([[1, 1], [1e20, 1e20]], np.float32)
    corpus = np.array([[1, 0], [1e20, -1e20], [1, 1], [0, 1]], np.float32)
    with pytest.raises(InvalidArgumentError, match="could overflow float32") as info:
        negmine.mine(queries, corpus, [[0], [2]], metric="dot", num_negatives=1)
    assert "queries row 1" in str(info.value)
    assert "corpus row 1" in str(info.value)


@st.composite
def scaled_rows(draw: st.DrawFn, rows: int, dim: int) -> np.ndarray:
    """Rows of uniform floats, each scaled by 10^e for e in [0, 20]: norms' products on both
    sides of the limit."""
    seed = draw(st.integers(0, 2**32 - 1))
    exponents = draw(st.lists(st.integers(0, 20), min_size=rows, max_size=rows))
    base = np.random.default_rng(seed).uniform(-1, 1, (rows, dim))
    return (base * 10.0 ** np.array(exponents, dtype=np.float64)[:, None]).astype(np.float32)


@st.composite
def search_case(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    dim = draw(st.integers(1, 24))
    queries = draw(scaled_rows(draw(st.integers(1, 6)), dim))
    corpus = draw(scaled_rows(draw(st.integers(1, 30)), dim))
    k = draw(st.integers(1, corpus.shape[0]))
    return queries, corpus, k


@settings(max_examples=150)
@given(search_case())
def test_dot_scores_are_finite_and_exact_below_the_limit_and_refused_above(
    case: tuple[np.ndarray, np.ndarray, int],
) -> None:
    queries, corpus, k = case
    q64, c64 = queries.astype(np.float64), corpus.astype(np.float64)
    q_norms, c_norms = np.linalg.norm(q64, axis=1), np.linalg.norm(c64, axis=1)
    product = q_norms.max() * c_norms.max()
    limit = score_limit(queries.shape[1])
    if product > limit * (1 + 1e-9):
        with pytest.raises(InvalidArgumentError, match="could overflow float32"):
            negmine.search(queries, corpus, k)
        return
    if product > limit * (1 - 1e-9):
        return  # the f64 norms here and in the core may round to either side
    scores, ids = negmine.search(queries, corpus, k)
    assert np.isfinite(scores).all()
    exact = q64 @ c64.T
    # Each score is its pair's dot product up to f32 rounding of the chain...
    tolerance = 1e-5 * np.outer(q_norms, c_norms) + 1e-30
    rows = np.arange(len(queries))[:, None]
    assert (np.abs(scores - exact[rows, ids]) <= tolerance[rows, ids]).all()
    # ...and the ranking is the oracle's up to that rounding.
    best = -np.sort(-exact, axis=1)[:, :k]
    assert (np.abs(scores - best) <= 2 * tolerance.max(axis=1, keepdims=True)).all()


def test_kmeans_l2_says_the_squared_norms_overflow(rng: np.random.Generator) -> None:
    data = rng.standard_normal((200, 16), dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match="squared norm") as info:
        negmine.kmeans(data * np.float32(1e19), 4, metric="l2")
    message = str(info.value)
    assert message.startswith("row 0 has squared norm")
    assert "overflow float32" in message
    assert "NaN" not in message


def test_kmeans_l2_of_large_finite_rows_is_the_scaled_clustering(
    rng: np.random.Generator,
) -> None:
    data = rng.standard_normal((300, 8), dtype=np.float32)
    scale = np.float32(2.0**56)
    small = negmine.kmeans(data, 5, metric="l2")
    large = negmine.kmeans(data * scale, 5, metric="l2")
    np.testing.assert_array_equal(small[1], large[1])
    np.testing.assert_array_equal(small[0] * scale, large[0])


# --- OS errors --------------------------------------------------------------------------------


def test_a_missing_file_says_its_os_error_once() -> None:
    path = "/nonexistent/x.npy"
    with pytest.raises(FileNotFoundError) as info:
        negmine.open_embeddings(path)
    message = str(info.value)
    assert message.count(path) == 1
    assert message.count("No such file or directory") == 1
    assert "os error" not in message
    assert info.value.errno == 2
    assert info.value.filename == path
    assert info.value.strerror == "No such file or directory"


# --- .npy shapes --------------------------------------------------------------------------------


def npy_bytes(shape: str) -> bytes:
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * ((-(10 + len(header) + 1)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def test_a_shape_written_as_minus_zero_is_zero_rows_like_numpy(tmp_path: Path) -> None:
    path = tmp_path / "empty.npy"
    path.write_bytes(npy_bytes("(-0, 3)"))
    assert np.load(path).shape == (0, 3)
    assert negmine.open_embeddings(path).shape == (0, 3)


def test_a_negative_shape_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "negative.npy"
    path.write_bytes(npy_bytes("(-1, 3)"))
    with pytest.raises(negmine.errors.FormatError, match="negative dimension"):
        negmine.open_embeddings(path)
