"""Turning user arguments into what the Rust core accepts, with errors that name the problem."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
    if array.dtype.kind != "f" or array.dtype.itemsize not in (2, 4, 8):
        raise InvalidTypeError(
            f"{name} must hold float32 or float16 values (float64 is cast), got dtype {array.dtype}"
        )
    if array.dtype.itemsize == 8:
        array = array.astype(np.float32)
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.ndim != 2:
        hint = " (use x.reshape(1, -1) for a single vector)" if array.ndim == 1 else ""
        raise InvalidArgumentError(
            f"{name} must be 2-D (rows x dim), got shape {array.shape}{hint}"
        )
    return np.ascontiguousarray(array)


_frozen_lock = threading.Lock()
_frozen_count: dict[int, int] = {}


@contextmanager
def read_only(*matrices: Embeddings | np.ndarray) -> Iterator[None]:
    """Makes the given arrays read-only while the core reads them without the GIL.

    A write through the same array object from another thread (or a progress callback) then
    raises ``ValueError: assignment destination is read-only`` instead of changing the inputs
    halfway through, so the result always matches the inputs as they were at the call. Writes
    through *other* views of the same memory cannot be seen or blocked: don't make them. Arrays
    over memory numpy does not own (a torch tensor's ``.numpy()``, a foreign buffer) are left as
    they are, since numpy could not make them writeable again.
    """
    frozen: list[np.ndarray] = []
    with _frozen_lock:
        for m in matrices:
            if not isinstance(m, np.ndarray):
                continue
            key = id(m)
            if key in _frozen_count:
                _frozen_count[key] += 1
            elif m.flags.writeable and _restorable(m):
                m.flags.writeable = False
                _frozen_count[key] = 1
            else:
                continue
            frozen.append(m)
    try:
        yield
    finally:
        with _frozen_lock:
            for m in frozen:
                key = id(m)
                _frozen_count[key] -= 1
                if _frozen_count[key] == 0:
                    del _frozen_count[key]
                    m.flags.writeable = True


def _restorable(array: np.ndarray) -> bool:
    """Whether numpy will let the WRITEABLE flag be set again: the memory is owned by this
    array or by a numpy array it views."""
    while not array.flags.owndata:
        if not isinstance(array.base, np.ndarray):
            return False
        array = array.base
    return True


def positive_int(value: object, name: str) -> int:
    """An ``int`` (numpy integers too, not bool) that is > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value <= 0:
        raise InvalidArgumentError(f"{name} must be positive, got {value}")
    return int(value)


def _id_array(values: npt.ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.size and array.dtype.kind not in "iu":
        raise InvalidTypeError(f"{name} must hold integer ids, got dtype {array.dtype}")
    if array.ndim != 1:
        raise InvalidArgumentError(f"{name} CSR arrays must be 1-D, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.int64)


def rows_of(matrix: Embeddings | np.ndarray) -> int:
    return int(matrix.shape[0])


def as_csr(ids: IdsLike, n_rows: int, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-row id lists as int64 CSR arrays; range checks against the corpus are the core's."""
    if ids is None:
        return None
    if isinstance(ids, tuple) and len(ids) == 2:
        return _id_array(ids[0], name), _id_array(ids[1], name)
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
    flat = [i for row in lists for i in row]
    if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in flat):
        raise InvalidTypeError(f"{name} must hold integer ids")
    return indptr, np.asarray(flat, dtype=np.int64).reshape(-1)
