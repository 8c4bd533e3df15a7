"""negmine.search against a NumPy brute-force oracle, plus its behaviour on bad input, layouts,
threads, Ctrl-C and progress (docs/reliability.md items 5-9 and 11).

A Rust panic surfaces as ``pyo3_runtime.PanicException``, a ``BaseException``: every error path
goes through ``expect_error``, which fails loudly on anything that is not an ``Exception``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import negmine
from negmine import _core

ISAS = [f for f in _core.cpu_features() if f != "avx512vnni"]  # kernels, not extensions


# ---------------------------------------------------------------------------------------------
# Helpers


def expect_error(kind: type[BaseException], fn, *args, match: str | None = None, **kwargs):
    """Calls ``fn`` and checks that it raises ``kind`` (an ``Exception``, never a panic)."""
    try:
        fn(*args, **kwargs)
    except BaseException as error:  # a PanicException is what we look for
        assert isinstance(error, Exception), (
            f"{type(error).__module__}.{type(error).__name__} is not an Exception "
            f"(a Rust panic?): {error}"
        )
        assert isinstance(error, kind), f"expected {kind.__name__}, got {error!r}"
        if match is not None:
            assert re.search(match, str(error)), f"{str(error)!r} does not match {match!r}"
        return error
    pytest.fail(f"no {kind.__name__} raised")


def no_panic(fn, *args, **kwargs):
    """Calls ``fn``; any outcome but a non-``Exception`` (a Rust panic) is fine."""
    try:
        return fn(*args, **kwargs)
    except BaseException as error:
        if not isinstance(error, Exception):
            pytest.fail(f"{type(error).__name__} (a Rust panic?): {error}")
        raise


def exclusion_lists(exclude, n_queries):
    """Either exclusion form as one list of id sets per query."""
    if exclude is None:
        return [set() for _ in range(n_queries)]
    if isinstance(exclude, tuple):
        indptr, indices = (np.asarray(a) for a in exclude)
        return [set(indices[indptr[q] : indptr[q + 1]].tolist()) for q in range(n_queries)]
    return [set(row) for row in exclude]


def exact_oracle(queries, corpus, k, exclude=None):
    """Top-k by float64 brute force: exact for small-integer data; ties by smaller id."""
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    excluded = exclusion_lists(exclude, len(queries))
    out_scores = np.empty((len(queries), k))
    out_ids = np.empty((len(queries), k), dtype=np.int64)
    for q, row in enumerate(scores):
        ids = np.array([i for i in range(len(row)) if i not in excluded[q]], dtype=np.int64)
        order = np.lexsort((ids, -row[ids]))[:k]
        out_ids[q] = ids[order]
        out_scores[q] = row[ids[order]]
    return out_scores, out_ids


def float64_scores(queries, corpus, metric):
    q = queries.astype(np.float64)
    c = corpus.astype(np.float64)
    if metric == "cosine":
        for m in (q, c):
            norms = np.linalg.norm(m, axis=1, keepdims=True)
            np.divide(m, norms, out=m, where=norms > 0)
    return q @ c.T


def check_valid(scores, ids, queries, corpus, k, *, metric="dot", exclude=None, exact=True):
    """Shapes, dtypes, unique in-range ids, ranking, recomputed scores and optimality."""
    n_queries, n = len(queries), len(corpus)
    assert scores.shape == ids.shape == (n_queries, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert np.all((ids >= 0) & (ids < n))
    assert not np.isnan(scores).any()
    reference = float64_scores(queries, corpus, metric)
    excluded = exclusion_lists(exclude, n_queries)
    for q in range(n_queries):
        row_ids, row_scores = ids[q], scores[q]
        assert len(set(row_ids.tolist())) == k, f"query {q}: duplicate ids {row_ids}"
        assert not (set(row_ids.tolist()) & excluded[q]), f"query {q}: excluded id returned"
        # Ranked: score descending, ties by smaller id.
        for a in range(k - 1):
            assert row_scores[a] > row_scores[a + 1] or (
                row_scores[a] == row_scores[a + 1] and row_ids[a] < row_ids[a + 1]
            ), f"query {q}: not ranked at {a}: {row_scores[a : a + 2]} {row_ids[a : a + 2]}"
        want = reference[q, row_ids]
        scale = 1.0 if exact else np.maximum(np.abs(want), 1.0)
        tolerance = 0.0 if exact else 1e-4
        assert np.all(np.abs(row_scores - want) <= tolerance * scale), (
            f"query {q}: scores {row_scores} vs float64 {want}"
        )
        rest = np.ones(n, dtype=bool)
        rest[row_ids] = False
        rest[list(excluded[q])] = False
        if rest.any():
            best_left = reference[q, rest].max()
            kth = float(row_scores[-1])
            assert kth >= best_left - tolerance * max(1.0, abs(best_left)), (
                f"query {q}: row with score {best_left} beats the k-th score {kth}"
            )


def assert_same(a, b, what=""):
    """Bitwise identity of two (scores, ids) results."""
    np.testing.assert_array_equal(a[1], b[1], err_msg=f"ids differ {what}")
    np.testing.assert_array_equal(
        a[0].view(np.uint32), b[0].view(np.uint32), err_msg=f"scores differ {what}"
    )


def normal(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Property: exact agreement with the oracle on integer-valued data


def int_matrix(draw, rows, dim):
    values = draw(hnp.arrays(np.int8, (rows, dim), elements=st.integers(-4, 4)))
    return values.astype(np.float32)


@st.composite
def exact_cases(draw):
    n_queries = draw(st.integers(1, 13))
    n = draw(st.integers(1, 70))
    dim = draw(st.integers(1, 24))
    queries = int_matrix(draw, n_queries, dim)
    corpus = int_matrix(draw, n, dim)
    exclude = None
    form = draw(st.sampled_from(["none", "lists", "csr"]))
    if form != "none":
        lists = [
            draw(st.lists(st.integers(0, n - 1), max_size=max(0, n - 1))) for _ in range(n_queries)
        ]
        exclude = lists if form == "lists" else _csr(lists)
    left = n - max(len(s) for s in exclusion_lists(exclude, n_queries))
    k = draw(st.one_of(st.just(left), st.integers(1, left)))
    knobs = {
        "threads": draw(st.sampled_from([None, 1, 2, 3])),
        "block_rows": draw(st.one_of(st.none(), st.integers(1, 100))),
        "query_batch": draw(st.one_of(st.none(), st.integers(1, 20))),
    }
    dtypes = draw(st.sampled_from(["float32", "float64", "float16"]))
    return queries, corpus, k, exclude, knobs, dtypes


def _csr(lists):
    indptr = np.cumsum([0] + [len(row) for row in lists]).astype(np.int64)
    indices = np.array([i for row in lists for i in row], dtype=np.int64)
    return indptr, indices


@settings(max_examples=300)
@given(exact_cases())
def test_integer_data_matches_the_oracle_exactly(case):
    queries, corpus, k, exclude, knobs, dtype = case
    scores, ids = negmine.search(
        queries.astype(dtype), corpus.astype(dtype), k, exclude=exclude, **knobs
    )
    want_scores, want_ids = exact_oracle(queries, corpus, k, exclude)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores.astype(np.float32))
    assert scores.dtype == np.float32 and ids.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# Property: random float data


@settings(max_examples=200)
@given(
    n_queries=st.integers(1, 20),
    n=st.integers(1, 200),
    dim=st.integers(1, 70),
    metric=st.sampled_from(["dot", "cosine"]),
    k_frac=st.floats(0, 1),
    f16_corpus=st.booleans(),
    zero_rows=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    threads=st.sampled_from([1, 2, 3]),
)
def test_float_data_is_valid_and_optimal(
    n_queries, n, dim, metric, k_frac, f16_corpus, zero_rows, seed, threads
):
    rng = np.random.default_rng(seed)
    queries = normal(rng, n_queries, dim)
    corpus = normal(rng, n, dim)
    if f16_corpus:
        corpus = corpus.astype(np.float16)
    if zero_rows:
        queries[rng.integers(n_queries)] = 0
        corpus[rng.integers(n)] = 0
    k = max(1, round(k_frac * n))
    scores, ids = negmine.search(queries, corpus, k, metric=metric, threads=threads)
    check_valid(scores, ids, queries, corpus, k, metric=metric, exact=False)
    if metric == "cosine":
        assert np.all(np.abs(scores) <= 1 + 1e-5)


# ---------------------------------------------------------------------------------------------
# Shapes, layouts, dtypes


@pytest.mark.parametrize(
    ("n_queries", "n", "dim"), [(1, 1, 1), (1, 37, 5), (7, 33, 17), (13, 16, 6)]
)
def test_awkward_shapes(rng, n_queries, n, dim):
    queries = np.round(rng.uniform(-4, 4, (n_queries, dim))).astype(np.float32)
    corpus = np.round(rng.uniform(-4, 4, (n, dim))).astype(np.float32)
    for k in sorted({1, n // 2 or 1, n}):
        scores, ids = negmine.search(queries, corpus, k)
        want = exact_oracle(queries, corpus, k)
        np.testing.assert_array_equal(ids, want[1])
        np.testing.assert_array_equal(scores, want[0])


def test_large_k(rng):
    queries = np.round(rng.uniform(-4, 4, (3, 8))).astype(np.float32)
    corpus = np.round(rng.uniform(-4, 4, (3000, 8))).astype(np.float32)
    scores, ids = negmine.search(queries, corpus, 3000, threads=2)
    want = exact_oracle(queries, corpus, 3000)
    np.testing.assert_array_equal(ids, want[1])
    np.testing.assert_array_equal(scores, want[0])
    assert all(sorted(row) == list(range(3000)) for row in ids.tolist())


def test_views_give_the_same_result_as_contiguous_copies(rng):
    base_q = normal(rng, 14, 40)
    base_c = normal(rng, 120, 40)
    expected = None
    # Views whose memory runs backwards hold the original values in reverse buffers.
    reversed_rows = base_c[::-1, :20].copy()[::-1]
    reversed_cols = base_q[:, 19::-1].copy()[:, ::-1]
    assert reversed_rows.strides[0] < 0 and reversed_cols.strides[1] < 0
    views = {
        "contiguous": (base_q[:, :20].copy(), base_c[:, :20].copy()),
        "column slice": (base_q[:, :20], base_c[:, :20]),
        "row step": (np.repeat(base_q[:, :20], 2, axis=0)[::2], base_c[:, :20]),
        "fortran": (np.asfortranarray(base_q[:, :20]), np.asfortranarray(base_c[:, :20])),
        "negative strides": (reversed_cols, reversed_rows),
        "read-only": (_read_only(base_q[:, :20]), _read_only(base_c[:, :20].copy())),
    }
    for name, (q, c) in views.items():
        np.testing.assert_array_equal(q, base_q[:, :20])
        np.testing.assert_array_equal(c, base_c[:, :20])
        result = negmine.search(q, c, 9, metric="cosine")
        if expected is None:
            expected = result
        assert_same(result, expected, name)
    # Zero strides: every corpus row is the same, so ids rank 0, 1, 2, ...
    scores, ids = negmine.search(base_q, np.broadcast_to(base_c[0], (120, 40)), 9)
    assert ids.tolist() == [list(range(9))] * 14
    assert np.all(scores == scores[:, :1])


def _read_only(array):
    array.flags.writeable = False
    return array


def test_float64_is_cast_and_f16_widens_exactly(rng):
    queries = normal(rng, 5, 16)
    corpus = normal(rng, 50, 16)
    assert_same(
        negmine.search(queries.astype(np.float64), corpus.astype(np.float64), 7),
        negmine.search(queries, corpus, 7),
        "float64 vs float32",
    )
    corpus16 = corpus.astype(np.float16)
    for metric in ("dot", "cosine"):
        assert_same(
            negmine.search(queries, corpus16, 7, metric=metric),
            negmine.search(queries, corpus16.astype(np.float32), 7, metric=metric),
            f"f16 corpus, {metric}",
        )
        assert_same(
            negmine.search(queries.astype(np.float16), corpus16, 7, metric=metric),
            negmine.search(
                queries.astype(np.float16).astype(np.float32),
                corpus16.astype(np.float32),
                7,
                metric=metric,
            ),
            f"f16 queries, {metric}",
        )


def test_big_endian_float32_is_converted(rng):
    """``_inputs.as_matrix`` converts non-native byte order; float32 stored big-endian holds
    the same values and must give the same result."""
    queries = normal(rng, 3, 8)
    corpus = normal(rng, 20, 8)
    want = negmine.search(queries, corpus, 4)
    got = no_panic(negmine.search, queries.astype(">f4"), corpus.astype(">f4"), 4)
    assert_same(got, want, "big-endian")


def test_nested_lists_are_accepted(rng):
    queries = np.round(rng.uniform(-4, 4, (2, 3)))
    corpus = np.round(rng.uniform(-4, 4, (6, 3)))
    _, ids = negmine.search(queries.tolist(), corpus.tolist(), 2)
    want = exact_oracle(queries, corpus, 2)
    np.testing.assert_array_equal(ids, want[1])


# ---------------------------------------------------------------------------------------------
# Exclusions


def test_exclusions_in_both_forms(rng):
    queries = np.round(rng.uniform(-4, 4, (9, 6))).astype(np.float32)
    corpus = np.round(rng.uniform(-4, 4, (40, 6))).astype(np.float32)
    lists = [rng.choice(40, size=rng.integers(0, 30), replace=False).tolist() for _ in range(9)]
    lists[0] = [3, 3, 3, 7]  # duplicates count once
    lists[1] = list(range(40))[:35]
    k = 5  # = N - |excluded| for query 1
    as_lists = negmine.search(queries, corpus, k, exclude=lists)
    as_csr = negmine.search(queries, corpus, k, exclude=_csr(lists))
    assert_same(as_lists, as_csr, "lists vs CSR")
    want = exact_oracle(queries, corpus, k, lists)
    np.testing.assert_array_equal(as_lists[1], want[1])
    np.testing.assert_array_equal(as_lists[0], want[0])
    assert sorted(as_lists[1][1].tolist()) == list(range(35, 40))
    # numpy id arrays per query work as lists too
    as_arrays = negmine.search(
        queries, corpus, k, exclude=[np.array(r, dtype=np.int64) for r in lists]
    )
    assert_same(as_lists, as_arrays, "lists of arrays")


# ---------------------------------------------------------------------------------------------
# Cosine (item 8)


def test_cosine_zero_vectors_score_zero(rng):
    queries = normal(rng, 4, 10)
    corpus = normal(rng, 30, 10)
    queries[1] = 0
    corpus[[0, 7, 29]] = 0
    scores, ids = negmine.search(queries, corpus, 30, metric="cosine")
    assert np.isfinite(scores).all()
    assert np.all(scores[1] == 0) and ids[1].tolist() == list(range(30))
    for q in (0, 2, 3):
        zero_positions = np.isin(ids[q], [0, 7, 29])
        assert np.all(scores[q][zero_positions] == 0)
    check_valid(scores, ids, queries, corpus, 30, metric="cosine", exact=False)


def test_cosine_is_scale_invariant_for_tiny_vectors(rng):
    """A row whose elements are all subnormal has a norm below 1 / f32::MAX; its inverse norm
    must not overflow to inf (scores +-inf or NaN instead of a cosine in [-1, 1])."""
    queries = normal(rng, 3, 8)
    corpus = normal(rng, 20, 8)
    want = negmine.search(queries, corpus, 5, metric="cosine")
    tiny = np.float32(1e-39)
    for q, c in ((queries, corpus * tiny), (queries * tiny, corpus)):
        scores, ids = negmine.search(q, c, 5, metric="cosine")
        assert np.isfinite(scores).all() and np.all(np.abs(scores) <= 1 + 1e-5), scores
        np.testing.assert_array_equal(ids, want[1])


def test_cosine_is_bounded_for_huge_vectors():
    """Finite rows near f32::MAX: the dot product of the unit query with the raw corpus row
    overflows before the corpus norm is applied."""
    corpus = np.array([[3e38, 3e38], [3e38, -3e38]], dtype=np.float32)
    scores, ids = negmine.search(np.ones((1, 2), np.float32), corpus, 2, metric="cosine")
    assert np.isfinite(scores).all() and np.all(np.abs(scores) <= 1 + 1e-5), scores
    assert ids.tolist() == [[0, 1]]


# ---------------------------------------------------------------------------------------------
# Determinism (item 9) and equivariance


def test_results_identical_for_every_knob(rng):
    corpus = np.round(rng.uniform(-3, 3, (500, 12))).astype(np.float32)  # many ties
    queries = normal(rng, 300, 12)
    variants = [
        {"threads": t, "block_rows": b, "query_batch": qb}
        for t in (1, 2, 3)
        for b in (None, 1, 16, 17, 1000)
        for qb in (None, 1, 300)
    ]
    for metric in ("dot", "cosine"):
        for sub in (queries[:1], queries[:7], queries):
            reference = negmine.search(sub, corpus, 25, metric=metric)
            for knobs in variants:
                if knobs["query_batch"] == 1 and len(sub) == 300 and knobs["block_rows"] == 1:
                    continue  # 300 x 500 one-row blocks: slow and adds nothing
                assert_same(
                    negmine.search(sub, corpus, 25, metric=metric, **knobs), reference, knobs
                )
            for isa in ISAS:
                for precision in ("f32", "int8"):
                    options = _core.SearchOptions(25, metric=metric, isa=isa, precision=precision)
                    scores, ids, stats = _core.search(sub, corpus, options, threads=2)
                    assert stats["precision"] == precision
                    assert_same((scores, ids), reference, (isa, precision))


def test_one_query_at_a_time_equals_all_at_once(rng):
    queries = normal(rng, 50, 16)
    corpus = normal(rng, 300, 16)
    together = negmine.search(queries, corpus, 10, metric="cosine")
    for q in range(50):
        alone = negmine.search(queries[q : q + 1], corpus, 10, metric="cosine")
        assert_same(alone, (together[0][q : q + 1], together[1][q : q + 1]), f"query {q}")


def test_equivariant_under_corpus_permutation(rng):
    queries = normal(rng, 9, 20)
    corpus = normal(rng, 150, 20)
    perm = rng.permutation(150)
    for metric in ("dot", "cosine"):
        scores, ids = negmine.search(queries, corpus, 12, metric=metric)
        scores_p, ids_p = negmine.search(queries, corpus[perm], 12, metric=metric)
        # Each score depends only on its (query, row) pair, never on the row's position.
        np.testing.assert_array_equal(perm[ids_p], ids)
        np.testing.assert_array_equal(scores_p, scores)


def test_unknown_isa_is_refused(rng):
    expect_error(ValueError, _core.SearchOptions, 1, isa="sse9", match="sse9")


# ---------------------------------------------------------------------------------------------
# Embeddings files


def test_search_over_an_npy_file(rng, tmp_path):
    queries = normal(rng, 4, 12)
    corpus = normal(rng, 60, 12)
    path = tmp_path / "corpus.npy"
    np.save(path, corpus)
    try:
        embeddings = negmine.open_embeddings(path)
    except (NotImplementedError, negmine.FormatError) as error:
        if "not implemented" in str(error):
            pytest.skip(f"open_embeddings is not implemented yet: {error}")
        raise
    want = negmine.search(queries, corpus, 5)
    assert_same(negmine.search(queries, embeddings, 5), want, "Embeddings")
    assert_same(negmine.search(queries, str(path), 5), want, "path")
    np.save(tmp_path / "q16.npy", queries.astype(np.float16))
    assert_same(
        negmine.search(tmp_path / "q16.npy", corpus, 5),
        negmine.search(queries.astype(np.float16), corpus, 5),
        "f16 queries file",
    )


# ---------------------------------------------------------------------------------------------
# Bad input (items 5-7)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_row(rng, bad):
    queries = normal(rng, 6, 8)
    corpus = normal(rng, 50, 8)
    q = queries.copy()
    q[3, 5] = bad
    q[5, 0] = bad
    expect_error(ValueError, negmine.search, q, corpus, 3, match=r"queries row 3\b")
    c = corpus.copy()
    c[17, 2] = bad
    c[40, 2] = bad
    for threads in (1, 2):
        expect_error(
            ValueError, negmine.search, queries, c, 3, threads=threads, match=r"corpus row 17\b"
        )
    expect_error(
        ValueError, negmine.search, queries, c.astype(np.float16), 3, match=r"corpus row 17\b"
    )


def test_first_non_finite_corpus_row_is_named_for_any_thread_count(rng):
    """With few queries each thread scans its own corpus shard; the error must still name the
    first bad row (and the same row for every thread count)."""
    corpus = normal(rng, 1000, 8)
    corpus[400, 0] = np.nan
    corpus[510, 0] = np.inf
    for threads in (1, 2, 3):
        expect_error(
            ValueError,
            negmine.search,
            normal(rng, 1, 8),
            corpus,
            3,
            threads=threads,
            block_rows=16,
            match=r"corpus row 400\b",
        )


def test_dimension_mismatch_names_both_dims(rng):
    error = expect_error(ValueError, negmine.search, normal(rng, 2, 5), normal(rng, 9, 7), 1)
    assert "5" in str(error) and "7" in str(error), error


@pytest.mark.parametrize(
    "value",
    [
        np.ones((3, 4), dtype=np.int64),
        np.ones((3, 4), dtype=np.int32),
        np.ones((3, 4), dtype=bool),
        np.ones((3, 4), dtype=np.complex64),
        np.ones((3, 4), dtype=object),
        [["a", "b"]],
    ],
    ids=["int64", "int32", "bool", "complex", "object", "strings"],
)
def test_wrong_dtypes_are_type_errors(rng, value):
    corpus = normal(rng, 5, 4)
    expect_error(TypeError, negmine.search, value, corpus, 1)
    expect_error(TypeError, negmine.search, corpus, value, 1)
    expect_error(negmine.InvalidTypeError, negmine.search, corpus, value, 1)


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), ()])
def test_wrong_ndim_is_a_value_error(rng, shape):
    bad = np.ones(shape, dtype=np.float32)
    good = normal(rng, 5, 4)
    expect_error(ValueError, negmine.search, bad, good, 1, match="2-D")
    expect_error(ValueError, negmine.search, good, bad, 1, match="2-D")


def test_bad_k_empty_corpus_and_zero_dim(rng):
    queries, corpus = normal(rng, 2, 4), normal(rng, 10, 4)
    for k in (0, -1, 11):
        expect_error(negmine.InvalidArgumentError, negmine.search, queries, corpus, k)
    negmine.search(queries, corpus, 10)
    expect_error(
        ValueError, negmine.search, queries, np.empty((0, 4), np.float32), 1, match="empty"
    )
    expect_error(
        ValueError,
        negmine.search,
        np.empty((2, 0), np.float32),
        np.empty((3, 0), np.float32),
        1,
        match="dimension 0",
    )
    expect_error(ValueError, negmine.search, queries, corpus, 1, metric="euclid")
    expect_error(ValueError, negmine.search, queries, corpus, 1, threads=0)
    scores, ids = negmine.search(np.empty((0, 4), np.float32), corpus, 3)
    assert scores.shape == ids.shape == (0, 3)


def test_k_larger_than_the_rows_left_after_exclusion(rng):
    queries, corpus = normal(rng, 3, 4), normal(rng, 10, 4)
    exclude = [[], [1, 2, 3], [0, 0, 0]]
    negmine.search(queries, corpus, 7, exclude=exclude)
    expect_error(ValueError, negmine.search, queries, corpus, 8, exclude=exclude, match="query 1")


@pytest.mark.parametrize(
    "exclude",
    [
        [[10], [], []],
        [[-1], [], []],
        [[], []],
        [[], [], [], []],
        (np.array([0, 1, 1]), np.array([2])),  # indptr too short
        (np.array([1, 1, 1, 1]), np.array([2])),  # does not start at 0
        (np.array([0, 1, 1, 3]), np.array([2])),  # does not end at len(indices)
        (np.array([0, 2, 1, 3]), np.array([1, 2, 3])),  # decreasing
        (np.array([[0, 1, 1, 1]]), np.array([2])),  # 2-D indptr
    ],
)
def test_bad_exclusions_are_value_errors(rng, exclude):
    queries, corpus = normal(rng, 3, 4), normal(rng, 10, 4)
    expect_error(ValueError, negmine.search, queries, corpus, 1, exclude=exclude)


def test_csr_indptr_beyond_indices_is_a_value_error_not_a_panic(rng):
    """indptr = [0, 5, 2] with 2 indices: the inner entry overshoots len(indices)."""
    queries, corpus = normal(rng, 2, 4), normal(rng, 10, 4)
    exclude = (np.array([0, 5, 2]), np.array([1, 2]))
    expect_error(ValueError, negmine.search, queries, corpus, 1, exclude=exclude)


def test_huge_block_rows_neither_panic_nor_change_the_result(rng):
    queries, corpus = normal(rng, 1, 4), normal(rng, 100, 4)
    want = negmine.search(queries, corpus, 5, threads=2)
    for block_rows in (2**63, 2**64 - 17, 2**64 - 1):
        got = no_panic(negmine.search, queries, corpus, 5, threads=2, block_rows=block_rows)
        assert_same(got, want, f"block_rows={block_rows}")


@settings(max_examples=60)
@given(
    k=st.integers(-2, 12),
    exclude=st.one_of(
        st.none(), st.lists(st.lists(st.integers(-2, 12), max_size=4), min_size=2, max_size=4)
    ),
    block_rows=st.one_of(st.none(), st.integers(0, 2**20)),
    query_batch=st.one_of(st.none(), st.integers(0, 2**40)),
    threads=st.sampled_from([None, 1, 3]),
    metric=st.sampled_from(["dot", "cosine", "", "DOT"]),
)
def test_arbitrary_arguments_never_panic(k, exclude, block_rows, query_batch, threads, metric):
    queries = np.arange(9, dtype=np.float32).reshape(3, 3) - 4
    corpus = np.arange(30, dtype=np.float32).reshape(10, 3) % 7 - 3
    with contextlib.suppress(ValueError, TypeError):
        no_panic(
            negmine.search,
            queries,
            corpus,
            k,
            exclude=exclude,
            block_rows=block_rows,
            query_batch=query_batch,
            threads=threads,
            metric=metric,
        )


# ---------------------------------------------------------------------------------------------
# Concurrency (item 11), Ctrl-C, progress


def test_inputs_mutated_by_another_thread_during_a_search(rng):
    queries = normal(rng, 300, 64)
    corpus = normal(rng, 40_000, 64)
    corpus_view = corpus.view()
    stop = threading.Event()
    writes = [0]

    def mutate():
        local = np.random.default_rng(1)
        while not stop.is_set():
            rows = local.integers(0, len(corpus), 64)
            # Through the arrays themselves (refused while a search reads them) and through
            # views of the same memory (not refused, must not crash).
            with contextlib.suppress(ValueError):
                corpus[rows] = local.standard_normal((64, 64), dtype=np.float32)
            corpus_view[rows] = local.standard_normal((64, 64), dtype=np.float32)
            with contextlib.suppress(ValueError):
                queries[local.integers(0, len(queries))] = local.standard_normal(
                    64, dtype=np.float32
                )
            writes[0] += 1

    writer = threading.Thread(target=mutate)
    writer.start()
    try:
        for query_batch in (None, 7):
            scores, ids = no_panic(
                negmine.search,
                queries,
                corpus,
                20,
                threads=2,
                query_batch=query_batch,
                block_rows=512,
            )
            assert scores.shape == ids.shape == (300, 20)
            assert np.all((ids >= 0) & (ids < len(corpus)))
            assert all(len(set(row)) == 20 for row in ids.tolist())
            assert np.isfinite(scores).all()
            assert np.all(np.diff(scores, axis=1) <= 0)
    finally:
        stop.set()
        writer.join()
    assert writes[0] > 0, "the writer never ran while the GIL was released"


def test_query_rows_made_non_finite_during_a_search_do_not_panic(rng):
    """Queries are validated once, then packed batch by batch (``expect("queries were checked
    to be finite")``): a NaN written meanwhile (here by the progress callback, as another
    thread could) must give an error or a result, never a panic."""
    queries = normal(rng, 60, 8)
    corpus = normal(rng, 100, 8)

    def poison(done, total):
        queries[-1, 0] = np.nan

    with contextlib.suppress(ValueError):
        no_panic(negmine.search, queries, corpus, 3, query_batch=6, progress=poison)


def test_results_match_a_snapshot_when_an_input_is_mutated_mid_search(rng):
    """Item 11: the search holds a read-only borrow or a copy, so a write made while it runs
    (here from the progress callback, between two corpus blocks) either fails or does not
    change the result."""
    queries = normal(rng, 2, 8)
    corpus = normal(rng, 1000, 8)
    want = negmine.search(queries, corpus.copy(), 5)
    blocked = []

    def mutate(done, total):
        try:
            corpus[-50:] = queries[0] * 100  # rows not read yet, made the best matches
        except ValueError:
            blocked.append(done)  # read-only while borrowed: also fine

    got = negmine.search(queries, corpus, 5, block_rows=16, threads=1, progress=mutate)
    assert_same(got, want, "snapshot")


_INTERRUPT_SCRIPT = textwrap.dedent(
    """
    import sys, numpy as np, negmine
    rng = np.random.default_rng(0)
    queries = rng.random((4000, 128), dtype=np.float32)
    corpus = rng.random((200_000, 128), dtype=np.float32)
    print("ready", flush=True)
    # Each search takes seconds on two threads; loop so that a fast machine cannot finish
    # before the signal arrives.
    for _ in range(20):
        negmine.search(queries, corpus, 10, threads=2)
    print("finished", flush=True)
    """
)


def test_ctrl_c_interrupts_a_long_search():
    child = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPT_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": ""},
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=20)
        elapsed = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert "finished" not in stdout, "the search ran to completion despite SIGINT"
    assert child.returncode != 0
    assert "KeyboardInterrupt" in stderr, stderr[-2000:]
    assert "PanicException" not in stderr and "panicked" not in stderr, stderr[-2000:]
    assert elapsed < 5, f"took {elapsed:.1f} s to stop after SIGINT"


def _record(seen, done, total):
    seen.append((done, total))


def test_progress_callback_sees_increasing_counts_up_to_the_total(rng):
    queries, corpus = normal(rng, 20, 8), normal(rng, 1000, 8)
    for threads, query_batch in ((1, None), (2, None), (3, 7)):
        seen = []
        negmine.search(
            queries,
            corpus,
            5,
            threads=threads,
            block_rows=100,
            query_batch=query_batch,
            progress=functools.partial(_record, seen),
        )
        assert len(seen) >= 2
        dones = [d for d, _ in seen]
        totals = {t for _, t in seen}
        assert len(totals) == 1, totals
        assert all(a < b for a, b in zip(dones, dones[1:])), dones
        assert dones[-1] == totals.pop()


def test_progress_callback_exception_propagates_unchanged(rng):
    queries, corpus = normal(rng, 3, 8), normal(rng, 1000, 8)

    class Stop(Exception):
        pass

    raised = Stop("from the callback")
    calls = []

    def callback(done, total):
        calls.append(done)
        raise raised

    with pytest.raises(Stop) as info:
        negmine.search(queries, corpus, 5, block_rows=64, progress=callback)
    assert info.value is raised
    assert len(calls) == 1


def test_progress_bar(rng, capsys):
    queries, corpus = normal(rng, 3, 8), normal(rng, 100, 8)
    assert_same(
        negmine.search(queries, corpus, 5, progress=True), negmine.search(queries, corpus, 5)
    )


@pytest.mark.parametrize("call", ["search", "mine"])
def test_progress_bar_is_drawn_before_the_core_starts(rng, monkeypatch, capsys, call):
    # A bar made at the core's first report starts its clock after the first block: the
    # elapsed time and the rate it shows are then wrong.
    import tqdm.auto

    bars = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    at_start = []
    core_call = getattr(_core, call)

    def watched(*args, **kwargs):
        at_start.append([(b.n, b.total) for b in bars])
        return core_call(*args, **kwargs)

    monkeypatch.setattr(_core, call, watched)
    queries, corpus = normal(rng, 4, 8), normal(rng, 300, 8)
    if call == "search":
        negmine.search(queries, corpus, 3, progress=True)
    else:
        negmine.mine(queries, corpus, [[0]] * 4, progress=True)
    assert at_start == [[(0, 300)]]
    assert [(b.n, b.total) for b in bars] == [(300, 300)]


def _clustered(rng: np.random.Generator, n: int, dim: int, centers: np.ndarray) -> np.ndarray:
    rows = centers[rng.integers(len(centers), size=n)] + 0.3 * rng.standard_normal((n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.sampled_from([1, 7, 64, 400]),
    metric=st.sampled_from(["dot", "cosine"]),
    half=st.booleans(),
    threads=st.sampled_from([1, 2]),
)
def test_int8_precision_returns_the_f32_result_bit_for_bit(seed, k, metric, half, threads):
    # Clustered unit rows (as real embeddings are), with duplicated rows (exact ties around
    # the k-th score) and an exclusion list per query.
    rng = np.random.default_rng(seed)
    dim = 48
    centers = rng.standard_normal((6, dim))
    q = _clustered(rng, 30, dim, centers)
    c = _clustered(rng, 600, dim, centers)
    c[rng.integers(600, size=60)] = c[rng.integers(600, size=60)]
    if half:
        c = c.astype(np.float16)
    exclude = [rng.choice(600, size=rng.integers(0, 5), replace=False).tolist() for _ in q]
    kw = dict(metric=metric, exclude=exclude, threads=threads, block_rows=97)
    want = negmine.search(q, c, k, precision="f32", **kw)
    got = negmine.search(q, c, k, precision="int8", **kw)
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].tobytes() == want[0].tobytes()
    auto = negmine.search(q, c, k, **kw)
    assert auto[0].tobytes() == want[0].tobytes()


def tiny_rows(rng: np.random.Generator, rows: int, dim: int, exponent: int) -> np.ndarray:
    """Rows times ``2^-e``, ``e`` within 12 of ``exponent`` per row (up to 160, past the
    smallest subnormal); some rows repeated (ties) and some with one coordinate far below
    the others."""
    e = np.clip(exponent + rng.integers(-6, 7, size=(rows, 1)), 0, 160)
    x = rng.standard_normal((rows, dim)) * np.exp2(-e.astype(np.float64))
    x[rng.integers(rows, size=rows // 5)] = x[rng.integers(rows, size=rows // 5)]
    x[::7, 0] *= 2.0**-40
    return x.astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    exponents=st.tuples(st.integers(0, 160), st.integers(0, 160)),
    k=st.sampled_from([1, 3, 20]),
    metric=st.sampled_from(["dot", "cosine"]),
    isa=st.sampled_from(ISAS),
)
def test_every_precision_returns_the_f32_result_down_to_subnormals(seed, exponents, k, metric, isa):
    # Magnitudes whose products fall anywhere from the normal range through the subnormals to
    # zero: f32 scores round or flush to ties that the pre-scores still order, and int8 scales
    # fall below the normal range. The f32 path is the reference; int8 (every kernel) and auto
    # return it bit for bit (issue 20: rows of -1 ids, other ids than f32).
    rng = np.random.default_rng(seed)
    q = tiny_rows(rng, 13, 24, exponents[0])
    c = tiny_rows(rng, 1100, 24, exponents[1])  # int8 for "auto" on AVX-512 VNNI (k <= 17)
    want = negmine.search(q, c, k, metric=metric, precision="f32")
    for precision in ("int8", "auto"):
        options = _core.SearchOptions(k, metric=metric, isa=isa, precision=precision)
        scores, ids, _ = _core.search(q, c, options, threads=2)
        np.testing.assert_array_equal(ids, want[1], err_msg=f"{precision} {isa}")
        assert scores.tobytes() == want[0].tobytes(), (precision, isa)


def test_search_stats_say_which_path_ran_and_what_it_rescored(rng):
    corpus = normal(rng, 2000, 32)
    queries = corpus[:40] + 0.01
    for precision in ("f32", "int8"):
        *_, stats = negmine.search(
            queries, corpus, 10, metric="cosine", precision=precision, return_stats=True
        )
        assert stats.precision == precision
        assert stats.scan_seconds > 0
        if precision == "int8":
            # Every query rescored at least its k rows, and never more than the corpus.
            assert stats.rescored.shape == (40,)
            assert stats.rescored.min() >= 10 and stats.rescored_max <= 2000
            assert stats.rescored_mean >= 10
        else:
            assert len(stats.rescored) == 0 and stats.rescore_seconds == 0
    auto = negmine.search(queries, corpus, 10, return_stats=True)[2]
    assert auto.precision == ("int8" if "avx512vnni" in negmine.cpu_features() else "f32")
    with pytest.raises(TypeError, match="return_stats"):
        negmine.search(queries, corpus, 10, return_stats=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("precision", ["int4", "F32", 8, None])
def test_a_bad_precision_is_refused_by_name(precision):
    q = np.ones((2, 4), np.float32)
    with pytest.raises((ValueError, TypeError), match="precision"):
        negmine.search(q, q, 1, precision=precision)  # type: ignore[arg-type]


def _spectrum_rows(rng: np.random.Generator, rows: int, dim: int, kind: str) -> np.ndarray:
    """Rows of a chosen spectrum: isotropic, low rank, decaying (like real embeddings), all the
    energy in the last coordinates, or rows scaled over a huge dynamic range."""
    x = rng.standard_normal((rows, dim))
    if kind == "low_rank":
        x = rng.standard_normal((rows, 3)) @ rng.standard_normal((3, dim))
    elif kind == "decaying":
        x *= np.exp(-np.arange(dim) / 6.0)
    elif kind == "tail":
        x *= np.exp((np.arange(dim) - dim) / 6.0)
    elif kind == "huge_range":
        x *= 10.0 ** rng.integers(-25, 15, size=(rows, 1))
    return x.astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(["isotropic", "low_rank", "decaying", "tail", "huge_range"]),
    n=st.integers(1, 400),
    dim=st.integers(1, 48),
    k_frac=st.floats(0, 1),
    metric=st.sampled_from(["dot", "cosine"]),
    half=st.booleans(),
    cuts=st.sampled_from(["auto", "one", "two"]),
    threads=st.sampled_from([1, 2]),
    block_rows=st.sampled_from([None, 33, 256]),
)
def test_rotated_precision_returns_the_f32_result_bit_for_bit(
    seed, kind, n, dim, k_frac, metric, half, cuts, threads, block_rows
):
    # Every spectrum, with duplicated rows (exact ties at the k-th score), zero rows, an f16
    # corpus, exclusions, k from 1 to all the rows left, and stage cuts chosen from the
    # spectrum (isotropic data falls back to f32) or forced (the rotated path on any data).
    rng = np.random.default_rng(seed)
    q = _spectrum_rows(rng, 9, dim, kind)
    c = _spectrum_rows(rng, n, dim, kind)
    c[rng.integers(n, size=n // 5)] = c[rng.integers(n, size=n // 5)]
    c[rng.integers(n)] = 0
    q[0] = 0
    if half:
        with np.errstate(over="ignore"):  # huge rows become inf: both paths refuse them
            c = c.astype(np.float16)
    exclude = [rng.choice(n, size=rng.integers(0, n // 3 + 1), replace=False).tolist() for _ in q]
    left = n - max(len(e) for e in exclude)
    k = max(1, min(left, round(k_frac * 1.2 * left)))
    first = int(rng.integers(1, dim + 1))
    stage_cuts = {
        "auto": None,
        "one": [first],
        "two": [first, first + 1] if first < dim else [first],
    }[cuts]
    kw = dict(metric=metric, exclude=exclude, threads=threads, block_rows=block_rows)
    try:
        want = negmine.search(q, c, k, precision="f32", **kw)
    except negmine.errors.InvalidArgumentError as e:  # dot products that would overflow
        expect_error(
            negmine.errors.InvalidArgumentError,
            negmine.search,
            q,
            c,
            k,
            precision="rotated",
            stage_cuts=stage_cuts,
            match=re.escape(str(e)),
            **kw,
        )
        return
    *got, stats = negmine.search(
        q, c, k, precision="rotated", stage_cuts=stage_cuts, return_stats=True, **kw
    )
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].tobytes() == want[0].tobytes()
    if stage_cuts is not None:
        assert stats.precision == "rotated" and stats.stage_cuts == stage_cuts
        assert stats.stage_rows[-1] == stats.rescored.sum() >= k * len(q)


def test_rotated_precision_prunes_real_looking_data_and_falls_back_on_isotropic(rng):
    corpus = _spectrum_rows(rng, 3000, 96, "decaying")
    queries = corpus[:50] + 0.01
    *_, stats = negmine.search(
        queries, corpus, 10, metric="cosine", precision="rotated", return_stats=True
    )
    assert stats.precision == "rotated" and stats.stage_cuts, stats
    assert stats.rescored.sum() < 50 * 3000 / 4, stats
    assert stats.companion_seconds > 0
    flat = _spectrum_rows(rng, 3000, 96, "isotropic")
    *_, stats = negmine.search(flat[:50], flat, 10, precision="rotated", return_stats=True)
    assert stats.precision == "f32" and stats.stage_cuts == []


@pytest.mark.parametrize(
    ("stage_cuts", "error"),
    [
        ([0], negmine.errors.InvalidArgumentError),
        ([9], negmine.errors.InvalidArgumentError),
        ([3, 2], negmine.errors.InvalidArgumentError),
        ([1, 2, 3], negmine.errors.InvalidArgumentError),
        ("12", negmine.errors.InvalidTypeError),
        ([1.5], negmine.errors.InvalidTypeError),
    ],
)
def test_bad_stage_cuts_are_refused(rng, stage_cuts, error):
    x = normal(rng, 20, 8)
    expect_error(error, negmine.search, x, x, 3, precision="rotated", stage_cuts=stage_cuts)


INT8_FAST = "avx512vnni" in _core.cpu_features()


@pytest.mark.parametrize("clustered", [True, False])
def test_auto_probes_above_k_32_and_returns_the_f32_result_either_way(rng, clustered):
    # 1,100 queries: enough for "auto" to probe whether int8 pays at k = 40. Rows in tight
    # clusters (many rows within the int8 bound of each query's k-th score: the probe finds
    # int8 does not pay) and isotropic rows in 16 dimensions (it does): the result is the f32
    # path's either way.
    dim, n = 16, 20000
    if clustered:
        centres = normal(rng, 30, dim)
        corpus = centres[rng.integers(0, 30, n)] + 0.05 * normal(rng, n, dim)
        queries = centres[rng.integers(0, 30, 1100)] + 0.05 * normal(rng, 1100, dim)
    else:
        corpus, queries = normal(rng, n, dim), normal(rng, 1100, dim)
    exclude = [[q % n, (7 * q) % n] for q in range(1100)]
    for metric in ("dot", "cosine"):
        want = negmine.search(queries, corpus, 40, metric=metric, exclude=exclude, precision="f32")
        *got, stats = negmine.search(
            queries, corpus, 40, metric=metric, exclude=exclude, return_stats=True
        )
        assert got[0].tobytes() == want[0].tobytes()
        np.testing.assert_array_equal(got[1], want[1])
        if INT8_FAST:
            # The probe ran, and its count decided: int8 where few rows were rescored.
            assert stats.probe_rescored is not None and stats.probe_rescored >= 40
            pays = n >= 200 * stats.probe_rescored
            assert stats.precision == ("int8" if pays else "f32")
            assert pays != clustered  # both outcomes are exercised
        else:
            assert stats.probe_rescored is None and stats.precision == "f32"
    # Fewer queries than the probe needs to be cheap, or k <= 32: no probe.
    assert negmine.search(queries[:500], corpus, 40, return_stats=True)[2].probe_rescored is None
    assert negmine.search(queries, corpus, 32, return_stats=True)[2].probe_rescored is None


@pytest.mark.skipif(
    "avx512+amx" not in _core.cpu_features() or not hasattr(os, "fork"),
    reason="needs AMX tiles and fork",
)
def test_amx_tiles_work_in_a_forked_child(rng):
    # Linux grants tile state per process, once (arch_prctl); a child forked after the grant
    # (multiprocessing, Ray's workers) inherits it: without it every tile instruction faults.
    q, c = normal(rng, 100, 128), normal(rng, 5000, 128)
    options = _core.SearchOptions(10, metric="dot", isa="avx512+amx", precision="int8")
    want = _core.search(q, c, options)
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock: the child here
        # only runs negmine's own call, which builds its thread pool afresh.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        got = _core.search(q, c, options)
        same = got[0].tobytes() == want[0].tobytes() and np.array_equal(got[1], want[1])
        os._exit(0 if same else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
