"""`negmine.rescore`: candidates found elsewhere, scored and ranked exactly like the search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine.errors import InvalidArgumentError, InvalidTypeError


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 150),
    k=st.integers(1, 20),
    extra=st.integers(0, 30),
    metric=st.sampled_from(["dot", "cosine"]),
    dtype=st.sampled_from([np.float32, np.float16]),
    levels=st.sampled_from([3, 1000]),
    exponent=st.sampled_from([0, 72, 80]),
)
def test_a_superset_of_the_top_k_gives_the_search_bit_for_bit(
    seed: int, n: int, k: int, extra: int, metric: str, dtype: type, levels: int, exponent: int
) -> None:
    rng = np.random.default_rng(seed)
    # At `exponent` 72 or 80 (f32 rows), the products of a pair fall into the subnormals or
    # to zero, negative ones to -0.0, which the search ranks as +0.0.
    scale = 2.0**-exponent if dtype == np.float32 else 1.0
    corpus = (rng.integers(-levels, levels, (n, 24)) / levels * scale).astype(dtype)
    queries = (rng.standard_normal((6, 24)) * 2.0**-exponent).astype(np.float32)
    k = min(k, n)
    want_scores, want_ids = negmine.search(queries, corpus, k, metric=metric)
    # The top k, shuffled, with random other rows, repeats and padding mixed in.
    noise = rng.integers(0, n, (6, extra))
    pad = np.full((6, 2), -1)
    candidates = np.concatenate([want_ids, noise, want_ids[:, :1], pad], axis=1)
    candidates = rng.permuted(candidates, axis=1)
    scores, ids = negmine.rescore(queries, corpus, candidates, k=k, metric=metric)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores.view(np.uint32), want_scores.view(np.uint32))


def test_short_rows_are_padded_and_k_defaults_to_the_width() -> None:
    corpus = np.eye(4, dtype=np.float32)
    queries = np.array([[0.0, 2.0, 1.0, 0.0]], np.float32)
    scores, ids = negmine.rescore(queries, corpus, np.array([[0, 2, 2, 1]]))
    np.testing.assert_array_equal(ids, [[1, 2, 0, -1]])
    np.testing.assert_array_equal(scores, [[2.0, 1.0, 0.0, -np.inf]])


@pytest.mark.parametrize(
    ("candidates", "kwargs", "error", "match"),
    [
        (np.array([0, 1]), {}, InvalidTypeError, "2-D integer"),
        (np.zeros((1, 2)), {}, InvalidTypeError, "2-D integer"),
        (np.array([[0, 4]]), {}, InvalidArgumentError, "outside the corpus of 4 rows"),
        (np.array([[0], [1]]), {}, InvalidArgumentError, "2 rows of candidates for 1 queries"),
        (np.array([[0]]), {"k": 0}, InvalidArgumentError, "k"),
        (np.array([[0]]), {"metric": "l2"}, InvalidArgumentError, "metric"),
    ],
)
def test_bad_candidates_are_refused_by_name(
    candidates: np.ndarray, kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    corpus = np.eye(4, dtype=np.float32)
    queries = np.ones((1, 4), np.float32)
    with pytest.raises(error, match=match):
        negmine.rescore(queries, corpus, candidates, **kwargs)  # type: ignore[arg-type]


def test_non_finite_rows_and_overflowing_dots_are_named() -> None:
    corpus = np.eye(3, dtype=np.float32)
    corpus[2, 0] = np.nan
    with pytest.raises(InvalidArgumentError, match="corpus row 2"):
        negmine.rescore(np.ones((1, 3), np.float32), corpus, np.array([[0, 2]]))
    big = np.full((1, 3), 3e19, np.float32)
    with pytest.raises(InvalidArgumentError, match="overflow"):
        negmine.rescore(big, big, np.array([[0]]), metric="dot")
