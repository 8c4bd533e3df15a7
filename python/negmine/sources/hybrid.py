"""``backend="hybrid"``: each query's candidates are the reciprocal-rank fusion of its BM25
ranking (:mod:`negmine.sources.bm25`, over the texts) and its dense ranking (the exact search
of the embeddings), and each negative is tagged with the rankings that found it.

The rule (docs/internals.md, "Hybrid candidates"): each ranking contributes its best
``hybrid_depth`` rows (excluded ids left out; default: the core's first fetch depth, twice the
window end and at least 64); a row at 1-based rank ``r`` of a ranking scores ``1 / (rrf_k +
r)`` from it, and the union of the two lists is ordered by the sum, descending, compared
exactly (:func:`negmine._core.rrf_fuse`), ties broken by the smaller corpus id. Why fusion by
rank and not a quota per source: BM25 and embedding scores are on unrelated scales, and a
row both rankings place high is the likeliest hard negative, which RRF puts first while a quota
would only count it once; ``rrf_k = 60`` is the constant of Cormack et al. and of
Elasticsearch's and OpenSearch's hybrid search.

The fused list of a query does not depend on how deep the core asks (each ranking is cut at
``hybrid_depth``, not at the depth asked), so the walk is the same however the queries are
chunked, on one process or on Ray. The core walks it in order (``ranked``), rescoring each
candidate exactly: the filters and margins read the embeddings' scores as for ``"dense"``. A
query whose window the fused list cannot fill is finished by the exact search (counted in
``report.exact_fallback``; its negatives are tagged ``dense``, plus ``bm25`` for those in its
BM25 list). Nothing is random.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negmine import _core
from negmine import _numbers as numbers
from negmine._inputs import gather_lists
from negmine.errors import NegmineError
from negmine.report import MiningReport
from negmine.sources import (
    DENSE,
    ExactPathDecides,
    Job,
    candidate_csr,
    count_fallbacks,
    flag,
    search_each,
    tag_found,
)
from negmine.sources import bm25 as lexical

READS_TEXTS = True
"""The index is built over ``Job.corpus_texts`` and searched with ``Job.query_texts``."""

CHUNK_ROWS = 8192
"""Queries per core call: bounds the fused lists a chunk keeps for tagging its negatives."""


def _optional_count(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


@dataclass(frozen=True)
class Settings(lexical.Settings):
    rrf_k: int = field(
        default=60,
        metadata=flag("hybrid: reciprocal-rank fusion's constant k (1 / (k + rank))", int),
    )
    hybrid_depth: int | None = field(
        default=None,
        metadata=flag(
            "hybrid: rows each ranking (BM25, dense) contributes per query (default: the "
            "first fetch depth)",
            _optional_count,
        ),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(
            self, "rrf_k", numbers.non_negative(self.rrf_k, "rrf_k", maximum=2**32 - 1)
        )
        object.__setattr__(
            self, "hybrid_depth", numbers.optional_count(self.hybrid_depth, "hybrid_depth")
        )

    def identity(self) -> dict[str, Any]:
        """What changes the candidates."""
        return {
            **super().identity(),
            "backend": "hybrid",
            "rrf_k": self.rrf_k,
            "hybrid_depth": self.hybrid_depth,
        }


@dataclass
class HybridFetch:
    """The core's ``fetch`` for one chunk of queries: each row's fused list, computed once
    (at its first fetch) and kept, so that deeper fetches and the tags read the same list."""

    source: Hybrid
    start: int
    queries: Any
    excluded: tuple[np.ndarray, np.ndarray]
    corpus: Any
    fused: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Row of the chunk -> its fused ids and their source bits."""

    def __call__(self, rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        new = np.array([r for r in rows.tolist() if r not in self.fused], dtype=np.int64)
        if len(new):
            self._fuse(new)
        lists = [self.fused[r][0][:depth] for r in rows.tolist()]
        return candidate_csr(lists)

    def _fuse(self, rows: np.ndarray) -> None:
        source = self.source
        each = source.depth
        words = source.lexical.ranking(self.start, rows, each, self.excluded)
        counts, ids = gather_lists(*self.excluded, rows)
        indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        try:
            _, dense = search_each(
                np.asarray(self.queries)[rows],
                self.corpus,
                each,
                source.metric,
                (indptr, ids.astype(np.int64)),
                source.threads,
            )
        except NegmineError:
            # A row that is not finite, or dot scores that could overflow: the exact path
            # names it (or mines) as backend="exact" does.
            raise ExactPathDecides from None
        fused_ptr, fused_ids, bits = _core.rrf_fuse(
            words, candidate_csr(dense), k=source.settings.rrf_k, threads=source.threads
        )
        for i, r in enumerate(rows.tolist()):
            lo, hi = fused_ptr[i], fused_ptr[i + 1]
            self.fused[r] = (fused_ids[lo:hi], bits[lo:hi])

    def sources_of(self, part: Any) -> np.ndarray:
        """The source bits of each negative of ``part`` (the chunk's core output)."""
        negatives = np.asarray(part.negative_ids)
        masks = np.zeros(negatives.shape, np.uint8)
        for r, (ids, bits) in self.fused.items():
            order = np.argsort(ids, kind="stable")
            at = np.minimum(np.searchsorted(ids, negatives[r], sorter=order), len(ids) - 1)
            hit = ids[order[at]] == negatives[r]
            masks[r] = np.where(hit, bits[order[at]], 0)
        # A query the exact search finished took its negatives from the dense ranking.
        masks[np.asarray(part.exact_finish)] |= DENSE
        return tag_found(part, masks)


@dataclass
class Hybrid:
    lexical: lexical.Bm25
    metric: str
    depth: int
    """Rows each ranking contributes (``hybrid_depth``, resolved)."""
    settings: Settings
    threads: int | None
    name: str = "hybrid"
    max_depth: int | None = None
    ranked: bool = True

    @property
    def chunk_rows(self) -> int | None:
        return None if self.lexical.index is None else CHUNK_ROWS

    def fetch(
        self,
        start: int,
        queries: Any,
        excluded: tuple[np.ndarray, np.ndarray],
        corpus: Any,
    ) -> HybridFetch | None:
        if self.lexical.index is None:
            return None
        return HybridFetch(self, start, queries, excluded, corpus)

    def negative_sources(self, fetch: Any, part: Any) -> np.ndarray:
        if isinstance(fetch, HybridFetch):
            return fetch.sources_of(part)
        return tag_found(part, np.uint8(DENSE))  # mined by the exact path

    def report(self, report: MiningReport, parts: Sequence[Any]) -> None:
        report.backend = "hybrid"
        if self.lexical.index is not None:
            count_fallbacks(report, parts)


def open(job: Job, settings: Settings) -> Hybrid:
    words = lexical.open(job, settings, backend="hybrid")
    depth = job.first_depth if settings.hybrid_depth is None else settings.hybrid_depth
    return Hybrid(words, job.metric, depth, settings, job.threads)
