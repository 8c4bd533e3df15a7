"""pytest-benchmark suite: negmine and its exact peers on small data (runs in well under 2 min).

    pytest benches/test_search_bench.py                      # time + check
    pytest benches/test_search_bench.py --benchmark-disable  # correctness only, one run each
    pytest benches/test_search_bench.py --benchmark-save=base ...; --benchmark-compare

Sizes are small on purpose: this tracks regressions between commits on one machine; the
numbers that compare methods come from ``benches/compare.py``. Every benchmark also checks its
result against a float64 numpy reference, so a fast wrong kernel cannot pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import negmine
from negmine import bench

Q, N, D = 256, 20_000, 256
THREADS = 2
SEED = 0
Result = tuple[np.ndarray, np.ndarray]


@pytest.fixture(scope="module", autouse=True)
def _limit_threads() -> Iterator[None]:
    """Every method gets the same thread count, as in compare.py."""
    limiter = bench.limit_threads(THREADS)
    yield
    if limiter is not None:
        limiter.restore_original_limits()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return bench.generate_queries(SEED, Q, D), bench.generate_rows(SEED, 0, N, D)


@pytest.fixture(scope="module")
def reference(data: tuple[np.ndarray, np.ndarray]) -> dict[int, Result]:
    """Exact top-k in float64 for every k used below (ties: smaller id first)."""
    xq, xb = data
    scores = xq.astype(np.float64) @ xb.astype(np.float64).T
    out = {}
    for k in (10, 100):
        ids = np.lexsort((np.broadcast_to(np.arange(N), scores.shape), -scores), axis=1)[:, :k]
        out[k] = (np.take_along_axis(scores, ids, axis=1), ids)
    return out


def _run(
    benchmark: Any,
    fn: Callable[[], Result],
    k: int,
    reference: dict[int, Result],
    min_recall: float,
) -> None:
    benchmark.group = f"top-{k} {Q}x{N}x{D}"
    scores, ids = benchmark(fn)
    scores, ids = np.asarray(scores), np.asarray(ids)
    assert ids.shape == (Q, k)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gflops"] = 2 * Q * N * D / benchmark.stats.stats.min / 1e9
    assert bench.recall(ids.astype(np.int64), reference[k][1], N) >= min_recall
    assert np.all(np.diff(scores, axis=1) <= 0), "rows must be sorted by descending score"


K = pytest.mark.parametrize("k", [10, 100])


@K
def test_negmine_f32(benchmark: Any, data: Any, reference: Any, k: int) -> None:
    xq, xb = data
    _run(benchmark, lambda: negmine.search(xq, xb, k, threads=THREADS), k, reference, 0.999)


@K
def test_negmine_f16(benchmark: Any, data: Any, reference: Any, k: int) -> None:
    xq, xb = data
    xb16 = xb.astype(np.float16)
    # f16 rounding of the corpus moves near-tied neighbours in and out of the top k.
    _run(benchmark, lambda: negmine.search(xq, xb16, k, threads=THREADS), k, reference, 0.99)


@K
def test_faiss(benchmark: Any, data: Any, reference: Any, k: int) -> None:
    faiss = pytest.importorskip("faiss")
    faiss.omp_set_num_threads(THREADS)
    xq, xb = data
    _run(
        benchmark,
        lambda: faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT),
        k,
        reference,
        0.999,
    )


@K
def test_numpy(benchmark: Any, data: Any, reference: Any, k: int) -> None:
    xq, xb = data
    _run(benchmark, lambda: bench.numpy_topk(xq, xb, k), k, reference, 0.999)


@K
def test_torch(benchmark: Any, data: Any, reference: Any, k: int) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    xq, xb = data
    run = bench.make_torch_topk(torch, xb)
    _run(benchmark, lambda: run(xq, k), k, reference, 0.999)
