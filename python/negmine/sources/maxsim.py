"""``backend="maxsim"``: multi-vector (late-interaction) mining. Each query's candidates are
the ``maxsim_depth`` best corpus rows of the cheaper pooled search (the exact dense search of
the ``queries`` / ``corpus`` embeddings given to ``negmine.mine``: normally the mean token
vectors, :meth:`negmine.MultiVectors.pooled`), rescored exactly by MaxSim over the token
embeddings ``query_tokens`` / ``corpus_tokens`` (:mod:`negmine.multivector`).

The lists it returns are the MaxSim ranking of those candidates (score descending, id
ascending), so the window and the sampling follow MaxSim; unless ``mine`` gets another teacher
(``rescore=``), MaxSim is also the teacher, so ``max_score``, ``min_score`` and the margins
read MaxSim scores of the candidates and of the positives (``result.teacher_scores``), while
``result.scores`` and ``dup_threshold`` stay the pooled embeddings'. A fetch deeper than
``maxsim_depth`` takes that many pooled candidates. How much of the brute-force MaxSim top
``k`` the pooled stage finds at a depth is measured by
:func:`negmine.multivector.candidate_recall` (and the depth reaching a target recall).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negmine import _core
from negmine import _numbers as numbers
from negmine._digest import array_digest
from negmine._inputs import rows_of
from negmine.errors import InvalidArgumentError
from negmine.multivector import MultiVectors, as_multi_vectors
from negmine.report import MiningReport
from negmine.sources import Fetch, Job, candidate_csr, count_fallbacks, flag

CHUNK_ROWS = 65_536
"""Queries per core call: bounds the candidate lists held at once."""


@dataclass(frozen=True)
class Settings:
    query_tokens: Any = field(
        default=None,
        metadata=flag("maxsim: the queries' token embeddings (a multi-vector directory)", str),
    )
    corpus_tokens: Any = field(
        default=None,
        metadata=flag("maxsim: the corpus' token embeddings (a multi-vector directory)", str),
    )
    maxsim_depth: int = field(
        default=100,
        metadata=flag("maxsim: pooled candidates per query rescored by MaxSim", int),
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "maxsim_depth", numbers.count(self.maxsim_depth, "maxsim_depth"))
        for name in ("query_tokens", "corpus_tokens"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, as_multi_vectors(value, name))

    def identity(self) -> dict[str, Any]:
        """What changes the candidates."""
        return {
            "backend": "maxsim",
            "maxsim_depth": self.maxsim_depth,
            "query_tokens": _content(self.query_tokens),
            "corpus_tokens": _content(self.corpus_tokens),
        }

    def teacher(self, query_offset: int, threads: int | None) -> Scorer:
        """MaxSim as ``mine``'s teacher: ``(query_ids, corpus_ids) -> scores``, query ids
        global (``query_offset`` is the first query's)."""
        queries, corpus = _required(self)
        return Scorer(queries, corpus, query_offset, threads)


@dataclass(frozen=True)
class Scorer:
    """MaxSim as a teacher (``mine``'s ``rescore``): ``(query_ids, corpus_ids) -> scores`` of
    the texts of ``queries`` and ``corpus``, query ids global (``query_offset`` is the first
    query's). A class, not a closure, so that a run knows its teacher for MaxSim's (which Ray
    actors rebuild from the token embeddings they open)."""

    queries: MultiVectors
    corpus: MultiVectors
    query_offset: int = 0
    threads: int | None = None

    def __call__(self, query_ids: np.ndarray, corpus_ids: np.ndarray) -> np.ndarray:
        rows = np.asarray(query_ids, dtype=np.int64) - self.query_offset
        return _core.maxsim_scores(
            (self.queries.tokens, self.queries.offsets),
            (self.corpus.tokens, self.corpus.offsets),
            np.ascontiguousarray(rows),
            np.ascontiguousarray(corpus_ids, dtype=np.int64),
            threads=self.threads,
        )


def _content(vectors: MultiVectors | None) -> Any:
    if vectors is None:
        return None
    return {
        "offsets": array_digest(vectors.offsets),
        "tokens": array_digest(np.ascontiguousarray(np.asarray(vectors.tokens))),
    }


def _required(settings: Settings) -> tuple[MultiVectors, MultiVectors]:
    if settings.query_tokens is None or settings.corpus_tokens is None:
        raise InvalidArgumentError(
            "backend='maxsim' needs query_tokens and corpus_tokens: the token embeddings of "
            "the queries and of the corpus (negmine.MultiVectors or saved directories), one "
            "text per row of queries / corpus"
        )
    return settings.query_tokens, settings.corpus_tokens


@dataclass
class MaxSim:
    queries: MultiVectors
    corpus: MultiVectors
    metric: str
    depth: int
    threads: int | None
    empty: bool
    name: str = "maxsim"
    max_depth: int | None = None
    ranked: bool = True

    @property
    def chunk_rows(self) -> int | None:
        return None if self.empty else CHUNK_ROWS

    def fetch(
        self,
        start: int,
        queries: Any,
        excluded: tuple[np.ndarray, np.ndarray],
        corpus: Any,
    ) -> Fetch | None:
        if self.empty:
            return None
        indptr, ids = excluded
        n_corpus = rows_of(corpus)

        def fetch(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
            counts = indptr[rows + 1] - indptr[rows]
            sub = (
                np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
                np.concatenate(
                    [np.empty(0, np.int64), *(ids[indptr[r] : indptr[r + 1]] for r in rows)]
                ).astype(np.int64),
            )
            k = min(max(depth, self.depth), n_corpus - int(counts.max(initial=0)))
            if k <= 0:
                return candidate_csr([np.empty(0, np.int64) for _ in rows])
            _, pooled, _ = _core.search(
                np.ascontiguousarray(np.asarray(queries)[rows]),
                corpus,
                _core.SearchOptions(k, metric=self.metric),
                exclude=sub,
                threads=self.threads,
            )
            indptr_c, found = candidate_csr(pooled)
            owners = np.repeat(rows.astype(np.int64) + start, np.diff(indptr_c))
            scores = _core.maxsim_scores(
                (self.queries.tokens, self.queries.offsets),
                (self.corpus.tokens, self.corpus.offsets),
                owners,
                found,
                threads=self.threads,
            )
            # The MaxSim ranking of each row's candidates: score descending, id ascending.
            order = np.lexsort((found, -scores.astype(np.float64), owners))
            return indptr_c, found[order]

        return fetch

    def negative_sources(self, fetch: Fetch | None, part: Any) -> None:
        """One ranking (MaxSim's): no per-negative source tags."""
        return None

    def report(self, report: MiningReport, parts: Sequence[Any]) -> None:
        report.backend = "maxsim"
        if not self.empty:
            count_fallbacks(report, parts)


def open(job: Job, settings: Settings) -> MaxSim:
    queries, corpus = _required(settings)
    n_queries, n_corpus = rows_of(job.queries), rows_of(job.corpus)
    for name, tokens, rows, what in (
        ("query_tokens", queries, n_queries, "queries"),
        ("corpus_tokens", corpus, n_corpus, "corpus"),
    ):
        if len(tokens) != rows:
            raise InvalidArgumentError(
                f"{name} holds {numbers.counted(len(tokens), 'text')} but {what} has "
                f"{numbers.counted(rows, 'row')}"
            )
    if queries.dim != corpus.dim:
        raise InvalidArgumentError(
            f"query_tokens have dimension {queries.dim} but corpus_tokens have {corpus.dim}"
        )
    return MaxSim(
        queries,
        corpus,
        job.metric,
        settings.maxsim_depth,
        job.threads,
        empty=n_queries == 0 or n_corpus == 0,
    )
