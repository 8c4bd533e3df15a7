"""Embeddings files: strict ``.npy`` reading (memory-mapped or copied) and atomic saving.

``open_embeddings`` validates the whole file before returning: magic, version (1.0/2.0/3.0),
a header of at most 10 000 bytes parsed as a literal (never evaluated) with exactly ``descr``,
``fortran_order`` and ``shape``, dtype ``'<f4'`` or ``'<f2'``, C order, a 2-D shape, and a
file size equal to header + data (a short file is refused with "missing N bytes", trailing
bytes are refused). Directories, FIFOs, devices and sockets are refused without being read.

A memory-mapped file must not be truncated or rewritten in place while it is open: touching a
page past its new end kills the process with SIGBUS (true of every memory map, numpy's
included). negmine never writes into a file it maps; ``save_embeddings`` replaces files by
renaming a new one into place, which leaves existing maps intact. If another program may
modify the input, open it with ``mmap=False``: it is validated and copied into memory once.
"""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from negmine._core import Embeddings, open_embeddings
from negmine._core import save_embeddings as _save_embeddings
from negmine.errors import InvalidArgumentError, InvalidTypeError

PathLike = Union[str, "os.PathLike[str]"]

_DTYPES = {np.dtype(np.float32), np.dtype(np.float16)}


def save_embeddings(
    path: PathLike,
    embeddings: Embeddings | npt.ArrayLike,
    *,
    dtype: npt.DTypeLike | None = None,
) -> None:
    """Writes a 2-D float32/float16 matrix to ``path`` as ``.npy`` (readable by ``np.load``).

    The write is atomic: the data go to a temp file in the same directory (unnamed while being
    written, on Linux), are flushed to disk, and the file is renamed over ``path``. After a
    crash or an error ``path`` is the old file or the complete new one, and no temp file is
    left. Saving onto a file that is currently open with ``open_embeddings`` is safe.

    Args:
        path: destination; its directory must exist (``FileNotFoundError`` otherwise, and
            ``PermissionError`` when it is not writable).
        embeddings: an ``Embeddings`` or a 2-D array. Non-contiguous arrays are copied.
        dtype: ``"float32"`` or ``"float16"`` to cast to first. Without it the array must
            already be float32 or float16; other dtypes raise ``TypeError`` naming the dtype.
            A finite value too large for the target (above 65504 for float16) raises
            ``InvalidArgumentError`` naming its row and value instead of being stored as
            infinity; NaN and infinity already in the input are stored as they are.

    The GIL is released while the file is written; do not modify the array from another thread
    meanwhile (like ``np.save``, the file would hold a mix of old and new values).
    """
    if isinstance(embeddings, Embeddings):
        if dtype is None or np.dtype(dtype) == embeddings.dtype:
            _save_embeddings(path, embeddings)
            return
        embeddings = np.asarray(embeddings)
    array = np.asarray(embeddings)
    if dtype is not None:
        target = np.dtype(dtype)
        if target not in _DTYPES:
            raise InvalidTypeError(
                f"dtype must be float32 or float16, got {target} (embeddings are saved as one "
                "of those)"
            )
        if array.dtype.kind not in "fiub":
            raise InvalidTypeError(f"cannot cast embeddings of dtype {array.dtype} to {target}")
    elif array.dtype.newbyteorder("=") not in _DTYPES:
        raise InvalidTypeError(
            f"embeddings must be float32 or float16, got dtype {array.dtype}; pass "
            "dtype='float32' to cast"
        )
    if array.ndim != 2:
        hint = " (use x.reshape(1, -1) for a single vector)" if array.ndim == 1 else ""
        raise InvalidArgumentError(
            f"embeddings must be 2-D (rows x dim), got shape {array.shape}{hint}"
        )
    if dtype is not None:
        array = cast_rows(array, np.dtype(dtype), "embeddings row")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    _save_embeddings(path, np.ascontiguousarray(array))


FLOAT16_LOSS = 1e-2
"""The relative change of a row's norm past which a float16 copy is refused: float16's own
rounding changes a row of normal-range values by at most 2**-11 (about 5e-4); past 1% the row's
values lie below float16's normal range (6.1e-05) and lose their bits, down to zero."""


def cast_rows(
    array: np.ndarray, target: np.dtype[Any], what: str, first_row: int = 0
) -> np.ndarray:
    """``array`` (2-D) cast to the float dtype ``target``, refusing what the cast would
    silently change: a finite value it would turn into infinity, and, for float16, a row whose
    norm it would change by more than :data:`FLOAT16_LOSS` (values too small for float16 are
    flushed to zero: a whole corpus of tiny rows would become zero rows). Errors are
    ``InvalidArgumentError`` naming ``what`` and the row (counted from ``first_row``). NaN and
    infinity in ``array`` pass as they are; all-zero rows are kept."""
    with np.errstate(over="ignore"):  # overflow is reported below, by row
        out = array.astype(target, copy=False)
    if out is array:
        return out
    overflow = np.isinf(out)
    if overflow.any():
        overflow &= np.isfinite(array)
        if overflow.any():
            row, col = (int(x) for x in np.argwhere(overflow)[0])
            hint = "use float32 or scale the rows" if target.itemsize < 4 else "scale the rows"
            raise InvalidArgumentError(
                f"{what} {first_row + row} holds {array[row, col].item()!r} (column {col}), "
                f"which does not fit {target} (largest finite value "
                f"{np.finfo(target).max.item():g}): {hint}"
            )
    if target.itemsize < 4:
        _check_float16_loss(array, out, what, first_row)
    return out


def _check_float16_loss(array: np.ndarray, half: np.ndarray, what: str, first_row: int) -> None:
    finite = np.flatnonzero(np.isfinite(array).all(axis=1))  # NaN and infinity pass as they are
    wide = array[finite].astype(np.float64)  # squares of values near 1e-20 underflow float32
    norms = np.linalg.norm(wide, axis=1)
    changes = np.linalg.norm(half[finite].astype(np.float64) - wide, axis=1)
    lost = np.flatnonzero(changes > FLOAT16_LOSS * norms)
    if lost.size:
        j = int(lost[0])
        i, norm, change = int(finite[j]), norms[j], changes[j]
        raise InvalidArgumentError(
            f"{what} {first_row + i} has norm {norm:.3g}, too small for float16: the cast "
            f"would change it by {change / norm:.0%} (float16 keeps values from 6.1e-05 "
            "at full precision and none below 6e-08); use float32, or normalise or scale the "
            "rows"
        )


__all__ = ["Embeddings", "open_embeddings", "save_embeddings"]
