"""backend="torch": candidates from a low-precision torch matmul, proven by an error bound to
hold each query's exact top rows, rescored exactly: bit for bit backend="exact"
(negmine.torch.candidates). Runs on CPU torch; the CUDA test runs where CUDA is."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import negmine  # noqa: E402
from negmine.errors import InvalidArgumentError, InvalidTypeError  # noqa: E402
from negmine.report import MiningReport  # noqa: E402
from negmine.torch import candidates  # noqa: E402

N_CORPUS, N_QUERIES, DIM = 600, 40, 24


def data(seed: int, dtype: type = np.float32, clusters: int = 12):
    """Clustered rows (near ties within a cluster), some duplicated rows (exact ties), one
    positive per query plus a second for every fifth query."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, DIM))
    corpus = centers[rng.integers(0, clusters, N_CORPUS)] + 0.2 * rng.normal(size=(N_CORPUS, DIM))
    corpus[1::7] = corpus[::7][: len(corpus[1::7])]  # tied (identical) rows
    queries = centers[rng.integers(0, clusters, N_QUERIES)] + 0.2 * rng.normal(
        size=(N_QUERIES, DIM)
    )
    positives = [[int(rng.integers(0, N_CORPUS))] for _ in range(N_QUERIES)]
    for q in range(0, N_QUERIES, 5):
        positives[q].append(int(rng.integers(0, N_CORPUS)))
    return queries.astype(dtype), corpus.astype(dtype), positives


def assert_identical(a: negmine.MiningResult, b: negmine.MiningResult) -> None:
    np.testing.assert_array_equal(a.negative_ids, b.negative_ids)
    np.testing.assert_array_equal(a.negative_scores, b.negative_scores)
    np.testing.assert_array_equal(a.positive_indptr, b.positive_indptr)
    np.testing.assert_array_equal(a.positive_ids, b.positive_ids)
    np.testing.assert_array_equal(a.positive_scores, b.positive_scores)
    for key in a.removed:
        np.testing.assert_array_equal(a.removed[key], b.removed[key], err_msg=key)
    assert a.report.removed == b.report.removed
    assert a.report.starved == b.report.starved
    assert a.report.negatives == b.report.negatives
    assert a.report.histograms == b.report.histograms


OPTIONS = {
    "top": {"num_negatives": 5},
    "window-relative-margin": {"num_negatives": 4, "range_min": 3, "relative_margin": 0.02},
    "dup-threshold": {"num_negatives": 4, "dup_threshold": 0.9},
    "random": {"num_negatives": 3, "sampling_strategy": "random", "seed": 7},
    "simans": {"num_negatives": 3, "sampling_strategy": "simans", "seed": 3, "simans_a": 2.0},
}


@pytest.mark.parametrize("name", list(OPTIONS))
@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_matches_exact_bit_for_bit(name: str, metric: str, dtype: type) -> None:
    queries, corpus, positives = data(1, dtype)
    options = {"metric": metric, **OPTIONS[name]}
    exact = negmine.mine(queries, corpus, positives, **options)
    got = negmine.mine(queries, corpus, positives, backend="torch", tile_rows=128, **options)
    assert_identical(exact, got)
    assert got.report.backend == "torch"
    stats = got.report.torch
    assert stats is not None and stats.scans >= 1
    assert stats.fetched_queries >= N_QUERIES
    # Candidates are a small part of the corpus, not all of it.
    assert stats.candidates_per_query < N_CORPUS / 2


@pytest.mark.parametrize(
    ("tile_rows", "slack"), [(1, 400), (37, 1), (37, 5), (128, 400), (600, 5), (5000, 1)]
)
def test_tile_sizes_and_slack_do_not_change_the_result(tile_rows: int, slack: int) -> None:
    queries, corpus, positives = data(2)
    exact = negmine.mine(queries, corpus, positives, num_negatives=4, duplicates=None)
    got = negmine.mine(
        queries,
        corpus,
        positives,
        num_negatives=4,
        duplicates=None,
        backend="torch",
        torch_dtype="bfloat16",
        tile_rows=tile_rows,
        torch_slack=slack,
    )
    assert_identical(exact, got)


def test_queries_split_into_groups_when_their_lists_pass_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queries, corpus, positives = data(15)
    # Room for the running lists of about three queries at a time: many scans, same result.
    monkeypatch.setattr(candidates, "TOPK_BUDGET", 3 * 100 * 32)
    exact = negmine.mine(queries, corpus, positives, num_negatives=4)
    got = negmine.mine(queries, corpus, positives, num_negatives=4, backend="torch")
    assert_identical(exact, got)
    stats = got.report.torch
    assert stats is not None and stats.scans >= N_QUERIES // 3


def test_small_slack_needs_extra_passes_on_tied_rows() -> None:
    # Every corpus row is one of 10 rows: with a slack of 1 the bound cannot separate the
    # k-th candidate from the rows left out until the slack covers the tied block.
    rng = np.random.default_rng(5)
    base = rng.normal(size=(10, DIM)).astype(np.float32)
    corpus = base[rng.integers(0, 10, 300)]
    queries = rng.normal(size=(20, DIM)).astype(np.float32)
    positives = [[int(i)] for i in rng.integers(0, 300, 20)]
    exact = negmine.mine(queries, corpus, positives, num_negatives=3, duplicates=None)
    got = negmine.mine(
        queries,
        corpus,
        positives,
        num_negatives=3,
        duplicates=None,
        backend="torch",
        torch_slack=1,
        tile_rows=64,
    )
    assert_identical(exact, got)
    stats = got.report.torch
    assert stats is not None and stats.extra_scans > 0 and stats.rescanned_queries > 0
    assert "corpus passes" in str(got.report)


def test_filters_that_force_deepening() -> None:
    queries, corpus, positives = data(3)
    # Near-duplicates of the positives crowd the top ranks: most queries go deeper.
    options = {"num_negatives": 3, "max_score": 0.2, "metric": "cosine"}
    exact = negmine.mine(queries, corpus, positives, **options)
    got = negmine.mine(queries, corpus, positives, backend="torch", tile_rows=100, **options)
    assert_identical(exact, got)
    assert got.report.refetched > 0
    assert got.report.exact_fallback == 0


def test_starved_queries_end_like_exact() -> None:
    queries, corpus, positives = data(4)
    options = {"num_negatives": 3, "min_score": 0.97, "metric": "cosine"}
    exact = negmine.mine(queries, corpus, positives, **options)
    got = negmine.mine(queries, corpus, positives, backend="torch", **options)
    assert exact.report.starved
    assert_identical(exact, got)


def test_exclusions_and_duplicate_groups() -> None:
    queries, corpus, positives = data(6)
    # Many excluded ids for some queries, and duplicate groups of the identical rows.
    for q in (0, 9, 17):
        positives[q] = sorted({*positives[q], *range(q, q + 250)})
    groups = np.arange(N_CORPUS) // 3
    for duplicates in ("auto", groups):
        exact = negmine.mine(queries, corpus, positives, num_negatives=5, duplicates=duplicates)
        got = negmine.mine(
            queries,
            corpus,
            positives,
            num_negatives=5,
            duplicates=duplicates,
            backend="torch",
            tile_rows=50,
            torch_slack=2,
        )
        assert_identical(exact, got)


@pytest.mark.parametrize("low", ["float16", "bfloat16"])
@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("exponent", [0, 80], ids=["normal", "f32-subnormal-products"])
def test_the_bound_holds_for_every_pair(low: str, metric: str, exponent: int) -> None:
    rng = np.random.default_rng(11)
    corpus = rng.normal(size=(300, 40))
    queries = rng.normal(size=(30, 40))
    # Rows across magnitudes (f16 needs the power-of-two scaling), with zero rows and
    # coordinates far below the rest (f16 subnormals); at `exponent` 80, the core's f32
    # products of a pair fall into its subnormals or to zero.
    corpus *= np.exp2(rng.integers(-20, 20, size=(300, 1)) - exponent)
    queries *= np.exp2(rng.integers(-20, 20, size=(30, 1)) - exponent)
    corpus[::17, ::3] *= 2.0**-30
    corpus[5] = 0
    queries[3] = 0
    queries, corpus = queries.astype(np.float32), corpus.astype(np.float32)
    exact_scores, exact_ids = negmine.search(queries, corpus, len(corpus), metric=metric)[:2]
    source = candidates.TorchCandidates(
        queries,
        corpus,
        lambda row: np.empty(0, np.int64),
        normalize=metric == "cosine",
        device=torch.device("cpu"),
        dtype=candidates.DTYPES[low],
        tile_rows=64,
        slack=1,
        stats=negmine.report.TorchReport("cpu", low, 64, 1),
    )
    approx, ids = source._scan(np.arange(len(queries)), len(corpus))
    bounds = candidates.error_bounds(
        source.queries, source.corpus_max, corpus.shape[1], source.out_dtype
    )
    exact = np.empty_like(approx)
    for q in range(len(queries)):
        exact[q, exact_ids[q]] = exact_scores[q]
    approx_by_id = np.empty_like(approx)
    np.put_along_axis(approx_by_id, ids, approx, axis=1)
    error = np.abs(approx_by_id - exact)
    assert (error <= bounds[:, None]).all()
    if exponent == 0:
        # The bound is not vacuous: within a few orders of magnitude of the largest error
        # seen. (Near the subnormals its underflow term, which covers flushing, dominates.)
        nonzero = np.abs(queries).sum(axis=1) > 0
        assert (error.max(axis=1)[nonzero] > bounds[nonzero] * 1e-3).all()


def tiny(rng: np.random.Generator, rows: int, exponent: int) -> np.ndarray:
    """Rows times ``2^-e``, ``e`` within 6 of ``exponent`` per row (up to 160, past the
    smallest subnormal), some repeated (ties)."""
    e = np.clip(exponent + rng.integers(-6, 7, size=(rows, 1)), 0, 160)
    x = rng.standard_normal((rows, DIM)) * np.exp2(-e.astype(np.float64))
    x[rng.integers(rows, size=rows // 5)] = x[rng.integers(rows, size=rows // 5)]
    return x.astype(np.float32)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    exponents=st.tuples(st.integers(0, 160), st.integers(0, 160)),
    metric=st.sampled_from(["dot", "cosine"]),
    low=st.sampled_from(["float16", "bfloat16"]),
)
def test_search_and_mine_equal_exact_down_to_subnormals(
    seed: int, exponents: tuple[int, int], metric: str, low: str
) -> None:
    # Products from the normal range through the subnormals to zero: the core's f32 scores
    # round or flush to ties (and to -0.0) that the low-precision products still order, so
    # the bound must count the chain's underflow (issue 20: other ids than exact).
    rng = np.random.default_rng(seed)
    queries, corpus = tiny(rng, 12, exponents[0]), tiny(rng, 200, exponents[1])
    torch_options = {"backend": "torch", "torch_dtype": low, "tile_rows": 64, "torch_slack": 1}
    want = negmine.search(queries, corpus, 3, metric=metric)
    got = negmine.search(queries, corpus, 3, metric=metric, **torch_options)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
    positives = [[int(p)] for p in rng.integers(0, len(corpus), len(queries))]
    options = {"num_negatives": 3, "metric": metric}
    exact = negmine.mine(queries, corpus, positives, **options)
    assert_identical(exact, negmine.mine(queries, corpus, positives, **options, **torch_options))


_FLUSHED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, torch
    import negmine

    # Flush-to-zero and denormals-are-zero for this thread and the threads it starts (the
    # core's pool inherits them): f32 scores of tiny pairs flush to zero.
    assert torch.set_flush_denormal(True)
    rng = np.random.default_rng(5)
    for eq, ec in [(72, 70), (60, 80), (0, 140), (140, 0), (100, 100)]:
        q = (rng.standard_normal((9, 16)) * 2.0**-eq).astype(np.float32)
        c = (rng.standard_normal((1100, 16)) * 2.0**-ec).astype(np.float32)
        for metric in ("dot", "cosine"):
            want = negmine.search(q, c, 4, metric=metric, precision="f32", threads=2)
            runs = {p: {"precision": p} for p in ("int8", "auto")}
            for low in ("float16", "bfloat16"):
                runs[low] = {"backend": "torch", "torch_dtype": low}
            for name, kw in runs.items():
                got = negmine.search(q, c, 4, metric=metric, threads=2, **kw)
                what = (eq, ec, metric, name)
                assert (got[1] == want[1]).all(), (what, got[1], want[1])
                assert got[0].tobytes() == want[0].tobytes(), what
    print("same")
    """
)


def test_every_path_gives_the_f32_result_with_subnormals_flushed() -> None:
    # In a subprocess: the flushing mode would stay on for the rest of the test session.
    done = subprocess.run(
        [sys.executable, "-c", _FLUSHED_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr[-3000:]


def test_the_bound_decides_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    # 300 rows within 1e-3 of one row: bfloat16 cannot order them. With the bound, every query
    # is proven only once its candidates hold the whole cluster (more passes); with the bound
    # forced to 0 some query's candidates miss exact top rows and its negatives differ, so the
    # equality tests above can fail.
    rng = np.random.default_rng(8)
    base = rng.normal(size=(1, 64))
    corpus = np.concatenate(
        [base + 1e-3 * rng.normal(size=(300, 64)), rng.normal(size=(700, 64))]
    ).astype(np.float32)
    queries = (base + 0.5 * rng.normal(size=(20, 64))).astype(np.float32)
    positives = [[999]] * 20
    options = {"num_negatives": 10, "metric": "dot", "duplicates": None}
    exact = negmine.mine(queries, corpus, positives, **options)
    torch_options = {"backend": "torch", "torch_dtype": "bfloat16", "torch_slack": 1}
    proven = negmine.mine(queries, corpus, positives, **options, **torch_options)
    assert_identical(exact, proven)
    assert proven.report.torch is not None and proven.report.torch.extra_scans > 0
    monkeypatch.setattr(
        candidates, "error_bounds", lambda queries, *rest: np.zeros(len(queries.norm))
    )
    unproven = negmine.mine(queries, corpus, positives, **options, **torch_options)
    assert not np.array_equal(exact.negative_ids, unproven.negative_ids)


@pytest.mark.parametrize(
    "error",
    [
        lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        lambda: RuntimeError("CUDA error: out of memory"),
    ],
    ids=["OutOfMemoryError", "RuntimeError"],
)
def test_out_of_memory_names_a_smaller_tile(monkeypatch: pytest.MonkeyPatch, error) -> None:
    def scan(self, rows, m):
        raise error()

    monkeypatch.setattr(candidates.TorchCandidates, "_scan", scan)
    queries, corpus, positives = data(9)
    with pytest.raises(negmine.errors.DeviceMemoryError, match="tile_rows=1024") as info:
        negmine.mine(queries, corpus, positives, backend="torch", tile_rows=4096)
    assert isinstance(info.value, negmine.errors.NegmineError)


def test_other_scan_errors_pass_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    def scan(self, rows, m):
        raise RuntimeError("something else")

    monkeypatch.setattr(candidates.TorchCandidates, "_scan", scan)
    queries, corpus, positives = data(9)
    with pytest.raises(RuntimeError, match="something else"):
        negmine.mine(queries, corpus, positives, backend="torch")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"device": "tpu"}, InvalidArgumentError, "device"),
        ({"device": 3}, InvalidTypeError, "device"),
        ({"device": "meta"}, InvalidArgumentError, "'cpu' or 'cuda'"),
        ({"torch_dtype": "float8"}, InvalidArgumentError, "torch_dtype"),
        ({"tile_rows": 0}, InvalidArgumentError, "tile_rows"),
        ({"torch_slack": 1.5}, InvalidTypeError, "torch_slack"),
    ],
)
def test_bad_options_are_clear_errors(kwargs, error, match) -> None:
    queries, corpus, positives = data(10)
    with pytest.raises(error, match=match):
        negmine.mine(queries, corpus, positives, backend="torch", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    queries, corpus, positives = data(10)
    with pytest.raises(InvalidArgumentError, match="CUDA is not available"):
        negmine.mine(queries, corpus, positives, backend="torch", device="cuda")


@pytest.mark.parametrize("rows", [N_CORPUS, 50], ids=["scanned", "whole-corpus"])
def test_dot_scores_that_could_overflow_end_like_exact(rows: int) -> None:
    queries, corpus, positives = data(12)
    corpus = corpus[:rows].copy()
    positives = [[p % rows for p in ids] for ids in positives]
    corpus[7] *= 3e37
    with pytest.raises(InvalidArgumentError, match="overflow") as exact:
        negmine.mine(queries, corpus, positives, metric="dot")
    with pytest.raises(InvalidArgumentError, match="overflow") as got:
        negmine.mine(queries, corpus, positives, metric="dot", backend="torch")
    assert str(got.value) == str(exact.value)


@pytest.mark.parametrize("where", ["corpus", "queries"])
def test_rows_that_are_not_finite_end_like_exact(where: str) -> None:
    queries, corpus, positives = data(16)
    (corpus if where == "corpus" else queries)[11, 3] = np.nan
    with pytest.raises(InvalidArgumentError) as exact:
        negmine.mine(queries, corpus, positives)
    with pytest.raises(InvalidArgumentError) as got:
        negmine.mine(queries, corpus, positives, backend="torch")
    assert str(got.value) == str(exact.value)


def test_empty_inputs_and_the_report_round_trip() -> None:
    queries, corpus, positives = data(13)
    empty = negmine.mine(queries[:0], corpus, [], backend="torch")
    assert len(empty.negative_ids) == 0 and empty.report.backend == "torch"
    got = negmine.mine(queries, corpus, positives, backend="torch")
    back = MiningReport.from_dict(got.report.to_dict())
    assert back == got.report
    assert back.torch is not None and back.torch.candidates == got.report.torch.candidates


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_cuda_matches_exact_and_feeds_the_prefetcher(metric: str) -> None:
    from negmine.torch import GpuPrefetcher

    queries, corpus, positives = data(14, np.float16)
    for low in ("float16", "bfloat16"):
        exact = negmine.mine(queries, corpus, positives, metric=metric, num_negatives=4)
        got = negmine.mine(
            queries,
            corpus,
            positives,
            metric=metric,
            num_negatives=4,
            backend="torch",
            device="cuda",
            torch_dtype=low,
            tile_rows=100,
        )
        assert_identical(exact, got)
        assert got.report.torch is not None and got.report.torch.device.startswith("cuda")
    ids = torch.from_numpy(got.negative_ids.astype(np.int64))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids), batch_size=8)
    moved = [batch[0] for batch in GpuPrefetcher(loader, "cuda")]
    assert all(b.device.type == "cuda" for b in moved)
    assert torch.equal(torch.cat(moved).cpu(), ids)


@pytest.mark.parametrize(
    ("metric", "dtype", "torch_dtype", "k"),
    [("cosine", np.float32, "float16", 10), ("dot", np.float16, "bfloat16", 37)],
)
def test_search_backend_torch_equals_exact(
    metric: str, dtype: type, torch_dtype: str, k: int
) -> None:
    rng = np.random.default_rng(21)
    corpus = rng.standard_normal((700, 24)).astype(dtype)
    corpus[100:140] = corpus[100]  # tied rows across the top k
    queries = rng.standard_normal((33, 24)).astype(np.float32)
    queries[::3] += corpus[100].astype(np.float32)
    exclude = [[int(i), 101, 101] for i in rng.integers(0, 700, 33)]
    want = negmine.search(queries, corpus, k, metric=metric, exclude=exclude)
    got = negmine.search(
        queries,
        corpus,
        k,
        metric=metric,
        exclude=exclude,
        backend="torch",
        torch_dtype=torch_dtype,
        tile_rows=128,
        torch_slack=2,
        return_stats=True,
    )
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))
    assert got[2].fetched_queries == 33
    # Inputs the exact search judges: its own errors.
    with pytest.raises(negmine.InvalidArgumentError, match="k"):
        negmine.search(queries, corpus, 700, exclude=exclude, backend="torch")
    bad = corpus.copy()
    bad[5, 0] = np.nan
    with pytest.raises(negmine.InvalidArgumentError, match="corpus row 5"):
        negmine.search(queries, bad, k, backend="torch")
