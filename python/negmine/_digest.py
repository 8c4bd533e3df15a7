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
import os
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
