"""Turning user arguments into what the Rust core accepts, with errors that name the problem:
matrices, id arrays and CSR pairs, and integers passed to the core as they are (numbers checked
against ranges are :mod:`negmine._numbers`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, Union, cast

import numpy as np
import numpy.typing as npt

from negmine import _numbers as numbers
from negmine._core import Embeddings, open_embeddings
from negmine._numbers import MAX_ID
from negmine.errors import InvalidArgumentError, InvalidTextError, InvalidTypeError
from negmine.store import cast_rows

EmbeddingsLike = Union[Embeddings, npt.ArrayLike, "os.PathLike[str]", str]
"""A mapped file, a path to a ``.npy`` file, or a 2-D array (float32/float16 as is, float64
cast to float32)."""

IdsLike = Union[
    "Csr",
    tuple[np.ndarray, np.ndarray],
    Sequence[Sequence[int]],
    Sequence[int],
    np.ndarray,
    None,
]
"""Per-query corpus ids: a CSR pair (:class:`Csr` or two integer numpy arrays) or one sequence
of ids per query."""


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
    if array.ndim != 2:
        hint = " (use x.reshape(1, -1) for a single vector)" if array.ndim == 1 else ""
        raise InvalidArgumentError(
            f"{name} must be 2-D (rows x dim), got shape {array.shape}{hint}"
        )
    if array.dtype.itemsize == 8:
        # A finite float64 past float32's range is refused by row, not cast to inf.
        array = cast_rows(array, np.dtype(np.float32), f"{name} row")
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


# Arrays frozen by running calls, by id: (array, how many calls hold it). Another call
# (another thread) may freeze a view of an array that is frozen here, or its base, so the
# bookkeeping is global.
_frozen_lock = threading.Lock()
_frozen: dict[int, tuple[np.ndarray, int]] = {}
# Arrays whose flag could not be set back yet because an ancestor is still frozen by
# another call: they are restored as soon as that ancestor is.
_pending: dict[int, np.ndarray] = {}


@contextmanager
def read_only(*matrices: Embeddings | np.ndarray) -> Iterator[None]:
    """Makes the given arrays read-only while the core reads them without the GIL.

    A write through the same array object from another thread (or a progress callback) then
    raises ``ValueError: assignment destination is read-only`` instead of changing the inputs
    halfway through, so the result always matches the inputs as they were at the call. Writes
    through *other* views of the same memory cannot be seen or blocked: don't make them. Arrays
    whose flag numpy could not set back (memory numpy does not own, such as a torch tensor's
    ``.numpy()``, or a writeable view of an array that is itself read-only) are left as they
    are.

    Any aliasing is fine: the same array twice, a view and its base in either order, two views
    of one base, views of views. Flags are set back bases first (numpy lets a view become
    writeable again only while an ancestor is writeable), and setting them back never raises:
    a finished result is never turned into an exception.
    """
    frozen: list[np.ndarray] = []
    with _frozen_lock:
        # Decide for every array first, on the flags as the caller left them.
        candidates: dict[int, np.ndarray] = {}
        for m in matrices:
            if (
                isinstance(m, np.ndarray)
                and id(m) not in candidates
                and (id(m) in _frozen or (m.flags.writeable and _restorable(m)))
            ):
                candidates[id(m)] = m
        for key, m in candidates.items():
            array, holders = _frozen.get(key, (m, 0))
            _frozen[key] = (array, holders + 1)
            if holders == 0:
                m.flags.writeable = False
            frozen.append(m)
    try:
        yield
    finally:
        with _frozen_lock:
            released = []
            for m in frozen:
                array, holders = _frozen[id(m)]
                if holders == 1:
                    del _frozen[id(m)]
                    released.append(m)
                else:
                    _frozen[id(m)] = (array, holders - 1)
            _restore(released)


def _restore(arrays: list[np.ndarray]) -> None:
    """Sets ``arrays`` (and any pending ones) writeable again, bases before views; an array
    whose ancestor is still frozen by another call waits in ``_pending`` for it."""
    for m in arrays:
        _pending[id(m)] = m
    progress = True
    while progress:
        progress = False
        for key, m in sorted(_pending.items(), key=lambda item: _depth(item[1])):
            try:
                m.flags.writeable = True
            except ValueError:
                continue
            del _pending[key]
            progress = True


def _depth(array: np.ndarray) -> int:
    depth = 0
    while isinstance(array.base, np.ndarray):
        array, depth = array.base, depth + 1
    return depth


def _restorable(array: np.ndarray) -> bool:
    """Whether numpy will let the WRITEABLE flag of ``array`` be set again once every array
    frozen now is writeable again: it owns its memory, or some numpy ancestor is writeable (or
    frozen, hence writeable again later), numpy's own rule."""
    if array.flags.owndata:
        return True
    while True:
        base = array.base
        if not isinstance(base, np.ndarray):
            return False
        if base.flags.writeable or id(base) in _frozen:
            return True
        if base.flags.owndata:
            return False
        array = base


class Csr(NamedTuple):
    """Per-row id lists in compressed sparse row form: row ``r`` holds
    ``indices[indptr[r]:indptr[r + 1]]``. ``len(indptr)`` is the number of rows plus one."""

    indptr: npt.ArrayLike
    indices: npt.ArrayLike


def _int64_array(values: npt.ArrayLike, name: str, holds: str = "integers") -> np.ndarray:
    """Integers (``holds`` says what they are, for errors) as a 1-D int64 array; zero-copy
    when they already are one."""
    array = np.asarray(values)
    if array.size and array.dtype.kind not in "iu":
        raise InvalidTypeError(f"{name} must hold {holds}, got dtype {array.dtype}")
    if array.ndim != 1:
        raise InvalidArgumentError(f"{name} must be 1-D, got shape {array.shape}")
    if array.dtype.kind == "u" and array.size and int(array.max()) > MAX_ID:
        raise InvalidArgumentError(
            f"{name} holds {int(array.max())}, past the largest int64 (2**63 - 1)"
        )
    return np.ascontiguousarray(array, dtype=np.int64)


def rows_of(matrix: Embeddings | np.ndarray) -> int:
    return int(matrix.shape[0])


_CSR_FORMS = (
    "write negmine.Csr(indptr, indices) (or a tuple of two integer numpy arrays) for a CSR "
    "pair, a list with one list of ids per query, e.g. [[0, 1, 2], [5, 7]], or one id per "
    "query: a list of ints or an integer array of shape (queries,) or (queries, m) padded "
    "with -1"
)


def as_csr(ids: IdsLike, n_rows: int, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-row id lists as int64 CSR arrays; range checks against the corpus are the core's.

    A CSR pair is a :class:`Csr` or a tuple of exactly two numpy integer arrays. A tuple of two
    Python lists is refused: ``([0, 1, 2], [5, 7])`` reads as "query 0 excludes 0, 1, 2 and
    query 1 excludes 5, 7" just as well as a CSR pair, and guessing wrong silently excludes
    the wrong rows.

    One id per query (the (anchor, positive) pairs of a training set) may come as a list of
    ints or an integer array of shape ``(n_rows,)``; ``m`` per query as an ``(n_rows, m)``
    array padded with ``-1``.
    """
    if ids is None:
        return None
    if isinstance(ids, np.ndarray) or (
        isinstance(ids, Sequence)
        and not isinstance(ids, (str, bytes, tuple))
        and len(ids) > 0
        and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids)
    ):
        return _dense_ids(np.asarray(ids), n_rows, name)
    if isinstance(ids, Csr) or (
        isinstance(ids, tuple)
        and len(ids) == 2
        and all(isinstance(part, np.ndarray) for part in ids)
    ):
        indptr, indices = (_int64_array(part, name, "integer ids") for part in ids)
        _check_csr(indptr, indices, n_rows, name)
        return indptr, indices
    if isinstance(ids, tuple) and len(ids) == 2:
        raise InvalidTypeError(
            f"{name} is a tuple of two sequences, which could be a CSR pair (indptr, indices) "
            f"or the id lists of two queries: {_CSR_FORMS}"
        )
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise InvalidTypeError(
            f"{name} must be a CSR pair or a list of id lists ({_CSR_FORMS}), "
            f"got {type(ids).__name__}"
        )
    lists = cast(Sequence[Sequence[int]], ids)
    if len(lists) != n_rows:
        raise InvalidArgumentError(
            f"{name} must have one id list per query ({n_rows}), got {len(lists)}"
        )
    for row in lists:
        if isinstance(row, (str, bytes)) or not isinstance(row, (Sequence, np.ndarray)):
            raise InvalidTypeError(
                f"{name} must hold one sequence of ids per query, got a {type(row).__name__}"
            )
    lengths = np.fromiter((len(row) for row in lists), dtype=np.int64, count=len(lists))
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    flat = [i for row in lists for i in row]
    for i in flat:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise InvalidTypeError(f"{name} must hold integer ids, got {type(i).__name__} {i!r}")
        if not -MAX_ID - 1 <= i <= MAX_ID:
            raise InvalidArgumentError(f"{name} holds {i}, past the largest id (2**63 - 1)")
    return indptr, np.asarray(flat, dtype=np.int64).reshape(-1)


def _dense_ids(array: np.ndarray, n_rows: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """An id array with one row per query (``-1`` pads) as CSR arrays."""
    if array.dtype.kind not in "iu":
        raise InvalidTypeError(f"{name} as an array must hold integer ids, got {array.dtype}")
    matrix = array[:, None] if array.ndim == 1 else array
    if matrix.ndim != 2 or len(matrix) != n_rows:
        raise InvalidArgumentError(
            f"{name} as an array must have shape ({n_rows},) (one id per query) or "
            f"({n_rows}, m) padded with -1, got {array.shape}"
        )
    if matrix.dtype == np.uint64 and matrix.size and int(matrix.max()) > MAX_ID:
        raise InvalidArgumentError(f"{name} holds {int(matrix.max())}, past the largest id")
    matrix = matrix.astype(np.int64, copy=False)
    if matrix.size and int(matrix.min()) < -1:
        raise InvalidArgumentError(
            f"{name} holds {int(matrix.min())}: ids are >= 0, and -1 pads a short row"
        )
    real = matrix >= 0
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(real.sum(axis=1), out=indptr[1:])
    return indptr, np.ascontiguousarray(matrix[real])


def _check_csr(indptr: np.ndarray, indices: np.ndarray, n_rows: int, name: str) -> None:
    if len(indptr) != n_rows + 1:
        raise InvalidArgumentError(
            f"{name} indptr must have one entry per row plus one ({n_rows + 1}), got {len(indptr)}"
        )
    check_indptr(indptr, len(indices), f"{name} indptr", "indices")


def check_indptr(indptr: np.ndarray, n_indices: int, indptr_name: str, indices_name: str) -> None:
    """Raises unless ``indptr`` is a CSR offset array over ``n_indices`` values: it starts at 0,
    never decreases and ends at ``n_indices`` (so it has at least one entry)."""
    if len(indptr) == 0 or indptr[0] != 0 or indptr[-1] != n_indices or np.any(np.diff(indptr) < 0):
        raise InvalidArgumentError(
            f"{indptr_name} must start at 0, be non-decreasing and end at len({indices_name}) "
            f"({n_indices})"
        )


def int_csr(
    indptr: npt.ArrayLike, indices: npt.ArrayLike, indptr_name: str, indices_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """A CSR pair as private int64 arrays (see :func:`int_array`), its offsets checked."""
    offsets, values = int_array(indptr, indptr_name), int_array(indices, indices_name)
    check_indptr(offsets, len(values), indptr_name, indices_name)
    return offsets, values


def private_csr(ids: IdsLike, n_rows: int, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`as_csr`, as private copies (see :func:`private_copy`)."""
    csr = as_csr(ids, n_rows, name)
    if csr is None:
        return None
    return private_copy(csr[0], np.int64), private_copy(csr[1], np.int64)


# ---------------------------------------------------------------------------------------------
# Integers passed to the core as they are (its range and consistency checks apply)


def count_int(value: object, name: str) -> int:
    """An integer count passed to the core as is (the core says when it is not positive)."""
    return numbers.integer(value, name, minimum=-(2**63), maximum=2**63 - 1)


def int_array(values: npt.ArrayLike, name: str) -> npt.NDArray[np.int64]:
    """Integers as a 1-D int64 array, always a private copy (see :func:`private_copy`)."""
    return private_copy(_int64_array(values, name), np.int64)


def private_copy(array: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """A C-contiguous copy that nothing else references: the core reads it without the GIL,
    so no other thread can change it halfway. (Freezing the caller's array instead cannot be
    undone for arrays that do not own their memory, e.g. arrays made by ``negmine._core``.)"""
    return np.array(array, dtype=dtype, order="C", copy=True)


def largest_id(*arrays: np.ndarray) -> int:
    """The largest value in ``arrays`` (id arrays), -1 when they are all empty."""
    return max([int(a.max()) for a in arrays if a.size] + [-1])


def groups_array(groups: npt.ArrayLike | None, needed: int, what: str) -> np.ndarray | None:
    """``groups`` (corpus row -> duplicate group id) as int64, checked to cover corpus ids
    ``[0, needed)``, which ``what`` refers to."""
    if groups is None:
        return None
    array = int_array(groups, "groups")
    if len(array) < needed:
        raise InvalidArgumentError(
            f"groups has {len(array)} entries (one per corpus row), but {what} has corpus id "
            f"{needed - 1}"
        )
    return array


def pairs_to_csr(
    rows: np.ndarray, values: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique (row, value) pairs as CSR."""
    if len(rows):
        pairs = np.unique(np.stack([rows, values], axis=1).astype(np.int64), axis=0)
        rows, values = pairs[:, 0], pairs[:, 1]
    counts = np.bincount(rows, minlength=n_rows) if len(rows) else np.zeros(n_rows, np.int64)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return indptr, np.ascontiguousarray(values, dtype=np.int64)


def distinct_ids(
    csr: tuple[np.ndarray, np.ndarray] | None, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ids of a CSR pair (``None``: none), sorted and without repeats, as CSR."""
    if csr is None:
        return np.zeros(n_rows + 1, np.int64), np.empty(0, np.int64)
    indptr, ids = csr
    return pairs_to_csr(np.repeat(np.arange(n_rows), np.diff(indptr)), ids, n_rows)


def text_list(texts: Any, name: str) -> list[str]:
    """``texts`` as a list of ``str``, each one a text a tokenizer takes: never turned into
    one by ``str()`` (``None`` would be embedded as the text "None"). A text that is not a
    ``str``, or holds a lone surrogate (e.g. ``"\\ud800"`` from a JSON escape, or bytes
    decoded with ``surrogateescape``), raises :class:`~negmine.errors.InvalidTextError`
    naming ``name[i]``."""
    if isinstance(texts, (str, bytes)):
        raise InvalidTypeError(
            f"{name} must be a sequence of strings, not a single "
            + ("string" if isinstance(texts, str) else "bytes object")
        )
    try:
        out = list(texts)
    except TypeError:
        raise InvalidTypeError(
            f"{name} must be a sequence of strings, got {type(texts).__name__}"
        ) from None
    for i, text in enumerate(out):
        checked_text(text, name, i)
    return out


def column_name(value: object, name: str) -> str:
    """``value`` once it is a column's name: a non-empty ``str`` (``name`` says which
    argument it is, for the error)."""
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{name} must be a non-empty name, got {value!r}")
    return value


def gather_lists(
    indptr: np.ndarray, values: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The CSR lists ``keys[0], keys[1], ...`` concatenated: (length of each, values)."""
    starts, counts = indptr[keys], np.diff(indptr)[keys]
    total = int(counts.sum())
    if total == 0:
        return counts, np.empty(0, dtype=np.int64)
    shift = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    return counts, values[np.arange(total) + shift]


def checked_text(text: object, name: str, i: int) -> str:
    """``text`` (``name[i]``) once it is a ``str`` a tokenizer takes (see :func:`text_list`)."""
    if not isinstance(text, str):
        raise InvalidTextError(
            f"{name}[{i}] must be a string, got {type(text).__name__} {text!r:.60}"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidTextError(
            f"{name}[{i}] holds a lone surrogate {text[e.start]!r} at character {e.start} "
            "(not a Unicode character: no UTF-8 encoding, no tokenizer takes it)"
        ) from None
    return text
