"""Exact search on a Ray cluster, :func:`search`: by corpus, each actor searches its rows and
the driver merges their top ``k`` exactly; by query, each actor searches chunks of queries
against the whole corpus."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import numpy as np

from negmine import _core
from negmine import _numbers as numbers
from negmine._inputs import (
    EmbeddingsLike,
    IdsLike,
    as_csr,
    as_matrix,
    distinct_ids,
    read_only,
    rows_of,
)
from negmine.checkpoint import ChunkWork, query_chunks
from negmine.distributed.actors import Pool, ShardWorker
from negmine.distributed.inputs import get, shard_inputs
from negmine.distributed.plan import ShardBy, connected, import_ray, split
from negmine.errors import InvalidArgumentError
from negmine.mine import MiningOptions, Prepared
from negmine.search import Metric, merge_topk


def search(
    queries: EmbeddingsLike,
    corpus: EmbeddingsLike,
    k: int,
    *,
    metric: Metric = "dot",
    exclude: IdsLike = None,
    shard_by: ShardBy = "corpus",
    shards: int | Sequence[int] | None = None,
    shard_resources: Sequence[Mapping[str, float]] | None = None,
    ray_address: str | None = None,
    chunk_queries: int = 8192,
    max_restarts: int = 3,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`negmine.search` on a Ray cluster: the same ``(scores, ids)``, bit for bit.

    ``shard_by="corpus"`` (default): one actor per range of corpus rows (``shards``: their
    number or boundaries ``[0, b1, ..., N]``), each searching its rows with the exclusions
    that fall in them; the driver merges their top ``k`` exactly (:func:`negmine.merge_topk`).
    ``shard_by="query"``: ``shards`` actors, each with the whole corpus, search chunks of
    ``chunk_queries`` queries. The other arguments are :func:`search`'s and :func:`mine`'s.
    """
    k = numbers.count(k, "k")
    shard_by = numbers.choice(shard_by, "shard_by", ("query", "corpus"))  # type: ignore[assignment]
    chunk_queries = numbers.count(chunk_queries, "chunk_queries")
    max_restarts = numbers.non_negative(max_restarts, "max_restarts")
    threads = numbers.optional_count(threads, "threads")
    # The metric checked (an alias resolved) as the core checks it.
    metric = _core.MineOptions(metric=metric).metric  # type: ignore[assignment]
    q = as_matrix(queries, "queries")
    c = as_matrix(corpus, "corpus")
    n_queries, n_corpus = rows_of(q), rows_of(c)
    if q.shape[1] != c.shape[1]:
        raise InvalidArgumentError(
            f"queries have dimension {q.shape[1]} but the corpus has {c.shape[1]}"
        )
    # What `search` refuses whatever the queries (none included), in its order and words.
    if not c.shape[1]:
        raise InvalidArgumentError("embeddings have dimension 0")
    if not n_corpus:
        raise InvalidArgumentError("the corpus is empty")
    csr = as_csr(exclude, n_queries, "exclude")
    indptr, ids = (np.zeros(n_queries + 1, np.int64), np.empty(0, np.int64)) if csr is None else csr
    if len(ids) and (ids.min() < 0 or ids.max() >= n_corpus):
        raise InvalidArgumentError(f"exclude holds ids outside the corpus of {n_corpus} rows")
    # Each query's distinct excluded ids: k may not pass what is left (as in `search`).
    unique = np.diff(distinct_ids(csr, n_queries)[0])
    short = np.flatnonzero(n_corpus - unique < k)
    if len(short):
        raise InvalidArgumentError(
            f"k = {k} exceeds the {n_corpus - int(unique[short[0]])} corpus rows query "
            f"{int(short[0])} does not exclude"
        )
    plan = split(shards, shard_by, shard_resources, n_corpus)
    chunks = query_chunks(n_queries, chunk_queries)
    if not chunks:  # nothing to ask: `negmine.search`'s answer, without a cluster
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    ray = import_ray()
    with connected(ray, ray_address), read_only(q, c):
        n_shards, boundaries = plan.resolve(ray)
        # By query, every actor holds the whole corpus; one with no chunk to search is not
        # started.
        ranges = (
            [(0, n_corpus)] * min(n_shards, len(chunks))
            if shard_by == "query"
            else list(zip(boundaries[:-1], boundaries[1:]))  # type: ignore[index]
        )
        pool = Pool(ray, uuid.uuid4().hex[:8], f"search-{shard_by}", plan.resources, max_restarts)
        work = ChunkWork(
            queries=q, corpus=c, prepared=NO_LISTS, options=MiningOptions(), threads=threads
        )
        inputs = shard_inputs(ray, work, ranges)
        scores, found = _core.topk_result(n_queries, k, "the search result")
        q_array = np.asarray(q)
        with pool.actors(ShardWorker, [(lo, hi, metric, threads) for lo, hi in ranges]) as actors:
            tasks = []
            for i, (start, stop) in enumerate(chunks):
                chunk = np.ascontiguousarray(q_array[start:stop])
                excluded = (
                    indptr[start : stop + 1] - indptr[start],
                    ids[indptr[start] : indptr[stop]],
                )
                rows = np.arange(stop - start)
                asked = (
                    [(actors[i % len(actors)], inputs[0])]
                    if shard_by == "query"
                    else list(zip(actors, inputs))
                )
                parts = [
                    actor.top.remote(opened, chunk, excluded, rows, k) for actor, opened in asked
                ]
                tasks.append((start, stop, parts))
            for start, stop, parts in tasks:
                scores[start:stop], found[start:stop] = merge_topk(get(ray, parts), k)
    return scores, found


NO_LISTS = Prepared(
    pos_indptr=np.zeros(1, np.int64),
    pos_ids=np.empty(0, np.int64),
    ex_indptr=np.zeros(1, np.int64),
    ex_ids=np.empty(0, np.int64),
    groups=None,
    linked=0,
)
"""A search has no positives or groups: the id lists of a :class:`ChunkWork` left empty."""
