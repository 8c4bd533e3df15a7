"""Multi-vector (late-interaction, ColBERT-style) embeddings: ragged token vectors, the exact
MaxSim score, a cheaper candidate stage and the measurement of its recall.

A text's embedding is a ``tokens x dim`` matrix; ``maxsim(q, d) = sum over q's tokens of the
largest dot product with one of d's tokens``. :class:`MultiVectors` holds many texts as one
token matrix (float32 or float16, memory-mapped from a file) and int64 ``offsets``: text ``i``
owns token rows ``offsets[i]:offsets[i + 1]``. On disk it is a directory::

    manifest.json   {"format": "negmine-multivector", "version": 1, "texts": n,
                     "tokens": rows, "dim": d, "dtype": "float16" | "float32"}
    tokens.npy      rows x d (read strictly, mapped: see negmine.open_embeddings)
    offsets.npy     n + 1 int64 values, 0 first, strictly increasing, rows last

written as a whole or not at all (:func:`negmine._atomic.atomic_directory`).

The scores come from the core (``negmine._core.maxsim_*``): each token dot product is the
exact search's fused multiply-add chain, the maxima exact, their sum taken in float64 in token
order and rounded once, so a score is the same bits for any thread count and CPU.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from negmine import _core
from negmine import _numbers as numbers
from negmine._atomic import atomic_directory, new_file
from negmine._core import Embeddings, open_embeddings
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError

PathLike = Union[str, "os.PathLike[str]"]

FORMAT = "negmine-multivector"
VERSION = 1
_MANIFEST_KEYS = {"format", "version", "texts", "tokens", "dim", "dtype"}
_DTYPES = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}

Encode = Callable[[list[str]], Sequence[Any]]
"""``texts -> one tokens x dim array per text`` (numpy arrays, torch tensors, anything
``np.asarray`` takes)."""


@dataclass(frozen=True, eq=False)
class MultiVectors:
    """Token embeddings of ``len(self)`` texts (see the module docstring)."""

    tokens: Embeddings | np.ndarray
    """``rows x dim`` float32 / float16: an array or a mapped ``Embeddings``."""
    offsets: np.ndarray
    """``n + 1`` int64: text ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``."""
    path: Path | None = None

    def __post_init__(self) -> None:
        tokens = self.tokens
        if not isinstance(tokens, Embeddings):
            tokens = np.asarray(tokens)
            if tokens.dtype not in _DTYPES.values():
                raise InvalidTypeError(
                    f"token vectors must be float32 or float16, got dtype {tokens.dtype}"
                )
            if tokens.ndim != 2:
                raise InvalidArgumentError(
                    f"token vectors must be one 2-D matrix (rows x dim), got shape {tokens.shape}"
                )
            object.__setattr__(self, "tokens", np.ascontiguousarray(tokens))
        offsets = np.asarray(self.offsets)
        if offsets.dtype.kind not in "iu" or offsets.ndim != 1:
            raise InvalidTypeError(
                f"offsets must be a 1-D integer array, got dtype {offsets.dtype} and shape "
                f"{offsets.shape}"
            )
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        object.__setattr__(self, "offsets", offsets)
        _check_offsets(offsets, int(self.tokens.shape[0]), "offsets")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.tokens.dtype)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def text(self, i: int) -> np.ndarray:
        """Text ``i``'s ``tokens x dim`` matrix (a view)."""
        i = numbers.non_negative(i, "i", maximum=len(self) - 1)
        return np.asarray(self.tokens)[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def from_arrays(
        cls, arrays: Iterable[npt.ArrayLike], *, dtype: npt.DTypeLike = "float32"
    ) -> MultiVectors:
        """From one ``tokens x dim`` array per text, cast to ``dtype`` (float32 / float16)."""
        return _concatenate(arrays, _dtype(dtype), "arrays")

    def pooled(self, *, normalize: bool = True, threads: int | None = None) -> np.ndarray:
        """One float32 vector per text: the mean of its tokens (unit length with
        ``normalize``; a zero mean stays zero), the single vector a cheaper candidate stage
        searches with."""
        pooled = _core.maxsim_pooled(self.tokens, self.offsets, threads=threads)
        if normalize:
            norms = np.linalg.norm(pooled.astype(np.float64), axis=1, keepdims=True)
            pooled = (pooled / np.where(norms > 0, norms, 1.0)).astype(np.float32)
        return np.ascontiguousarray(pooled)


def _dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    target = np.dtype(dtype)
    if target not in _DTYPES.values():
        raise InvalidTypeError(f"dtype must be float32 or float16, got {target}")
    return target


def _check_offsets(offsets: np.ndarray, rows: int, what: str) -> None:
    if len(offsets) == 0:
        raise InvalidArgumentError(f"{what} must hold n_texts + 1 entries, got an empty array")
    if offsets[0] != 0:
        raise InvalidArgumentError(f"{what} must start at 0, got {int(offsets[0])}")
    steps = np.diff(offsets)
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        i = int(bad[0])
        problem = "has no tokens" if steps[i] == 0 else "has a negative token count"
        raise InvalidArgumentError(
            f"{what}: text {i} {problem} (offsets[{i}] = {int(offsets[i])}, offsets[{i + 1}] = "
            f"{int(offsets[i + 1])}; offsets must increase strictly)"
        )
    if int(offsets[-1]) != rows:
        raise InvalidArgumentError(
            f"{what} end at {int(offsets[-1])} but the token matrix has {rows} rows"
        )


def _as_matrix(value: Any, dtype: np.dtype[Any], what: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor: no torch import needed
        value = value.detach().float().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != 2:
        raise InvalidArgumentError(
            f"{what} must be a 2-D tokens x dim array, got shape {array.shape}"
        )
    if array.dtype.kind not in "fiu":
        raise InvalidTypeError(f"{what} must hold numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise InvalidArgumentError(f"{what} contains NaN or infinity")
    return array.astype(dtype, copy=False)


class _Texts:
    """Checks one text's token matrix after another: finite, at least one token, one common
    dimension; counts the tokens (the offsets)."""

    def __init__(self, dtype: np.dtype[Any], what: str) -> None:
        self.dtype, self.what = dtype, what
        self.dim: int | None = None
        self.counts = [0]

    def add(self, value: Any) -> np.ndarray:
        i = len(self.counts) - 1
        array = _as_matrix(value, self.dtype, f"{self.what}[{i}]")
        if self.dim is None:
            self.dim = array.shape[1]
        elif array.shape[1] != self.dim:
            raise InvalidArgumentError(
                f"{self.what}[{i}] has dimension {array.shape[1]} but the texts before it have "
                f"{self.dim}"
            )
        if array.shape[0] == 0:
            raise InvalidArgumentError(f"{self.what}[{i}] has no tokens (every text needs one)")
        self.counts.append(array.shape[0])
        return np.ascontiguousarray(array)

    def offsets(self) -> np.ndarray:
        return np.cumsum(self.counts, dtype=np.int64)


def _concatenate(arrays: Iterable[Any], dtype: np.dtype[Any], what: str) -> MultiVectors:
    checked = _Texts(dtype, what)
    parts = [checked.add(value) for value in arrays]
    tokens = np.concatenate(parts) if parts else np.zeros((0, checked.dim or 0), dtype)
    return MultiVectors(tokens, checked.offsets())


_HEADER_BYTES = 128
"""The ``.npy`` header a streamed ``tokens.npy`` starts with: written first with a placeholder
shape, rewritten in place with the real one when the last text is in (128 bytes hold any
shape up to 10^15 rows, and keep the data 64-byte aligned as ``np.save`` does)."""


def _npy_header(rows: int, dim: int, dtype: np.dtype[Any]) -> bytes:
    literal = f"{{'descr': '{dtype.str}', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = literal.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")


def _write_directory(
    dest: Path, batches: Iterable[list[Any]], dtype: np.dtype[Any], what: str
) -> None:
    """Writes the texts of ``batches`` (lists of token matrices) to the directory ``dest`` as
    they come, one batch in memory at a time, as a whole or not at all."""
    checked = _Texts(dtype, what)
    with atomic_directory(dest) as staging:
        with new_file(staging / "tokens.npy") as f:
            f.write(_npy_header(0, 0, dtype))
            for batch in batches:
                for value in batch:
                    f.write(checked.add(value).tobytes())
            rows = int(checked.offsets()[-1])
            f.seek(0)
            f.write(_npy_header(rows, checked.dim or 0, dtype))
        offsets = checked.offsets()
        with new_file(staging / "offsets.npy") as f:
            np.lib.format.write_array(f, offsets, allow_pickle=False)
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "texts": len(offsets) - 1,
            "tokens": rows,
            "dim": checked.dim or 0,
            "dtype": str(dtype),
        }
        with new_file(staging / "manifest.json") as f:
            f.write(json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n")


def save_multi_vectors(path: PathLike, vectors: MultiVectors) -> Path:
    """Writes ``vectors`` to the directory ``path`` (the module docstring's format), as a whole:
    a reader sees the old directory or the complete new one. Returns the path."""
    dest = Path(path)
    tokens = np.ascontiguousarray(np.asarray(vectors.tokens))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "texts": len(vectors),
        "tokens": vectors.n_tokens,
        "dim": vectors.dim,
        "dtype": str(tokens.dtype),
    }
    with atomic_directory(dest) as staging:
        with new_file(staging / "tokens.npy") as f:
            np.lib.format.write_array(f, tokens, allow_pickle=False)
        with new_file(staging / "offsets.npy") as f:
            np.lib.format.write_array(f, vectors.offsets, allow_pickle=False)
        with new_file(staging / "manifest.json") as f:
            f.write(json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n")
    return dest


def open_multi_vectors(path: PathLike, *, mmap: bool = True) -> MultiVectors:
    """The token embeddings saved at ``path``, validated strictly (the manifest's keys and
    values, both ``.npy`` files, and that they agree); the tokens are memory-mapped unless
    ``mmap=False``. A problem raises ``FormatError`` naming the file and what is wrong."""
    root = Path(path)
    if not root.is_dir():
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such multi-vector directory")
        raise FormatError(f"{root}: a multi-vector store is a directory, got a file")
    manifest_path = root / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{manifest_path}: missing (not a negmine multi-vector store)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{manifest_path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or set(manifest) != _MANIFEST_KEYS:
        keys = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
        raise FormatError(
            f"{manifest_path}: expected exactly the keys {sorted(_MANIFEST_KEYS)}, got {keys}"
        )
    if manifest["format"] != FORMAT or manifest["version"] != VERSION:
        raise FormatError(
            f"{manifest_path}: format {manifest['format']!r} version {manifest['version']!r} "
            f"is not {FORMAT!r} version {VERSION}"
        )
    for key in ("texts", "tokens", "dim"):
        value = manifest[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FormatError(f"{manifest_path}: {key} must be a non-negative integer")
    if manifest["dtype"] not in _DTYPES:
        raise FormatError(
            f"{manifest_path}: dtype must be float16 or float32, got {manifest['dtype']!r}"
        )
    tokens = open_embeddings(root / "tokens.npy", mmap=mmap)
    expected = (manifest["tokens"], manifest["dim"])
    if tuple(tokens.shape) != expected or str(tokens.dtype) != manifest["dtype"]:
        raise FormatError(
            f"{root / 'tokens.npy'}: holds {tokens.shape} {tokens.dtype} but the manifest says "
            f"{expected} {manifest['dtype']}"
        )
    offsets_path = root / "offsets.npy"
    try:
        offsets = np.load(offsets_path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise FormatError(f"{offsets_path}: not a valid .npy file ({e})") from None
    if offsets.dtype != np.dtype("<i8") or offsets.ndim != 1:
        raise FormatError(
            f"{offsets_path}: expected 1-D int64 offsets, got {offsets.dtype} {offsets.shape}"
        )
    if len(offsets) != manifest["texts"] + 1:
        raise FormatError(
            f"{offsets_path}: holds {len(offsets)} offsets for {manifest['texts']} texts "
            "(expected texts + 1)"
        )
    try:
        _check_offsets(offsets, manifest["tokens"], "offsets")
    except InvalidArgumentError as e:
        raise FormatError(f"{offsets_path}: {e}") from None
    return MultiVectors(tokens, offsets, root)


def as_multi_vectors(value: Any, name: str) -> MultiVectors:
    """``value`` as :class:`MultiVectors`: itself, a saved directory, or a list of arrays."""
    if isinstance(value, MultiVectors):
        return value
    if isinstance(value, (str, os.PathLike)):
        return open_multi_vectors(value)
    if isinstance(value, (list, tuple)):
        return _concatenate(value, np.dtype(np.float32), name)
    raise InvalidTypeError(
        f"{name} must be negmine.MultiVectors, the path of a saved one, or a list of 2-D "
        f"arrays (one per text), got {type(value).__name__}"
    )


def encoder_of(model: Any, *, is_query: bool) -> Encode:
    """``model`` as a ``texts -> arrays`` callable: a callable as it is; a model with
    ``encode_query`` / ``encode_document`` (sentence-transformers' multi-vector models); or a
    PyLate model (``encode(texts, is_query=...)``)."""
    method = "encode_query" if is_query else "encode_document"
    if hasattr(model, method):
        return lambda texts: getattr(model, method)(texts)
    if hasattr(model, "encode"):
        return lambda texts: model.encode(texts, is_query=is_query)
    if callable(model):
        return model  # type: ignore[no-any-return]
    raise InvalidTypeError(
        "the encoder must be a callable texts -> list of 2-D arrays, or a multi-vector model "
        f"(encode_query / encode_document, or PyLate's encode), got {type(model).__name__}"
    )


def load_model(name: str) -> Any:
    """The multi-vector model ``name`` (a name or local path): sentence-transformers'
    ``MultiVectorEncoder`` (its 6.x releases), else PyLate's ``models.ColBERT``. Neither is a
    dependency of negmine."""
    import importlib

    try:
        st = importlib.import_module("sentence_transformers")
    except ImportError:
        st = None
    if st is not None and hasattr(st, "MultiVectorEncoder"):
        return st.MultiVectorEncoder(name)
    try:
        pylate = importlib.import_module("pylate.models")
    except ImportError:
        raise ImportError(
            f"loading the multi-vector model {name!r} needs sentence-transformers >= 6 "
            "(MultiVectorEncoder) or PyLate (pip install pylate); or pass any callable texts "
            "-> list of 2-D arrays to negmine.multivector.embed_multi_vectors"
        ) from None
    return pylate.ColBERT(model_name_or_path=name)


def embed_multi_vectors(
    texts: Iterable[str],
    encoder: Any,
    path: PathLike | None = None,
    *,
    is_query: bool = False,
    batch_size: int = 64,
    dtype: npt.DTypeLike = "float16",
) -> MultiVectors:
    """Encodes ``texts`` with ``encoder`` (see :func:`encoder_of`) ``batch_size`` at a time
    into :class:`MultiVectors` of ``dtype``. With ``path`` the token vectors are streamed into
    that directory as they come (one batch in memory; the directory appears complete or not at
    all) and returned mapped from there; without it they are held in memory. Every text must
    get at least one finite token vector, all of one dimension."""
    encode = encoder_of(encoder, is_query=is_query)
    batch_size = numbers.count(batch_size, "batch_size")
    target = _dtype(dtype)
    listed = list(texts)

    def batches() -> Iterator[list[Any]]:
        for start in range(0, len(listed), batch_size):
            batch = listed[start : start + batch_size]
            encoded = list(encode(batch))
            if len(encoded) != len(batch):
                raise InvalidArgumentError(
                    f"the encoder returned {len(encoded)} arrays for {len(batch)} texts (texts "
                    f"{start}..{start + len(batch) - 1}); it must return one per text"
                )
            yield encoded

    if path is None:
        return _concatenate((a for batch in batches() for a in batch), target, "texts")
    _write_directory(Path(path), batches(), target, "texts")
    return open_multi_vectors(path)


def maxsim_scores(
    queries: Any,
    corpus: Any,
    query_ids: npt.ArrayLike,
    corpus_ids: npt.ArrayLike,
    *,
    threads: int | None = None,
) -> np.ndarray:
    """The MaxSim of each pair ``(query_ids[i], corpus_ids[i])``, float32."""
    q, c = as_multi_vectors(queries, "queries"), as_multi_vectors(corpus, "corpus")
    qi = np.ascontiguousarray(query_ids, dtype=np.int64).ravel()
    ci = np.ascontiguousarray(corpus_ids, dtype=np.int64).ravel()
    return _core.maxsim_scores(
        (q.tokens, q.offsets), (c.tokens, c.offsets), qi, ci, threads=threads
    )


def maxsim_search(
    queries: Any,
    corpus: Any,
    k: int,
    *,
    candidates: Any = None,
    exclude: Any = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's ``k`` best corpus texts by MaxSim, ``(scores, ids)`` of shape ``Q x k``
    (score descending, smaller id on ties; padded with ``-inf`` / ``-1``), among its
    ``candidates`` (per-query id lists in any form ``negmine.mine``'s ``positives`` takes;
    default: every text, the brute-force search) less its ``exclude``d ids."""
    from negmine._inputs import as_csr

    q, c = as_multi_vectors(queries, "queries"), as_multi_vectors(corpus, "corpus")
    k = numbers.count(k, "k")
    lists = {
        name: None if value is None else as_csr(value, len(q), name)
        for name, value in (("candidates", candidates), ("exclude", exclude))
    }
    return _core.maxsim_search(
        (q.tokens, q.offsets),
        (c.tokens, c.offsets),
        k,
        candidates=lists["candidates"],
        exclude=lists["exclude"],
        threads=threads,
    )


@dataclass(frozen=True)
class CandidateRecall:
    """How much of the brute-force MaxSim top-``k`` the pooled candidate stage finds."""

    k: int
    depths: np.ndarray
    """The candidate depths measured."""
    recall: np.ndarray
    """At each depth: the mean over queries of the fraction of the query's MaxSim top ``k``
    found among its first ``depth`` pooled candidates."""
    ranks: np.ndarray
    """``Q x k``: the rank (0-based) of each true top-``k`` text in the pooled ranking (-1
    where the query has fewer than ``k`` texts to rank)."""

    def depth_for(self, target: float) -> int | None:
        """The smallest depth whose recall reaches ``target`` (``None``: none can, i.e.
        ``target`` > 1)."""
        target = numbers.real(target, "target", low=0.0, high=1.0)
        return _depth_for(self.ranks, target)


def _depth_for(ranks: np.ndarray, target: float) -> int | None:
    valid = ranks >= 0
    per_query = valid.sum(axis=1)
    rows = per_query > 0
    if not rows.any():
        return 0
    weights = (1.0 / per_query[rows])[:, None] * np.ones_like(ranks[rows], dtype=np.float64)
    r, w = ranks[rows][valid[rows]], weights[valid[rows]] / rows.sum()
    order = np.argsort(r, kind="stable")
    reached = np.cumsum(w[order])
    # Exactly representable targets compared with a small slack for the float sum.
    hit = np.flatnonzero(reached >= target - 1e-12)
    return int(r[order][hit[0]]) + 1 if len(hit) else None


def candidate_recall(
    queries: Any,
    corpus: Any,
    k: int,
    *,
    depths: Sequence[int] = (),
    exclude: Any = None,
    threads: int | None = None,
) -> CandidateRecall:
    """Measures the pooled candidate stage against brute-force MaxSim (every pair scored: for
    corpora small enough to score whole). For each query its MaxSim top ``k`` and the rank of
    each of those texts in the pooled-cosine ranking of the whole corpus; the recall at each
    of ``depths`` follows, and :meth:`CandidateRecall.depth_for` gives the depth that reaches
    a target recall. Uses ``Q x N`` memory for the pooled ranking."""
    from negmine._inputs import as_csr
    from negmine.search import search

    q, c = as_multi_vectors(queries, "queries"), as_multi_vectors(corpus, "corpus")
    k = numbers.count(k, "k")
    excl = None if exclude is None else as_csr(exclude, len(q), "exclude")
    _, truth = maxsim_search(q, c, k, exclude=excl, threads=threads)
    n_excluded = 0 if excl is None else int(np.diff(excl[0]).max(initial=0))
    width = len(c) - n_excluded
    ranks = np.full(truth.shape, -1, dtype=np.int64)
    if width > 0 and len(q):
        _, pooled_ids = search(
            q.pooled(threads=threads),
            c.pooled(threads=threads),
            width,
            metric="cosine",
            exclude=excl,
            threads=threads,
        )
        for i in range(len(q)):
            position = np.full(len(c), -1, dtype=np.int64)
            row = pooled_ids[i]
            position[row[row >= 0]] = np.flatnonzero(row >= 0)
            real = truth[i] >= 0
            ranks[i, real] = position[truth[i, real]]
    depth_array = np.asarray(sorted({numbers.count(d, "depth") for d in depths}), dtype=np.int64)
    valid = ranks >= 0
    per_query = np.maximum(valid.sum(axis=1), 1)
    recall = np.array(
        [
            float(((valid & (ranks < d)).sum(axis=1) / per_query)[valid.any(axis=1)].mean())
            if valid.any()
            else 1.0
            for d in depth_array
        ]
    )
    return CandidateRecall(k, depth_array, recall, ranks)


def mine(
    query_tokens: Any,
    corpus_tokens: Any,
    positives: Any,
    *,
    depth: int = 100,
    metric: str = "cosine",
    threads: int | None = None,
    **options: Any,
) -> Any:
    """Mines hard negatives for a multi-vector model: ``negmine.mine`` with
    ``backend="maxsim"`` on the pooled, normalised token means (the candidate stage, searched
    exactly with ``metric``) and the tokens themselves (exact MaxSim over the ``depth`` pooled
    candidates of each query, see :mod:`negmine.sources.maxsim`). ``options`` are
    ``negmine.mine``'s (filters, sampling, window, ``rescore``...)."""
    from negmine.mine import mine as mine_embeddings

    q = as_multi_vectors(query_tokens, "query_tokens")
    c = as_multi_vectors(corpus_tokens, "corpus_tokens")
    return mine_embeddings(
        q.pooled(threads=threads),
        c.pooled(threads=threads),
        positives,
        backend="maxsim",
        query_tokens=q,
        corpus_tokens=c,
        maxsim_depth=depth,
        metric=metric,  # type: ignore[arg-type]
        threads=threads,
        **options,
    )
