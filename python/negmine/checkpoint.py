"""Mining into a directory in chunks of queries, with a checkpoint per chunk: an interrupted run
(Ctrl-C, kill, crash) started again with the same arguments resumes where it stopped and
writes byte-identical output.

Who mines a chunk is pluggable (a :data:`ChunkRunner`): this process (:func:`local_chunks`,
the default) or a Ray cluster (:mod:`negmine.distributed`). Every runner mines a chunk into
the same arrays (seeds follow the global query index), so the checkpoint does not record which
one wrote it: a run may resume another's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from negmine import _core, sources
from negmine._atomic import atomic_write, file_mode, fsync_directory
from negmine._core import Embeddings, open_embeddings
from negmine._digest import file_digest
from negmine._numbers import count
from negmine._paths import regular_file
from negmine._progress import ProgressCallback, progress_callback
from negmine.errors import DirectoryLockedError, InvalidArgumentError
from negmine.idlists import Duplicates, Prepared, prepare, text_groups
from negmine.options import MiningOptions
from negmine.result import MiningResult, check_replaceable, save_result
from negmine.sources.exact import Exact
from negmine.steps import assemble, mine_chunk, open_source
from negmine.teachers import Teacher
from negmine.texts import TextScan, TextsLike, as_source, scan_texts

LOCK = "lock"


@dataclass(frozen=True)
class ChunkWork:
    """What the chunks of one run share: the inputs, the id lists of every query
    (:func:`~negmine.idlists.prepare`, global) and the options."""

    queries: Embeddings | np.ndarray
    corpus: Embeddings | np.ndarray
    prepared: Prepared
    options: MiningOptions
    threads: int | None
    teacher: Teacher | None = None
    """Judges the candidates (``mine(rescore=...)``): ``prepared`` then holds its positive
    scores and ``options`` its percentile cut. Only this process' runner takes one, but for
    MaxSim's (:func:`source_teacher`), which Ray's by-query runner rebuilds on its actors."""
    source: sources.Source = field(default_factory=Exact)
    """Where each chunk's candidates come from (:mod:`negmine.sources`), opened on all the
    queries."""


ChunkRunner = Callable[
    [ChunkWork, Sequence[tuple[int, int]]], Generator[tuple[int, _core.Mined], None, None]
]
"""Mines the query chunks ``(start, stop)`` of a :class:`ChunkWork`, yielding ``(start, core
output)`` for each as it is done, in any order. A chunk must come out as
``mine_chunk(queries[start:stop], corpus, prepared.rows(start, stop), options, source, start,
query_offset=start)`` would mine it. Closing the iterator stops the work (the run was
interrupted): what was yielded is kept, the rest is mined again on resume."""


def query_chunks(n_queries: int, chunk_queries: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``chunk_queries`` queries (the last shorter)."""
    return [
        (start, min(start + chunk_queries, n_queries))
        for start in range(0, n_queries, chunk_queries)
    ]


def local_chunks(
    work: ChunkWork, chunks: Sequence[tuple[int, int]]
) -> Generator[tuple[int, _core.Mined], None, None]:
    """The :data:`ChunkRunner` of this process: one core call per chunk, in order."""
    q_array = np.asarray(work.queries)
    for start, stop in chunks:
        yield (
            start,
            mine_chunk(
                np.ascontiguousarray(q_array[start:stop]),
                work.corpus,
                work.prepared.rows(start, stop),
                work.options,
                work.source,
                start,
                query_offset=start,
                threads=work.threads,
                teacher=work.teacher,
            ),
        )


def partial_directory(out: str | os.PathLike[str]) -> Path:
    """Where a run into ``out`` keeps its lock and checkpoint: the hidden sibling
    ``.<name>.partial`` (beside ``out``, so that swapping the finished result in keeps them)."""
    dest = Path(os.path.realpath(out))
    return dest.parent / f".{dest.name}.partial"


def _fingerprint(path: Path, what: str) -> dict[str, Any]:
    """What identifies an input for resuming: its path and content (see :mod:`negmine._digest`:
    whole files up to 1 GiB, sampled blocks plus mtime above)."""
    return {"path": str(path.absolute()), **file_digest(path, what)}


@contextlib.contextmanager
def locked(partial: Path, out: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``partial/lock`` (which records the holder's pid)."""
    lock = partial / LOCK
    while True:
        with contextlib.suppress(FileExistsError):
            os.mkdir(partial)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
        except FileNotFoundError:
            continue  # the holder removed the directory between our mkdir and open
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise DirectoryLockedError(
                    f"{out} is being written by another negmine run (pid {holder}, lock "
                    f"{lock}); wait for it to end, or write to another directory"
                ) from None
            # A holder that finished removed the lock file after we opened it: our lock is on
            # a deleted file that a third run would not see, so take the lock again.
            try:
                current = os.stat(lock)
            except FileNotFoundError:
                continue
            if not os.path.samestat(os.fstat(fd), current):
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
            return
        finally:
            os.close(fd)


def mine_to_directory(
    queries: str | os.PathLike[str],
    corpus: str | os.PathLike[str],
    positives: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: MiningOptions,
    *,
    duplicates: Duplicates = "auto",
    corpus_texts: TextsLike | None = None,
    query_texts: TextsLike | None = None,
    chunk_queries: int = 8192,
    threads: int | None = None,
    progress: bool | ProgressCallback = True,
    runner: ChunkRunner = local_chunks,
    teacher: Teacher | None = None,
    teacher_identity: dict[str, Any] | None = None,
    texts_record: Mapping[str, Any] | None = None,
    backend: str = "exact",
    backend_options: Mapping[str, Any] | None = None,
) -> MiningResult:
    """Mines ``queries`` (a ``.npy`` file) against ``corpus`` (a ``.npy`` file, mapped) with
    the positives of a qrels TSV, writing the result into ``out`` as one unit (see
    :meth:`MiningResult.save`: ``out`` must be new, empty or a previous result).

    The run holds an exclusive lock on ``out`` from start to end: a second run into the same
    ``out`` raises :class:`~negmine.errors.DirectoryLockedError` at once, naming the first
    one's pid. Lock and checkpoint live in the hidden sibling ``.<out's name>.partial``
    (:func:`partial_directory`), one ``.npz`` per chunk of ``chunk_queries`` queries; it is
    removed when the result is in place. A run over a checkpoint of the same inputs and
    options resumes it and writes byte-identical output; a checkpoint of other options or
    inputs is refused (inputs are compared by content, see ``_fingerprint``: a different
    corpus of the same size and mtime is refused too; so are other ``corpus_texts`` or
    ``duplicates`` groups). Inputs are checked to be regular files (no FIFO, device or
    directory) before anything is created. A run that fails before its first chunk is
    checkpointed leaves nothing behind, and what a kill before it leaves holds nothing to
    resume: the next run, of any inputs and options, starts afresh over it.

    ``duplicates`` and ``corpus_texts`` group the corpus as in :func:`negmine.mine` (with
    texts, identical texts are duplicates); a backend that reads texts (``bm25``, ``hybrid``)
    builds its index over ``corpus_texts`` and searches it with ``query_texts``, whose
    digests go into the manifest (a resume with other texts is refused). ``texts_record``
    (``negmine mine``'s record of the text files, for ``negmine export``) is saved with the
    result as ``texts.json``, listed in its manifest.

    ``runner`` mines the chunks (default: this process; see :mod:`negmine.distributed` for a
    Ray cluster); ``progress``: a tqdm bar or a callable ``(queries done, total)``, called
    after each chunk is checkpointed. ``teacher`` (with the local runner only) judges the
    candidates as ``mine(rescore=...)`` does; ``teacher_identity`` (what names it: model,
    texts' digests, percentile) goes into the checkpoint's manifest, so that a resume with
    another teacher is refused.

    ``backend`` chooses the candidate source and ``backend_options`` its settings, as
    ``negmine.mine``'s arguments of those names (e.g. ``{"target_recall": 0.99}``); the source
    is opened once per run (an HNSW index built or loaded, its ``ef`` tuned on all queries).
    What changes its candidates is part of the checkpoint's identity (``torch``'s result is
    the exact one: a run of either resumes the other's)."""
    settings = sources.settings(backend, backend_options or {})
    if teacher is not None and runner is not local_chunks:
        raise InvalidArgumentError("a teacher (rescore) runs in this process only, not on Ray")
    brought = None if teacher is not None else source_teacher(backend, settings, threads)
    if brought is not None:
        teacher, teacher_identity = brought
    chunk_queries = count(chunk_queries, "chunk_queries")
    q_path = regular_file(queries, "queries file")
    c_path = regular_file(corpus, "corpus file")
    r_path = regular_file(positives, "positives file")
    out_dir = Path(os.path.realpath(out))
    check_replaceable(out_dir)
    partial = partial_directory(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with locked(partial, out_dir):
        try:
            result = _mine_chunks(
                q_path,
                c_path,
                r_path,
                out_dir,
                partial,
                options,
                duplicates,
                corpus_texts,
                query_texts,
                chunk_queries,
                threads,
                progress,
                runner,
                teacher,
                teacher_identity,
                (backend, settings),
            )
        except BaseException:
            # Nothing mined is nothing to resume: a manifest alone would only make the
            # corrected rerun look like a resume of other inputs.
            if not _checkpointed(partial):
                shutil.rmtree(partial, ignore_errors=True)
            raise
        # Staged inside the checkpoint, so that a kill while saving leaves nothing beside
        # `out` that the resumed run would not clean up.
        save_result(result, out_dir, staging=partial / "result", texts=texts_record)
        shutil.rmtree(partial)
        fsync_directory(out_dir.parent)
    return result


def source_teacher(
    backend: str, settings: Any, threads: int | None
) -> tuple[Teacher, dict[str, Any]] | None:
    """The teacher that ``backend`` (with its ``settings``) brings, and what names it in a
    checkpoint's manifest; ``None`` for a backend without one. ``maxsim``: MaxSim judges its
    own candidates, as in :func:`negmine.mine` without ``rescore`` (the tokens' content is in
    the backend's identity already); Ray's by-query runner rebuilds it on each actor."""
    if backend != "maxsim":
        return None
    return Teacher(settings.teacher(0, threads), None, 4096), {"maxsim": True}


def _mine_chunks(
    queries: Path,
    corpus: Path,
    positives: Path,
    out_dir: Path,
    partial: Path,
    options: MiningOptions,
    duplicates: Duplicates,
    corpus_texts: TextsLike | None,
    query_texts: TextsLike | None,
    chunk_queries: int,
    threads: int | None,
    progress: bool | ProgressCallback,
    runner: ChunkRunner,
    teacher: Teacher | None,
    teacher_identity: dict[str, Any] | None,
    backend: tuple[str, Any],
) -> MiningResult:
    q = open_embeddings(queries)
    c = open_embeddings(corpus)
    # One pass over the texts (they may be streamed) names them and groups them.
    scan = (
        text_groups(corpus_texts)
        if corpus_texts is not None and isinstance(duplicates, str)
        else None
    )
    manifest = {
        "format": 2,
        "options": options.to_dict(),
        "duplicates": _duplicates_identity(duplicates, scan),
        "chunk_queries": chunk_queries,
        "queries": _fingerprint(queries, "queries file"),
        "corpus": _fingerprint(corpus, "corpus file"),
        "positives": _fingerprint(positives, "positives file"),
    }
    if teacher is not None:
        manifest["teacher"] = teacher_identity or {}
    if backend[1].identity() is not None:  # the exact path's manifests stay as they were
        manifest["backend"] = backend[1].identity()
    if sources.reads_texts(backend[0]):
        manifest["texts"] = {
            name: None if texts is None else _texts_digest(texts, name, scan)
            for name, texts in (("query_texts", query_texts), ("corpus_texts", corpus_texts))
        }
    manifest_path = partial / "manifest.json"
    if manifest_path.exists():
        try:
            previous = json.loads(regular_file(manifest_path, "checkpoint manifest").read_text())
        except ValueError:
            previous = None
        # A checkpoint without a chunk (killed before the first) holds nothing to mix up.
        if previous != manifest and _checkpointed(partial):
            raise InvalidArgumentError(
                f"{out_dir} holds an interrupted run of other inputs or options; remove "
                f"{partial} to start over, or write to another directory"
            )

    # Everything is validated before the first checkpoint is written, so that a refused run
    # never blocks the corrected one.
    prepared = prepare(
        q,
        c,
        positives,
        duplicates=duplicates,
        corpus_texts=scan,
        query_dup_threshold=options.query_dup_threshold,
        threads=threads,
    )
    # The options were checked as they were built; the inputs' shapes are checked here.
    if q.shape[1] != c.shape[1]:
        raise InvalidArgumentError(
            f"queries have dimension {q.shape[1]} but the corpus has dimension {c.shape[1]}"
        )
    if not (manifest_path.exists() and _checkpointed(partial)):
        with atomic_write(manifest_path) as f:
            f.write(json.dumps(manifest, indent=1, sort_keys=True).encode())
    chunks = query_chunks(q.shape[0], chunk_queries)
    done: dict[int, _core.Mined] = {}
    for start, _ in chunks:
        path = _chunk_path(partial, start)
        if path.exists():
            with np.load(regular_file(path, "checkpoint"), allow_pickle=False) as z:
                done[start] = _core.Mined(**{k: z[k] for k in z.files})

    def save(start: int, part: _core.Mined) -> None:
        with atomic_write(_chunk_path(partial, start)) as f:
            _savez(f, part.arrays())

    core_options = options
    if teacher is not None:
        prepared, core_options = teacher.judge_positives(prepared, options)
    source = open_source(
        *backend,
        q,
        c,
        prepared,
        options,
        threads=threads,
        progress=progress if isinstance(progress, bool) else False,
        query_texts=query_texts,
        corpus_texts=corpus_texts,
    )
    work = ChunkWork(
        queries=q,
        corpus=c,
        prepared=prepared,
        options=core_options,
        threads=threads,
        teacher=teacher,
        source=source,
    )
    parts = run_chunks(work, chunks, runner, progress, done=done, save=save)
    result = assemble(prepared, options, parts)
    source.report(result.report, parts)
    if teacher is not None:
        result.report.teacher = teacher.report(result.report.teacher)
    return result


W = TypeVar("W")
P = TypeVar("P")


def run_chunks(
    work: W,
    chunks: Sequence[tuple[int, int]],
    runner: Callable[[W, Sequence[tuple[int, int]]], Generator[tuple[int, P], None, None]],
    progress: bool | ProgressCallback,
    *,
    done: dict[int, P] | None = None,
    save: Callable[[int, P], None] | None = None,
    description: str = "mine",
    unit: str = "query",
) -> list[P]:
    """The outputs of ``chunks``, in order: those in ``done`` (by start) as they are, the
    others from ``runner``, each handed to ``save`` as it comes. ``progress`` counts the rows
    of the chunks (``unit``). Mining runs through it (a chunk of queries gives its core
    output), and so does :func:`negmine.embed_texts` (a chunk of texts, written into the
    file, gives its row count)."""
    parts = dict(done or {})
    sizes = {start: stop - start for start, stop in chunks}
    total = chunks[-1][1] if chunks else 0
    finished = sum(size for start, size in sizes.items() if start in parts)
    pending = [chunk for chunk in chunks if chunk[0] not in parts]
    with progress_callback(progress, description, total=total, unit=unit, initial=finished) as cb:
        if cb is not None:
            cb(finished, total)
        # Closed on the way out, so that an interrupted runner stops its workers.
        with contextlib.closing(runner(work, pending)) as outputs:
            for start, part in outputs:
                if save is not None:
                    save(start, part)
                parts[start] = part
                finished += sizes[start]
                if cb is not None:
                    cb(finished, total)
    return [parts[start] for start, _ in chunks]


def _chunk_path(partial: Path, start: int) -> Path:
    return partial / f"chunk_{start:012d}.npz"


def _checkpointed(partial: Path) -> bool:
    """Whether ``partial`` holds a mined chunk (what a resume would keep)."""
    return any(partial.glob("chunk_*.npz"))


def _texts_digest(texts: TextsLike, name: str, scanned: TextScan | None) -> str:
    """The sha256 of ``texts`` (of the corpus' scan already made, where there is one)."""
    if name == "corpus_texts" and scanned is not None:
        return scanned.sha256
    return scan_texts(as_source(texts, name)).sha256


def _duplicates_identity(duplicates: Duplicates, corpus_texts: TextScan | None) -> Any:
    """What names the duplicate groups in the checkpoint's manifest: ``None`` (off),
    ``"auto"`` (groups of identical corpus rows, which are fingerprinted), or the digest of
    the texts or of the group array they come from."""
    if duplicates is None:
        return None
    if isinstance(duplicates, str):
        if corpus_texts is None:
            return duplicates
        return {"corpus_texts": corpus_texts.count, "sha256": corpus_texts.sha256}
    groups = np.ascontiguousarray(duplicates)
    digest = hashlib.sha256(f"{groups.dtype.str} {groups.shape}".encode())
    digest.update(groups.tobytes())
    return {"groups": digest.hexdigest()}


def _savez(file: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    # numpy's stubs type **kwds as its keyword options; the arrays go through a plain call.
    savez: Callable[..., None] = np.savez
    savez(file, **arrays)
