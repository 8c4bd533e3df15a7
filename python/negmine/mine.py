"""Hard-negative mining, the API: :func:`mine` and its :class:`MiningOptions`.

The heavy lifting (search, filters, sampling) is ``negmine._core.mine``. Around it, by job:
:mod:`negmine.options` (:class:`MiningOptions`, :data:`OPTIONS`), :mod:`negmine.idlists`
(positives, duplicate groups, linked queries and exclusions into the id lists the core needs:
:func:`prepare`), :mod:`negmine.steps` (the candidate source and the core calls, chunk by
chunk: :func:`mine_prepared`, :func:`mine_parts`, and :func:`assemble`, which wraps the result
in a :class:`~negmine.result.MiningResult` with a :class:`~negmine.report.MiningReport`) and
:mod:`negmine.teachers` (``rescore=``: :class:`Teacher`). Their names are importable from
here too, as they always were.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from negmine import _numbers as numbers
from negmine import sources
from negmine._inputs import EmbeddingsLike, IdsLike, as_matrix, read_only
from negmine.errors import InvalidArgumentError
from negmine.idlists import Duplicates, Prepared, positives_csr, prepare, text_groups
from negmine.options import OPTIONS, MiningOptions
from negmine.result import MiningResult
from negmine.steps import assemble, mine_chunk, mine_parts, mine_prepared, open_source
from negmine.teachers import Teacher, make_teacher
from negmine.texts import TextsLike

SamplingStrategy = Literal["top", "random", "simans"]


def mine(
    queries: EmbeddingsLike,
    corpus: EmbeddingsLike,
    positives: IdsLike | str | os.PathLike[str],
    *,
    num_negatives: int = 3,
    metric: Literal["dot", "cosine"] = "cosine",
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    dup_threshold: float | None = None,
    duplicates: Duplicates = "auto",
    corpus_texts: TextsLike | None = None,
    query_texts: TextsLike | None = None,
    query_dup_threshold: float | None = None,
    sampling_strategy: SamplingStrategy = "top",
    simans_a: float = 1.0,
    simans_b: float = 0.0,
    seed: int = 0,
    max_depth: int | None = None,
    record_removed: int | None = 64,
    backend: Literal["exact", "hnsw", "torch", "bm25", "hybrid", "maxsim"] = "exact",
    target_recall: float = 0.95,
    hnsw_path: str | os.PathLike[str] | None = None,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 200,
    rescore: Callable[[np.ndarray, np.ndarray], npt.ArrayLike] | None = None,
    rescore_percentile: float | None = None,
    rescore_batch_size: int = 4096,
    device: Any = "cpu",
    torch_dtype: Literal["float16", "bfloat16"] = "float16",
    tile_rows: int = 16_384,
    torch_slack: int = 32,
    bm25_k1: float = 1.5,
    bm25_b: float = 0.75,
    bm25_cache_dir: str | os.PathLike[str] | None = None,
    rrf_k: int = 60,
    hybrid_depth: int | None = None,
    query_tokens: Any = None,
    corpus_tokens: Any = None,
    maxsim_depth: int = 100,
    query_offset: int = 0,
    exclude: IdsLike = None,
    threads: int | None = None,
    progress: bool = False,
) -> MiningResult:
    """Mines ``num_negatives`` hard negatives per query.

    Args:
        queries, corpus: embeddings (arrays, ``Embeddings`` or ``.npy`` paths).
        positives: each query's relevant corpus ids: a :class:`negmine.Csr` pair (or a tuple
            of two integer numpy arrays ``(indptr, indices)``), a list of id lists, or a qrels
            TSV path (``query_id corpus_id`` as row indices, see :func:`load_qrels`). A query
            may have no positives: nothing is excluded for it and the margin filters, which
            are relative to its positives, do not apply.
        num_negatives: negatives per query.
        metric: ``"cosine"`` (default) or ``"dot"`` (aliases as in :func:`negmine.search`); a
            dot score that could overflow float32 raises ``InvalidArgumentError`` naming the
            query and corpus row, as in :func:`negmine.search`.
        range_min, range_max: the window ``[range_min, range_max)`` of the filtered ranking
            (sentence-transformers' names). ``range_max=None``: unbounded for ``"top"``,
            ``range_min + 10 * num_negatives`` for the samplers.
        max_score, min_score: absolute score cuts.
        absolute_margin: drop a candidate if ``score + margin > p``; relative_margin: drop it
            if ``score > p - |p| * margin`` (0.05 is NV-Retriever's 95% PercPos); ``p`` is the
            query's lowest positive score.
        dup_threshold: a candidate whose cosine with a positive of the query is at least this
            is a near-duplicate of it and dropped; one this close to a negative already chosen
            is skipped, so the negatives are diverse.
        duplicates: duplicate groups of the corpus: ``"auto"`` (identical texts when
            ``corpus_texts`` is given, else identical embedding rows), ``None`` (off) or an
            array with a group id per corpus row. Every member of a positive's group counts as
            a positive; at most one member of a group is among a query's negatives.
        query_texts: the queries' texts, one per query row (any form ``corpus_texts``
            takes); read by ``backend="bm25"`` and ``"hybrid"`` only.
        query_dup_threshold: queries whose cosine is at least this share their positives.
        sampling_strategy: ``"top"``, ``"random"`` (uniform in the window) or ``"simans"``
            (weight ``exp(-simans_a * (score - p - simans_b)^2)``), seeded by ``seed``.
        max_depth: never rank deeper than this many candidates per query (``range_max +
            max_positives`` is what sentence-transformers looks at, ``+ 1`` from its 6.3);
            default: as deep as the filters need, so a window is never left short while the
            corpus has rows.
        record_removed: removed candidates kept in ``result.removed`` per query (the
            best-ranked ones, for the histograms and for inspection); ``None`` keeps all.
            The per-filter counts of the report are exact either way.
        backend: ``"exact"`` (default) searches the whole corpus; ``"hnsw"`` takes candidates
            from an hnswlib graph (``pip install 'negmine[ann]'``) for corpora too large to
            scan, rescores them exactly and applies the same filters and sampling (see
            :mod:`negmine.ann`). The graph of a corpus file is saved beside it
            (``<corpus>.hnsw-<key>.bin``) and reused while the file and parameters match.
            ``"torch"`` (``pip install 'negmine[torch]'``) scores the corpus with a
            float16/bfloat16 torch matmul on ``device`` to choose candidates, proves with an
            error bound that they hold each query's exact top rows and rescores them exactly:
            the result is bit for bit ``"exact"``'s (see :mod:`negmine.torch.candidates`);
            ``result.report.torch`` says how many candidates and corpus passes it took.
            ``"maxsim"`` mines a multi-vector (ColBERT-style) model: candidates from the
            pooled embeddings, ranked by exact MaxSim over ``query_tokens`` /
            ``corpus_tokens`` (see below).
            ``"bm25"`` takes each query's candidates from a BM25 index over ``corpus_texts``
            searched with ``query_texts`` (both required; see :mod:`negmine.sources.bm25`):
            the window and the sampling follow the BM25 ranking (score descending, id
            ascending), while the filters read the embeddings' exact scores of the
            candidates; ``result.negative_ranks`` are BM25 ranks. A query with fewer lexical
            matches than the filters need is finished by the exact search
            (``result.report.exact_fallback`` counts them). ``"hybrid"`` (texts required as
            for ``"bm25"``) walks the reciprocal-rank fusion of each query's BM25 and dense
            rankings (see :mod:`negmine.sources.hybrid`), the filters again reading the
            embeddings' exact scores. With ``"bm25"`` and ``"hybrid"``,
            ``result.negative_sources`` tags each negative with the rankings that found it
            (bit 1: bm25, bit 2: dense) and ``result.report.sources`` counts them.
        target_recall: hnsw: ``ef`` is raised until the graph's recall against exact search
            on 200 sampled queries reaches this, in ``(0, 1]``; ``result.report.ann`` has the
            recall, the ``ef`` chosen and whether the index was built or loaded.
        hnsw_path: hnsw: where to save / reuse the index (default: beside a corpus file;
            an in-memory corpus gets an in-memory index unless this is given).
        hnsw_m, hnsw_ef_construction: hnsw: the graph's ``M`` and ``ef_construction``.
        rescore: a teacher (RocketQA's / NV-Retriever's denoising): a callable
            ``(query_ids, corpus_ids) -> scores`` taking two int64 arrays of pairs (query row,
            corpus row) and returning one float score per pair (e.g. a cross-encoder, see
            :func:`negmine.teachers.cross_encoder`). It scores every query's positives and the
            candidates the filters and the window look at (the retriever's ranking, as deep
            as it is fetched; a deeper round asks only for new rows), in batches of
            ``rescore_batch_size`` pairs. ``max_score``, ``min_score``, ``absolute_margin``
            and ``relative_margin`` then compare the *teacher's* scores (of the candidate and
            of the query's positives); the ranking, window and sampling stay the retriever's.
            ``result.teacher_scores`` / ``result.positive_teacher_scores`` hold its scores.
        rescore_percentile: with ``rescore``: also drop a candidate whose teacher score is
            above this percentile (0-100, numpy's linear interpolation) of the teacher's
            scores of all positives; counted as ``max_score`` (the lower of the two cuts
            applies), the cut is ``result.report.teacher.cut``.
        rescore_batch_size: pairs per ``rescore`` call.
        exclude: per query, corpus ids never returned that are not positives (no margin is
            relative to them), in any form ``positives`` takes; e.g. the corpus entry whose
            text is the query's own.
        query_offset: the global index of ``queries[0]`` when they are a slice of a larger
            set mined piece by piece (by hand, or across machines): the seeded sampling is
            seeded per global query index, so the pieces draw what one call over all queries
            draws (given the same positives; ``query_dup_threshold`` links queries only within
            one call). A teacher gets global query indices too.
        device: torch: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` (torch's
            own thread settings govern its CPU work; ``threads`` is the core's).
        torch_dtype: torch: ``"float16"`` (default) or ``"bfloat16"``, the matmul's inputs.
        tile_rows: torch: corpus rows streamed to the device per tile (device memory grows
            with it; a device that runs out raises ``negmine.errors.DeviceMemoryError``
            naming a smaller one).
        torch_slack: torch: candidates asked for beyond the depth and the query's excluded
            ids (``g``); doubled for a query whose bound does not yet prove its candidates.
        bm25_k1, bm25_b: bm25, hybrid: BM25's ``k1`` (>= 0) and ``b`` (in [0, 1]); bm25s'
            defaults.
        bm25_cache_dir: bm25, hybrid: a directory keeping the BM25 index, as
            ``bm25-<sha256>.idx`` (the digest of the corpus texts, ``k1``, ``b`` and the
            format): a later run over the same texts maps it instead of building it again.
            ``None`` (default): built in memory for this run.
        rrf_k: hybrid: the fusion's constant (a row at rank ``r`` of a ranking scores
            ``1 / (rrf_k + r)``), >= 0.
        hybrid_depth: hybrid: rows each ranking contributes per query (default: the first
            fetch depth, twice the window end and at least 64); a query whose window the
            fused list cannot fill is finished by the exact search.
        query_tokens, corpus_tokens: maxsim: the token embeddings (``negmine.MultiVectors``,
            a saved multi-vector directory, or a list of ``tokens x dim`` arrays), one text per
            row of ``queries`` / ``corpus`` (which are then the pooled vectors the candidates
            come from, e.g. ``MultiVectors.pooled()``; see :func:`negmine.multivector.mine`).
        maxsim_depth: maxsim: pooled candidates per query rescored exactly by MaxSim. The
            window and sampling follow the MaxSim ranking of them, and without ``rescore``
            MaxSim is the teacher: the score filters read MaxSim scores
            (``result.teacher_scores``). See :mod:`negmine.sources.maxsim`.

    Returns:
        A :class:`MiningResult`; ``result.report`` says what each filter removed and which
        queries got fewer negatives than asked for (only when the corpus ran out: the search
        goes as deep as the filters need).
    """
    # The options are the arguments above that the core declares (see `OPTIONS`).
    options = MiningOptions(**{k: v for k, v in locals().items() if k in OPTIONS})
    threads = numbers.optional_count(threads, "threads")
    # Every backend's settings are checked, whichever is used (each declared by its source).
    source_settings = sources.all_settings(locals())[
        numbers.choice(backend, "backend", tuple(sources.BACKENDS))
    ]
    query_offset = numbers.non_negative(query_offset, "query_offset", maximum=numbers.MAX_ID)
    if backend == "maxsim" and rescore is None:
        rescore = source_settings.teacher(query_offset, threads)
    teacher = make_teacher(rescore, rescore_percentile, rescore_batch_size)
    q = as_matrix(queries, "queries")
    c = as_matrix(corpus, "corpus")
    if backend != "exact" and q.shape[1] != c.shape[1]:
        raise InvalidArgumentError(
            f"queries have dimension {q.shape[1]} but the corpus has {c.shape[1]}"
        )
    prepared = prepare(
        q,
        c,
        positives,
        duplicates=duplicates,
        corpus_texts=corpus_texts,
        query_dup_threshold=options.query_dup_threshold,
        threads=threads,
        exclude=exclude,
    )
    core_options = options
    if teacher is not None:
        prepared, core_options = teacher.judge_positives(prepared, options)
    with read_only(q, c):
        source = open_source(
            backend,
            source_settings,
            q,
            c,
            prepared,
            options,
            threads=threads,
            progress=progress,
            query_texts=query_texts,
            corpus_texts=corpus_texts,
        )
        parts = mine_parts(
            q,
            c,
            prepared,
            core_options,
            source,
            teacher=teacher,
            query_offset=query_offset,
            threads=threads,
            progress=progress,
        )
    result = assemble(prepared, options, parts)
    source.report(result.report, parts)
    if teacher is not None:
        result.report.teacher = teacher.report(result.report.teacher)
    return result


__all__ = [
    "OPTIONS",
    "Duplicates",
    "MiningOptions",
    "Prepared",
    "SamplingStrategy",
    "Teacher",
    "assemble",
    "make_teacher",
    "mine",
    "mine_chunk",
    "mine_parts",
    "mine_prepared",
    "open_source",
    "positives_csr",
    "prepare",
    "text_groups",
]
