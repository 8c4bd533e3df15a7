"""Embedding texts with a sentence-transformers model, cached on disk as memory-mapped ``.npy``.

:func:`embed_texts` encodes once per (model, texts, options) and keeps the result under
``cache_dir``; a later call with the same inputs maps the file instead of encoding again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import io
import json
import os
import shutil
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from negmine import _numbers as numbers
from negmine._atomic import atomic_write, file_mode, fsync_directory
from negmine._core import Embeddings, open_embeddings
from negmine._progress import ProgressCallback
from negmine.checkpoint import LOCK, _locked, partial_directory, query_chunks, run_chunks
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


def _load_model(name: str) -> Any:
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

    Returns:
        The embeddings as a read-only, memory-mapped :class:`negmine.Embeddings`
        (``np.asarray(emb)`` gives a zero-copy array).
    """
    source = as_source(texts, "texts")
    batch_size = numbers.count(batch_size, "batch_size")
    chunk_size = numbers.count(chunk_size, "chunk_size")
    dtype = numbers.choice(dtype, "dtype", ("float32", "float16"))  # type: ignore[assignment]
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
    if path.exists():
        cached = _reusable(path, scan.count, dtype)
        if cached is not None:
            _remove_leftover(path)
            return cached

    if isinstance(model, str):
        model = _load_model(model)
    job = _EncodeJob(
        source=source,
        scan=scan,
        model=model,
        batch_size=batch_size,
        normalize=normalize,
        prompt=prompt,
        dtype=np.dtype(dtype),
        chunk_size=chunk_size,
    )
    manifest = {
        "format": 1,
        "key": key,
        "rows": scan.count,
        "chunk_size": chunk_size,
        "batch_size": batch_size,
    }
    job.run(path, manifest, progress)
    return open_embeddings(path)


_DATA = "data.npy"


@dataclass
class _EncodeJob:
    """One encoding of ``source`` into a file: what the chunks share."""

    source: TextSource
    scan: TextScan
    model: Any
    batch_size: int
    normalize: bool
    prompt: str | None
    dtype: np.dtype[Any]
    chunk_size: int
    fd: int = -1
    data_offset: int = 0
    dim: int = 0

    def run(
        self,
        dest: Path,
        manifest: dict[str, Any],
        progress: bool | ProgressCallback,
    ) -> None:
        """Encodes every chunk not yet marked done into ``dest``'s partial file, then renames
        it to ``dest``."""
        partial = partial_directory(dest)
        with _locked(partial, dest):
            try:
                self._run_locked(partial, dest, manifest, progress)
            except BaseException:
                if not _marked(partial):
                    shutil.rmtree(partial, ignore_errors=True)
                raise
            finally:
                if self.fd >= 0:
                    os.close(self.fd)
                    self.fd = -1
            shutil.rmtree(partial)

    def _run_locked(
        self,
        partial: Path,
        dest: Path,
        manifest: dict[str, Any],
        progress: bool | ProgressCallback,
    ) -> None:
        manifest_path = partial / "manifest.json"
        try:
            previous = json.loads(manifest_path.read_bytes())
        except (OSError, ValueError):
            previous = None
        if previous != manifest:
            # Another chunking (or a kill before the manifest was written): start over.
            _clear(partial)
            with atomic_write(manifest_path) as f:
                f.write(json.dumps(manifest, sort_keys=True).encode())
        self._open_data(partial / _DATA, manifest["rows"])
        if self.fd < 0:
            _clear(partial, keep_manifest=True)  # marks without their rows mean nothing
        chunks = query_chunks(manifest["rows"], self.chunk_size)
        done = {start: stop - start for start, stop in chunks if _mark(partial, start).exists()}

        def save(start: int, rows: int) -> None:
            os.fdatasync(self.fd)  # the rows are on disk before their mark
            with atomic_write(_mark(partial, start)) as f:
                f.write(f"{rows}\n".encode())

        run_chunks(
            partial,
            chunks,
            self._encode_chunks,
            progress,
            done=done,
            save=save,
            description="embed",
            unit="text",
        )
        if self.fd < 0:
            raise InvalidArgumentError("the texts changed while being embedded (none were read)")
        os.fsync(self.fd)
        os.replace(partial / _DATA, dest)
        fsync_directory(dest.parent)

    def _open_data(self, path: Path, rows: int) -> None:
        """Opens the partial file when it is complete in size and shape (a kill while it was
        being made leaves a short one, which is made again); its width is known then."""
        try:
            with open(path, "rb") as f:
                # The job writes version 1.0 headers only.
                if np.lib.format.read_magic(f) != (1, 0):
                    return
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                offset = f.tell()
        except (OSError, ValueError):
            return
        if (
            len(shape) != 2
            or shape[0] != rows
            or fortran
            or dtype != self.dtype
            or os.path.getsize(path) != offset + shape[0] * shape[1] * dtype.itemsize
        ):
            return
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self.data_offset, self.dim = offset, int(shape[1])

    def _create_data(self, path: Path, rows: int, dim: int) -> None:
        """Makes the partial file: the header of a ``rows x dim`` array, then its rows,
        allocated at once (a full disk fails here with ENOSPC, not later)."""
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (rows, dim),
            },
        )
        size = header.tell() + rows * dim * self.dtype.itemsize
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, file_mode())
        try:
            _write_at(fd, header.getvalue(), 0)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                os.ftruncate(fd, size)  # a file system without fallocate
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.data_offset, self.dim = fd, header.tell(), dim

    def _encode_chunks(
        self, partial: Path, pending: Sequence[tuple[int, int]]
    ) -> Generator[tuple[int, int], None, None]:
        """The chunk runner (see :func:`negmine.checkpoint.run_chunks`): reads every chunk, to
        check that the texts are still those scanned, and encodes the pending ones into their
        rows."""
        todo = {start for start, _ in pending}
        digest = hashlib.sha256()
        start = 0
        for texts in self.source.chunks(self.chunk_size):
            for text in texts:
                data = text.encode("utf-8")
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
            if start in todo:
                vectors = self._encode(texts, start)
                if self.fd < 0:
                    self._create_data(partial / _DATA, self.scan.count, vectors.shape[1])
                elif vectors.shape[1] != self.dim:
                    raise InvalidArgumentError(
                        f"model.encode returned {vectors.shape[1]} dimensions for text {start} "
                        f"but {self.dim} for earlier texts"
                    )
                row_bytes = self.dim * self.dtype.itemsize
                _write_at(self.fd, vectors.tobytes(), self.data_offset + start * row_bytes)
                yield start, len(texts)
            start += len(texts)
        if start != self.scan.count or digest.hexdigest() != self.scan.sha256:
            raise InvalidArgumentError(
                f"the texts changed while being embedded ({self.scan.count} when counted, "
                f"{start} now, or other texts): nothing was cached"
            )

    def _encode(self, texts: list[str], start: int) -> np.ndarray:
        """The rows of ``texts`` (``start`` is the first one's index), in their order, checked,
        normalized and cast; encoded in batches of similar length."""
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size,
            "show_progress_bar": False,
            "convert_to_numpy": True,
        }
        if self.prompt is not None:
            kwargs["prompt"] = self.prompt
        # Longest first (as sentence-transformers sorts one call's texts): a batch pads to
        # its longest text, so similar lengths pad least. The order is stable, so a chunk is
        # always encoded in the same batches.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: np.ndarray | None = None
        for b in range(0, len(order), self.batch_size):
            rows = order[b : b + self.batch_size]
            vectors = np.asarray(self.model.encode([texts[i] for i in rows], **kwargs))
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
        with contextlib.suppress(DirectoryLockedError, OSError), _locked(partial, dest):
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
