"""``backend="bm25"``: candidates from a BM25 index over the corpus texts, searched with the
query texts (the core's :class:`negmine._core.Bm25Index`; the tokenizer, the formula and the
pruning are in docs/internals.md).

The lists it returns are the BM25 ranking itself (score descending, id ascending, excluded ids
left out), so the window and the sampling follow that ranking; the core rescores each candidate
exactly with the embeddings, and the score filters (``max_score``, ``min_score``, the margins,
near duplicates) read those scores. A query sharing no term with enough rows comes back short
and is finished by the exact (dense) search, counted in ``report.exact_fallback``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negmine import _core
from negmine import _numbers as numbers
from negmine._inputs import rows_of
from negmine.errors import InvalidArgumentError
from negmine.report import MiningReport
from negmine.sources import Fetch, Job, candidate_csr, count_fallbacks, flag
from negmine.texts import as_source

CHUNK_ROWS = 65_536
"""Queries per core call: bounds the candidate lists held at once."""


@dataclass(frozen=True)
class Settings:
    bm25_k1: float = field(default=1.5, metadata=flag("bm25: BM25's k1, >= 0", float))
    bm25_b: float = field(default=0.75, metadata=flag("bm25: BM25's b, in [0, 1]", float))

    def __post_init__(self) -> None:
        k1 = numbers.real(self.bm25_k1, "bm25_k1", low=0.0)
        b = numbers.real(self.bm25_b, "bm25_b", low=0.0, high=1.0)
        object.__setattr__(self, "bm25_k1", float(k1))
        object.__setattr__(self, "bm25_b", float(b))

    def identity(self) -> dict[str, Any]:
        """What changes the candidates."""
        return {"backend": "bm25", "bm25_k1": self.bm25_k1, "bm25_b": self.bm25_b}


def texts_of(texts: Any, name: str, rows: int) -> list[str]:
    """``texts`` (any ``TextsLike``) as a list, checked to hold one text per row."""
    if texts is None:
        raise InvalidArgumentError(
            f"backend='bm25' needs {name}: the texts of the {rows} "
            f"{'query' if name == 'query_texts' else 'corpus'} rows, in row order (the BM25 "
            "index is built over corpus_texts and searched with query_texts); only "
            "negmine.mine passes texts to it so far, not the checkpointed runs, the CLI or Ray"
        )
    listed = list(as_source(texts, name))
    if len(listed) != rows:
        raise InvalidArgumentError(
            f"{name} has {numbers.counted(len(listed), 'text')} for {numbers.counted(rows, 'row')}"
        )
    return listed


@dataclass
class Bm25:
    index: Any
    """The ``Bm25Index``; ``None`` with no query or no corpus row (the exact path mines)."""
    query_texts: list[str]
    threads: int | None
    name: str = "bm25"
    max_depth: int | None = None
    ranked: bool = True

    @property
    def chunk_rows(self) -> int | None:
        return None if self.index is None else CHUNK_ROWS

    def fetch(
        self, start: int, queries: Any, excluded: tuple[np.ndarray, np.ndarray]
    ) -> Fetch | None:
        if self.index is None:
            return None
        index, texts, threads = self.index, self.query_texts, self.threads
        indptr, ids = excluded

        def fetch(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
            counts = indptr[rows + 1] - indptr[rows]
            sub_indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
            sub_ids = np.concatenate(
                [np.empty(0, np.int64), *(ids[indptr[r] : indptr[r + 1]] for r in rows)]
            ).astype(np.int64)
            _, found = index.search(
                [texts[start + int(r)] for r in rows],
                depth,
                exclude=(sub_indptr, sub_ids),
                threads=threads,
            )
            return candidate_csr(found)

        return fetch

    def report(self, report: MiningReport, parts: Sequence[Any]) -> None:
        report.backend = "bm25"
        if self.index is not None:
            count_fallbacks(report, parts)


def open(job: Job, settings: Settings) -> Bm25:
    n_queries, n_corpus = rows_of(job.queries), rows_of(job.corpus)
    query_texts = texts_of(job.query_texts, "query_texts", n_queries)
    corpus_texts = texts_of(job.corpus_texts, "corpus_texts", n_corpus)
    if n_queries == 0 or n_corpus == 0:
        return Bm25(None, query_texts, job.threads)
    index = _core.Bm25Index(
        corpus_texts, k1=settings.bm25_k1, b=settings.bm25_b, threads=job.threads
    )
    return Bm25(index, query_texts, job.threads)
