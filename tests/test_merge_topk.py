"""`negmine.merge_topk`: per-shard searches merged equal the whole corpus' search, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine.errors import InvalidArgumentError, InvalidTypeError


def _shard_searches(
    queries: np.ndarray, corpus: np.ndarray, bounds: list[int], k: int, metric: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    parts = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        width = min(k, stop - start)
        if width == 0:
            continue
        scores, ids = negmine.search(queries, corpus[start:stop], width, metric=metric)
        parts.append((scores, ids + start))
    return parts


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 120),
    cuts=st.lists(st.floats(0, 1), max_size=4),
    k=st.integers(1, 40),
    metric=st.sampled_from(["dot", "cosine"]),
    levels=st.sampled_from([2, 5, 1000]),
)
def test_merged_shard_searches_equal_the_whole_search(
    seed: int, n: int, cuts: list[float], k: int, metric: str, levels: int
) -> None:
    rng = np.random.default_rng(seed)
    # Few levels: many tied scores, whose order (smaller id first) must survive the merge.
    corpus = (rng.integers(0, levels, (n, 8)) / levels).astype(np.float32)
    queries = (rng.integers(0, levels, (5, 8)) / levels).astype(np.float32)
    k = min(k, n)
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    scores, ids = negmine.merge_topk(_shard_searches(queries, corpus, bounds, k, metric), k)
    want_scores, want_ids = negmine.search(queries, corpus, k, metric=metric)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores.view(np.uint32), want_scores.view(np.uint32))


def test_padding_is_ignored_and_short_rows_are_padded() -> None:
    a = (np.array([[3.0, 1.0], [2.0, 0.0]], np.float32), np.array([[4, 7], [5, -1]]))
    b = (np.array([[3.0], [9.0]], np.float32), np.array([[2], [-1]], np.int32))
    scores, ids = negmine.merge_topk([a, b], 3)
    np.testing.assert_array_equal(ids, [[2, 4, 7], [5, -1, -1]])
    np.testing.assert_array_equal(scores, [[3.0, 3.0, 1.0], [2.0, -np.inf, -np.inf]])
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_unsorted_parts_are_ranked() -> None:
    part = (np.array([[0.5, 2.0, 1.0, 2.0]], np.float32), np.array([[1, 9, 3, 4]]))
    scores, ids = negmine.merge_topk([part], 3)
    np.testing.assert_array_equal(ids, [[4, 9, 3]])
    np.testing.assert_array_equal(scores, [[2.0, 2.0, 1.0]])


@pytest.mark.parametrize(
    ("parts", "k", "error", "match"),
    [
        ([], 1, InvalidTypeError, "non-empty sequence"),
        ("ab", 1, InvalidTypeError, "non-empty sequence"),
        ([(np.zeros((1, 1), np.float32),)], 1, InvalidTypeError, "pair"),
        ([(np.zeros((1, 1)), np.zeros((1, 1), int))], 1, InvalidTypeError, "float32"),
        ([(np.zeros((1, 1), np.float32), np.zeros((1, 1)))], 1, InvalidTypeError, "integers"),
        ([(np.zeros((1, 2), np.float32), np.zeros((1, 1), int))], 1, InvalidArgumentError, "shape"),
        (
            [(np.zeros((1, 1), np.float32), np.zeros((1, 1), int))] * 1
            + [(np.zeros((2, 1), np.float32), np.ones((2, 1), int))],
            1,
            InvalidArgumentError,
            "part 1 has 2 queries",
        ),
        (
            [(np.full((1, 1), np.nan, np.float32), np.zeros((1, 1), int))],
            1,
            InvalidArgumentError,
            "NaN",
        ),
        (
            [(np.zeros((1, 1), np.float32), np.full((1, 1), 2**40))],
            1,
            InvalidArgumentError,
            "beyond",
        ),
        (
            [(np.zeros((1, 1), np.float32), np.zeros((1, 1), int))] * 2,
            1,
            InvalidArgumentError,
            "more than one part",
        ),
        ([(np.zeros((1, 1), np.float32), np.zeros((1, 1), int))], 0, InvalidArgumentError, "k"),
    ],
)
def test_bad_parts_are_refused_by_name(
    parts: object, k: int, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        negmine.merge_topk(parts, k)  # type: ignore[arg-type]
