"""``backend="hnsw"``: candidates from an hnswlib graph, rescored exactly by the core (see
:mod:`negmine.ann`: the graph's persistence, its ``ef`` tuning and the fetch)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from negmine import _numbers as numbers
from negmine import ann
from negmine._inputs import rows_of
from negmine.report import AnnReport, MiningReport
from negmine.sources import Fetch, Job, count_fallbacks, flag


@dataclass(frozen=True)
class Settings:
    target_recall: float = field(
        default=0.95,
        metadata=flag(
            "hnsw: raise the graph's ef until its recall against exact search on sampled queries "
            "reaches this, in (0, 1]",
            float,
        ),
    )
    hnsw_path: str | os.PathLike[str] | None = field(
        default=None,
        metadata=flag(
            "hnsw: where to save / reuse the index (default: beside the corpus file)", str
        ),
    )
    hnsw_m: int = field(default=16, metadata=flag("hnsw: the graph's M", int))
    hnsw_ef_construction: int = field(
        default=200, metadata=flag("hnsw: the graph's ef_construction", int)
    )

    def __post_init__(self) -> None:
        recall = numbers.real(self.target_recall, "target_recall", low=0.0, high=1.0, low_open=True)
        m, ef = ann.graph_params(self.hnsw_m, self.hnsw_ef_construction)
        object.__setattr__(self, "target_recall", float(recall))
        object.__setattr__(self, "hnsw_m", m)
        object.__setattr__(self, "hnsw_ef_construction", ef)

    def identity(self) -> dict[str, Any]:
        """What changes the candidates (a checkpoint of other settings is not resumed)."""
        return {
            "backend": "hnsw",
            "target_recall": self.target_recall,
            "hnsw_m": self.hnsw_m,
            "hnsw_ef_construction": self.hnsw_ef_construction,
        }


@dataclass
class Hnsw:
    """The opened graph (``None`` with no query or no corpus row: the exact path mines)."""

    index: Any
    ann: AnnReport
    n_corpus: int
    normalize: bool
    ratio: float
    threads: int | None
    name: str = "hnsw"
    ranked: bool = False

    @property
    def chunk_rows(self) -> int | None:
        return None if self.index is None else CHUNK_ROWS

    @property
    def max_depth(self) -> int | None:
        return None if self.index is None else ann.hnsw_depth_limit(self.n_corpus)

    def fetch(
        self,
        start: int,
        queries: Any,
        excluded: tuple[np.ndarray, np.ndarray],
        corpus: Any,
    ) -> Fetch | None:
        if self.index is None:
            return None
        return ann.graph_fetch(
            self.index,
            np.asarray(queries),
            np.diff(excluded[0]).astype(np.int64),
            n_corpus=self.n_corpus,
            normalize=self.normalize,
            ratio=self.ratio,
            offset=start,
            threads=self.threads,
        )

    def negative_sources(self, fetch: Fetch | None, part: Any) -> None:
        return None

    def report(self, report: MiningReport, parts: Sequence[Any]) -> None:
        report.backend = "hnsw"
        report.ann = self.ann
        if self.index is not None:
            count_fallbacks(report, parts)


CHUNK_ROWS = 65_536
"""Queries mined per core call: bounds the candidate lists held at once."""


def recall_depth(first_depth: int, excluded_indptr: np.ndarray, n_corpus: int) -> int:
    """The depth the graph's recall is measured at: a typical query's first fetch (the core's
    first depth plus the median number of excluded ids, rounded up like the fetch)."""
    excluded = ann.pow2ceil(np.diff(excluded_indptr))
    return min(n_corpus, first_depth + (int(np.median(excluded)) if len(excluded) else 0))


def open(job: Job, settings: Settings) -> Hnsw:
    params = ann.HnswParams(
        job.metric, m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction
    )
    n_corpus = rows_of(job.corpus)
    normalize = job.metric == "cosine"
    if rows_of(job.queries) == 0 or n_corpus == 0:  # nothing to index or to ask
        unused = AnnReport(target_recall=settings.target_recall, built=False)
        return Hnsw(None, unused, n_corpus, normalize, 1.0, job.threads)
    index, index_path, built = ann.open_index(
        job.corpus, params, path=settings.hnsw_path, threads=job.threads, progress=job.progress
    )
    depth = recall_depth(job.first_depth, job.excluded[0], n_corpus)
    target = settings.target_recall
    ef, recall, sample = ann.tune_ef(
        index,
        job.queries,
        job.corpus,
        metric=job.metric,
        k=depth,
        target_recall=target,
        seed=job.seed,
        threads=job.threads,
    )
    if recall < target:
        warnings.warn(
            f"the HNSW graph reaches recall@{depth} {recall:.4f} at ef {ef} (the cap), "
            f"below target_recall {target}: build it with larger hnsw_m / "
            "hnsw_ef_construction, or use backend='exact'",
            RuntimeWarning,
            stacklevel=4,
        )
    report = AnnReport(
        target_recall=target,
        recall=recall,
        ef=ef,
        recall_depth=depth,
        recall_sample=sample,
        built=built,
        path=None if index_path is None else str(index_path),
    )
    return Hnsw(index, report, n_corpus, normalize, ef / max(depth, 1), job.threads)
