"""What a run's actors read, and how they get it: a mapped corpus by the absolute path of its
file (each node maps it and checks it against the content the driver maps), an array in
memory through the object store (once, or by corpus each shard's rows); and how their errors
come back to the driver."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from negmine._core import Embeddings, open_embeddings
from negmine._digest import array_digest
from negmine._inputs import rows_of
from negmine.checkpoint import ChunkWork
from negmine.distributed.plan import import_ray
from negmine.errors import InvalidArgumentError, NegmineError

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


def open_mapped(path: str, shape: tuple[int, int], digest: str | None) -> Embeddings:
    """The driver's corpus file mapped on this actor's node, once it is known to hold what the
    driver maps (shape and content)."""
    try:
        corpus = open_embeddings(path)
    except (OSError, NegmineError) as e:
        raise InvalidArgumentError(
            f"{here()} cannot open the corpus {path} ({e}): every node must see the driver's "
            "file at the same path"
        ) from None
    if tuple(corpus.shape) != shape:
        raise InvalidArgumentError(
            f"the corpus {path} has shape {tuple(corpus.shape)} on {here()}, {shape} on the "
            "driver: every node must see the driver's file at the same path"
        )
    if array_digest(np.asarray(corpus)) != digest:
        raise InvalidArgumentError(
            f"the corpus {path} on {here()} differs from the driver's (same shape, other "
            "content): every node must see the driver's file at the same path"
        )
    return corpus


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
