"""Mining on a Ray cluster (``pip install 'negmine[ray]'``), with the result of one process,
bit for bit: :func:`mine`; and embedding texts on one, into the file one process writes:
:func:`embed_texts` (actors writing chunks into one file on a shared file system).

Two ways to split the work:

- ``shard_by="query"`` (every node can map the corpus): a pool of actors, each opening the
  corpus once (the driver's ``.npy`` file at the same absolute path on every node, mapped and
  checked to hold the driver's content; or an in-memory array put once into the object
  store) and mining chunks of queries. A chunk carries its global offset, so
  the core's seeded sampling (seeded per global query index) draws what one process draws.
- ``shard_by="corpus"`` (the corpus is too large for one node's memory): one actor per range
  of corpus rows, each searching only its rows with the query's exclusions that fall in them.
  The driver runs the core on each query chunk with a ``fetch`` that asks every shard for its
  top ``depth`` and merges them exactly (:func:`negmine.merge_topk`, the order of
  :func:`negmine.search`): the merged list *is* the exact top ``depth`` of the whole corpus,
  which the core rescores with its float32 chain, filters and samples as on one machine. When
  the filters starve a query's window, the core fetches again, deeper, and the shards are
  asked again. The driver maps the corpus too: it reads the rows of the candidates it
  rescores and of the positives (plus, with ``duplicates="auto"``, every row once to hash
  them; pass ``duplicates=None`` or an array of groups to avoid that).

A corpus file is digested once by the driver and once by each actor that maps it (whole up to
1 GiB, sampled blocks above, as :mod:`negmine._digest` does for files): a node that maps
another file at that path, or none, stops the run with an error naming the file, the actor
and the node.

Both write, with ``out=``, the checkpointed output directory of :mod:`negmine.checkpoint`
(chunk files, manifest, lock, atomic result): a run whose driver died resumes from the chunks
written, and a worker killed mid-run is restarted by Ray (``max_restarts``) and its task
retried, with the same output.

Why an actor pool and not Ray Data ``map_batches``: the checkpoint's unit is a chunk of
queries with a fixed start (the file name, the resume point and the seed offset), and the
driver must write each chunk atomically as it finishes and skip those already on disk. Ray
Data re-blocks its batches, hides which rows a batch held once it is written, and its
fault tolerance re-executes a lost block from lineage rather than letting the driver keep what
it has; an actor pool with one task per chunk keeps the chunk boundaries, resumes trivially
and retries a task on a restarted actor (``max_task_retries``).

Nothing else in negmine imports ``ray``; it is imported when one of these functions runs.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from negmine import _core, sources
from negmine import _numbers as numbers
from negmine._core import Embeddings, open_embeddings
from negmine._digest import array_digest
from negmine._inputs import (
    EmbeddingsLike,
    IdsLike,
    as_csr,
    as_matrix,
    distinct_ids,
    gather_lists,
    read_only,
    rows_of,
)
from negmine._progress import ProgressCallback
from negmine.checkpoint import ChunkRunner, ChunkWork, mine_to_directory, query_chunks, run_chunks
from negmine.embed import Encoder, RowsFile, embed_checked, load_model
from negmine.errors import InvalidArgumentError, InvalidTypeError, NegmineError
from negmine.mine import (
    Duplicates,
    MiningOptions,
    Prepared,
    assemble,
    mine_chunk,
    mine_prepared,
    open_source,
    prepare,
)
from negmine.result import MiningResult
from negmine.search import Metric, merge_topk
from negmine.sources import search_each
from negmine.texts import TextsLike

if TYPE_CHECKING:
    from types import ModuleType

ShardBy = Literal["query", "corpus"]
NAMES = ("queries", "corpus", "positives")

ACTOR_PREFIX = "negmine-"
"""Every actor a run starts is named ``negmine-<run>-<query|shard>-<i>`` (in the dashboard,
``ray.util.list_named_actors()``)."""


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as e:
        raise ImportError("negmine.distributed needs Ray: pip install 'negmine[ray]'") from e
    return ray


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
            ``"bm25"`` or ``"hybrid"``; by query only): the driver opens it once (an HNSW
            graph built or loaded, its ``ef`` tuned on all queries) and ships it to each
            actor once (``bm25`` / ``hybrid``: with the texts; each actor builds its BM25
            index from them again).
        **options: the mining options of :func:`negmine.mine` (``num_negatives``,
            ``metric``, the filters, ``sampling_strategy``, ``seed``, ...), see
            :class:`negmine.MiningOptions`, and the backend's settings (``target_recall``,
            ``hnsw_m``, ...).
    """
    if "rescore" in options:
        raise InvalidArgumentError(
            "rescore= (a teacher) runs in one process: use negmine.mine, or negmine mine "
            "--rescore-model without --ray"
        )
    names = set(sources.setting_names())
    given = {name: options.pop(name) for name in list(options) if name in names}
    mining = MiningOptions(**options)
    shard_by = numbers.choice(shard_by, "shard_by", ("query", "corpus"))  # type: ignore[assignment]
    settings = sources.settings(backend, given)
    if backend == "torch":
        raise InvalidArgumentError(
            "backend='torch' runs in one process: use negmine.mine, or negmine mine without --ray"
        )
    if backend == "maxsim":
        raise InvalidArgumentError(
            "backend='maxsim' judges candidates by MaxSim in one process (a teacher): use "
            "negmine.mine, or negmine mine without --ray"
        )
    if backend != "exact" and shard_by == "corpus":
        raise InvalidArgumentError(
            f"backend={backend!r} needs shard_by='query' (by corpus, each shard searches its "
            "rows exactly)"
        )
    chunk_queries = numbers.count(chunk_queries, "chunk_queries")
    max_restarts = numbers.non_negative(max_restarts, "max_restarts")
    threads = numbers.optional_count(threads, "threads")
    if ray_address is not None and not isinstance(ray_address, str):
        raise InvalidTypeError(f"ray_address must be a str, got {type(ray_address).__name__}")
    c = as_matrix(corpus, "corpus")
    n_corpus = rows_of(c)
    n_shards, boundaries = _shards(shards, shard_by, n_corpus)
    resources = _resources(shard_resources, n_shards)
    if resources is not None:
        n_shards = len(resources)
    # Everything is checked before Ray starts: in memory, the id lists are built first.
    inputs = (queries, corpus, positives)
    files = None if out is None else tuple(_path(x, name) for x, name in zip(inputs, NAMES))
    work = None
    if out is None:
        q = as_matrix(queries, "queries")
        if q.shape[1] != c.shape[1]:
            raise InvalidArgumentError(
                f"queries have dimension {q.shape[1]} but the corpus has {c.shape[1]}"
            )
        prepared = prepare(
            q,
            c,
            positives,
            duplicates=duplicates,
            corpus_texts=corpus_texts,
            query_dup_threshold=mining.query_dup_threshold,
            threads=threads,
        )
        with read_only(q, c):
            source = open_source(
                backend,
                settings,
                q,
                c,
                prepared,
                mining,
                threads=threads,
                query_texts=query_texts,
                corpus_texts=corpus_texts,
            )
        work = ChunkWork(
            queries=q, corpus=c, prepared=prepared, options=mining, threads=threads, source=source
        )
        if not rows_of(q):
            # No chunk to hand out: the core's answer for no queries (its shapes, its report),
            # as `negmine.mine` gives it; no cluster is needed for that.
            empty = mine_chunk(q, c, prepared, mining, source, 0, threads=threads)
            result = assemble(prepared, mining, [empty])
            source.report(result.report, [empty])
            return result

    ray = _import_ray()
    with _connected(ray, ray_address):
        if n_shards is None:
            n_shards = max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
            if shard_by == "corpus":
                n_shards = min(n_shards, max(n_corpus, 1))
        run = uuid.uuid4().hex[:8]
        runner: ChunkRunner
        if shard_by == "query":
            runner = _QueryPool(ray, run, n_shards, resources, max_restarts)
        else:
            if boundaries is None:
                boundaries = [n_corpus * i // n_shards for i in range(n_shards + 1)]
            runner = _ShardPool(ray, run, boundaries, resources, max_restarts)
        if files is not None and out is not None:
            return mine_to_directory(
                files[0],
                files[1],
                files[2],
                out,
                mining,
                duplicates=duplicates,
                corpus_texts=corpus_texts,
                query_texts=query_texts,
                chunk_queries=chunk_queries,
                threads=threads,
                progress=progress,
                runner=runner,
                texts_record=texts_record,
                backend=backend,
                backend_options=given,
            )
        assert work is not None
        chunks = query_chunks(rows_of(work.queries), chunk_queries)
        # The chunks sent are slices of the queries that `prepare` checked: nothing may write
        # into them meanwhile (a progress callback, another thread), as in `negmine.mine`.
        with read_only(work.queries, work.corpus):
            parts = run_chunks(work, chunks, runner, progress)
        result = assemble(work.prepared, mining, parts)
        work.source.report(result.report, parts)
        return result


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
    n_shards, boundaries = _shards(shards, shard_by, n_corpus)
    resources = _resources(shard_resources, n_shards)
    if resources is not None:
        n_shards = len(resources)
    chunks = query_chunks(n_queries, chunk_queries)
    if not chunks:  # nothing to ask: `negmine.search`'s answer, without a cluster
        return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
    ray = _import_ray()
    with _connected(ray, ray_address), read_only(q, c):
        if n_shards is None:
            n_shards = max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
            if shard_by == "corpus":
                n_shards = min(n_shards, max(n_corpus, 1))
        if shard_by == "corpus" and boundaries is None:
            boundaries = [n_corpus * i // n_shards for i in range(n_shards + 1)]
        # By query, every actor holds the whole corpus; one with no chunk to search is not
        # started.
        ranges = (
            [(0, n_corpus)] * min(n_shards, len(chunks))
            if shard_by == "query"
            else list(zip(boundaries[:-1], boundaries[1:]))  # type: ignore[index]
        )
        pool = _Pool(ray, uuid.uuid4().hex[:8], f"search-{shard_by}", resources, max_restarts)
        work = ChunkWork(
            queries=q, corpus=c, prepared=_NO_LISTS, options=MiningOptions(), threads=threads
        )
        inputs = _shard_inputs(ray, work, ranges)
        scores, found = _core.topk_result(n_queries, k, "the search result")
        q_array = np.asarray(q)
        with pool.actors(_ShardWorker, [(lo, hi, metric, threads) for lo, hi in ranges]) as actors:
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
                scores[start:stop], found[start:stop] = merge_topk(_get(ray, parts), k)
    return scores, found


_NO_LISTS = Prepared(
    pos_indptr=np.zeros(1, np.int64),
    pos_ids=np.empty(0, np.int64),
    ex_indptr=np.zeros(1, np.int64),
    ex_ids=np.empty(0, np.int64),
    groups=None,
    linked=0,
)
"""A search has no positives or groups: the id lists of a :class:`ChunkWork` left empty."""


def _shard_inputs(
    ray: ModuleType, work: ChunkWork, ranges: Sequence[tuple[int, int]]
) -> list[_Inputs]:
    """What each shard actor opens: a mapped file's path (each node maps it and reads only its
    range), or the shard's own rows put into the object store (an in-memory corpus: not all
    of it per shard)."""
    c = work.corpus
    mapped = _mapped(c)
    if mapped is not None:
        path, digest = mapped
        shape = (rows_of(c), int(c.shape[1]))
        return [_Inputs(corpus=path, shape=shape, groups=None, digest=digest)] * len(ranges)
    array = np.asarray(c)
    if ranges and all(r == (0, len(array)) for r in ranges):
        whole = [ray.put(array)]
        return [_Inputs(corpus=whole, shape=array.shape, groups=None)] * len(ranges)
    return [
        _Inputs(corpus=[ray.put(array[lo:hi])], shape=(hi - lo, array.shape[1]), groups=None)
        for lo, hi in ranges
    ]


def _mapped(corpus: Embeddings | np.ndarray) -> tuple[str, str] | None:
    """A mapped corpus as the actors open it: the absolute path of its file (resolved here: an
    actor resolves a relative one in its own working directory, not the driver's) and the
    digest of the content the driver maps, which each actor checks its mapping against.
    ``None`` for a corpus in memory (put into the object store as it is)."""
    if not (isinstance(corpus, Embeddings) and corpus.mapped):
        return None
    return os.path.abspath(corpus.path), array_digest(np.asarray(corpus))


def _open_mapped(path: str, shape: tuple[int, int], digest: str | None) -> Embeddings:
    """The driver's corpus file mapped on this actor's node, once it is known to hold what the
    driver maps (shape and content)."""
    try:
        corpus = open_embeddings(path)
    except (OSError, NegmineError) as e:
        raise InvalidArgumentError(
            f"{_here()} cannot open the corpus {path} ({e}): every node must see the driver's "
            "file at the same path"
        ) from None
    if tuple(corpus.shape) != shape:
        raise InvalidArgumentError(
            f"the corpus {path} has shape {tuple(corpus.shape)} on {_here()}, {shape} on the "
            "driver: every node must see the driver's file at the same path"
        )
    if array_digest(np.asarray(corpus)) != digest:
        raise InvalidArgumentError(
            f"the corpus {path} on {_here()} differs from the driver's (same shape, other "
            "content): every node must see the driver's file at the same path"
        )
    return corpus


def _here() -> str:
    """This actor and its node, as an actor's errors name them."""
    ray = _import_ray()
    context = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()} ({context.get_node_id()})"
    return f"actor {context.get_actor_name()} on node {node}"


def _get(ray: ModuleType, refs: Any) -> Any:
    """``ray.get``, with a negmine error raised in an actor (a corpus it cannot open or that is
    not the driver's, an input the core refuses) raised as it is, not wrapped in the
    ``RayTaskError`` that carries it."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, NegmineError):
            raise e.cause from None
        raise


def _path(value: object, name: str) -> str | os.PathLike[str]:
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidTypeError(
            f"with out=, {name} must be a file path (as for `negmine mine`), got "
            f"{type(value).__name__}"
        )
    return value


def _resources(
    shard_resources: Sequence[Mapping[str, float]] | None, n_shards: int | None
) -> list[dict[str, float]] | None:
    if shard_resources is None:
        return None
    if isinstance(shard_resources, (str, Mapping)) or not isinstance(shard_resources, Sequence):
        raise InvalidTypeError(
            "shard_resources must be a sequence of one mapping per shard, e.g. "
            f"[{{'shard-0': 1}}, {{'shard-1': 1}}], got {shard_resources!r}"
        )
    if not all(isinstance(r, Mapping) for r in shard_resources):
        raise InvalidTypeError(
            f"shard_resources must hold one mapping per shard, got {shard_resources!r}"
        )
    if n_shards is not None and len(shard_resources) != n_shards:
        raise InvalidArgumentError(
            f"shard_resources has {len(shard_resources)} entries for {n_shards} shards"
        )
    return [dict(r) for r in shard_resources]


def _shards(shards: object, shard_by: str, n_corpus: int) -> tuple[int | None, list[int] | None]:
    """The number of shards (``None``: not given) and, by corpus, their boundaries if given."""
    if shards is None:
        return None, None
    if isinstance(shards, np.ndarray) and shards.ndim <= 1:
        # A numpy count, or boundaries as an array: their elements are checked as numbers.
        shards = shards[()] if shards.ndim == 0 else list(shards)
    if isinstance(shards, (int, np.integer)):
        n = numbers.count(shards, "shards")
        # An empty corpus is one empty shard (as by default), which mines as `negmine.mine`.
        if shard_by == "corpus" and n > max(n_corpus, 1):
            raise InvalidArgumentError(
                f"shards must be at most the corpus rows ({n_corpus}), got {n}"
            )
        return n, None
    if shard_by == "query" or not isinstance(shards, Sequence) or isinstance(shards, str):
        raise InvalidTypeError(
            "shards must be a number of shards"
            + ("" if shard_by == "query" else " or a sequence of row boundaries")
            + f", got {shards!r}"
        )
    bounds = [numbers.integer(b, "shard boundary", minimum=0) for b in shards]
    increasing = all(a < b for a, b in zip(bounds, bounds[1:]))
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != n_corpus or not increasing:
        raise InvalidArgumentError(
            f"shard boundaries must rise strictly from 0 to the corpus rows ({n_corpus}), "
            f"got {bounds}"
        )
    return len(bounds) - 1, bounds


@contextlib.contextmanager
def _connected(ray: ModuleType, address: str | None) -> Iterator[None]:
    if ray.is_initialized():
        yield
        return
    ray.init(address=address)
    try:
        yield
    finally:
        ray.shutdown()


@dataclass(frozen=True)
class _Inputs:
    """What a run's actors read, named in every call: the corpus (a mapped file's absolute path,
    which each node maps and checks against the driver's content, or an array put once into
    the object store: by corpus, a shard's rows) and the duplicate groups.
    An actor opens them at its first call, and again after a restart. (Not constructor
    arguments: Ray warns that a restarted actor needs those still in the object store.)"""

    corpus: str | list[Any]
    shape: tuple[int, int]
    groups: list[Any] | None
    digest: str | None = None
    """With a path: the content the driver maps (:func:`_mapped`), which the file must hold."""

    @classmethod
    def put(cls, ray: ModuleType, work: ChunkWork) -> _Inputs:
        c = work.corpus
        mapped = _mapped(c)
        # A reference inside a list is passed as it is, not resolved before the call.
        corpus = [ray.put(np.asarray(c))] if mapped is None else mapped[0]
        groups = None if work.prepared.groups is None else [ray.put(work.prepared.groups)]
        return cls(
            corpus=corpus,
            shape=(rows_of(c), int(c.shape[1])),
            groups=groups,
            digest=None if mapped is None else mapped[1],
        )

    def open(self) -> tuple[Embeddings | np.ndarray, np.ndarray | None]:
        import ray

        corpus: Embeddings | np.ndarray
        if isinstance(self.corpus, str):
            corpus = _open_mapped(self.corpus, self.shape, self.digest)
        else:
            corpus = ray.get(self.corpus[0])
        return corpus, None if self.groups is None else ray.get(self.groups[0])


class _Pool:
    """Actors started for one run (named, restartable) and killed when it ends."""

    def __init__(
        self,
        ray: ModuleType,
        run: str,
        kind: str,
        resources: list[dict[str, float]] | None,
        max_restarts: int,
        actor_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.ray, self.run, self.kind = ray, run, kind
        self.resources, self.max_restarts = resources, max_restarts
        self.actor_options = dict(actor_options or {})

    @contextlib.contextmanager
    def actors(self, cls: type, args: Sequence[Sequence[Any]]) -> Iterator[list[Any]]:
        remote = self.ray.remote(cls)
        started = []
        try:
            for i, arguments in enumerate(args):
                options: dict[str, Any] = {
                    "name": f"{ACTOR_PREFIX}{self.run}-{self.kind}-{i}",
                    "num_cpus": 0,
                    "max_restarts": self.max_restarts,
                    "max_task_retries": self.max_restarts,
                }
                if self.resources is not None:
                    options["resources"] = self.resources[i]
                else:
                    options["scheduling_strategy"] = "SPREAD"
                options.update(self.actor_options)
                started.append(remote.options(**options).remote(*arguments))
            yield started
        finally:
            for actor in started:
                self.ray.kill(actor, no_restart=True)


class _QueryPool(_Pool):
    """The by-query :data:`~negmine.checkpoint.ChunkRunner`: ``n`` actors, each mining one
    chunk at a time with one more queued, chunks handed out as actors finish."""

    def __init__(
        self,
        ray: ModuleType,
        run: str,
        n: int,
        resources: list[dict[str, float]] | None,
        max_restarts: int,
    ) -> None:
        super().__init__(ray, run, "query", resources, max_restarts)
        self.n = n

    def __call__(
        self, work: ChunkWork, chunks: Sequence[tuple[int, int]]
    ) -> Generator[tuple[int, _core.Mined], None, None]:
        if not chunks:
            return
        ray = self.ray
        inputs = _Inputs.put(ray, work)
        # Put once (a graph can be large); inside a list, each actor resolves it once.
        source = [ray.put(work.source)]
        # An actor with no chunk to mine is not started.
        args = [(work.options.to_dict(), work.threads)] * min(self.n, len(chunks))
        q_array = np.asarray(work.queries)
        todo = deque(chunks)
        with self.actors(_QueryWorker, args) as actors:
            running: dict[Any, tuple[int, int]] = {}  # task -> (start, actor)

            def submit(actor: int) -> None:
                start, stop = todo.popleft()
                lists = replace(work.prepared.rows(start, stop), groups=None)
                queries = np.ascontiguousarray(q_array[start:stop])
                task = actors[actor].mine.remote(inputs, source, start, queries, lists)
                running[task] = (start, actor)

            # Two chunks per actor: the next one is on its node when the first finishes.
            for _ in range(2):
                for actor in range(len(actors)):
                    if todo:
                        submit(actor)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                start, actor = running.pop(ready[0])
                arrays = _get(ray, ready[0])
                if todo:
                    submit(actor)
                yield start, _core.Mined(**arrays)


class _QueryWorker:
    """A by-query actor: the corpus opened once, chunks mined with their global offset."""

    def __init__(self, options: dict[str, Any], threads: int | None) -> None:
        self.options = MiningOptions(**options)
        self.threads = threads
        self.opened: tuple[Embeddings | np.ndarray, np.ndarray | None] | None = None
        self.source: sources.Source | None = None

    def mine(
        self, inputs: _Inputs, source: list[Any], start: int, queries: np.ndarray, lists: Prepared
    ) -> dict[str, np.ndarray]:
        import ray

        if self.opened is None:
            self.opened = inputs.open()
        if self.source is None:
            self.source = ray.get(source[0])
        corpus, groups = self.opened
        part = mine_chunk(
            queries,
            corpus,
            replace(lists, groups=groups),
            self.options,
            self.source,
            start,
            query_offset=start,
            threads=self.threads,
        )
        return part.arrays()


class _ShardPool(_Pool):
    """The by-corpus :data:`~negmine.checkpoint.ChunkRunner`: one actor per row range; the
    driver mines each chunk with candidates merged from every shard."""

    def __init__(
        self,
        ray: ModuleType,
        run: str,
        boundaries: list[int],
        resources: list[dict[str, float]] | None,
        max_restarts: int,
    ) -> None:
        super().__init__(ray, run, "shard", resources, max_restarts)
        self.boundaries = boundaries

    def __call__(
        self, work: ChunkWork, chunks: Sequence[tuple[int, int]]
    ) -> Generator[tuple[int, _core.Mined], None, None]:
        if not chunks:
            return
        ray = self.ray
        b = self.boundaries
        ranges = list(zip(b[:-1], b[1:]))
        inputs = _shard_inputs(ray, work, ranges)
        args = [(lo, hi, work.options.metric, work.threads) for lo, hi in ranges]
        q_array = np.asarray(work.queries)
        with self.actors(_ShardWorker, args) as shards:
            for start, stop in chunks:
                queries = np.ascontiguousarray(q_array[start:stop])
                lists = work.prepared.rows(start, stop)
                # Put once per chunk: every shard, and every deeper fetch, reads these.
                queries_ref = ray.put(queries)
                excluded_ref = ray.put((lists.ex_indptr, lists.ex_ids))

                fetch = _merged_fetch(ray, shards, inputs, queries_ref, excluded_ref)
                part = mine_prepared(
                    queries,
                    work.corpus,
                    lists,
                    work.options,
                    query_offset=start,
                    threads=work.threads,
                    fetch=fetch,
                )
                yield start, part


def _merged_fetch(
    ray: ModuleType,
    shards: Sequence[Any],
    inputs: Sequence[_Inputs],
    queries: Any,
    excluded: Any,
) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    """The core's candidate source for one chunk (``queries``, ``excluded``: its object-store
    references): every shard's top ``depth`` for the rows asked, merged exactly. The merged
    list is the exact top ``depth`` of the whole corpus, so the core, which rescores it,
    ranks as the exact search would."""

    def fetch(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        tasks = [
            shard.top.remote(opened, queries, excluded, rows, depth)
            for shard, opened in zip(shards, inputs)
        ]
        _, ids = merge_topk(_get(ray, tasks), depth)
        return sources.candidate_csr(ids)

    return fetch


class _ShardWorker:
    """A by-corpus actor: the rows ``lo..hi`` of the corpus, searched exactly."""

    def __init__(self, lo: int, hi: int, metric: str, threads: int | None) -> None:
        self.lo, self.hi, self.metric, self.threads = lo, hi, metric, threads
        self.rows: np.ndarray | None = None

    def top(
        self,
        inputs: _Inputs,
        queries: np.ndarray,
        excluded: tuple[np.ndarray, np.ndarray],
        rows: np.ndarray,
        depth: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``min(depth, rows in the shard)`` of each of ``queries[rows]`` among this
        shard's rows that it does not exclude, global ids; rows past a query's eligible ones
        are padding (id -1, score -inf)."""
        if self.rows is None:
            corpus = np.asarray(inputs.open()[0])
            # A row range of the mapped file (only its pages are ever read on this node), or
            # the shard's own rows.
            self.rows = corpus[self.lo : self.hi] if isinstance(inputs.corpus, str) else corpus
        n = len(self.rows)
        counts, ids = gather_lists(*excluded, rows)
        inside = (ids >= self.lo) & (ids < self.lo + n)
        row_of = np.repeat(np.arange(len(rows)), counts)
        local_counts = np.bincount(row_of[inside], minlength=len(rows))
        local_indptr = np.concatenate(([0], np.cumsum(local_counts))).astype(np.int64)
        scores, top_ids = search_each(
            queries[rows],
            self.rows,
            depth,
            self.metric,
            (local_indptr, ids[inside] - self.lo),
            self.threads,
        )
        top_ids[top_ids >= 0] += self.lo
        return scores, top_ids


def embed_texts(
    texts: TextsLike,
    model: Any,
    *,
    cache_dir: str | os.PathLike[str],
    actors: int | None = None,
    actor_options: Mapping[str, Any] | None = None,
    ray_address: str | None = None,
    batch_size: int = 64,
    normalize: bool = True,
    progress: bool | ProgressCallback = False,
    prompt: str | None = None,
    dtype: Literal["float32", "float16"] = "float32",
    model_id: str | None = None,
    chunk_size: int = 4096,
    max_restarts: int = 3,
) -> Embeddings:
    """:func:`negmine.embed_texts` with the chunks encoded by Ray actors: the same file, byte
    for byte (given a model that encodes a batch the same way on every node), resumable the
    same way (a run of either kind resumes the other's).

    This process (the driver) reads the texts, as ``embed_texts`` does, and hands each chunk
    to an actor (two queued per actor); the actor encodes it, writes its rows into the job's
    file at their positions and syncs them, and the driver marks the chunk done. So every
    node's actors write into the one file in ``cache_dir``'s hidden partial directory:
    *across nodes, ``cache_dir`` must be on a shared file system* (NFS, Lustre, GPFS...) at
    the same absolute path on every node, one where writes to disjoint byte ranges of a file
    from several nodes do not overwrite each other and ``flock`` works (an object-store
    mount such as s3fs is not one). An actor killed mid-run is restarted by Ray and its
    chunks (the one it was encoding, partly written, and the one queued) are encoded again,
    into the same bytes; after ``max_restarts`` restarts the run fails with Ray's
    ``RayActorError``, keeping the chunks done. A run that failed, or a driver killed
    mid-run, resumes on the rerun.

    Args:
        texts, cache_dir, batch_size, normalize, prompt, dtype, model_id, chunk_size,
            progress: as in :func:`negmine.embed_texts`.
        model: a model name or path, loaded on each actor with ``SentenceTransformer``, or a
            model object (anything with ``encode``, pickled once into Ray's object store and
            loaded by each actor).
        actors: how many actors encode (default: one per alive node).
        actor_options: Ray options for every actor, e.g. ``{"num_gpus": 1}`` for an actor
            per GPU (the default reserves no CPU and spreads the actors over the nodes).
        ray_address: as in :func:`mine`.
        max_restarts: how often Ray restarts a killed actor before the run fails.
    """
    actors = numbers.optional_count(actors, "actors")
    max_restarts = numbers.non_negative(max_restarts, "max_restarts")
    if actor_options is not None and not isinstance(actor_options, Mapping):
        raise InvalidTypeError(
            f"actor_options must be a mapping of Ray actor options, got "
            f"{type(actor_options).__name__}"
        )
    if ray_address is not None and not isinstance(ray_address, str):
        raise InvalidTypeError(f"ray_address must be a str, got {type(ray_address).__name__}")
    ray = _import_ray()
    with _connected(ray, ray_address):
        if actors is None:
            actors = max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
        pool = _EmbedPool(ray, uuid.uuid4().hex[:8], model, actors, actor_options, max_restarts)
        return embed_checked(
            texts,
            model,
            cache_dir=cache_dir,
            batch_size=batch_size,
            normalize=normalize,
            progress=progress,
            prompt=prompt,
            dtype=dtype,
            model_id=model_id,
            chunk_size=chunk_size,
            # The driver alone owns the job, even inside a torchrun job.
            distributed=False,
            pool=pool,
        )


class _EmbedPool(_Pool):
    """The :data:`negmine.embed.ChunkPool` of Ray: ``n`` actors, each encoding one chunk at a
    time with one more queued, chunks handed out as actors finish."""

    def __init__(
        self,
        ray: ModuleType,
        run: str,
        model: Any,
        n: int,
        actor_options: Mapping[str, Any] | None,
        max_restarts: int,
    ) -> None:
        super().__init__(ray, run, "embed", None, max_restarts, actor_options)
        self.model, self.n = model, n

    def __call__(
        self,
        encoder: Encoder,
        data: Path,
        rows: int,
        chunks: Iterator[tuple[int, list[str]]],
    ) -> Generator[tuple[int, int], None, None]:
        ray = self.ray
        # Put once; inside a list, each actor resolves it at its first chunk.
        model = self.model if isinstance(self.model, str) else [ray.put(self.model)]
        path = os.path.abspath(data)
        with self.actors(_EmbedWorker, [(encoder, model, path, rows)] * self.n) as actors:
            running: dict[Any, tuple[int, int]] = {}  # task -> (start, actor)
            # Two chunks per actor: the next one is queued when the first finishes.
            idle = deque([*range(len(actors)), *range(len(actors))])
            for start, texts in chunks:
                if not idle:
                    ready, _ = ray.wait(list(running), num_returns=1)
                    begin, actor = running.pop(ready[0])
                    idle.append(actor)
                    yield begin, _get(ray, ready[0])
                actor = idle.popleft()
                running[actors[actor].encode.remote(start, texts)] = (start, actor)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                begin, _actor = running.pop(ready[0])
                yield begin, _get(ray, ready[0])


class _EmbedWorker:
    """An embedding actor: the model loaded once, each chunk written into the job's file."""

    def __init__(self, encoder: Encoder, model: str | list[Any], path: str, rows: int) -> None:
        self.encoder, self.model_ref = encoder, model
        self.model: Any = None
        self.file = RowsFile(Path(path), rows, encoder.dtype)

    def encode(self, start: int, texts: list[str]) -> int:
        import ray

        if self.model is None:
            ref = self.model_ref
            self.model = load_model(ref) if isinstance(ref, str) else ray.get(ref[0])
        self.file.write(start, self.encoder.rows(self.model, texts, start))
        return len(texts)
