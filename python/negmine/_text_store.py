"""Texts of a stream read back by row (``negmine export``): what a mining result refers to by
corpus row is anywhere in the corpus, so the stream is copied once, a chunk at a time, into
two files (the UTF-8 bytes, and each text's end offset) that are read back by mapping.
Memory holds a chunk, not the corpus."""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from negmine._atomic import located, locked_directory, temp_name
from negmine.texts import TextSource


class TextStore:
    """The texts of a :class:`TextSource`, on disk in ``directory`` (which must be empty);
    :meth:`take` reads texts by row."""

    def __init__(self, source: TextSource, directory: Path, chunk_size: int) -> None:
        data_path, ends_path = directory / "texts.bin", directory / "ends.bin"
        self.count, size = 0, 0
        try:
            with open(data_path, "wb") as data, open(ends_path, "wb") as ends:
                for texts in source.chunks(chunk_size):
                    encoded = [text.encode("utf-8") for text in texts]
                    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
                    data.write(b"".join(encoded))
                    ends.write((size + np.cumsum(lengths)).tobytes())
                    self.count += len(encoded)
                    size += int(lengths.sum())
        except OSError as e:
            raise located(e, directory) from e
        self._ends = (
            np.memmap(ends_path, dtype=np.int64, mode="r")
            if self.count
            else np.zeros(0, dtype=np.int64)
        )
        self._data: mmap.mmap | bytes = b""
        if size:
            with open(data_path, "rb") as f:
                self._data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def take(self, rows: np.ndarray) -> list[str]:
        """The texts at ``rows`` (in range), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        ends = self._ends[rows]
        starts = np.where(rows > 0, self._ends[np.maximum(rows - 1, 0)], 0)
        data = self._data
        return [data[a:b].decode("utf-8") for a, b in zip(starts.tolist(), ends.tolist())]

    def close(self) -> None:
        if isinstance(self._data, mmap.mmap):
            self._data.close()
        self._data = b""
        self._ends = np.zeros(0, dtype=np.int64)


@contextlib.contextmanager
def text_store(source: TextSource, beside: Path, chunk_size: int) -> Iterator[TextStore]:
    """A :class:`TextStore` of ``source`` in a hidden directory beside ``beside`` (on its
    disk, not in a temp directory that may be memory), removed when the block ends; one left
    by a killed run is swept by the next write to ``beside`` (:func:`negmine._atomic.sweep`)."""
    with contextlib.ExitStack() as locks:
        while True:  # until a new name is made and locked before any sweep took it
            directory = temp_name(beside)
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory)
                if locked_directory(directory, locks):
                    break
        store = None
        try:
            store = TextStore(source, directory, chunk_size)
            yield store
        finally:
            if store is not None:
                store.close()
            shutil.rmtree(directory, ignore_errors=True)
