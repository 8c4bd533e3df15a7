"""``backend="bm25"``: candidates from a BM25 index over the corpus texts, searched with the
query texts (the core's :class:`negmine._core.Bm25Index`; the tokenizer, the formula and the
pruning are in docs/internals.md).

The lists it returns are the BM25 ranking itself (score descending, id ascending, excluded ids
left out), so the window and the sampling follow that ranking; the core rescores each candidate
exactly with the embeddings, and the score filters (``max_score``, ``min_score``, the margins,
near duplicates) read those scores. A query sharing no term with enough rows comes back short
and is finished by the exact (dense) search, counted in ``report.exact_fallback``.

With ``bm25_cache_dir`` (the command line passes its ``--cache-dir``) the index is kept there
as ``bm25-<sha256>.idx``, the digest taken over the corpus texts, ``k1``, ``b`` and the index
format: a later run with the same texts and settings maps that file instead of building it
again (and a file that fails its checks is rebuilt and replaced).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from negmine import _core
from negmine import _numbers as numbers
from negmine._inputs import gather_lists, rows_of
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError
from negmine.report import MiningReport
from negmine.sources import (
    DENSE,
    LEXICAL,
    Fetch,
    Job,
    candidate_csr,
    count_fallbacks,
    flag,
    tag_found,
)
from negmine.texts import as_source, scan_texts

READS_TEXTS = True
"""The index is built over ``Job.corpus_texts`` and searched with ``Job.query_texts``."""

CHUNK_ROWS = 65_536
"""Queries per core call: bounds the candidate lists held at once."""


@dataclass(frozen=True)
class Settings:
    bm25_k1: float = field(default=1.5, metadata=flag("bm25, hybrid: BM25's k1, >= 0", float))
    bm25_b: float = field(default=0.75, metadata=flag("bm25, hybrid: BM25's b, in [0, 1]", float))
    bm25_cache_dir: str | os.PathLike[str] | None = field(
        default=None,
        metadata=flag(
            "bm25, hybrid: directory keeping the BM25 index (bm25-<sha256>.idx, mapped by a "
            "later run over the same texts; default in `negmine mine`: --cache-dir)",
            str,
        ),
    )

    def __post_init__(self) -> None:
        k1 = numbers.real(self.bm25_k1, "bm25_k1", low=0.0)
        b = numbers.real(self.bm25_b, "bm25_b", low=0.0, high=1.0)
        object.__setattr__(self, "bm25_k1", float(k1))
        object.__setattr__(self, "bm25_b", float(b))
        cache = self.bm25_cache_dir
        if cache is not None and not isinstance(cache, (str, os.PathLike)):
            raise InvalidTypeError(
                f"bm25_cache_dir must be a path or None, got {type(self.bm25_cache_dir).__name__}"
            )

    def identity(self) -> dict[str, Any]:
        """What changes the candidates."""
        return {"backend": "bm25", "bm25_k1": self.bm25_k1, "bm25_b": self.bm25_b}


def texts_of(texts: Any, name: str, rows: int, backend: str = "bm25") -> list[str]:
    """``texts`` (any ``TextsLike``) as a list, checked to hold one text per row."""
    if texts is None:
        raise InvalidArgumentError(
            f"backend={backend!r} needs {name}: the texts of the {rows} "
            f"{'query' if name == 'query_texts' else 'corpus'} rows, in row order (the BM25 "
            "index is built over corpus_texts and searched with query_texts; on the command "
            "line: --query-texts and --corpus-texts)"
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
    corpus_texts: list[str] = field(default_factory=list, repr=False)
    """What the index is built from: a pickled source (shipped to Ray actors) carries the
    texts and builds its index again where it is unpickled."""
    settings: Settings = field(default_factory=Settings)
    name: str = "bm25"
    max_depth: int | None = None
    ranked: bool = True

    @property
    def chunk_rows(self) -> int | None:
        return None if self.index is None else CHUNK_ROWS

    def __getstate__(self) -> dict[str, Any]:
        # The core's index does not pickle; its texts and settings do (and where it unpickles,
        # a cache directory it shares maps the saved index instead of building it).
        return {**self.__dict__, "index": self.index is not None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if state["index"]:
            self.index = build_index(self.corpus_texts, self.settings, self.threads)
        else:
            self.index = None

    def ranking(
        self, start: int, rows: np.ndarray, depth: int, excluded: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The BM25 top ``depth`` of the chunk's ``rows`` (the chunk of queries starting at
        ``start``, its excluded ids ``excluded``), score descending, id ascending, excluded ids
        left out: CSR, shorter where fewer rows share a term with the query."""
        counts, sub_ids = gather_lists(*excluded, rows)
        sub_indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
        _, found = self.index.search(
            [self.query_texts[start + int(r)] for r in rows],
            depth,
            exclude=(sub_indptr, sub_ids.astype(np.int64)),
            threads=self.threads,
        )
        return candidate_csr(found)

    def fetch(
        self,
        start: int,
        queries: Any,
        excluded: tuple[np.ndarray, np.ndarray],
        corpus: Any,
    ) -> Fetch | None:
        if self.index is None:
            return None
        return lambda rows, depth: self.ranking(start, rows, depth, excluded)

    def negative_sources(self, fetch: Fetch | None, part: Any) -> np.ndarray:
        # The BM25 ranking found every negative but those of the queries that the exact
        # (dense) search finished.
        exact = np.ones(len(part.found), bool) if fetch is None else part.exact_finish
        return tag_found(part, np.where(exact, DENSE, LEXICAL)[:, None])

    def report(self, report: MiningReport, parts: Sequence[Any]) -> None:
        report.backend = "bm25"
        if self.index is not None:
            count_fallbacks(report, parts)


INDEX_FORMAT = b"negmine-bm25-index 1"
"""Part of the cache key: changed with the core's index format or tokenizer (whose versions the
core also checks in the file's header), so older files are never looked up."""


def index_key(corpus_texts: list[str], settings: Settings) -> bytes:
    """The cache key of the index over ``corpus_texts`` with ``settings``' parameters: a
    SHA-256 digest (stored in the file's header too, and checked when it is opened)."""
    h = hashlib.sha256(INDEX_FORMAT)
    h.update(struct.pack("<dd", settings.bm25_k1, settings.bm25_b))
    h.update(bytes.fromhex(scan_texts(as_source(corpus_texts, "corpus_texts")).sha256))
    return h.digest()


def index_path(cache_dir: str | os.PathLike[str], key: bytes) -> Path:
    return Path(cache_dir) / f"bm25-{key.hex()}.idx"


def build_index(corpus_texts: list[str], settings: Settings, threads: int | None) -> Any:
    """The index over ``corpus_texts``: built, or mapped from ``settings.bm25_cache_dir``
    where an earlier run saved it (and saved there after building)."""
    if settings.bm25_cache_dir is None:
        return _core.Bm25Index(
            corpus_texts, k1=settings.bm25_k1, b=settings.bm25_b, threads=threads
        )
    key = index_key(corpus_texts, settings)
    path = index_path(settings.bm25_cache_dir, key)
    try:
        return _core.Bm25Index.open(path, key=key)
    except (FileNotFoundError, FormatError):
        pass  # absent, or failed its checks: built again and replaced
    index = _core.Bm25Index(corpus_texts, k1=settings.bm25_k1, b=settings.bm25_b, threads=threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    index.save(path, key=key)
    return index


def open(job: Job, settings: Settings, backend: str = "bm25") -> Bm25:
    n_queries, n_corpus = rows_of(job.queries), rows_of(job.corpus)
    query_texts = texts_of(job.query_texts, "query_texts", n_queries, backend)
    corpus_texts = texts_of(job.corpus_texts, "corpus_texts", n_corpus, backend)
    if n_queries == 0 or n_corpus == 0:
        return Bm25(None, query_texts, job.threads, settings=settings)
    index = build_index(corpus_texts, settings, job.threads)
    return Bm25(index, query_texts, job.threads, corpus_texts, settings)
