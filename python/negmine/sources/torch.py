"""``backend="torch"``: candidates from a low-precision torch matmul with a proven error bound,
rescored exactly by the core: bit for bit the exact backend's result (see
:mod:`negmine.torch.candidates`). Importable without torch: torch is imported when it opens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negmine import _core
from negmine import _numbers as numbers
from negmine._inputs import distinct_ids, rows_of
from negmine.report import MiningReport, TorchReport
from negmine.sources import ExactPathDecides, Fetch, Job, count_fallbacks, flag

CHUNK_ROWS = 65_536
"""Queries per core call (mining) or per candidate pass (search): their candidate lists and
converted rows are held at once."""


@dataclass(frozen=True)
class Settings:
    device: Any = field(default="cpu", metadata=flag("torch: 'cpu', 'cuda' or 'cuda:1'", str))
    torch_dtype: str = field(
        default="float16", metadata=flag("torch: the matmul's inputs, float16 or bfloat16", str)
    )
    tile_rows: int = field(
        default=16_384, metadata=flag("torch: corpus rows streamed to the device per tile", int)
    )
    torch_slack: int = field(
        default=32,
        metadata=flag("torch: candidates asked for beyond the depth and the excluded ids", int),
    )

    def __post_init__(self) -> None:
        dtype = numbers.choice(self.torch_dtype, "torch_dtype", ("float16", "bfloat16"))
        object.__setattr__(self, "torch_dtype", dtype)
        object.__setattr__(self, "tile_rows", numbers.count(self.tile_rows, "tile_rows"))
        object.__setattr__(self, "torch_slack", numbers.count(self.torch_slack, "torch_slack"))

    def identity(self) -> None:
        """Nothing: the result is the exact backend's, bit for bit (a checkpoint resumes)."""
        return None


def _candidates() -> Any:
    try:
        from negmine.torch import candidates
    except ImportError as e:
        raise ImportError(
            "backend='torch' needs torch: pip install 'negmine[torch]' (or torch>=2.0)"
        ) from e
    return candidates


@dataclass
class Torch:
    corpus: np.ndarray | None
    """``None`` with no query or no corpus row: the exact path mines."""
    normalize: bool
    options: dict[str, Any]
    stats: TorchReport
    name: str = "torch"
    max_depth: int | None = None
    ranked: bool = False

    @property
    def chunk_rows(self) -> int | None:
        return None if self.corpus is None else CHUNK_ROWS

    def fetch(
        self,
        start: int,
        queries: Any,
        excluded: tuple[np.ndarray, np.ndarray],
        corpus: Any,
    ) -> Fetch | None:
        if self.corpus is None:
            return None
        indptr, ids = excluded
        fetch: Fetch = _candidates().TorchCandidates(
            np.asarray(queries),
            self.corpus,
            lambda row: ids[indptr[row] : indptr[row + 1]],
            normalize=self.normalize,
            stats=self.stats,
            **self.options,
        )
        return fetch

    def negative_sources(self, fetch: Fetch | None, part: Any) -> None:
        return None

    def report(self, report: MiningReport, parts: Sequence[Any]) -> None:
        report.backend = "torch"
        report.torch = self.stats
        count_fallbacks(report, parts)


def open(job: Job, settings: Settings) -> Torch:
    candidates = _candidates()
    device = candidates.resolve_device(settings.device)
    options = {
        "device": device,
        "dtype": candidates.DTYPES[settings.torch_dtype],
        "tile_rows": settings.tile_rows,
        "slack": settings.torch_slack,
    }
    stats = TorchReport(
        device=str(device),
        dtype=settings.torch_dtype,
        tile_rows=settings.tile_rows,
        slack=settings.torch_slack,
    )
    empty = rows_of(job.queries) == 0 or rows_of(job.corpus) == 0
    corpus = None if empty else np.asarray(job.corpus)
    return Torch(corpus, job.metric == "cosine", options, stats)


def search(
    queries: Any,
    corpus: Any,
    k: int,
    metric: str,
    exclude: tuple[np.ndarray, np.ndarray] | None,
    settings: Settings,
    threads: int | None,
) -> tuple[np.ndarray, np.ndarray, TorchReport] | None:
    """``negmine.search(..., backend="torch")`` (the caller holds the inputs read-only): each
    query's top ``k`` (plus what its bound needs) from torch, rescored exactly by the core, so
    the result is the exact search's bit for bit. ``None`` where the exact search must decide
    (a bad excluded id, a ``k`` it refuses, rows that are not finite, dot scores that could
    overflow: it raises its own error, naming them)."""
    n_queries, n_corpus = rows_of(queries), rows_of(corpus)
    bad = exclude is not None and len(exclude[1]) and exclude[1].min() < 0
    if bad or (exclude is not None and len(exclude[1]) and exclude[1].max() >= n_corpus):
        return None  # the exact search names the bad id
    indptr, ids = distinct_ids(exclude, n_queries)
    if n_queries == 0 or (n_corpus - np.diff(indptr) < k).any():
        return None  # the exact search refuses such a k (or has nothing to do)
    job = Job(queries, corpus, (indptr, ids), metric, seed=0, first_depth=k, threads=threads)
    source = open(job, settings)
    q_array = np.asarray(queries)
    scores, found = _core.topk_result(n_queries, k, "the search result")
    try:
        for start in range(0, n_queries, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, n_queries)
            chunk = np.ascontiguousarray(q_array[start:stop])
            lists = (indptr[start : stop + 1] - indptr[start], ids[indptr[start] : indptr[stop]])
            fetch = source.fetch(start, chunk, lists, corpus)
            assert fetch is not None, "a search with queries and corpus rows has a source"
            row_ptr, candidates = fetch(np.arange(stop - start, dtype=np.int64), k)
            scores[start:stop], found[start:stop] = _core.rescore(
                chunk, corpus, _padded(row_ptr, candidates), k, metric=metric, threads=threads
            )
    except ExactPathDecides:
        return None
    return scores, found, source.stats


def _padded(indptr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """CSR lists as a ``rows x width`` array padded with -1 (what the core's rescore takes)."""
    counts = np.diff(indptr)
    dense = np.full((len(counts), int(counts.max(initial=0))), -1, dtype=np.int64)
    dense[
        np.repeat(np.arange(len(counts)), counts),
        np.arange(len(ids)) - np.repeat(indptr[:-1], counts),
    ] = ids
    return dense
