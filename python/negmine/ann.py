"""Approximate candidates from an HNSW graph (hnswlib), rescored exactly by the core: the
graph's persistence, its ``ef`` tuning and the candidate source the core calls.

``mine(..., backend="hnsw")`` builds on this module. The approximation is only in *which*
corpus rows become candidates: every candidate is rescored exactly with negmine's score
definition, and the filters, window and sampling are the exact path's, so a query whose true
top candidates are all found gets exactly the exact backend's negatives.

1. **Index.** hnswlib (``space="ip"``, f32 only) built from the corpus in chunks of
   :data:`BUILD_CHUNK_ROWS` rows (converted to f32, normalised for cosine, non-finite rows
   rejected by row number); Ctrl-C stops it between chunks. For a corpus that is a file (a
   ``.npy`` path or :func:`negmine.open_embeddings`) the index is saved beside it as
   ``<corpus>.hnsw-<key>.bin`` with a ``.json`` sidecar, where ``<key>`` hashes the build
   parameters (metric, M, ef_construction, format). An in-memory corpus gets an in-memory
   index, or one saved at ``hnsw_path``. Files are written atomically (temp file in the same
   directory, ``os.replace``; the sidecar last, so an index without its sidecar is never
   trusted).

   **What a saved index is trusted on.** Never on metadata alone. The sidecar records the
   corpus's shape and dtype and a digest of its *content*, and the size and BLAKE2b digest of
   the index file; an index is reused only when all of them match. The corpus digest is:

   - a corpus file: :func:`negmine._digest.file_digest`, BLAKE2b of the whole file up to
     1 GiB, else its size and mtime plus BLAKE2b of 64 evenly spaced 1 MiB blocks (hashing a
     multi-GiB corpus on every call would cost more than the search; the price is that an
     edit confined to unsampled bytes *and* with the mtime restored goes unnoticed: stale
     candidates, still exactly rescored);
   - an in-memory corpus: BLAKE2b of all its bytes.

   A stale corpus digest means the corpus changed: the index is rebuilt and replaced silently.
   Then, before the file reaches hnswlib (whose ``load_index`` trusts every id in it, so a
   damaged graph crashes the process), :func:`check_index_file` parses hnswlib's layout in
   the core (``rust/core/src/store/hnsw.rs``, fuzzed like the ``.npy`` header parser) and
   checks the header against the expected shape and parameters, the file length,
   every neighbour count and id (level 0 and upper levels), the levels, the entry point and
   the labels. An index whose digest or graph check fails is rebuilt with a
   ``RuntimeWarning`` naming the file and the reason, never loaded. (A file rewritten *in
   place* while hnswlib reads it is not covered, as for any memory map; negmine itself only
   ever replaces files by renaming.)
2. **ef.** On :data:`SAMPLE_QUERIES` seeded queries, hnswlib's top-k is compared with the
   exact top-k of :func:`negmine.search` (k = the first mining depth); ``ef`` doubles from
   ``max(k, 32)`` until recall@k >= ``target_recall`` or ``ef`` reaches :data:`MAX_EF` (then a
   ``RuntimeWarning``; ``report.ann`` says the target was missed). A returned row scoring within
   float tolerance of the exact k-th score counts as found (ties among duplicates).
3. **Mining.** The core mines each chunk of queries with the graph as its candidate source
   (:func:`graph_fetch`, opened by :mod:`negmine.sources.hnsw`), on the exact path's one deepening
   schedule: it asks for depth ``K``; each query fetches ``K`` plus its number of excluded ids
   (rounded up to a power of two) from the graph, since excluded rows are dropped only
   afterwards (hnswlib's filter callback is slow), with ``ef`` scaled with ``K``. The core
   rescores the ids exactly and fetches again, deeper, only the queries whose window the
   filters emptied. A query deeper than :func:`hnsw_depth_limit` (``max(1024, N / 64)``:
   beyond it a graph search costs more than a scan), or that the graph could not serve, is
   finished by the core's exact search, so a query ends with fewer negatives only when the
   corpus has run out, exactly as with ``backend="exact"``. Seeds are per global query index,
   as on the exact path.

A graph built with several threads depends on thread timing; the saved index makes later runs
reproducible (``threads=1`` builds deterministically).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from negmine import _core
from negmine import _numbers as numbers
from negmine._atomic import atomic_write, locked_temp_file, sweep
from negmine._core import Embeddings
from negmine._digest import file_digest, stream_into
from negmine._inputs import rows_of
from negmine._paths import regular_file
from negmine._progress import progress_callback
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError
from negmine.sources import Fetch, candidate_csr

BUILD_CHUNK_ROWS = 65_536
"""Corpus rows converted to f32 and added to the graph per ``add_items`` call."""
QUERY_BATCH = 4_096
"""Queries per ``knn_query`` call (Ctrl-C is seen between calls)."""
SAMPLE_QUERIES = 200
"""Queries sampled to measure recall while choosing ``ef``."""
MAX_EF = 4_096
"""The largest ``ef`` the automatic choice tries (a search of depth ``k`` uses at least
``k``)."""
FORMAT = 1
"""Version of the saved index layout; part of the file name key."""
SIDECAR_FORMAT = 2
"""Version of the sidecar's content (2: content digests of the corpus and the index file).
An older sidecar does not match, so its index is rebuilt in place, under the same name."""
RANDOM_SEED = 100
"""hnswlib's level-generator seed (its default)."""
MIN_M = 2
"""hnswlib's smallest usable ``M``: its level multiplier is ``1 / ln(M)`` (``M = 1`` fails to
allocate, ``M = 0`` crashes)."""
MAX_M = 32_767
"""hnswlib's largest ``M``: level-0 lists hold ``2 * M`` ids and their count is 16 bits."""
MAX_EF_CONSTRUCTION = (1 << 63) - 1
"""hnswlib keeps ``ef_construction`` in a ``size_t``; the bound keeps it an int64."""

_NORM_BLOCK = 4_096


def _hnswlib() -> Any:
    try:
        return importlib.import_module("hnswlib")
    except ImportError as e:
        raise ImportError(
            "backend='hnsw' needs hnswlib: pip install 'negmine[ann]' (or hnswlib>=0.8)"
        ) from e


def graph_params(m: object, ef_construction: object) -> tuple[int, int]:
    """``hnsw_m`` and ``hnsw_ef_construction`` checked: plain ints (the key and the sidecar are
    JSON), in hnswlib's limits."""
    return (
        numbers.integer(m, "hnsw_m", minimum=MIN_M, maximum=MAX_M),
        numbers.integer(
            ef_construction, "hnsw_ef_construction", minimum=1, maximum=MAX_EF_CONSTRUCTION
        ),
    )


@dataclass(frozen=True)
class HnswParams:
    """What decides the graph (and its file name). ``m`` (``hnsw_m``) must be in
    ``[MIN_M, MAX_M]`` and ``ef_construction`` (``hnsw_ef_construction``) positive:
    ``InvalidArgumentError`` otherwise, before hnswlib sees them."""

    metric: str
    m: int = 16
    ef_construction: int = 200

    def __post_init__(self) -> None:
        m, ef = graph_params(self.m, self.ef_construction)
        object.__setattr__(self, "m", m)
        object.__setattr__(self, "ef_construction", ef)

    def key(self) -> str:
        blob = json.dumps(
            {
                "format": FORMAT,
                "metric": self.metric,
                "m": self.m,
                "ef_construction": self.ef_construction,
                "seed": RANDOM_SEED,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "m": self.m, "ef_construction": self.ef_construction}


# --- rows -------------------------------------------------------------------------------------


def _as_f32(
    block: np.ndarray, normalize: bool, what: str, rows: np.ndarray | int = 0
) -> np.ndarray:
    """``block`` (f16/f32 rows) as a C-contiguous f32 array, unit rows for cosine (norms in
    f64, zero rows stay zero). ``rows``: global row numbers (or the first one) for errors."""
    out = np.empty(block.shape, dtype=np.float32)
    for a in range(0, len(block), _NORM_BLOCK):
        b = min(len(block), a + _NORM_BLOCK)
        piece = np.asarray(block[a:b], dtype=np.float64 if normalize else np.float32)
        bad = ~np.isfinite(piece).all(axis=1)
        if bad.any():
            i = a + int(np.flatnonzero(bad)[0])
            row = int(rows[i]) if isinstance(rows, np.ndarray) else rows + i
            raise InvalidArgumentError(f"{what} row {row} holds a NaN or infinite value")
        if normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", piece, piece))
            with np.errstate(over="ignore"):
                if not np.isfinite(norms).all():  # huge rows: scale first
                    scale = np.abs(piece).max(axis=1, keepdims=True)
                    scale[scale == 0] = 1
                    piece = piece / scale
                    norms = np.sqrt(np.einsum("ij,ij->i", piece, piece))
            norms[norms == 0] = 1
            piece = piece / norms[:, None]
        out[a:b] = piece
    return out


def _matrix_array(matrix: Embeddings | np.ndarray) -> np.ndarray:
    return matrix if isinstance(matrix, np.ndarray) else np.asarray(matrix)


# --- the index --------------------------------------------------------------------------------


def _corpus_file(corpus: Embeddings | np.ndarray) -> str | None:
    if isinstance(corpus, Embeddings) and corpus.path:
        return corpus.path
    return None


def _fingerprint(corpus: Embeddings | np.ndarray, file: str | None) -> dict[str, Any]:
    """What must match for a saved index to be reused: shape, dtype and a content digest
    (see the module docstring for how a file is digested)."""
    shape = [int(x) for x in corpus.shape]
    dtype = str(np.dtype(corpus.dtype))
    if file is not None:
        return {"shape": shape, "dtype": dtype, **file_digest(file, "corpus file")}
    array = _matrix_array(corpus)
    h = hashlib.blake2b(digest_size=16)
    for a in range(0, len(array), BUILD_CHUNK_ROWS):
        h.update(np.ascontiguousarray(array[a : a + BUILD_CHUNK_ROWS]).data)
    return {"shape": shape, "dtype": dtype, "blake2b": h.hexdigest()}


def _index_digest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size and BLAKE2b of a whole index file (hnswlib reads all of it anyway)."""
    h = hashlib.blake2b(digest_size=16)
    with open(regular_file(path, "HNSW index"), "rb") as f:
        size = stream_into(h, f)
    return {"size": size, "blake2b": h.hexdigest()}


def check_index_file(path: str | os.PathLike[str], n: int, dim: int, params: HnswParams) -> None:
    """Raises ``FormatError`` (with the reason) unless ``path`` is an hnswlib 0.8 index of
    ``n`` rows of dimension ``dim`` built with ``params`` whose graph hnswlib can search
    without reading out of bounds: a consistent header, the exact file length, every
    neighbour count within its maximum, every neighbour id ``< n`` and of a level at least
    the list's, the entry point on the top level, labels a permutation of the row numbers.
    The layout is hnswlib 0.8's (native byte order); a file in another layout fails. The
    check is the core's (``rust/core/src/store/hnsw.rs``), beside the ``.npy`` parser."""
    file = regular_file(path, "HNSW index")
    _core.check_hnsw_index(
        file, rows=n, dim=dim, m=params.m, ef_construction=params.ef_construction
    )


def default_index_path(corpus_file: str | os.PathLike[str], params: HnswParams) -> Path:
    """Where the index of a corpus file is saved: beside it, named by the parameters."""
    p = Path(corpus_file)
    return p.with_name(f"{p.name}.hnsw-{params.key()}.bin")


def build_index(
    corpus: Embeddings | np.ndarray,
    params: HnswParams,
    *,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
) -> Any:
    """A new hnswlib index of ``corpus`` (row ``i`` has label ``i``), built chunk by chunk."""
    hnswlib = _hnswlib()
    n, dim = (int(x) for x in corpus.shape)
    array = _matrix_array(corpus)
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(
        max_elements=max(n, 1),
        ef_construction=params.ef_construction,
        M=params.m,
        random_seed=RANDOM_SEED,
    )
    normalize = params.metric == "cosine"
    with progress_callback(progress, "hnsw build", total=n, unit="row") as cb:
        for a in range(0, n, BUILD_CHUNK_ROWS):
            b = min(n, a + BUILD_CHUNK_ROWS)
            rows = _as_f32(array[a:b], normalize, "corpus", a)
            index.add_items(rows, np.arange(a, b, dtype=np.int64), num_threads=threads or -1)
            if cb is not None:
                cb(b, n)
    return index


def _load(path: Path, dim: int, n: int) -> Any:
    """hnswlib's load of an index file that :func:`check_index_file` has passed."""
    hnswlib = _hnswlib()
    index = hnswlib.Index(space="ip", dim=dim)
    index.load_index(str(path), max_elements=max(n, 1))
    if int(index.element_count) != n or int(index.dim) != dim:
        raise ValueError(f"{index.element_count} x {index.dim} rows, expected {n} x {dim}")
    return index


def _save(index: Any, path: Path, meta: dict[str, Any]) -> None:
    """Index then sidecar (``meta`` plus the index file's digest), each atomically; the old
    sidecar goes first, so a crash in between leaves an index nobody trusts rather than a
    sidecar vouching for the wrong index."""
    sidecar = Path(f"{path}.json")
    sweep(path)
    # hnswlib rewrites the file by name (same inode): the descriptor keeps it locked.
    fd, tmp = locked_temp_file(path)
    try:
        index.save_index(str(tmp))
        os.fsync(fd)
        meta = {**meta, "index": _index_digest(tmp)}
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sidecar)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    with atomic_write(sidecar) as f:
        f.write(json.dumps(meta, indent=1, sort_keys=True).encode())


def _read_sidecar(sidecar: Path) -> dict[str, Any] | None:
    """The sidecar's content, or None when there is none that could be meant for us."""
    try:
        saved = json.loads(regular_file(sidecar, "HNSW sidecar").read_bytes())
    except (OSError, ValueError):  # missing, not a regular file, not JSON
        return None
    return saved if isinstance(saved, dict) else None


def _verify(where: Path, recorded: object, n: int, dim: int, params: HnswParams) -> None:
    """Raises ``FormatError`` naming the reason unless the index file is the one the sidecar
    describes and its graph passes :func:`check_index_file`."""
    if not isinstance(recorded, dict):
        raise FormatError("its sidecar holds no digest of the index file")
    actual = _index_digest(where)
    if actual["size"] != recorded.get("size"):
        raise FormatError(
            f"the file has {actual['size']} bytes, its sidecar says {recorded.get('size')!r}"
        )
    if actual["blake2b"] != recorded.get("blake2b"):
        raise FormatError("the file's content digest differs from its sidecar's")
    check_index_file(where, n, dim, params)


def open_index(
    corpus: Embeddings | np.ndarray,
    params: HnswParams,
    *,
    path: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    progress: bool | Callable[[int, int], object] = False,
) -> tuple[Any, Path | None, bool]:
    """The index of ``corpus``: loaded from disk when a saved one matches and passes its
    checks (see the module docstring), else built (and saved when there is a place for it).
    Returns ``(index, path or None, built)``."""
    n, dim = (int(x) for x in corpus.shape)
    file = _corpus_file(corpus)
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidTypeError(f"hnsw_path must be a path, got {type(path).__name__}")
        where: Path | None = Path(path)
    elif file is not None:
        where = default_index_path(file, params)
    else:
        where = None
    if where is None:
        return build_index(corpus, params, threads=threads, progress=progress), None, True
    before = _fingerprint(corpus, file)
    meta = {
        "format": FORMAT,
        "sidecar": SIDECAR_FORMAT,
        "params": params.to_dict(),
        "corpus": before,
    }
    saved = _read_sidecar(Path(f"{where}.json"))
    if saved is not None and {k: v for k, v in saved.items() if k != "index"} == meta:
        # The sidecar vouches for this corpus: the file must be the index it describes.
        try:
            _verify(where, saved.get("index"), n, dim, params)
            return _load(where, dim, n), where, False
        except (RuntimeError, ValueError, OSError) as e:
            warnings.warn(f"rebuilding the HNSW index {where}: {e}", RuntimeWarning, stacklevel=3)
    index = build_index(corpus, params, threads=threads, progress=progress)
    if _fingerprint(corpus, file) != before:
        warnings.warn(
            "the corpus changed while its HNSW index was built; the index is not saved",
            RuntimeWarning,
            stacklevel=3,
        )
        return index, None, True
    try:
        _save(index, where, meta)
    except OSError as e:
        warnings.warn(
            f"could not save the HNSW index to {where} ({e}); it is used from memory",
            RuntimeWarning,
            stacklevel=3,
        )
        return index, None, True
    return index, where, True


# --- search -----------------------------------------------------------------------------------


def knn(
    index: Any, queries: np.ndarray, k: int, ef: int, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Graph top-``k`` of f32 ``queries`` (already unit rows for cosine): ``(ids, scores)``.
    Shapes are checked here: hnswlib's knn_query reads past a short query row."""
    if queries.dtype != np.float32 or queries.ndim != 2 or not queries.flags.c_contiguous:
        raise InvalidTypeError("knn needs a C-contiguous 2-D float32 array")
    if queries.shape[1] != int(index.dim):
        raise InvalidArgumentError(
            f"queries have dimension {queries.shape[1]}, the index has {index.dim}"
        )
    if not 0 < k <= int(index.element_count):
        raise InvalidArgumentError(f"k must be in [1, {index.element_count}], got {k}")
    index.set_ef(max(int(ef), k))
    n = len(queries)
    scores, ids = _core.topk_result(n, k, "the search result")
    for a in range(0, n, QUERY_BATCH):
        b = min(n, a + QUERY_BATCH)
        labels, distances = index.knn_query(queries[a:b], k=k, num_threads=threads or -1)
        ids[a:b] = labels
        scores[a:b] = 1.0 - distances
    return ids, scores


def _recall(
    ids: np.ndarray, scores: np.ndarray, exact_ids: np.ndarray, exact_scores: np.ndarray
) -> float:
    """Share of the exact top-k found; a row within float tolerance of the exact k-th score
    counts (which of several tied rows is returned is arbitrary)."""
    n, k = exact_ids.shape
    if n == 0 or k == 0:
        return 1.0
    width = int(max(int(ids.max(initial=0)), int(exact_ids.max(initial=0))) + 1)
    row = np.arange(n, dtype=np.int64)[:, None] * width
    hit = np.isin(ids + row, exact_ids + row)
    kth = exact_scores[:, -1:].astype(np.float64)
    tol = 1e-5 * np.maximum(1.0, np.abs(kth))
    hit |= scores >= kth - tol
    return float(hit.sum() / (n * k))


def tune_ef(
    index: Any,
    queries: Embeddings | np.ndarray,
    corpus: Embeddings | np.ndarray,
    *,
    metric: str,
    k: int,
    target_recall: float,
    seed: int = 0,
    threads: int | None = None,
) -> tuple[int, float, int]:
    """The smallest ``ef`` (doubling from ``max(k, 32)``) whose recall@k on a seeded sample of
    queries reaches ``target_recall``, or the cap. Returns ``(ef, recall, sample size)``."""
    n_queries, n_corpus = rows_of(queries), rows_of(corpus)
    k = min(k, n_corpus)
    sample = np.sort(
        np.random.default_rng(seed).choice(
            n_queries, size=min(SAMPLE_QUERIES, n_queries), replace=False
        )
    ).astype(np.int64)
    rows = np.ascontiguousarray(_matrix_array(queries)[sample])
    x = _as_f32(rows, metric == "cosine", "queries", sample)
    exact_scores, exact_ids, _ = _core.search(
        rows, corpus, _core.SearchOptions(k, metric=metric), threads=threads
    )
    # A search of depth k uses ef >= k whatever ef says (see knn).
    cap = min(MAX_EF, n_corpus)
    ef = min(max(k, 32), cap)
    while True:
        try:
            ids, scores = knn(index, x, k, ef, threads)
            recall = _recall(ids, scores, exact_ids, exact_scores)
        except RuntimeError:  # hnswlib found fewer than k rows for some query
            recall = 0.0
        if recall >= target_recall or ef >= cap:
            return ef, recall, len(sample)
        ef = min(2 * ef, cap)


# --- mining -----------------------------------------------------------------------------------


def hnsw_depth_limit(n_corpus: int) -> int:
    """The deepest graph search; deeper candidates come from an exact scan."""
    return min(n_corpus - 1, max(1024, n_corpus // 64))


def pow2ceil(values: np.ndarray) -> np.ndarray:
    """Each value rounded up to a power of two (0 stays 0)."""
    v = np.maximum(values.astype(np.int64), 1)
    out = np.left_shift(np.int64(1), np.ceil(np.log2(v)).astype(np.int64))
    return np.where(values > 0, out, 0).astype(np.int64)


def graph_fetch(
    index: Any,
    queries: np.ndarray,
    excluded: np.ndarray,
    *,
    n_corpus: int,
    normalize: bool,
    ratio: float,
    offset: int,
    threads: int | None,
) -> Fetch:
    """The candidate source ``_core.mine(..., fetch=...)`` calls for ``queries``: graph ids
    only (the core rescores them exactly). Row ``r`` asks the graph for ``depth`` plus its
    number of excluded ids ``excluded[r]`` rounded up to a power of two (excluded rows are
    dropped only afterwards: hnswlib's filter callback is slow), with ``ef`` scaled with the
    depth by ``ratio``. Rows the graph cannot serve (that would ask more than
    :func:`hnsw_depth_limit`, or for which it found fewer) get no candidates, so the core
    finishes them by exact search. ``offset``: the global index of ``queries[0]``."""
    limit = hnsw_depth_limit(n_corpus)

    def fetch(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        want = np.minimum(depth + pow2ceil(excluded[rows]), n_corpus)
        lists: list[np.ndarray] = [np.empty(0, np.int64)] * len(rows)
        for k in np.unique(want[want <= limit]):
            at = np.flatnonzero(want == k)
            sel = rows[at]
            x = _as_f32(queries[sel], normalize, "queries", sel + offset)
            k = int(k)
            try:
                ids, _ = knn(index, x, k, max(k, math.ceil(ratio * k)), threads)
            except RuntimeError:  # hnswlib found fewer than k rows: the exact search takes them
                continue
            for i, r in enumerate(at):
                lists[r] = ids[i]
        return candidate_csr(lists)

    return fetch
