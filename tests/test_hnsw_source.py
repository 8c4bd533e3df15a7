"""The HNSW graph as the core's candidate source (issue 9, section 2): ``_core.mine(...,
fetch=...)`` and ``mine(backend="hnsw")`` on top of it."""

from __future__ import annotations

import numpy as np
import pytest

import negmine
from negmine import _core
from negmine.errors import InvalidArgumentError, InvalidTypeError

pytest.importorskip("hnswlib")

N_CORPUS, N_QUERIES, DIM, CLUSTERS = 300, 60, 16, 6


def small_clustered(seed: int) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """A corpus small enough for a graph with M=32 and a large ef to find every neighbour."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(CLUSTERS, DIM))
    corpus = centers[rng.integers(0, CLUSTERS, N_CORPUS)] + 0.5 * rng.normal(size=(N_CORPUS, DIM))
    queries = centers[rng.integers(0, CLUSTERS, N_QUERIES)] + 0.5 * rng.normal(
        size=(N_QUERIES, DIM)
    )
    positives = [[int(i)] for i in rng.integers(0, N_CORPUS, N_QUERIES)]
    return queries.astype(np.float32), corpus.astype(np.float32), positives


OPTION_SETS: list[dict[str, object]] = [
    # tests/test_ann.py's
    {"sampling_strategy": "top", "num_negatives": 5},
    {"sampling_strategy": "top", "num_negatives": 4, "range_min": 3, "relative_margin": 0.05},
    {"sampling_strategy": "random", "num_negatives": 3, "seed": 7},
    {"num_negatives": 4, "max_score": 0.8},
    {"num_negatives": 3, "min_score": 0.95},
    # and more
    {"num_negatives": 4, "absolute_margin": 0.1},
    {"num_negatives": 4, "relative_margin": 0.2, "max_score": 0.9},
    {"num_negatives": 5, "dup_threshold": 0.9},
    {"sampling_strategy": "random", "num_negatives": 4, "range_min": 5, "range_max": 40, "seed": 3},
    {"sampling_strategy": "simans", "num_negatives": 4, "seed": 11, "simans_b": 0.1},
    {"num_negatives": 3, "range_min": 20, "range_max": 30},
    {"num_negatives": 6, "range_min": 250},
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: ",".join(map(str, o.items())))
def test_hnsw_with_full_recall_equals_exact(options: dict[str, object]) -> None:
    queries, corpus, positives = small_clustered(21)
    exact = negmine.mine(queries, corpus, positives, **options)  # type: ignore[arg-type]
    approx = negmine.mine(
        queries,
        corpus,
        positives,
        backend="hnsw",
        target_recall=1.0,
        hnsw_m=32,
        hnsw_ef_construction=400,
        threads=1,
        **options,  # type: ignore[arg-type]
    )
    assert approx.report.ann is not None and approx.report.ann.recall == 1.0
    np.testing.assert_array_equal(exact.negative_ids, approx.negative_ids)
    np.testing.assert_array_equal(exact.negative_scores, approx.negative_scores)
    np.testing.assert_array_equal(exact.positive_scores, approx.positive_scores)
    assert exact.report.starved == approx.report.starved


def core_inputs(
    n_queries: int = 8,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    queries, corpus, _ = small_clustered(22)
    # Query i's positive (and only excluded id) is corpus row i.
    ids = (np.arange(n_queries, dtype=np.int64), np.arange(n_queries, dtype=np.int64))
    csr = (np.arange(n_queries + 1, dtype=np.int64), ids[0])
    return np.ascontiguousarray(queries[:n_queries]), corpus, csr


@pytest.mark.parametrize("error", [KeyboardInterrupt(), ValueError("the index is gone")])
def test_an_exception_raised_by_fetch_surfaces_unchanged(error: BaseException) -> None:
    queries, corpus, csr = core_inputs()
    calls = []

    def fetch(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append((rows.copy(), depth))
        raise error

    options = _core.MineOptions(num_negatives=3)
    with pytest.raises(type(error)) as info:
        _core.mine(queries, corpus, csr, csr, options, fetch=fetch)
    assert info.value is error
    assert len(calls) == 1
    assert calls[0][0].dtype == np.int64 and calls[0][0].tolist() == list(range(len(queries)))
    assert calls[0][1] == _core.first_depth(options)


def test_a_source_that_finds_nothing_is_finished_exactly() -> None:
    queries, corpus, csr = core_inputs()
    options = _core.MineOptions(num_negatives=3)

    def nothing(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(rows) + 1, np.int64), np.empty(0, np.int64)

    exact = _core.mine(queries, corpus, csr, csr, options)
    mined = _core.mine(queries, corpus, csr, csr, options, fetch=nothing)
    np.testing.assert_array_equal(exact.negative_ids, mined.negative_ids)
    np.testing.assert_array_equal(exact.negative_scores, mined.negative_scores)
    assert mined.exact_finish.all()
    assert not exact.exact_finish.any()


def test_a_source_past_max_depth_is_not_asked() -> None:
    queries, corpus, csr = core_inputs()
    options = _core.MineOptions(num_negatives=3)

    def never(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("asked deeper than max_depth")

    mined = _core.mine(
        queries, corpus, csr, csr, options, fetch=never, max_depth=_core.first_depth(options) - 1
    )
    assert mined.exact_finish.all()
    np.testing.assert_array_equal(
        mined.negative_ids, _core.mine(queries, corpus, csr, csr, options).negative_ids
    )


def test_bad_fetch_answers_are_named() -> None:
    queries, corpus, csr = core_inputs()
    options = _core.MineOptions(num_negatives=3)

    def floats(rows: np.ndarray, depth: int) -> object:
        return np.zeros(len(rows) + 1), np.empty(0)

    def outside(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(len(rows) + 1, dtype=np.int64), np.full(len(rows), N_CORPUS, np.int64)

    def ragged(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        return np.array([0, 5], np.int64), np.zeros(2, np.int64)

    with pytest.raises(InvalidTypeError, match="int64"):
        _core.mine(queries, corpus, csr, csr, options, fetch=floats)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=f"id {N_CORPUS} for queries row 0"):
        _core.mine(queries, corpus, csr, csr, options, fetch=outside)
    with pytest.raises(InvalidArgumentError, match="indptr"):
        _core.mine(queries, corpus, csr, csr, options, fetch=ragged)


def test_first_depth_is_the_cores() -> None:
    # The core's schedule: twice the window end, at least 64.
    assert _core.first_depth(_core.MineOptions(num_negatives=5)) == 64
    assert _core.first_depth(_core.MineOptions(num_negatives=5, range_max=100)) == 200
    random = _core.MineOptions(num_negatives=8, sampling_strategy="random", range_min=2)
    assert _core.first_depth(random) == 2 * (2 + 10 * 8)


def test_a_chunk_checkpointed_by_an_older_version_reads_back() -> None:
    queries, corpus, csr = core_inputs()
    mined = _core.mine(queries, corpus, csr, csr, _core.MineOptions(num_negatives=3))
    arrays = mined.arrays()
    assert {"fetches", "exact_finish"} <= set(arrays)
    old = {k: v for k, v in arrays.items() if k not in ("fetches", "exact_finish")}
    old["incomplete"] = np.zeros(len(queries), dtype=bool)  # saved before issue 9
    back = _core.Mined(**old)
    assert "incomplete" not in back.arrays()
    assert back.fetches.tolist() == [1] * len(queries)
    assert not back.exact_finish.any()
    np.testing.assert_array_equal(back.negative_ids, mined.negative_ids)
