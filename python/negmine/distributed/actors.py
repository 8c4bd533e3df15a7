"""The Ray actors of a mining run and the pools that start them, hand them chunks and kill
them: by query (:class:`QueryPool`, each actor mining whole chunks against the whole corpus)
and by corpus (:class:`ShardPool`, each actor searching its rows for the driver's core
calls). Each pool is a :data:`~negmine.checkpoint.ChunkRunner`."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from negmine import _core, sources
from negmine._core import Embeddings
from negmine._inputs import gather_lists
from negmine.checkpoint import ChunkWork
from negmine.distributed.inputs import Inputs, ShippedSource, get, shard_inputs
from negmine.mine import MiningOptions, Prepared, Teacher, mine_chunk, mine_prepared
from negmine.search import merge_topk
from negmine.sources import search_each

if TYPE_CHECKING:
    from types import ModuleType

ACTOR_PREFIX = "negmine-"
"""Every actor a run starts is named ``negmine-<run>-<query|shard>-<i>`` (in the dashboard,
``ray.util.list_named_actors()``)."""


class Pool:
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


class QueryPool(Pool):
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
        inputs = Inputs.put(ray, work)
        # Put once (a graph can be large); each actor resolves it once.
        source = ShippedSource.put(ray, work)
        # An actor with no chunk to mine is not started.
        args = [(work.options.to_dict(), work.threads)] * min(self.n, len(chunks))
        q_array = np.asarray(work.queries)
        todo = deque(chunks)
        with self.actors(QueryWorker, args) as actors:
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
                arrays = get(ray, ready[0])
                if todo:
                    submit(actor)
                yield start, _core.Mined(**arrays)


class QueryWorker:
    """A by-query actor: the corpus and the source (with its teacher, if any) opened once,
    chunks mined with their global offset."""

    def __init__(self, options: dict[str, Any], threads: int | None) -> None:
        self.options = MiningOptions(**options)
        self.threads = threads
        self.opened: tuple[Embeddings | np.ndarray, np.ndarray | None] | None = None
        self.source: tuple[sources.Source, Teacher | None] | None = None

    def mine(
        self,
        inputs: Inputs,
        source: ShippedSource,
        start: int,
        queries: np.ndarray,
        lists: Prepared,
    ) -> dict[str, np.ndarray]:
        if self.opened is None:
            self.opened = inputs.open()
        if self.source is None:
            self.source = source.open(self.threads)
        corpus, groups = self.opened
        candidates, teacher = self.source
        part = mine_chunk(
            queries,
            corpus,
            replace(lists, groups=groups),
            self.options,
            candidates,
            start,
            teacher=teacher,
            query_offset=start,
            threads=self.threads,
        )
        return part.arrays()


class ShardPool(Pool):
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
        inputs = shard_inputs(ray, work, ranges)
        args = [(lo, hi, work.options.metric, work.threads) for lo, hi in ranges]
        q_array = np.asarray(work.queries)
        with self.actors(ShardWorker, args) as shards:
            for start, stop in chunks:
                queries = np.ascontiguousarray(q_array[start:stop])
                lists = work.prepared.rows(start, stop)
                # Put once per chunk: every shard, and every deeper fetch, reads these.
                queries_ref = ray.put(queries)
                excluded_ref = ray.put((lists.ex_indptr, lists.ex_ids))

                fetch = merged_fetch(ray, shards, inputs, queries_ref, excluded_ref)
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


def merged_fetch(
    ray: ModuleType,
    shards: Sequence[Any],
    inputs: Sequence[Inputs],
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
        _, ids = merge_topk(get(ray, tasks), depth)
        return sources.candidate_csr(ids)

    return fetch


class ShardWorker:
    """A by-corpus actor: the rows ``lo..hi`` of the corpus, searched exactly."""

    def __init__(self, lo: int, hi: int, metric: str, threads: int | None) -> None:
        self.lo, self.hi, self.metric, self.threads = lo, hi, metric, threads
        self.rows: np.ndarray | None = None

    def top(
        self,
        inputs: Inputs,
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
