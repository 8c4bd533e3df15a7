"""Mining into a directory in chunks of queries, with a checkpoint per chunk: an interrupted run
(Ctrl-C, kill, crash) started again with the same arguments resumes where it stopped and
writes byte-identical output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from negmine._atomic import atomic_write, fsync_directory
from negmine._core import open_embeddings
from negmine._inputs import positive_int
from negmine.errors import InvalidArgumentError
from negmine.mine import (
    Duplicates,
    MiningOptions,
    MiningResult,
    assemble,
    mine_prepared,
    prepare,
)

PARTIAL = ".partial"


def _fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def mine_to_directory(
    queries: str | os.PathLike[str],
    corpus: str | os.PathLike[str],
    positives: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: MiningOptions,
    *,
    duplicates: Duplicates = "auto",
    chunk_queries: int = 8192,
    threads: int | None = None,
    progress: bool = True,
) -> MiningResult:
    """Mines ``queries`` (a ``.npy`` file) against ``corpus`` (a ``.npy`` file, mapped) with
    the positives of a qrels TSV, writing the result into ``out`` (see
    :meth:`MiningResult.save`). Chunks of ``chunk_queries`` queries are checkpointed under
    ``out/.partial``; a run over a directory holding a checkpoint of the same inputs and
    options resumes it, one of other inputs or options is refused."""
    chunk_queries = positive_int(chunk_queries, "chunk_queries")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL
    q = open_embeddings(queries)
    c = open_embeddings(corpus)
    manifest = {
        "format": 1,
        "options": options.to_dict(),
        "duplicates": duplicates if duplicates is None or isinstance(duplicates, str) else "array",
        "chunk_queries": chunk_queries,
        "queries": _fingerprint(queries),
        "corpus": _fingerprint(corpus),
        "positives": {"path": os.path.abspath(positives), "sha256": _file_digest(positives)},
    }
    manifest_path = partial / "manifest.json"
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if previous != manifest:
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
        query_dup_threshold=options.query_dup_threshold,
        threads=threads,
    )
    q_array = np.asarray(q)
    mine_prepared(q_array[:0], c, prepared.rows(0, 0), options, threads=threads)
    if not manifest_path.exists():
        partial.mkdir(parents=True, exist_ok=True)
        with atomic_write(manifest_path) as f:
            f.write(json.dumps(manifest, indent=1, sort_keys=True).encode())
    n_queries = q.shape[0]
    starts = list(range(0, n_queries, chunk_queries))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_queries, desc="mine", unit="query", unit_scale=True)
    parts: list[dict[str, np.ndarray]] = []
    try:
        for start in starts:
            stop = min(start + chunk_queries, n_queries)
            path = partial / f"chunk_{start:012d}.npz"
            if path.exists():
                with np.load(path, allow_pickle=False) as z:
                    part = {k: z[k] for k in z.files}
            else:
                part = mine_prepared(
                    np.ascontiguousarray(q_array[start:stop]),
                    c,
                    prepared.rows(start, stop),
                    options,
                    query_offset=start,
                    threads=threads,
                )
                with atomic_write(path) as f:
                    _savez(f, part)
            parts.append(part)
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    result = assemble(prepared, options, parts)
    # Staged inside the checkpoint, so that a kill while saving leaves nothing in `out`
    # that the finished run would not clean up.
    staged = partial / "result"
    result.save(staged)
    for path in sorted(staged.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            os.replace(path, out_dir / path.name)
    fsync_directory(out_dir)
    shutil.rmtree(partial)
    return result


def _savez(file: IO[bytes], arrays: dict[str, np.ndarray]) -> None:
    # numpy's stubs type **kwds as its keyword options; the arrays go through a plain call.
    savez: Callable[..., None] = np.savez
    savez(file, **arrays)
