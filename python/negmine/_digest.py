"""Content digests of input files: what a trusted cache (an HNSW index, a checkpoint) is keyed
by, never size and mtime alone.

A file of at most :data:`FULL_DIGEST_LIMIT` bytes is digested whole (BLAKE2b, streamed in
blocks; about a second per GiB). A larger one by its size, its mtime and :data:`SAMPLED_BLOCKS`
blocks of :data:`SAMPLE_BLOCK_BYTES` at evenly spaced offsets (the first holds the ``.npy``
header, the last ends at the end of the file): rereading a multi-GiB corpus on every call
would cost more than the work it guards, and the price is that an edit confined to unsampled
bytes *and* with the mtime restored goes unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import IO, Any

import numpy as np

from negmine._paths import regular_file

FULL_DIGEST_LIMIT = 1 << 30
"""Files up to this size are digested whole; larger ones by sampled blocks."""
SAMPLED_BLOCKS = 64
"""Blocks digested of a file larger than :data:`FULL_DIGEST_LIMIT`."""
SAMPLE_BLOCK_BYTES = 1 << 20
"""Size of each digested block (and of the read buffer when digesting a whole file)."""


def file_digest(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """``{"size", "blake2b"}`` of a whole file, or ``{"size", "mtime_ns", "sampled_blake2b"}``
    of a large one (see the module docstring). ``what`` names the file in errors."""
    source = regular_file(path, what)
    h = hashlib.blake2b(digest_size=16)
    with open(source, "rb") as f:
        st = os.fstat(f.fileno())
        size = st.st_size
        if size <= FULL_DIGEST_LIMIT:
            stream_into(h, f)
            return {"size": size, "blake2b": h.hexdigest()}
        last = size - SAMPLE_BLOCK_BYTES
        for i in range(SAMPLED_BLOCKS):
            offset = i * last // (SAMPLED_BLOCKS - 1)
            f.seek(offset)
            h.update(offset.to_bytes(8, "little"))
            h.update(f.read(SAMPLE_BLOCK_BYTES))
    return {"size": size, "mtime_ns": st.st_mtime_ns, "sampled_blake2b": h.hexdigest()}


def stream_into(h: Any, f: IO[bytes]) -> int:
    """Feeds the rest of ``f`` to the hash ``h`` block by block; returns the bytes read."""
    buffer = bytearray(SAMPLE_BLOCK_BYTES)
    view = memoryview(buffer)
    total = 0
    while True:
        got = f.readinto(buffer)  # type: ignore[attr-defined]
        if not got:
            return total
        h.update(view[:got])
        total += got


def array_digest(array: np.ndarray) -> str:
    """The content digest of a C-contiguous array (its dtype, shape and bytes), with the
    policy of :func:`file_digest`: whole up to :data:`FULL_DIGEST_LIMIT` bytes, else
    :data:`SAMPLED_BLOCKS` evenly spaced blocks. Computed over a mapped file, it is the
    content that this mapping reads, whatever the path names by the time it is asked."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8).data
    size = len(data)
    if size <= FULL_DIGEST_LIMIT:
        for offset in range(0, size, SAMPLE_BLOCK_BYTES):
            h.update(data[offset : offset + SAMPLE_BLOCK_BYTES])
        return h.hexdigest()
    last = size - SAMPLE_BLOCK_BYTES
    for i in range(SAMPLED_BLOCKS):
        offset = i * last // (SAMPLED_BLOCKS - 1)
        h.update(offset.to_bytes(8, "little"))
        h.update(data[offset : offset + SAMPLE_BLOCK_BYTES])
    return "sampled:" + h.hexdigest()


def update_value(h: Any, value: Any) -> None:
    """Feeds ``value`` to the hash ``h`` by content, the same in every process: never by
    ``repr`` (numpy elides arrays of more than 1,000 elements, and an object's default repr
    holds its address). ``None``, bools, numbers and strings go in as JSON, a path as the
    string it stands for; arrays (and anything with ``__array__``, lists of numbers) as
    dtype, shape and every byte; other sequences (a ``Csr`` pair, ragged id lists, texts)
    item by item; mappings by sorted key. Every item carries a type tag and a
    length, so no two values feed the same bytes. Anything else raises ``TypeError`` naming
    its type: callables have no content to digest, their caller must name them."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        _tagged(h, b"j", json.dumps(value).encode())
    elif isinstance(value, bytes):
        _tagged(h, b"b", value)
    elif isinstance(value, os.PathLike):  # the same as the string it stands for
        update_value(h, os.fspath(value))
    elif isinstance(value, Mapping):
        _tagged(h, b"m", len(value).to_bytes(8, "little"))
        for key in sorted(value, key=str):
            update_value(h, str(key))
            update_value(h, value[key])
    elif isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        _array(h, np.asarray(value))
    elif isinstance(value, Sequence):  # lists, tuples, a dataset's column of texts
        if value and not isinstance(value[0], (str, bytes, list, tuple)):
            try:  # numbers, or rows of equal length: one array, digested at once
                array = np.asarray(value)
            except (ValueError, TypeError, OverflowError):  # ragged, or not numbers
                array = None
            if array is not None and array.dtype.kind in "biuf":
                _array(h, array)
                return
        _tagged(h, b"l", len(value).to_bytes(8, "little"))
        for item in value:
            update_value(h, item)
    else:
        raise TypeError(f"cannot digest a {type(value).__module__}.{type(value).__qualname__}")


def _tagged(h: Any, tag: bytes, data: bytes) -> None:
    h.update(tag + len(data).to_bytes(8, "little") + data)


def _array(h: Any, array: np.ndarray) -> None:
    if array.dtype.hasobject:
        if array.ndim == 0:  # whatever the object is, it has no array content of its own
            raise TypeError(f"cannot digest a {type(array.item()).__qualname__} in an array")
        update_value(h, array.tolist())
        return
    contiguous = np.ascontiguousarray(array)
    _tagged(h, b"a", json.dumps([contiguous.dtype.str, list(contiguous.shape)]).encode())
    h.update(contiguous.reshape(-1).view(np.uint8))
