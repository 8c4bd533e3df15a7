"""Exact top-k similarity search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from negmine import _core
from negmine import _numbers as numbers
from negmine._inputs import (
    EmbeddingsLike,
    IdsLike,
    as_csr,
    as_matrix,
    read_only,
    rows_of,
)
from negmine._numbers import MAX_COUNT
from negmine._progress import progress_callback
from negmine.errors import InvalidTypeError

Metric = Literal["dot", "cosine"]
Precision = Literal["auto", "f32", "int8"]


def search(
    queries: EmbeddingsLike,
    corpus: EmbeddingsLike,
    k: int,
    *,
    metric: Metric = "dot",
    exclude: IdsLike = None,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
    block_rows: int | None = None,
    query_batch: int | None = None,
    precision: Precision = "auto",
    return_stats: bool = False,
) -> Any:
    """Exact top-``k`` corpus rows for every query.

    Args:
        queries: ``Q x d`` embeddings (array, ``Embeddings`` or ``.npy`` path).
        corpus: ``N x d`` embeddings; a mapped file streams through in blocks.
        k: neighbours per query, ``0 < k <= N - len(exclude[q])``; there is no other cap.
        metric: ``"dot"`` (inner product; alias ``"ip"``) or ``"cosine"`` (alias ``"cos"``; a
            zero vector scores 0). A dot product is only computed when it cannot overflow
            float32: when the largest query norm times a corpus row's norm reaches about
            ``1.7e38``, ``InvalidArgumentError`` names that query and corpus row (cosine scores
            are bounded by 1).
        exclude: per-query corpus ids never returned (e.g. labelled positives): a
            :class:`negmine.Csr` pair (or a tuple of two integer numpy arrays ``(indptr,
            indices)``) or one list of ids per query. A tuple of two lists is refused as
            ambiguous.
        threads: worker threads (default: all cores).
        progress: ``True`` for a tqdm bar, or a callable ``(done, total)``.
        block_rows, query_batch: tuning knobs; they never change the result.
        precision: how scores are computed before the exact ones: ``"f32"`` (every score in
            float32), ``"int8"`` (int8 pre-scores with a proven error bound; only the rows
            whose bound reaches the k-th best are rescored in float32) or ``"auto"`` (the
            faster of the two on this CPU: int8 where it has AVX-512 VNNI). Every choice
            returns the same scores and ids, bit for bit: it only changes the speed.
        return_stats: also return a :class:`SearchStats` (the path taken, rows rescored per
            query, where the time went).

    Returns:
        ``(scores, ids)``: float32 and int64 arrays of shape ``Q x k``, each row sorted by
        descending score, ties broken by the smaller id. Identical for any thread count, block
        size, query batching and precision. With ``return_stats``: ``(scores, ids, stats)``.

    Ctrl-C stops the search between two blocks and raises ``KeyboardInterrupt``. The input
    arrays are read-only while the search runs (a write to them raises ``ValueError``), so
    the result always matches the inputs as they were at the call.
    """
    k = numbers.count(k, "k")
    threads = numbers.optional_count(threads, "threads")
    # Tuning knobs never change the result: past any real size they just mean "all".
    block_rows, query_batch = (
        None
        if value is None
        else min(numbers.integer(value, name, minimum=1, maximum=None), MAX_COUNT)
        for value, name in ((block_rows, "block_rows"), (query_batch, "query_batch"))
    )
    options = _core.SearchOptions(
        k, metric=metric, block_rows=block_rows, query_batch=query_batch, precision=precision
    )
    q = as_matrix(queries, "queries")
    c = as_matrix(corpus, "corpus")
    csr = as_csr(exclude, rows_of(q), "exclude")
    if not isinstance(return_stats, bool):
        raise InvalidTypeError(f"return_stats must be a bool, got {type(return_stats).__name__}")
    with read_only(q, c), progress_callback(progress, "search", unit="row") as callback:
        scores, ids, stats = _core.search(
            q, c, options, exclude=csr, threads=threads, progress=callback
        )
    if return_stats:
        return scores, ids, SearchStats(**stats)
    return scores, ids


@dataclass(frozen=True)
class SearchStats:
    """What a :func:`search` did: the path ``precision="auto"`` took, how many rows each query
    rescored in float32 after int8 pre-scoring, and where the time went."""

    precision: str
    """``"f32"`` or ``"int8"``."""
    rescored: np.ndarray
    """Per query, the rows rescored in float32 (int8 only; empty for f32): ``k`` plus the rows
    whose error bound kept them."""
    scan_seconds: float
    """Streaming the corpus through the kernels (every score for f32, the pre-scores for int8)."""
    rescore_seconds: float
    """Rescoring the rows kept (int8)."""

    @property
    def rescored_mean(self) -> float:
        return float(self.rescored.mean()) if len(self.rescored) else 0.0

    @property
    def rescored_max(self) -> int:
        return int(self.rescored.max()) if len(self.rescored) else 0
