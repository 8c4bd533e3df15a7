"""The steps of a mining run after :func:`~negmine.idlists.prepare`, one candidate source
at a time: :func:`open_source` opens the backend's source, :func:`mine_parts` mines the queries
chunk by chunk (:func:`mine_chunk`: the core call, :func:`mine_prepared`, with the source's
candidates), and :func:`assemble` makes a :class:`~negmine.result.MiningResult` of the parts.
:func:`negmine.mine` runs them in one go; the checkpointed directory runs and
:mod:`negmine.distributed` chunk by chunk. The names are importable from :mod:`negmine.mine` too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from negmine import _core, sources
from negmine._core import Embeddings
from negmine._inputs import read_only, rows_of
from negmine._progress import progress_callback
from negmine.idlists import Prepared
from negmine.options import MiningOptions
from negmine.report import TeacherReport, build_report
from negmine.result import MiningResult
from negmine.teachers import Teacher
from negmine.texts import TextsLike


def mine_prepared(
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    prepared: Prepared,
    options: MiningOptions,
    *,
    query_offset: int = 0,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
    fetch: sources.Fetch | None = None,
    max_depth: int | None = None,
    teacher: Teacher | None = None,
    ranked: bool = False,
) -> _core.Mined:
    """The core call for queries whose lists are ``prepared`` (raw arrays, no report), with
    candidates from the exact search or, given ``fetch`` (and its ``max_depth``), from it
    (``ranked``: its lists are the ranking, see ``Source.ranked``); judged by ``teacher`` if
    given (``prepared`` then holds its positive scores)."""
    judging: dict[str, Any] = {}
    if teacher is not None:
        judging = {
            "teacher": teacher,
            "teacher_positive_scores": prepared.teacher_positive_scores,
        }
    with (
        read_only(queries, corpus),
        progress_callback(progress, "mine", total=rows_of(corpus), unit="row") as cb,
    ):
        return _core.mine(
            queries,
            corpus,
            *prepared.id_lists(),
            options.core,
            groups=prepared.groups,
            query_offset=query_offset,
            threads=threads,
            progress=cb,
            fetch=fetch,
            max_depth=max_depth,
            fetch_ranked=ranked,
            **judging,
        )


def assemble(
    prepared: Prepared, options: MiningOptions, parts: Sequence[_core.Mined]
) -> MiningResult:
    """A :class:`MiningResult` from the core outputs of consecutive query chunks."""

    def cat(arrays: Callable[[_core.Mined], np.ndarray]) -> np.ndarray:
        # One part (the common case) is used as it is: a copy would double the peak memory.
        if len(parts) == 1:
            return arrays(parts[0])
        return np.concatenate([arrays(p) for p in parts])

    offsets = np.cumsum([0] + [len(p.found) for p in parts[:-1]])
    removed_counts = cat(lambda p: p.removed_counts)
    removed: dict[str, np.ndarray] = {
        "query": np.concatenate([p.removed_query + off for p, off in zip(parts, offsets)]).astype(
            np.int64
        ),
        "id": cat(lambda p: p.removed_id).astype(np.int64),
        "score": cat(lambda p: p.removed_score).astype(np.float32),
        "filter": cat(lambda p: p.removed_filter).astype(np.uint8),
    }
    found = cat(lambda p: p.found)
    negative_scores = cat(lambda p: p.negative_scores)
    positive_scores = cat(lambda p: p.positive_scores)
    # A chunk checkpointed by a negmine that did not record ranks has none (n x 0).
    ranked = all(p.negative_ranks.shape[1] == options.num_negatives for p in parts)
    negative_ranks = cat(lambda p: p.negative_ranks) if ranked else None
    tagged = all(p.negative_sources.shape[1] == options.num_negatives for p in parts)
    negative_sources = cat(lambda p: p.negative_sources) if tagged else None
    report = build_report(
        n_queries=len(found),
        num_negatives=options.num_negatives,
        options=options.to_dict(),
        positives=len(prepared.pos_ids),
        excluded_duplicates=len(prepared.ex_ids) - len(prepared.pos_ids)
        if prepared.excluded_duplicates is None
        else prepared.excluded_duplicates,
        linked=prepared.linked,
        found=found,
        negative_scores=negative_scores,
        positive_scores=positive_scores,
        removed=removed,
        removed_counts=removed_counts,
        negative_ranks=negative_ranks,
    )
    if negative_sources is not None:
        report.sources = sources.source_counts(negative_sources)
    judged = prepared.teacher_positive_scores is not None
    if judged:
        assert prepared.teacher_positive_scores is not None
        report.teacher = TeacherReport(
            pairs=int(cat(lambda p: p.judged).sum()),
            positives=len(prepared.teacher_positive_scores),
        )
    return MiningResult(
        negative_ids=cat(lambda p: p.negative_ids),
        negative_scores=negative_scores,
        positive_indptr=prepared.pos_indptr,
        positive_ids=prepared.pos_ids,
        positive_scores=positive_scores,
        removed=removed,
        report=report,
        teacher_scores=cat(lambda p: p.teacher_scores) if judged else None,
        positive_teacher_scores=prepared.teacher_positive_scores,
        groups=prepared.groups,
        negative_ranks=negative_ranks,
        negative_sources=negative_sources,
    )


def open_source(
    backend: str,
    settings: Any,
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    prepared: Prepared,
    options: MiningOptions,
    *,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
    query_texts: TextsLike | None = None,
    corpus_texts: TextsLike | None = None,
) -> sources.Source:
    """``backend``'s candidate source (:mod:`negmine.sources`) for a run over all of
    ``queries`` with these lists and options (the user's: a teacher's cut does not change
    which rows are candidates); the texts go to a source that reads them (``bm25``,
    ``hybrid``)."""
    job = sources.Job(
        queries,
        corpus,
        (prepared.ex_indptr, prepared.ex_ids),
        options.metric,
        options.seed,
        _core.first_depth(options.core),
        threads,
        progress,
        query_texts=query_texts,
        corpus_texts=corpus_texts,
    )
    return sources.open_source(backend, job, settings)


def mine_chunk(
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    lists: Prepared,
    options: MiningOptions,
    source: sources.Source,
    start: int,
    *,
    teacher: Teacher | None = None,
    query_offset: int = 0,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
) -> _core.Mined:
    """The core call for the queries starting at row ``start`` of the source's run, with its
    candidates (:func:`mine_prepared` with the source's ``fetch``); by the exact path where
    the source leaves the chunk to it."""
    try:
        fetch = source.fetch(start, queries, (lists.ex_indptr, lists.ex_ids), corpus)
        part = mine_prepared(
            queries,
            corpus,
            lists,
            options,
            query_offset=query_offset,
            threads=threads,
            progress=progress,
            fetch=fetch,
            max_depth=None if fetch is None else source.max_depth,
            teacher=teacher,
            ranked=fetch is not None and source.ranked,
        )
    except sources.ExactPathDecides:
        # A row that is not finite, or dot scores that could overflow: the exact path raises
        # (naming the row or pair) or mines, exactly as backend="exact" does.
        fetch = None
        part = mine_prepared(
            queries,
            corpus,
            lists,
            options,
            query_offset=query_offset,
            threads=threads,
            teacher=teacher,
        )
    tags = source.negative_sources(fetch, part)
    if tags is None:
        return part
    return _core.Mined(**{**part.arrays(), "negative_sources": tags})


def mine_parts(
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    prepared: Prepared,
    options: MiningOptions,
    source: sources.Source,
    *,
    teacher: Teacher | None = None,
    query_offset: int = 0,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
) -> list[_core.Mined]:
    """The core outputs of a run, one per chunk of ``source.chunk_rows`` queries (one for all
    where the source takes them at once)."""
    n_queries = rows_of(queries)
    if source.chunk_rows is None or n_queries == 0:
        part = mine_chunk(
            queries,
            corpus,
            prepared,
            options,
            source,
            0,
            teacher=teacher,
            query_offset=query_offset,
            threads=threads,
            progress=progress,
        )
        return [part]
    q_array = queries if isinstance(queries, np.ndarray) else np.asarray(queries)
    parts: list[_core.Mined] = []
    with progress_callback(progress, f"mine ({source.name})", total=n_queries, unit="query") as cb:
        for start in range(0, n_queries, source.chunk_rows):
            stop = min(n_queries, start + source.chunk_rows)
            part = mine_chunk(
                q_array[start:stop],
                corpus,
                prepared.rows(start, stop),
                options,
                source,
                start,
                teacher=teacher,
                query_offset=query_offset + start,
                threads=threads,
            )
            parts.append(part)
            if cb is not None:
                cb(stop, n_queries)
    return parts
