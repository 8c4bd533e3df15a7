"""Embedding texts with a sentence-transformers model, cached on disk as memory-mapped ``.npy``.

:func:`embed_texts` encodes once per (model, texts, options) and keeps the result under
``cache_dir``; a later call with the same inputs maps the file instead of encoding again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib
import io
import json
import os
import shutil
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from negmine import _numbers as numbers
from negmine import _ranks
from negmine._atomic import (
    atomic_write,
    file_mode,
    fsync_directory,
    located,
    locked_temp_file,
    sweep,
)
from negmine._core import Embeddings, open_embeddings
from negmine._progress import ProgressCallback
from negmine.checkpoint import LOCK, locked, partial_directory, query_chunks, run_chunks
from negmine.errors import DirectoryLockedError, FormatError, InvalidArgumentError, InvalidTypeError
from negmine.store import cast_rows
from negmine.texts import TextScan, TextsLike, TextSource, as_source, scan_texts

_CACHE_VERSION = "negmine-embed-2"
_FINITE_CHECK_ROWS = 65_536


def model_identity(model: Any) -> str:
    """What names a model in the cache key: the string it was given as, or the name or path
    its sentence-transformers object was loaded from."""
    if isinstance(model, str):
        return model
    card = getattr(model, "model_card_data", None)
    candidates = [
        getattr(card, "base_model", None),
        getattr(card, "model_id", None),
        getattr(model, "name_or_path", None),
        getattr(getattr(model, "tokenizer", None), "name_or_path", None),
    ]
    for name in candidates:
        if isinstance(name, (str, os.PathLike)) and str(name):
            return f"{type(model).__qualname__}:{os.fspath(name)}"
    raise InvalidArgumentError(
        f"cannot tell which model this {type(model).__name__} is (no model_card_data.base_model, "
        "name_or_path or tokenizer.name_or_path): pass model_id='...' so that the cache is "
        "keyed by it"
    )


def cache_key(
    texts: TextsLike | TextScan,
    model_id: str,
    *,
    normalize: bool,
    prompt: str | None,
    dtype: str,
) -> str:
    """The hex SHA-256 of everything that decides the embeddings: the options, the number of
    texts and their digest (:func:`negmine.texts.scan_texts`: each text length-prefixed, so no
    two different lists hash alike). ``texts`` already scanned are not read again."""
    scan = texts if isinstance(texts, TextScan) else scan_texts(as_source(texts, "texts"))
    h = hashlib.sha256()
    for part in (_CACHE_VERSION, model_id, repr(normalize), repr(prompt), dtype):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little") + data)
    h.update(scan.count.to_bytes(8, "little"))
    h.update(bytes.fromhex(scan.sha256))
    return h.hexdigest()


def load_model(name: str) -> Any:
    try:
        st = importlib.import_module("sentence_transformers")
    except ImportError as e:
        raise ImportError(
            f"loading the model {name!r} needs sentence-transformers: "
            "pip install 'negmine[st]' (or pass a model object with an encode() method)"
        ) from e
    return st.SentenceTransformer(name)


def embed_texts(
    texts: TextsLike,
    model: Any,
    *,
    cache_dir: str | os.PathLike[str],
    batch_size: int = 64,
    normalize: bool = True,
    progress: bool | ProgressCallback = True,
    prompt: str | None = None,
    dtype: Literal["float32", "float16"] = "float32",
    model_id: str | None = None,
    chunk_size: int = 4096,
    distributed: bool | None = None,
) -> Embeddings:
    """Embeds ``texts`` with a sentence-transformers model and returns them memory-mapped from
    a cache file; the next call with the same model and texts maps that file without encoding.

    The texts are streamed: a list, a file or dataset opened with :mod:`negmine.texts`
    (``open_texts("corpus.parquet", "text")``, ``from_dataset(ds, "text")``, also a streaming
    ``IterableDataset``) or a function returning a fresh iterable. They are read twice, a
    chunk at a time: once to count them and key the cache, once to encode them; memory holds
    one chunk of texts and its embeddings, never the corpus.

    The file is ``cache_dir/embeddings-<sha256>.npy``, the hash taken over the model's identity
    (its name or path, or ``model_id``), the texts in order, ``normalize``, ``prompt`` and
    ``dtype``. It is written as a resumable job: the file is made at its full size in the
    hidden directory ``.embeddings-<sha256>.npy.partial`` beside it, each chunk of
    ``chunk_size`` texts is encoded (in batches sorted by length, longest first, for less
    padding) and written at its rows, and a checkpoint marks it done. An interrupted run
    (Ctrl-C, a kill, a crash) called again with the same arguments encodes only the chunks not
    marked, and the finished file is byte-identical to an uninterrupted run's (given a model
    that encodes the same batch the same way). The file is renamed into place only when
    complete, so no partial cache file is ever seen. A cache file is reused only if it is
    valid, has one row per text and the requested dtype, and holds only finite values;
    anything else is encoded again and replaced.

    Args:
        texts: the strings to embed, one row each, in order (see above).
        model: a ``SentenceTransformer`` (or any object with a compatible
            ``encode(texts, batch_size=..., show_progress_bar=..., convert_to_numpy=...)``),
            or a model name or path to load with ``SentenceTransformer`` (needs
            ``pip install 'negmine[st]'``; a name is only loaded when the cache misses).
        cache_dir: directory for the cache (created if missing).
        batch_size: the model's batch size.
        normalize: scale each row to unit length (rows of norm 0 stay 0).
        progress: a progress bar over the texts, with texts/s and the time left (a
            ``(done, total)`` callable also works).
        prompt: passed to ``encode(prompt=...)`` when given (e.g. ``"query: "``).
        dtype: stored dtype; ``"float16"`` halves the file. A value too large for float16
            (above 65504, e.g. with ``normalize=False``) raises ``InvalidArgumentError``
            naming the text, before anything is cached.
        model_id: names the model in the cache key when the object does not say what it is.
        chunk_size: texts per checkpoint (what memory holds and an interruption loses at
            most). A resume must use the same ``chunk_size`` and ``batch_size``; with others it
            starts over.
        distributed: whether the processes of a ``torchrun`` / accelerate job share the work.
            ``None`` (default): they do when ``torch.distributed`` has a process group of
            several (or, without one, ``WORLD_SIZE`` is above 1: a gloo group is started for
            the call). Every rank must then make the same call: chunk ``i`` is encoded by rank
            ``i % world_size`` into its rows of the one file (``cache_dir`` must be shared by
            the ranks), rank 0 holds the lock and renames the file into place when every rank
            is done, and every rank returns it. An error on one rank is raised on every rank
            once the others have encoded their chunks (kept for the rerun). A rank killed
            mid-run (and the job with it) resumes on the rerun, with any number of processes,
            into the same bytes. ``False``: this process alone (a call made on one rank only,
            which would otherwise wait for the others forever).

    Returns:
        The embeddings as a read-only, memory-mapped :class:`negmine.Embeddings`
        (``np.asarray(emb)`` gives a zero-copy array).
    """
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
        distributed=distributed,
        pool=None,
    )


def embed_checked(
    texts: TextsLike,
    model: Any,
    *,
    cache_dir: str | os.PathLike[str],
    batch_size: int,
    normalize: bool,
    progress: bool | ProgressCallback,
    prompt: str | None,
    dtype: str,
    model_id: str | None,
    chunk_size: int,
    distributed: bool | None,
    pool: ChunkPool | None,
) -> Embeddings:
    """:func:`embed_texts`, its chunks encoded here or by ``pool``."""
    source = as_source(texts, "texts")
    batch_size = numbers.count(batch_size, "batch_size")
    chunk_size = numbers.count(chunk_size, "chunk_size")
    dtype = numbers.choice(dtype, "dtype", ("float32", "float16"))
    if not isinstance(model, str) and not callable(getattr(model, "encode", None)):
        raise InvalidTypeError(
            f"model must be a model name or an object with an encode() method, got "
            f"{type(model).__name__}"
        )
    ident = model_id if model_id is not None else model_identity(model)
    scan = scan_texts(source)
    if scan.count == 0:
        raise InvalidArgumentError("texts is empty: nothing to embed")
    key = cache_key(scan, ident, normalize=normalize, prompt=prompt, dtype=dtype)
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"embeddings-{key}.npy"
    encoder = Encoder(batch_size, normalize, prompt, np.dtype(dtype))
    with _ranks.ranks(distributed) as ranks:
        return _embed_on_ranks(
            ranks, source, scan, key, path, model, encoder, chunk_size, progress, pool
        )


def _embed_on_ranks(
    ranks: _ranks.Ranks,
    source: TextSource,
    scan: TextScan,
    key: str,
    path: Path,
    model: Any,
    encoder: Encoder,
    chunk_size: int,
    progress: bool | ProgressCallback,
    pool: ChunkPool | None,
) -> Embeddings:
    dtype = encoder.dtype.name

    def cached() -> tuple[str, bool]:
        # Rank 0 decides for every rank: they must all encode, or none.
        if ranks.rank == 0 and path.exists() and _reusable(path, scan.count, dtype) is not None:
            _remove_leftover(path)
            return key, True
        return key, False

    answers = _ranks.together(ranks, cached)
    for rank, (other, _) in enumerate(answers):
        if other != key:
            raise InvalidArgumentError(
                f"rank {rank} embeds other texts or options than rank {ranks.rank} (cache keys "
                f"{other[:12]}... and {key[:12]}...): every rank must be given the same"
            )
    if not answers[0][1]:
        loaded: list[Any] = [model]

        def load() -> None:
            if isinstance(model, str) and pool is None:
                loaded[0] = load_model(model)

        manifest = {
            "format": 1,
            "key": key,
            "rows": scan.count,
            "chunk_size": chunk_size,
            "batch_size": encoder.batch_size,
        }
        texts = _TextChunks(source, scan, chunk_size)
        if pool is None:

            def produce(pending: Sequence[tuple[int, int]]) -> Iterator[tuple[int, Any]]:
                for start, chunk in texts.pending(pending):
                    yield start, encoder.rows(loaded[0], chunk, start)

        else:

            def produce(pending: Sequence[tuple[int, int]]) -> Iterator[tuple[int, Any]]:
                data = partial_directory(path) / _DATA
                return pool(encoder, data, scan.count, texts.pending(pending))

        run_job(
            path,
            manifest,
            rows=scan.count,
            chunk_size=chunk_size,
            dtype=encoder.dtype,
            ranks=ranks,
            produce=produce,
            progress=progress,
            prepare=load,
        )
    return open_embeddings(path)


_DATA = "data.npy"
_CREATING = "create.lock"

ChunkPool = Callable[
    ["Encoder", Path, int, Iterator[tuple[int, list[str]]]],
    Generator[tuple[int, int], None, None],
]
"""Encodes chunks elsewhere (:mod:`negmine.distributed`'s Ray actors): given the encoding
options, the job's data file, its row count and the ``(start, texts)`` of the chunks to
encode, writes each chunk's rows into the file (durably, :meth:`RowsFile.write`) and yields
``(start, rows)`` as each is done, in any order."""


@dataclass(frozen=True)
class Encoder:
    """How texts become rows: the options of ``model.encode`` and the stored dtype."""

    batch_size: int
    normalize: bool
    prompt: str | None
    dtype: np.dtype[Any]

    def rows(self, model: Any, texts: list[str], start: int) -> np.ndarray:
        """The rows of ``texts`` (``start`` is the first one's index), in their order,
        checked, normalized and cast; encoded in batches of similar length."""
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size,
            "show_progress_bar": False,
            "convert_to_numpy": True,
        }
        if self.prompt is not None:
            kwargs["prompt"] = self.prompt
        # Longest first (as sentence-transformers sorts one call's texts): a batch pads to
        # its longest text, so similar lengths pad least. The order is stable, so a chunk is
        # always encoded in the same batches, whichever process encodes it.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        for b in range(0, len(order), self.batch_size):
            rows = order[b : b + self.batch_size]
            vectors = np.asarray(model.encode([texts[i] for i in rows], **kwargs))
            if vectors.ndim != 2 or vectors.shape[0] != len(rows):
                raise InvalidArgumentError(
                    f"model.encode returned shape {vectors.shape} for {len(rows)} texts "
                    "(expected one row per text)"
                )
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            elif vectors.shape[1] != out.shape[1]:
                raise InvalidArgumentError(
                    f"model.encode returned {vectors.shape[1]} dimensions after "
                    f"{out.shape[1]} for earlier texts"
                )
            out[rows] = vectors
        assert out is not None
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise InvalidArgumentError(
                f"model.encode returned NaN or Inf for text {start + bad}: {texts[bad][:80]!r}"
            )
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = (out / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        # Checked per chunk, before anything is cached: an overflow names its text.
        return np.ascontiguousarray(cast_rows(out, self.dtype, "the embedding of text", start))


@dataclass
class _TextChunks:
    """The texts read again, chunk by chunk, and checked to be those scanned."""

    source: TextSource
    scan: TextScan
    chunk_size: int

    def pending(self, pending: Sequence[tuple[int, int]]) -> Iterator[tuple[int, list[str]]]:
        """``(start, texts)`` of the chunks in ``pending``. Every chunk is read (a stream has
        no other way to its later ones), to check that the texts are still those scanned:
        a change raises after the last."""
        todo = {start for start, _ in pending}
        digest = hashlib.sha256()
        start = 0
        for texts in self.source.chunks(self.chunk_size):
            for text in texts:
                data = text.encode("utf-8")
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
            if start in todo:
                yield start, texts
            start += len(texts)
        if start != self.scan.count or digest.hexdigest() != self.scan.sha256:
            raise InvalidArgumentError(
                f"the texts changed while being embedded ({self.scan.count} when counted, "
                f"{start} now, or other texts): nothing was cached"
            )


@dataclass
class RowsFile:
    """A job's data file, a ``rows x dim`` ``.npy`` that every process of the job writes its
    chunks into. It is made at full size aside and renamed in (under a lock, by whichever
    process has a chunk's rows first: the width is known then), so it is complete in size
    whenever it exists; a process that finds it opens it."""

    path: Path
    rows: int
    dtype: np.dtype[Any]
    dest: Path | None = None
    """What errors name (the job's destination; default ``path``)."""
    fd: int = -1
    data_offset: int = 0
    dim: int = 0

    def open(self) -> bool:
        """Opens the file if it exists complete in size and shape (a kill while one was made
        leaves only a temp file, removed when the job starts over); whether it is open."""
        if self.fd >= 0:
            return True
        try:
            with open(self.path, "rb") as f:
                # The job writes version 1.0 headers only.
                if np.lib.format.read_magic(f) != (1, 0):
                    return False
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                offset = f.tell()
        except (OSError, ValueError):
            return False
        if (
            len(shape) != 2
            or shape[0] != self.rows
            or fortran
            or dtype != self.dtype
            or os.path.getsize(self.path) != offset + shape[0] * shape[1] * dtype.itemsize
        ):
            return False
        self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        self.data_offset, self.dim = offset, int(shape[1])
        return True

    def write(self, start: int, vectors: np.ndarray) -> None:
        """``vectors`` at rows ``start...``, on disk when this returns (a chunk's mark, written
        next, must never name rows that a crash could lose)."""
        if self.fd < 0:
            self._open_or_create(int(vectors.shape[1]))
        if vectors.shape[1] != self.dim:
            raise InvalidArgumentError(
                f"the encoder returned {vectors.shape[1]} dimensions for row {start} but "
                f"{self.dim} for earlier rows of {self.dest or self.path}"
            )
        if vectors.dtype != self.dtype:
            raise InvalidTypeError(f"rows of {vectors.dtype} for a file of {self.dtype}")
        row_bytes = self.dim * self.dtype.itemsize
        data = np.ascontiguousarray(vectors).tobytes()
        try:
            _write_at(self.fd, data, self.data_offset + start * row_bytes)
            os.fdatasync(self.fd)
        except OSError as e:
            raise located(e, self.dest or self.path) from e

    def sync(self) -> None:
        if self.fd < 0 and not self.open():
            raise InvalidArgumentError(f"{self.path} was never made: no chunk was encoded")
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _open_or_create(self, dim: int) -> None:
        lock = os.open(
            self.path.parent / _CREATING, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode()
        )
        try:
            # One maker at a time; the others then find its file.
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.open():
                self._create(dim)
                if not self.open():
                    raise InvalidArgumentError(f"{self.path} could not be made")
        finally:
            os.close(lock)

    def _create(self, dim: int) -> None:
        """The file made aside (the header of a ``rows x dim`` array, then its rows,
        allocated at once: a full disk fails here with ENOSPC, not later) and renamed in."""
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (self.rows, dim),
            },
        )
        size = header.tell() + self.rows * dim * self.dtype.itemsize
        sweep(self.path)  # a killed maker's
        fd, tmp = locked_temp_file(self.path)
        try:
            _write_at(fd, header.getvalue(), 0)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.ftruncate(fd, size)  # a file system without fallocate
            os.replace(tmp, self.path)
        except OSError as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise located(e, self.dest or self.path) from e
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)


def run_job(
    dest: Path,
    manifest: dict[str, Any],
    *,
    rows: int,
    chunk_size: int,
    dtype: np.dtype[Any],
    ranks: _ranks.Ranks,
    produce: Callable[[Sequence[tuple[int, int]]], Iterator[tuple[int, Any]]],
    progress: bool | ProgressCallback,
    prepare: Callable[[], object] | None = None,
    description: str = "embed",
    unit: str = "text",
) -> None:
    """Writes the ``rows``-row ``.npy`` at ``dest`` as a resumable job over the processes of
    ``ranks``: chunk ``i`` (of ``chunk_size`` rows) is rank ``i % world``'s, which encodes it
    with ``produce`` into its rows of one file in ``dest``'s partial directory and marks it
    done; rank 0 holds the job's lock and, once every rank is done, renames the file into
    place. A rerun (after a kill of any rank, any world size) encodes only the chunks not
    marked; a manifest unlike ``manifest`` starts over.

    ``produce(pending)`` yields ``(start, rows)`` for this rank's pending chunks, in any order:
    an array of ``dtype`` to write, or a row count for a chunk already written (by
    :meth:`RowsFile.write`, e.g. in a Ray actor). ``prepare`` runs on every rank after the
    lock is taken, its errors (and any rank's while encoding) raised on every rank."""
    partial = partial_directory(dest)
    data = RowsFile(partial / _DATA, rows, dtype, dest)
    chunks = query_chunks(rows, chunk_size)
    own = [chunk for i, chunk in enumerate(chunks) if i % ranks.world == ranks.rank]
    with contextlib.ExitStack() as stack:

        def start() -> None:
            if ranks.rank == 0:
                stack.enter_context(locked(partial, dest))
                _reset(partial, manifest, data)
            if prepare is not None:
                prepare()

        # Rank 0 locks and resets the checkpoint before any rank reads its marks.
        _ranks.together(ranks, start)
        committed = False
        try:

            def encode() -> None:
                data.open()
                done = {s: e - s for s, e in own if _mark(partial, s).exists()}

                def write(_: object, pending: Sequence[tuple[int, int]]) -> Iterator[Any]:
                    for begin, produced in produce(pending):
                        if isinstance(produced, int):
                            yield begin, produced
                        else:
                            data.write(begin, produced)
                            yield begin, len(produced)

                def save(begin: int, count: int) -> None:
                    with atomic_write(_mark(partial, begin)) as f:
                        f.write(f"{count}\n".encode())

                shown = progress if ranks.rank == 0 else False
                if ranks.world > 1 and shown is True:
                    description_here = f"{description} (rank 0 of {ranks.world})"
                else:
                    description_here = description
                run_chunks(
                    None,
                    own,
                    write,  # type: ignore[arg-type]
                    shown,
                    done=done,
                    save=save,
                    description=description_here,
                    unit=unit,
                )

            _ranks.together(ranks, encode)

            def commit() -> None:
                if ranks.rank != 0:
                    return
                missing = [s for s, _ in chunks if not _mark(partial, s).exists()]
                if missing:
                    raise InvalidArgumentError(
                        f"rows {missing[0]}... of {dest} were not encoded by any rank"
                    )
                data.sync()
                os.replace(data.path, dest)
                fsync_directory(dest.parent)
                shutil.rmtree(partial)

            # Every rank returns once the file is in place.
            _ranks.together(ranks, commit)
            committed = True
        finally:
            data.close()
            # Nothing encoded is nothing to resume.
            if not committed and ranks.rank == 0 and not _marked(partial):
                shutil.rmtree(partial, ignore_errors=True)


def _reset(partial: Path, manifest: dict[str, Any], data: RowsFile) -> None:
    """Rank 0, holding the lock: a checkpoint of another job (or a kill before its manifest
    was written) is started over, and marks without their file mean nothing."""
    manifest_path = partial / "manifest.json"
    try:
        previous = json.loads(manifest_path.read_bytes())
    except (OSError, ValueError):
        previous = None
    if previous != manifest:
        _clear(partial)
        with atomic_write(manifest_path) as f:
            f.write(json.dumps(manifest, sort_keys=True).encode())
    if not data.open():
        _clear(partial, keep_manifest=True)
    data.close()


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _mark(partial: Path, start: int) -> Path:
    return partial / f"chunk_{start:012d}.done"


def _marked(partial: Path) -> bool:
    return any(partial.glob("chunk_*.done"))


def _clear(partial: Path, *, keep_manifest: bool = False) -> None:
    """Removes what a checkpoint holds (not its lock)."""
    for entry in partial.iterdir():
        if entry.name == LOCK or (keep_manifest and entry.name == "manifest.json"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _remove_leftover(dest: Path) -> None:
    """Removes the checkpoint of a run killed after it renamed its file into place."""
    partial = partial_directory(dest)
    if partial.exists():
        with contextlib.suppress(DirectoryLockedError, OSError), locked(partial, dest):
            shutil.rmtree(partial)


def _reusable(path: Path, n_texts: int, dtype: str) -> Embeddings | None:
    """The cache file, when it can be what this key wrote: a valid file of ``n_texts`` rows of
    ``dtype``, every value finite (the model's output is checked to be, so anything else is
    damage, e.g. float16 overflow written by an older version). Else None: encode again."""
    try:
        cached = open_embeddings(path)
    except (FormatError, ValueError, OSError):
        return None
    if cached.shape[0] != n_texts or cached.dtype != np.dtype(dtype):
        return None
    rows = np.asarray(cached)
    for a in range(0, len(rows), _FINITE_CHECK_ROWS):
        if not np.isfinite(rows[a : a + _FINITE_CHECK_ROWS]).all():
            return None
    return cached


__all__ = ["cache_key", "embed_texts", "model_identity"]
