"""Mining on a Ray cluster, :func:`mine`: the arguments checked and the id lists built on the
driver, the chunks mined by a pool of actors (:mod:`negmine.distributed.actors`), or written
chunk by chunk into a checkpointed directory, and the result assembled as
:func:`negmine.mine` assembles it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from negmine import _numbers as numbers
from negmine._inputs import EmbeddingsLike, IdsLike, as_matrix, read_only, rows_of
from negmine._progress import ProgressCallback
from negmine.checkpoint import (
    ChunkRunner,
    ChunkWork,
    mine_to_directory,
    query_chunks,
    run_chunks,
    source_teacher,
)
from negmine.distributed.actors import QueryPool, ShardPool
from negmine.distributed.plan import (
    NAMES,
    MiningArguments,
    ShardBy,
    Split,
    check_address,
    connected,
    file_path,
    import_ray,
    mining_arguments,
    split,
)
from negmine.errors import InvalidArgumentError
from negmine.mine import Duplicates, MiningOptions, assemble, mine_chunk, open_source, prepare
from negmine.result import MiningResult
from negmine.texts import TextsLike

if TYPE_CHECKING:
    from types import ModuleType


def mine(
    queries: EmbeddingsLike,
    corpus: EmbeddingsLike,
    positives: IdsLike | str | os.PathLike[str],
    *,
    shard_by: ShardBy = "query",
    shards: int | Sequence[int] | None = None,
    shard_resources: Sequence[Mapping[str, float]] | None = None,
    ray_address: str | None = None,
    out: str | os.PathLike[str] | None = None,
    chunk_queries: int = 8192,
    duplicates: Duplicates = "auto",
    corpus_texts: TextsLike | None = None,
    query_texts: TextsLike | None = None,
    texts_record: Mapping[str, Any] | None = None,
    max_restarts: int = 3,
    threads: int | None = None,
    progress: bool | ProgressCallback = False,
    backend: str = "exact",
    **options: Any,
) -> MiningResult:
    """:func:`negmine.mine` on a Ray cluster: the same :class:`MiningResult`, bit for bit.

    Args:
        queries, corpus, positives, duplicates, corpus_texts, query_texts: as in
            :func:`negmine.mine`
            (with ``out``: a queries ``.npy``, a corpus ``.npy`` and a qrels TSV, as for
            ``negmine mine``). A corpus file must be at the same path on every node that maps
            it (a relative path is resolved on the driver), with the same content: an actor
            that cannot open it or maps other content raises
            :class:`~negmine.errors.InvalidArgumentError` naming the file, the actor and its
            node.
        shard_by: ``"query"``: actors mine chunks of queries against the whole corpus;
            ``"corpus"``: one actor per range of corpus rows, the driver merging their top
            candidates (see the module docstring).
        shards: by query, the number of actors; by corpus, the number of equal row ranges, or
            their boundaries ``[0, b1, ..., N]`` (a sequence or 1-D integer array, strictly
            increasing: uneven shards). Default: one per alive node of the cluster. By query,
            no more actors than chunks of queries are started.
        shard_resources: one Ray resource request per actor (e.g. ``{"shard-0": 1}`` to pin a
            shard to the node that declares that custom resource). Actors reserve no CPU
            otherwise and are spread over the nodes; each uses ``threads`` cores of its node.
        ray_address: the cluster to connect to (``ray.init(address=...)``: ``"auto"``,
            ``"ray://host:10001"``, ``"local"`` for a new local one); ``None``: what
            ``ray.init()`` finds or starts. A Ray already initialised in this process is used
            as it is (``ray_address`` is then not used). A connection this call made is shut
            down when it returns.
        out: a directory to write the result into, checkpointed chunk by chunk as
            :func:`negmine.checkpoint.mine_to_directory` does (a rerun resumes; a run of the
            local ``negmine mine`` may resume it and vice versa). ``None``: in memory only.
        texts_record: with ``out``: saved with the result, as by ``mine_to_directory``.
        chunk_queries: queries per task (by query) or per core call of the driver (by
            corpus); the unit of the checkpoint.
        max_restarts: how often Ray restarts a killed actor (its task is retried on the
            restarted one) before the run fails.
        threads: cores each actor (and the driver's core calls, by corpus) uses; default: all
            of its machine's.
        progress: a tqdm bar of queries done, or a callable ``(done, total)`` called on the
            driver after each chunk.
        backend: the candidate source, as in :func:`negmine.mine` (``"exact"``, ``"hnsw"``,
            ``"bm25"``, ``"hybrid"`` or ``"maxsim"``; by query only): the driver opens it
            once (an HNSW graph built or loaded, its ``ef`` tuned on all queries) and ships
            it to each actor once (``bm25`` / ``hybrid``: with the texts; each actor builds
            its BM25 index from them again). ``maxsim``: the driver scores the positives by
            MaxSim; the token embeddings go to the actors by the path of their mapped
            ``tokens.npy`` (a saved multi-vector directory, at the same path on every node,
            checked as the corpus is) or, held in memory, through the object store, and each
            actor rebuilds the source and its MaxSim teacher from them.
        **options: the mining options of :func:`negmine.mine` (``num_negatives``,
            ``metric``, the filters, ``sampling_strategy``, ``seed``, ...), see
            :class:`negmine.MiningOptions`, and the backend's settings (``target_recall``,
            ``hnsw_m``, ...).
    """
    args = mining_arguments(options, backend, shard_by)
    chunk_queries = numbers.count(chunk_queries, "chunk_queries")
    max_restarts = numbers.non_negative(max_restarts, "max_restarts")
    threads = numbers.optional_count(threads, "threads")
    check_address(ray_address)
    c = as_matrix(corpus, "corpus")
    plan = split(shards, args.shard_by, shard_resources, rows_of(c))
    # Everything is checked before Ray starts: in memory, the id lists are built first.
    inputs = (queries, corpus, positives)
    files = None if out is None else tuple(file_path(x, name) for x, name in zip(inputs, NAMES))
    work = None
    if out is None:
        work = _in_memory(
            queries, c, positives, args, backend, duplicates, corpus_texts, query_texts, threads
        )
        if not rows_of(work.queries):
            # No chunk to hand out: the core's answer for no queries (its shapes, its report),
            # as `negmine.mine` gives it; no cluster is needed for that.
            empty = mine_chunk(
                work.queries,
                c,
                work.prepared,
                work.options,
                work.source,
                0,
                teacher=work.teacher,
                threads=threads,
            )
            return _assembled(work, args.mining, [empty])

    ray = import_ray()
    with connected(ray, ray_address):
        runner = _runner(ray, plan, max_restarts)
        if files is not None and out is not None:
            return mine_to_directory(
                files[0],
                files[1],
                files[2],
                out,
                args.mining,
                duplicates=duplicates,
                corpus_texts=corpus_texts,
                query_texts=query_texts,
                chunk_queries=chunk_queries,
                threads=threads,
                progress=progress,
                runner=runner,
                texts_record=texts_record,
                backend=backend,
                backend_options=args.given,
            )
        assert work is not None
        chunks = query_chunks(rows_of(work.queries), chunk_queries)
        # The chunks sent are slices of the queries that `prepare` checked: nothing may write
        # into them meanwhile (a progress callback, another thread), as in `negmine.mine`.
        with read_only(work.queries, work.corpus):
            parts = run_chunks(work, chunks, runner, progress)
        return _assembled(work, args.mining, parts)


def _in_memory(
    queries: EmbeddingsLike,
    corpus: Any,
    positives: IdsLike | str | os.PathLike[str],
    args: MiningArguments,
    backend: str,
    duplicates: Duplicates,
    corpus_texts: TextsLike | None,
    query_texts: TextsLike | None,
    threads: int | None,
) -> ChunkWork:
    """What the chunks of a run in memory share (``corpus`` checked already): the queries
    checked, the id lists of every query built and the source opened, on the driver."""
    q = as_matrix(queries, "queries")
    if q.shape[1] != corpus.shape[1]:
        raise InvalidArgumentError(
            f"queries have dimension {q.shape[1]} but the corpus has {corpus.shape[1]}"
        )
    prepared = prepare(
        q,
        corpus,
        positives,
        duplicates=duplicates,
        corpus_texts=corpus_texts,
        query_dup_threshold=args.mining.query_dup_threshold,
        threads=threads,
    )
    # MaxSim judges its own candidates (as in `negmine.mine`): every positive scored here.
    brought = source_teacher(backend, args.settings, threads)
    teacher = None if brought is None else brought[0]
    core_options = args.mining
    if teacher is not None:
        prepared, core_options = teacher.judge_positives(prepared, args.mining)
    with read_only(q, corpus):
        source = open_source(
            backend,
            args.settings,
            q,
            corpus,
            prepared,
            args.mining,
            threads=threads,
            query_texts=query_texts,
            corpus_texts=corpus_texts,
        )
    return ChunkWork(
        queries=q,
        corpus=corpus,
        prepared=prepared,
        options=core_options,
        threads=threads,
        teacher=teacher,
        source=source,
    )


def _runner(ray: ModuleType, plan: Split, max_restarts: int) -> ChunkRunner:
    """The pool of actors that mines the chunks, by query or by corpus."""
    n_shards, boundaries = plan.resolve(ray)
    run = uuid.uuid4().hex[:8]
    if boundaries is None:
        return QueryPool(ray, run, n_shards, plan.resources, max_restarts)
    return ShardPool(ray, run, boundaries, plan.resources, max_restarts)


def _assembled(work: ChunkWork, options: MiningOptions, parts: Sequence[Any]) -> MiningResult:
    """The result of a run in memory from the core outputs of its chunks, as
    :func:`negmine.mine` assembles it (``options``: the user's)."""
    result = assemble(work.prepared, options, parts)
    work.source.report(result.report, parts)
    if work.teacher is not None:
        result.report.teacher = work.teacher.report(result.report.teacher)
    return result
