"""What a run's actors read, and how they get it: a mapped corpus (or token embeddings) by the
absolute path of its file (each node maps it and checks it against the content the driver
maps), an array in memory through the object store (once, or by corpus each shard's rows),
the candidate source and its teacher (:class:`ShippedSource`); and how their errors come back
to the driver."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from negmine import sources
from negmine._core import Embeddings, open_embeddings
from negmine._digest import array_digest
from negmine._inputs import rows_of
from negmine.checkpoint import ChunkWork
from negmine.distributed.plan import import_ray
from negmine.errors import InvalidArgumentError, NegmineError
from negmine.mine import Teacher
from negmine.multivector import MultiVectors
from negmine.sources.maxsim import MaxSim, Scorer

if TYPE_CHECKING:
    from types import ModuleType


@dataclass(frozen=True)
class Inputs:
    """What a run's actors read, named in every call: the corpus (a mapped file's absolute path,
    which each node maps and checks against the driver's content, or an array put once into
    the object store: by corpus, a shard's rows) and the duplicate groups.
    An actor opens them at its first call, and again after a restart. (Not constructor
    arguments: Ray warns that a restarted actor needs those still in the object store.)"""

    corpus: str | list[Any]
    shape: tuple[int, int]
    groups: list[Any] | None
    digest: str | None = None
    """With a path: the content the driver maps (:func:`mapped`), which the file must hold."""

    @classmethod
    def put(cls, ray: ModuleType, work: ChunkWork) -> Inputs:
        c = work.corpus
        on_disk = mapped(c)
        # A reference inside a list is passed as it is, not resolved before the call.
        corpus = [ray.put(np.asarray(c))] if on_disk is None else on_disk[0]
        groups = None if work.prepared.groups is None else [ray.put(work.prepared.groups)]
        return cls(
            corpus=corpus,
            shape=(rows_of(c), int(c.shape[1])),
            groups=groups,
            digest=None if on_disk is None else on_disk[1],
        )

    def open(self) -> tuple[Embeddings | np.ndarray, np.ndarray | None]:
        import ray

        corpus: Embeddings | np.ndarray
        if isinstance(self.corpus, str):
            corpus = open_mapped(self.corpus, self.shape, self.digest)
        else:
            corpus = ray.get(self.corpus[0])
        return corpus, None if self.groups is None else ray.get(self.groups[0])


def shard_inputs(
    ray: ModuleType, work: ChunkWork, ranges: Sequence[tuple[int, int]]
) -> list[Inputs]:
    """What each shard actor opens: a mapped file's path (each node maps it and reads only its
    range), or the shard's own rows put into the object store (an in-memory corpus: not all
    of it per shard)."""
    c = work.corpus
    on_disk = mapped(c)
    if on_disk is not None:
        path, digest = on_disk
        shape = (rows_of(c), int(c.shape[1]))
        return [Inputs(corpus=path, shape=shape, groups=None, digest=digest)] * len(ranges)
    array = np.asarray(c)
    if ranges and all(r == (0, len(array)) for r in ranges):
        whole = [ray.put(array)]
        return [Inputs(corpus=whole, shape=array.shape, groups=None)] * len(ranges)
    return [
        Inputs(corpus=[ray.put(array[lo:hi])], shape=(hi - lo, array.shape[1]), groups=None)
        for lo, hi in ranges
    ]


def mapped(corpus: Embeddings | np.ndarray) -> tuple[str, str] | None:
    """A mapped corpus as the actors open it: the absolute path of its file (resolved here: an
    actor resolves a relative one in its own working directory, not the driver's) and the
    digest of the content the driver maps, which each actor checks its mapping against.
    ``None`` for a corpus in memory (put into the object store as it is)."""
    if not (isinstance(corpus, Embeddings) and corpus.mapped):
        return None
    return os.path.abspath(corpus.path), array_digest(np.asarray(corpus))


def open_mapped(
    path: str, shape: tuple[int, int], digest: str | None, what: str = "the corpus"
) -> Embeddings:
    """The driver's corpus file (or another ``.npy`` it maps: ``what`` names it) mapped on this
    actor's node, once it is known to hold what the driver maps (shape and content)."""
    try:
        corpus = open_embeddings(path)
    except (OSError, NegmineError) as e:
        raise InvalidArgumentError(
            f"{here()} cannot open {what} {path} ({e}): every node must see the driver's "
            "file at the same path"
        ) from None
    if tuple(corpus.shape) != shape:
        raise InvalidArgumentError(
            f"{what} {path} has shape {tuple(corpus.shape)} on {here()}, {shape} on the "
            "driver: every node must see the driver's file at the same path"
        )
    if array_digest(np.asarray(corpus)) != digest:
        raise InvalidArgumentError(
            f"{what} {path} on {here()} differs from the driver's (same shape, other "
            "content): every node must see the driver's file at the same path"
        )
    return corpus


NO_TOKENS = MultiVectors(np.zeros((0, 1), np.float32), np.zeros(1, np.int64))
"""No text: what a MaxSim source holds in place of its token embeddings on the way to an
actor (which opens them from :class:`TokenInputs`)."""


@dataclass(frozen=True)
class TokenInputs:
    """Token embeddings (``backend="maxsim"``) as an actor opens them: the token matrix by the
    absolute path of its mapped ``.npy`` (a saved multi-vector directory's ``tokens.npy``:
    each node maps it and checks it against the content the driver maps, as the corpus), or
    put once into the object store when the driver holds it in memory; the offsets (one
    int64 per text) through the object store."""

    what: str
    """Names them in an actor's errors: ``"the query tokens"``, ``"the corpus tokens"``."""
    tokens: str | list[Any]
    shape: tuple[int, int]
    offsets: list[Any]
    digest: str | None = None

    @classmethod
    def put(cls, ray: ModuleType, vectors: MultiVectors, what: str) -> TokenInputs:
        on_disk = mapped(vectors.tokens)
        return cls(
            what=what,
            tokens=[ray.put(np.asarray(vectors.tokens))] if on_disk is None else on_disk[0],
            shape=(vectors.n_tokens, vectors.dim),
            offsets=[ray.put(vectors.offsets)],
            digest=None if on_disk is None else on_disk[1],
        )

    def open(self) -> MultiVectors:
        import ray

        tokens: Embeddings | np.ndarray
        if isinstance(self.tokens, str):
            tokens = open_mapped(self.tokens, self.shape, self.digest, self.what)
        else:
            tokens = ray.get(self.tokens[0])
        return MultiVectors(tokens, ray.get(self.offsets[0]))


@dataclass(frozen=True)
class ShippedSource:
    """A run's candidate source (and teacher) as its by-query actors get it: the source put
    once into the object store (inside a list, so that each actor resolves it once). A MaxSim
    source travels without its token embeddings, which go as :class:`TokenInputs` (by path
    where they are mapped), and its teacher, MaxSim over those tokens, is rebuilt on the
    actor (``teacher_batch``: its batch size)."""

    source: list[Any]
    tokens: tuple[TokenInputs, TokenInputs] | None = None
    teacher_batch: int | None = None

    @classmethod
    def put(cls, ray: ModuleType, work: ChunkWork) -> ShippedSource:
        source, teacher = work.source, work.teacher
        if teacher is not None and not (
            isinstance(source, MaxSim) and isinstance(teacher.score, Scorer)
        ):
            raise InvalidArgumentError("a teacher (rescore) runs in this process only, not on Ray")
        if not isinstance(source, MaxSim):
            return cls([ray.put(source)])
        tokens = (
            TokenInputs.put(ray, source.queries, "the query tokens"),
            TokenInputs.put(ray, source.corpus, "the corpus tokens"),
        )
        detached = replace(source, queries=NO_TOKENS, corpus=NO_TOKENS)
        batch = None if teacher is None else teacher.batch_size
        return cls([ray.put(detached)], tokens, batch)

    def open(self, threads: int | None) -> tuple[sources.Source, Teacher | None]:
        """The source, and the teacher if the driver's run has one, on this actor."""
        import ray

        source = ray.get(self.source[0])
        if self.tokens is None:
            return source, None
        queries, corpus = (tokens.open() for tokens in self.tokens)
        source = replace(source, queries=queries, corpus=corpus)
        if self.teacher_batch is None:
            return source, None
        # Query ids are global (each chunk is mined with its offset), as on the driver.
        return source, Teacher(Scorer(queries, corpus, 0, threads), None, self.teacher_batch)


def here() -> str:
    """This actor and its node, as an actor's errors name them."""
    ray = import_ray()
    context = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()} ({context.get_node_id()})"
    return f"actor {context.get_actor_name()} on node {node}"


def get(ray: ModuleType, refs: Any) -> Any:
    """``ray.get``, with a negmine error raised in an actor (a corpus it cannot open or that is
    not the driver's, an input the core refuses) raised as it is, not wrapped in the
    ``RayTaskError`` that carries it."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, NegmineError):
            raise e.cause from None
        raise
