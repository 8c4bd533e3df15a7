"""Embedding texts on a Ray cluster (:func:`embed_texts`): actors encoding chunks of texts
into the one file that :func:`negmine.embed_texts` writes in one process."""

from __future__ import annotations

import os
import uuid
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from negmine import _numbers as numbers
from negmine._core import Embeddings
from negmine._progress import ProgressCallback
from negmine.distributed.actors import Pool
from negmine.distributed.inputs import get
from negmine.distributed.plan import alive_nodes, check_address, connected, import_ray
from negmine.embed import Encoder, RowsFile, embed_checked, load_model
from negmine.errors import InvalidTypeError
from negmine.texts import TextsLike

if TYPE_CHECKING:
    from types import ModuleType


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
    check_address(ray_address)
    ray = import_ray()
    with connected(ray, ray_address):
        if actors is None:
            actors = alive_nodes(ray)
        pool = EmbedPool(ray, uuid.uuid4().hex[:8], model, actors, actor_options, max_restarts)
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


class EmbedPool(Pool):
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
        with self.actors(EmbedWorker, [(encoder, model, path, rows)] * self.n) as actors:
            running: dict[Any, tuple[int, int]] = {}  # task -> (start, actor)
            # Two chunks per actor: the next one is queued when the first finishes.
            idle = deque([*range(len(actors)), *range(len(actors))])
            for start, texts in chunks:
                if not idle:
                    ready, _ = ray.wait(list(running), num_returns=1)
                    begin, actor = running.pop(ready[0])
                    idle.append(actor)
                    yield begin, get(ray, ready[0])
                actor = idle.popleft()
                running[actors[actor].encode.remote(start, texts)] = (start, actor)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                begin, _actor = running.pop(ready[0])
                yield begin, get(ray, ready[0])


class EmbedWorker:
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
