"""Exact top-k similarity search."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from negmine import _core, sources
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
from negmine.errors import InvalidArgumentError, InvalidTypeError

Metric = Literal["dot", "cosine"]
Precision = Literal["auto", "f32", "int8", "rotated"]


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
    stage_cuts: Sequence[int] | None = None,
    return_stats: bool = False,
    backend: Literal["exact", "torch"] = "exact",
    device: Any = "cpu",
    torch_dtype: Literal["float16", "bfloat16"] = "float16",
    tile_rows: int = 16_384,
    torch_slack: int = 32,
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
            faster of the two on this CPU: int8 where it has AVX-512 VNNI), or ``"rotated"``
            (experimental, opt-in; today slower than ``"f32"`` on the data measured, see
            docs/performance.md, and ``"auto"`` never picks it: the corpus is rotated onto its
            principal axes, in memory, on every call;
            partial scores on the first rotated dimensions with a proven bound on the rest
            exclude most rows, the rest are rescored in float32; a corpus with a flat spectrum
            takes the float32 path). Every choice returns the same scores and ids, bit for
            bit: it only changes the speed.
        stage_cuts: for ``precision="rotated"``, the rotated dimensions scored at each stage
            (one or two ascending counts in ``1..d``; default: chosen from the spectrum). A
            tuning knob: it never changes the result.
        return_stats: also return a :class:`SearchStats` (the path taken, rows rescored per
            query, where the time went).
        backend: ``"exact"`` (default), or ``"torch"``: each query's candidates come from a
            float16/bfloat16 torch matmul with a proven error bound (on ``device``, e.g.
            ``"cuda"``; see :func:`negmine.mine`'s ``backend="torch"`` and
            ``negmine/torch/candidates.py``) and are rescored exactly (:func:`rescore`): the
            same scores and ids, bit for bit. ``device``, ``torch_dtype``, ``tile_rows``,
            ``torch_slack``: as in :func:`negmine.mine`. ``return_stats`` then gives the
            :class:`~negmine.report.TorchReport` (candidates per query, corpus passes).

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
    cuts = None
    if stage_cuts is not None:
        if isinstance(stage_cuts, (str, bytes)) or not isinstance(stage_cuts, Sequence):
            raise InvalidTypeError(
                f"stage_cuts must be a sequence of ints, got {type(stage_cuts).__name__}"
            )
        cuts = [numbers.integer(c, "stage_cuts", minimum=1) for c in stage_cuts]
    options = _core.SearchOptions(
        k,
        metric=metric,
        block_rows=block_rows,
        query_batch=query_batch,
        precision=precision,
        stage_cuts=cuts,
    )
    q = as_matrix(queries, "queries")
    c = as_matrix(corpus, "corpus")
    csr = as_csr(exclude, rows_of(q), "exclude")
    if not isinstance(return_stats, bool):
        raise InvalidTypeError(f"return_stats must be a bool, got {type(return_stats).__name__}")
    backend = numbers.choice(backend, "backend", sources.searchable())  # type: ignore[assignment]
    settings = sources.all_settings(locals())[backend]
    if backend != "exact":
        with read_only(q, c):
            found = sources.module(backend).search(
                q,
                c,
                k,
                _core.MineOptions(metric=metric).metric,  # the alias resolved
                csr,
                settings,
                threads,
            )
        if found is not None:
            return found if return_stats else found[:2]
    with (
        read_only(q, c),
        progress_callback(progress, "search", total=rows_of(c), unit="row") as callback,
    ):
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
    """``"f32"``, ``"int8"`` or ``"rotated"`` (``"f32"`` where ``"rotated"`` found a flat
    spectrum)."""
    rescored: np.ndarray
    """Per query, the rows rescored in float32 (int8 only; empty for f32): ``k`` plus the rows
    whose error bound kept them."""
    scan_seconds: float
    """Streaming the corpus through the kernels (every score for f32, the pre-scores for int8)."""
    rescore_seconds: float
    """Rescoring the rows kept (int8)."""
    stage_cuts: list[int] = dataclasses.field(default_factory=list)
    """The rotated path's stage cuts (rotated dimensions scored at each stage; empty on the
    other paths)."""
    stage_rows: list[int] = dataclasses.field(default_factory=list)
    """Per stage of the rotated path, the (query, row) pairs that passed it, summed over the
    queries; the last stage's are the rows rescored."""
    companion_seconds: float = 0.0
    """Building the rotated companion (principal axes and rotated rows), in the call."""
    probe_rescored: float | None = None
    """Where ``"auto"`` probed whether int8 pre-scoring pays (``k > 32``, an int8-fast CPU,
    at least 1,024 queries): the rows its 64 probe queries rescored on average against the
    first 65,536 corpus rows. int8 was taken where that is under 1/200 of those rows."""

    @property
    def rescored_mean(self) -> float:
        return float(self.rescored.mean()) if len(self.rescored) else 0.0

    @property
    def rescored_max(self) -> int:
        return int(self.rescored.max()) if len(self.rescored) else 0


def merge_topk(
    parts: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    k: int,
    *,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Merges per-part top-k lists into one, exactly as the search merges its threads' parts:
    the merge a sharded search needs (one :func:`search` per corpus shard, ids made global).

    Args:
        parts: ``(scores, ids)`` pairs, one per part: float32 scores and integer *global* ids
            of shape ``Q x k_i`` (the widths may differ, e.g. a shard smaller than ``k``). The
            parts must hold disjoint corpus rows; within a part, rows need not be sorted. An id
            below zero pads a row that had fewer candidates and is ignored.
        k: how many to keep per query.
        threads: worker threads (default: all cores).

    Returns:
        ``(scores, ids)`` of shape ``Q x k``: each row by descending score, ties broken by the
        smaller id (the order of :func:`search`, so merging the per-shard searches of a corpus
        gives the whole corpus' search bit for bit). A row with fewer than ``k`` candidates
        in all parts is padded with id ``-1`` and score ``-inf``.

    Raises:
        InvalidTypeError: a part that is not a pair of 2-D arrays, non-float32 scores,
            non-integer ids.
        InvalidArgumentError: parts of different query counts, scores and ids of different
            shapes, a NaN score, an id beyond the corpus id range, or an id in two parts of one
            row.
    """
    k = numbers.count(k, "k")
    threads = numbers.optional_count(threads, "threads")
    if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence) or not parts:
        raise InvalidTypeError("parts must be a non-empty sequence of (scores, ids) pairs")
    checked: list[tuple[np.ndarray, np.ndarray]] = []
    rows = None
    for p, part in enumerate(parts):
        if not isinstance(part, (tuple, list)) or len(part) != 2:
            raise InvalidTypeError(f"part {p} must be a (scores, ids) pair")
        scores, ids = np.asarray(part[0]), np.asarray(part[1])
        if scores.dtype != np.float32:
            raise InvalidTypeError(
                f"part {p}: scores must be float32 (as the search returns them), got "
                f"{scores.dtype}; converting would change their bits"
            )
        if ids.dtype.kind not in "iu":
            raise InvalidTypeError(f"part {p}: ids must be integers, got {ids.dtype}")
        if scores.ndim != 2 or scores.shape != ids.shape:
            raise InvalidArgumentError(
                f"part {p}: scores {scores.shape} and ids {ids.shape} must be two arrays of "
                "one shape (queries x k)"
            )
        if rows is None:
            rows = scores.shape[0]
        elif scores.shape[0] != rows:
            raise InvalidArgumentError(f"part {p} has {scores.shape[0]} queries, part 0 has {rows}")
        if ids.dtype == np.uint64 and ids.size and int(ids.max()) > numbers.MAX_ID:
            raise InvalidArgumentError(f"part {p}: id {int(ids.max())} is out of range")
        checked.append((np.ascontiguousarray(scores), np.ascontiguousarray(ids, dtype=np.int64)))
    return _core.merge_topk(checked, k, threads=threads)


def rescore(
    queries: EmbeddingsLike,
    corpus: EmbeddingsLike,
    candidates: npt.ArrayLike,
    *,
    k: int | None = None,
    metric: Metric = "dot",
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores and ranking of candidates found elsewhere (a GPU index, faiss, an ANN
    graph, a remote shard): each query's candidate ids scored with negmine's float32 chain,
    bit for bit the scores :func:`search` gives those pairs, and ranked like it.

    Args:
        queries, corpus: as in :func:`search`.
        candidates: ``Q x m`` integer corpus ids, any order; duplicates are scored once, and
            an id below zero pads a row that has fewer.
        k: how many to keep per query (default ``m``).
        metric: as in :func:`search`.
        threads: worker threads (default: all cores).

    Returns:
        ``(scores, ids)`` of shape ``Q x k``, each row by descending score, ties broken by the
        smaller id, padded with id ``-1`` and score ``-inf`` where a row has fewer than ``k``
        distinct candidates. When a query's candidates include its exact top ``k``, its row
        equals :func:`search`'s bit for bit; so a candidate generator with a proven error
        bound (or a recall check) plus this gives exact results.

    Raises:
        InvalidTypeError: candidates that are not a 2-D integer array.
        InvalidArgumentError: a candidate id beyond the corpus, a row count that is not the
            queries', rows with NaN/infinity or a dot product that could overflow (named as in
            :func:`search`).
    """
    threads = numbers.optional_count(threads, "threads")
    ids = np.asarray(candidates)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise InvalidTypeError(
            f"candidates must be a 2-D integer array (queries x m), got {ids.ndim}-D {ids.dtype}"
        )
    if ids.dtype == np.uint64 and ids.size and int(ids.max()) > numbers.MAX_ID:
        raise InvalidArgumentError(f"candidate id {int(ids.max())} is out of range")
    k = numbers.count(ids.shape[1] if k is None else k, "k")
    q = as_matrix(queries, "queries")
    c = as_matrix(corpus, "corpus")
    with read_only(q, c):
        return _core.rescore(
            q, c, np.ascontiguousarray(ids, dtype=np.int64), k, metric=metric, threads=threads
        )
