"""Turning user arguments into what the Rust core accepts, with errors that name the problem."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union, cast

import numpy as np
import numpy.typing as npt

from negmine._core import Embeddings, open_embeddings
from negmine.errors import InvalidArgumentError, InvalidTypeError

EmbeddingsLike = Union[Embeddings, npt.ArrayLike, "os.PathLike[str]", str]
"""A mapped file, a path to a ``.npy`` file, or a 2-D array (float32/float16 as is, float64
cast to float32)."""

IdsLike = Union[
    tuple[npt.ArrayLike, npt.ArrayLike],
    Sequence[Sequence[int]],
    None,
]
"""Per-query corpus ids: a CSR pair ``(indptr, indices)`` or one sequence of ids per query."""


def as_matrix(value: EmbeddingsLike, name: str) -> Embeddings | np.ndarray:
    """A mapped file or a C-contiguous 2-D float32/float16 array (zero-copy when possible)."""
    if isinstance(value, Embeddings):
        return value
    if isinstance(value, (str, os.PathLike)):
        return open_embeddings(value)
    array = np.asarray(value)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype not in (np.float32, np.float16):
        raise InvalidTypeError(
            f"{name} must hold float32 or float16 values (float64 is cast), got dtype {array.dtype}"
        )
    if array.ndim != 2:
        hint = " (use x.reshape(1, -1) for a single vector)" if array.ndim == 1 else ""
        raise InvalidArgumentError(
            f"{name} must be 2-D (rows x dim), got shape {array.shape}{hint}"
        )
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def rows_of(matrix: Embeddings | np.ndarray) -> int:
    return int(matrix.shape[0])


def as_csr(ids: IdsLike, n_rows: int, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-row id lists as int64 CSR arrays; range checks against the corpus are the core's."""
    if ids is None:
        return None
    if isinstance(ids, tuple) and len(ids) == 2:
        indptr = np.ascontiguousarray(np.asarray(ids[0]), dtype=np.int64)
        indices = np.ascontiguousarray(np.asarray(ids[1]), dtype=np.int64)
        if indptr.ndim != 1 or indices.ndim != 1:
            raise InvalidArgumentError(f"{name} CSR arrays must be 1-D")
        return indptr, indices
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise InvalidTypeError(
            f"{name} must be an (indptr, indices) pair or a list of id lists, "
            f"got {type(ids).__name__}"
        )
    lists = cast(Sequence[Sequence[int]], ids)
    if len(lists) != n_rows:
        raise InvalidArgumentError(
            f"{name} must have one id list per query ({n_rows}), got {len(lists)}"
        )
    lengths = np.fromiter((len(row) for row in lists), dtype=np.int64, count=len(lists))
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    flat = [int(i) for row in lists for i in row]
    return indptr, np.asarray(flat, dtype=np.int64).reshape(-1)
