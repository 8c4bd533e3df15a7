"""Embedding texts with a sentence-transformers model, cached on disk as memory-mapped ``.npy``.

:func:`embed_texts` encodes once per (model, texts, options) and keeps the result under
``cache_dir``; a later call with the same inputs maps the file instead of encoding again.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from negmine import _numbers as numbers
from negmine._core import Embeddings, open_embeddings
from negmine._inputs import text_list
from negmine._progress import progress_callback
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError
from negmine.store import cast_rows, save_embeddings

_CACHE_VERSION = "negmine-embed-1"
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
    texts: Sequence[str],
    model_id: str,
    *,
    normalize: bool,
    prompt: str | None,
    dtype: str,
) -> str:
    """The hex SHA-256 of everything that decides the embeddings (texts length-prefixed, so
    no two different lists hash alike)."""
    h = hashlib.sha256()
    for part in (_CACHE_VERSION, model_id, repr(normalize), repr(prompt), dtype):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little") + data)
    h.update(len(texts).to_bytes(8, "little"))
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little") + data)
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


def _check_texts(texts: Sequence[str]) -> list[str]:
    out = text_list(texts, "texts")
    if not out:
        raise InvalidArgumentError("texts is empty: nothing to embed")
    return out


def embed_texts(
    texts: Sequence[str],
    model: Any,
    *,
    cache_dir: str | os.PathLike[str],
    batch_size: int = 64,
    normalize: bool = True,
    progress: bool = True,
    prompt: str | None = None,
    dtype: Literal["float32", "float16"] = "float32",
    model_id: str | None = None,
) -> Embeddings:
    """Embeds ``texts`` with a sentence-transformers model and returns them memory-mapped from
    a cache file; the next call with the same model and texts maps that file without encoding.

    The file is ``cache_dir/embeddings-<sha256>.npy``, the hash taken over the model's identity
    (its name or path, or ``model_id``), the texts in order, ``normalize``, ``prompt`` and
    ``dtype``. It is written with :func:`negmine.save_embeddings`: atomically, so an interrupted
    run leaves no partial cache file, and readers of an older file are unaffected. A cache
    file is reused only if it is valid, has one row per text and the requested dtype, and
    holds only finite values; anything else is encoded again and replaced.

    Args:
        texts: the strings to embed, one row each, in order.
        model: a ``SentenceTransformer`` (or any object with a compatible
            ``encode(texts, batch_size=..., show_progress_bar=..., convert_to_numpy=...)``),
            or a model name or path to load with ``SentenceTransformer`` (needs
            ``pip install 'negmine[st]'``; a name is only loaded when the cache misses).
        cache_dir: directory for the cache (created if missing).
        batch_size: the model's batch size.
        normalize: scale each row to unit length (rows of norm 0 stay 0).
        progress: a progress bar over the texts (a ``(done, total)`` callable also works).
        prompt: passed to ``encode(prompt=...)`` when given (e.g. ``"query: "``).
        dtype: stored dtype; ``"float16"`` halves the file. A value too large for float16
            (above 65504, e.g. with ``normalize=False``) raises ``InvalidArgumentError``
            naming the text, before anything is cached.
        model_id: names the model in the cache key when the object does not say what it is.

    Returns:
        The embeddings as a read-only, memory-mapped :class:`negmine.Embeddings`
        (``np.asarray(emb)`` gives a zero-copy array).
    """
    items = _check_texts(texts)
    batch_size = numbers.count(batch_size, "batch_size")
    dtype = numbers.choice(dtype, "dtype", ("float32", "float16"))  # type: ignore[assignment]
    if not isinstance(model, str) and not callable(getattr(model, "encode", None)):
        raise InvalidTypeError(
            f"model must be a model name or an object with an encode() method, got "
            f"{type(model).__name__}"
        )
    ident = model_id if model_id is not None else model_identity(model)
    key = cache_key(items, ident, normalize=normalize, prompt=prompt, dtype=dtype)
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"embeddings-{key}.npy"
    if path.exists():
        cached = _reusable(path, len(items), dtype)
        if cached is not None:
            return cached

    if isinstance(model, str):
        model = _load_model(model)
    out: np.ndarray | None = None
    # A few batches per encode call: sentence-transformers sorts each call's texts by
    # length, and the bar moves often enough.
    step = batch_size * 16
    with progress_callback(progress, "embed", total=len(items), unit="text") as update:
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            kwargs: dict[str, Any] = {
                "batch_size": batch_size,
                "show_progress_bar": False,
                "convert_to_numpy": True,
            }
            if prompt is not None:
                kwargs["prompt"] = prompt
            vectors = np.asarray(model.encode(chunk, **kwargs), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(chunk):
                raise InvalidArgumentError(
                    f"model.encode returned shape {vectors.shape} for {len(chunk)} texts "
                    "(expected one row per text)"
                )
            if out is None:
                out = np.empty((len(items), vectors.shape[1]), dtype=np.float32)
            elif vectors.shape[1] != out.shape[1]:
                raise InvalidArgumentError(
                    f"model.encode returned {vectors.shape[1]} dimensions after "
                    f"{out.shape[1]} for earlier texts"
                )
            if not np.isfinite(vectors).all():
                bad = start + int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
                raise InvalidArgumentError(
                    f"model.encode returned NaN or Inf for text {bad}: {items[bad][:80]!r}"
                )
            if normalize:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
            # Checked per chunk, before anything is cached: an overflow names its text.
            cast_rows(vectors, np.dtype(dtype), "the embedding of text", start)
            out[start : start + len(chunk)] = vectors
            if update is not None:
                update(start + len(chunk), len(items))
    assert out is not None
    save_embeddings(path, out, dtype=dtype)
    return open_embeddings(path)


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
