"""Candidate sources: where mining gets each query's candidates, chosen by one ``backend=``
(``negmine.mine``, ``negmine search`` / ``negmine mine --backend``, the checkpointed
directory runs, ``negmine.distributed.mine``).

The core mines a chunk of queries from a ``fetch(rows, depth) -> (indptr, ids)`` callback (or,
without one, from its own exact search); it rescores what a fetch returns exactly, drops the
excluded ids and fetches again, deeper, for the queries whose window the filters emptied. A
source only says which corpus rows are candidates. The contract, for a new source:

- a module here with a frozen dataclass ``Settings`` (the source's keyword options of
  ``negmine.mine``, with their defaults, checked in ``__post_init__``; each field's
  ``metadata`` is its CLI flag's :func:`flag`) and ``open(job, settings) -> Source``;
- one line in :data:`BACKENDS`.

docs/internals.md shows a complete example. Nothing here imports :mod:`negmine.mine`: the
sources see plain arrays (:class:`Job`), so mining, search, the checkpoint and Ray all use them
without an import circle.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from negmine import _core
from negmine import _numbers as numbers
from negmine._inputs import gather_lists, rows_of
from negmine.report import MiningReport

Fetch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""The core's candidate callback: for the chunk's ``rows`` at ``depth``, each row's candidate
ids as CSR ``(indptr, ids)`` (see :func:`candidate_csr`)."""

BACKENDS: dict[str, str] = {
    "exact": "negmine.sources.exact",
    "hnsw": "negmine.sources.hnsw",
    "torch": "negmine.sources.torch",
    "bm25": "negmine.sources.bm25",
    "hybrid": "negmine.sources.hybrid",
    "maxsim": "negmine.sources.maxsim",
}
"""Every candidate source, by its ``backend=`` name: the module that implements it."""


LEXICAL = 1
"""A negative's source bit (``MiningResult.negative_sources``): the BM25 ranking found it."""
DENSE = 2
"""A negative's source bit: the dense ranking (the embeddings' exact search) found it."""
SOURCE_NAMES = {LEXICAL: "bm25", DENSE: "dense"}


def source_labels(masks: np.ndarray) -> np.ndarray:
    """Each source bitmask as its label: the names of its sources joined by ``+``
    (``"bm25"``, ``"dense"``, ``"bm25+dense"``; ``""`` for 0), an array of ``str``."""
    names = [
        "+".join(name for bit, name in SOURCE_NAMES.items() if mask & bit) for mask in range(4)
    ]
    labels: np.ndarray = np.array(names, dtype=object)[np.asarray(masks) & 3]
    return labels


def source_counts(masks: np.ndarray) -> dict[str, int]:
    """How many negatives each combination of sources found, by label (see
    :func:`source_labels`; 0 marks no negative): the counts sum to the negatives."""
    counts = np.bincount((np.asarray(masks) & 3).ravel(), minlength=4)
    return {str(label): int(n) for label, n in zip(source_labels(np.arange(1, 4)), counts[1:])}


def tag_found(part: Any, masks: np.ndarray) -> np.ndarray:
    """``Mined.negative_sources`` of a core output: ``masks`` (broadcast to
    ``negative_ids``' shape) where a query got a negative, 0 where it got fewer."""
    ids = np.asarray(part.negative_ids)
    return np.where(ids >= 0, masks, 0).astype(np.uint8)


class ExactPathDecides(Exception):
    """Raised by a source (from ``open`` or a fetch) for inputs whose outcome the exact path
    must decide, e.g. a row with a NaN, or dot scores that could overflow float32: the chunk is
    then mined by the exact search, which raises its own error naming the row or pair (or
    mines)."""


@dataclass(frozen=True)
class Job:
    """What a source is opened on: one run's inputs, all of its queries."""

    queries: Any
    """``Q x d`` (array or ``Embeddings``)."""
    corpus: Any
    """``N x d`` (array or ``Embeddings``)."""
    excluded: tuple[np.ndarray, np.ndarray]
    """Each query's excluded ids (positives, duplicates, ``exclude``), CSR, sorted per row."""
    metric: str
    seed: int
    first_depth: int
    """The core's first fetch depth for these options."""
    threads: int | None = None
    progress: bool | Callable[[int, int], object] = False
    query_texts: Any = None
    """The queries' texts (a ``TextsLike``), for a source that reads texts (``bm25``)."""
    corpus_texts: Any = None
    """The corpus' texts, likewise."""


class Source(Protocol):
    """An opened candidate source (picklable where it runs on Ray: ``bm25`` and ``hybrid``
    pickle their texts and build their index again where they are unpickled)."""

    name: str
    chunk_rows: int | None
    """Queries per core call (bounds the candidate lists held); ``None``: one call for all."""
    max_depth: int | None
    """The deepest fetch; deeper queries are finished by the core's exact search."""
    ranked: bool
    """Each fetched list is the ranking itself, best first (``bm25``: the lexical ranking): the
    core rescores the candidates for the filters but walks them in this order. ``False``: the
    core ranks them by their exact scores."""

    def fetch(
        self,
        start: int,
        queries: Any,
        excluded: tuple[np.ndarray, np.ndarray],
        corpus: Any,
    ) -> Fetch | None:
        """The core's ``fetch`` for the chunk of queries starting at ``start`` (their rows and
        excluded ids, CSR) against ``corpus`` (the run's, as the process mining the chunk has
        it: a source shipped to Ray need not carry it); ``None``: the chunk is mined by the
        exact search."""
        ...

    def negative_sources(self, fetch: Fetch | None, part: Any) -> np.ndarray | None:
        """The sources that found each negative of ``part`` (a core output of a chunk, mined
        with ``fetch``, this source's fetch for it; ``None``: by the exact path): bitmasks of
        :data:`LEXICAL` and :data:`DENSE` (:func:`tag_found`), or ``None`` for a source with
        one ranking."""
        ...

    def report(self, report: MiningReport, parts: Sequence[Any]) -> None:
        """Records in ``report`` what the source did (``backend``, its own section, and
        :func:`count_fallbacks` over the run's core outputs ``parts``)."""
        ...


def module(backend: str) -> Any:
    """The module of ``backend`` (checked against :data:`BACKENDS`)."""
    name = numbers.choice(backend, "backend", tuple(BACKENDS))
    return importlib.import_module(BACKENDS[name])


def settings(backend: str, given: Mapping[str, Any]) -> Any:
    """``backend``'s ``Settings`` from ``given`` (names of other backends' settings are
    ignored: ``mine()`` takes all of them)."""
    cls = module(backend).Settings
    return cls(**{f.name: given[f.name] for f in dataclasses.fields(cls) if f.name in given})


def all_settings(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every backend's ``Settings`` from ``given``: each checked, whichever is used."""
    return {name: settings(name, given) for name in BACKENDS}


def setting_names() -> list[str]:
    """The names of every backend's settings, in registry order."""
    return [f.name for name in BACKENDS for f in dataclasses.fields(module(name).Settings)]


def searchable() -> tuple[str, ...]:
    """The backends ``negmine.search`` takes: the exact search, and every source whose module
    has a ``search(queries, corpus, k, metric, exclude, settings, threads)`` giving ``(scores,
    ids, stats)``, or ``None`` where the exact search must decide."""
    return tuple(n for n in BACKENDS if n == "exact" or hasattr(module(n), "search"))


def reads_texts(backend: str) -> bool:
    """Whether ``backend``'s source reads the texts (``Job.query_texts``, ``corpus_texts``):
    its module sets ``READS_TEXTS``."""
    return bool(getattr(module(backend), "READS_TEXTS", False))


def open_source(backend: str, job: Job, options: Any) -> Source:
    """``backend``'s source opened on ``job`` with its ``options`` (its ``Settings``)."""
    return module(backend).open(job, options)  # type: ignore[no-any-return]


def flag(help: str, type: Callable[[str], Any]) -> dict[str, Any]:
    """A ``Settings`` field's ``metadata``: the CLI flag's help and argument type."""
    return {"help": help, "type": type}


def candidate_csr(lists: Sequence[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a fetch returns, ``(indptr, ids)`` as int64: from one id array per row, or from a
    ``rows x width`` array whose ids below zero are padding."""
    if isinstance(lists, np.ndarray):
        real = lists >= 0
        counts = real.sum(axis=1)
        ids = np.ascontiguousarray(lists[real], dtype=np.int64)
    else:
        counts = np.array([len(x) for x in lists], dtype=np.int64)
        ids = np.concatenate([np.empty(0, np.int64), *lists]).astype(np.int64)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return indptr, ids


def search_each(
    queries: Any,
    corpus: Any,
    depth: int,
    metric: str,
    exclude: tuple[np.ndarray, np.ndarray],
    threads: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's exact best ``min(depth, rows it does not exclude)`` (``exclude``: CSR,
    distinct ids per query), ``Q x min(depth, N)``, padded with ``-inf`` / ``-1`` past a
    query's eligible rows: the exact search, whose one ``k`` must fit every query, called once
    per number of eligible rows (nearly always once)."""
    indptr, ids = exclude
    n_queries, n_corpus = rows_of(queries), rows_of(corpus)
    width = min(depth, n_corpus)
    scores = np.full((n_queries, width), -np.inf, dtype=np.float32)
    found = np.full((n_queries, width), -1, dtype=np.int64)
    caps = np.minimum(width, n_corpus - np.diff(indptr))
    for k in np.unique(caps[caps > 0]).tolist():
        at = np.flatnonzero(caps == k)
        sub_counts, sub_ids = gather_lists(indptr, ids, at)
        sub_indptr = np.concatenate(([0], np.cumsum(sub_counts))).astype(np.int64)
        scores[at, :k], found[at, :k], _ = _core.search(
            np.ascontiguousarray(np.asarray(queries)[at]),
            corpus,
            _core.SearchOptions(k, metric=metric),
            exclude=(sub_indptr, sub_ids.astype(np.int64)),
            threads=threads,
        )
    return scores, found


def count_fallbacks(report: MiningReport, parts: Sequence[Any]) -> None:
    """The report's counts of queries a source's candidates did not settle in one fetch."""
    report.refetched = int(sum(int((p.fetches > 1).sum()) for p in parts))
    report.exact_fallback = int(sum(int(p.exact_finish.sum()) for p in parts))
