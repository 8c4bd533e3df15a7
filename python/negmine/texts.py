"""Texts by row, streamed: from a file (lines, JSON lines, optionally gzipped, a Parquet
column), a Hugging Face dataset (also a streaming ``IterableDataset``) or Python (a list, or a
function returning a fresh iterable). A :class:`TextSource` is read as often as needed, in
chunks, and never held whole: :func:`negmine.embed_texts` reads it once to count and key its
texts and once more to encode them; duplicate grouping keeps a 16-byte hash per row.

:func:`open_texts` opens a file, :func:`from_dataset` a dataset, :func:`as_source` takes any of
them (or a list); :func:`load_texts` reads a file into a list (``negmine export``, id files).
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Union

import numpy as np

from negmine._inputs import checked_text
from negmine._paths import regular_file
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError

_READ_ROWS = 8192
"""Texts per piece a file or dataset is read in: what memory holds of it at a time."""


class TextSource:
    """Texts in order, read in pieces; every iteration reads them again from the start.

    ``name`` names the texts in errors (a file's path, ``"texts"``)."""

    name: str = "texts"

    def pieces(self) -> Iterator[list[str]]:
        """The texts in consecutive lists (of any length), each text checked to be a ``str``
        with a UTF-8 encoding."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces():
            yield from piece

    def chunks(self, size: int) -> Iterator[list[str]]:
        """The texts in lists of ``size`` (the last one shorter)."""
        buffer: list[str] = []
        for piece in self.pieces():
            buffer.extend(piece)
            while len(buffer) >= size:
                yield buffer[:size]
                del buffer[:size]
        if buffer:
            yield buffer


TextsLike = Union[Sequence[str], TextSource, Callable[[], Iterable[str]]]
"""Texts: a list (or other sequence) of strings, a :class:`TextSource`, or a function that
returns a fresh iterable of them each time it is called (a generator function)."""


class _PythonTexts(TextSource):
    def __init__(self, make: Callable[[], Iterable[str]], name: str) -> None:
        self._make = make
        self.name = name

    def pieces(self) -> Iterator[list[str]]:
        iterator = iter(self._make())
        index = 0
        while True:
            piece = []
            for text in iterator:
                piece.append(checked_text(text, self.name, index))
                index += 1
                if len(piece) == _READ_ROWS:
                    break
            if not piece:
                return
            yield piece


def as_source(texts: TextsLike, name: str = "texts") -> TextSource:
    """``texts`` as a :class:`TextSource`. A single string, bytes, or an iterator (which can be
    read only once) raise ``InvalidTypeError`` saying what to pass instead."""
    if isinstance(texts, TextSource):
        return texts
    if isinstance(texts, (str, bytes)):
        raise InvalidTypeError(
            f"{name} must be a sequence of strings, not a single "
            + ("string" if isinstance(texts, str) else "bytes object")
        )
    if isinstance(texts, (str, os.PathLike)):
        raise InvalidTypeError(f"{name} is a path: read it with negmine.texts.open_texts(path)")
    if callable(texts) and not isinstance(texts, Iterable):
        return _PythonTexts(texts, name)
    if not isinstance(texts, Iterable):
        raise InvalidTypeError(f"{name} must be a sequence of strings, got {type(texts).__name__}")
    if iter(texts) is texts:  # type: ignore[comparison-overlap]  # a TextsLike in name only
        raise InvalidTypeError(
            f"{name} is an iterator ({type(texts).__name__}), which can be read only once; the "
            "texts are read twice (to key the cache and count them, then to encode them): pass "
            "a list, a function returning a fresh iterator (lambda: gen()), or a "
            "negmine.texts source (open_texts, from_dataset)"
        )
    iterable = texts
    return _PythonTexts(lambda: iterable, name)


# --------------------------------------------------------------------------------- files


def open_texts(path: str | os.PathLike[str], field: str = "text") -> TextSource:
    """The texts of a file, one per row, read in pieces of a few thousand rows.

    By extension (a final ``.gz`` is gunzipped on the fly):

    - ``.jsonl``: one JSON value per line, a string or an object with a ``field`` string;
    - ``.parquet``: the string column ``field``, read a row group at a time (pyarrow);
    - anything else: one text per line (UTF-8; a byte-order mark is skipped; line ends are not
      part of the texts, so a text cannot hold a newline: use JSON lines for those).

    A line that does not parse, bytes that are not UTF-8, a JSON text with a lone surrogate
    escape (``"\\ud800"``), a missing column or a null raise
    :class:`~negmine.errors.FormatError` naming the file and line (or row). The file is
    checked to exist and be a regular file here; its content is read when iterated."""
    file = regular_file(path, "texts file")
    suffixes = [s.lower() for s in file.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    kind = suffixes[-2] if compressed and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if kind == ".parquet":
        if compressed:
            raise FormatError(f"{file}: a Parquet file is compressed inside; do not gzip it")
        return _ParquetTexts(file, field)
    if kind == ".jsonl":
        return _JsonLines(file, field, compressed)
    return _LineTexts(file, compressed)


def load_texts(path: str | os.PathLike[str], field: str = "text") -> list[str]:
    """The texts of ``path`` (see :func:`open_texts`) as a list, in order."""
    return [text for piece in open_texts(path, field).pieces() for text in piece]


class _FileTexts(TextSource):
    def __init__(self, file: Path, compressed: bool) -> None:
        self.file = file
        self.name = str(file)
        self._compressed = compressed

    def _lines(self) -> Iterator[tuple[int, int, bytes]]:
        """(line number, byte offset, line without its end) of the file, decompressed."""
        opener: Callable[[Path, str], IO[bytes]] = gzip.open if self._compressed else open  # type: ignore[assignment]
        with opener(self.file, "rb") as f:
            offset, number = 0, 0
            try:
                for raw in f:
                    number += 1
                    line = raw[:-1] if raw.endswith(b"\n") else raw
                    if line.endswith(b"\r"):
                        line = line[:-1]
                    yield number, offset, line
                    offset += len(raw)
            except (OSError, EOFError, zlib.error) as e:
                if isinstance(e, OSError) and not isinstance(e, gzip.BadGzipFile):
                    raise
                raise FormatError(f"{self.file}: not a complete gzip file ({e})") from None

    def _texts(self) -> Iterator[str]:
        raise NotImplementedError

    def pieces(self) -> Iterator[list[str]]:
        piece: list[str] = []
        for text in self._texts():
            piece.append(text)
            if len(piece) == _READ_ROWS:
                yield piece
                piece = []
        if piece:
            yield piece


class _LineTexts(_FileTexts):
    def _texts(self) -> Iterator[str]:
        for number, offset, line in self._lines():
            skipped = 0
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line, skipped = line[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as e:
                at = offset + skipped + e.start
                raise FormatError(f"{self.file}, line {number}: not UTF-8 at byte {at}") from None


class _JsonLines(_FileTexts):
    def __init__(self, file: Path, field: str, compressed: bool) -> None:
        super().__init__(file, compressed)
        self._field = field

    def _texts(self) -> Iterator[str]:
        for number, _, line in self._lines():
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            try:
                value = json.loads(line)
            except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
                raise FormatError(f"{self.file}, line {number}: not JSON ({e})") from None
            if isinstance(value, dict):
                value = value.get(self._field)
            if not isinstance(value, str):
                raise FormatError(
                    f"{self.file}, line {number}: expected a JSON string or an object with a "
                    f'"{self._field}" string'
                )
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                # A \ud800-style escape without its other half: JSON allows it, but it is no
                # character, and no tokenizer (nor a UTF-8 file written from it) takes it.
                raise FormatError(
                    f"{self.file}, line {number}: the text holds a lone surrogate "
                    f"{value[e.start]!r} at character {e.start} (half of a UTF-16 pair, not a "
                    "character)"
                ) from None
            yield value


def _string_column(values: Any, where: str, first_row: int) -> list[str]:
    """A pyarrow string array as a list, refusing nulls by row."""
    if values.null_count:
        row = first_row + int(np.flatnonzero(np.asarray(values.is_null()))[0])
        raise FormatError(f"{where}: row {row} is null, not a text")
    return values.to_pylist()  # type: ignore[no-any-return]


class _ParquetTexts(TextSource):
    def __init__(self, file: Path, column: str) -> None:
        self.file = file
        self.name = str(file)
        self._column = column

    def pieces(self) -> Iterator[list[str]]:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError(f"reading {self.file} needs pyarrow: pip install pyarrow") from e
        try:
            parquet = pq.ParquetFile(self.file)
        except (pa.ArrowException, OSError) as e:
            raise FormatError(f"{self.file}: not a Parquet file ({e})") from None
        with parquet:
            schema = parquet.schema_arrow
            if self._column not in schema.names:
                raise FormatError(
                    f"{self.file} has no column {self._column!r} (columns: "
                    f"{', '.join(schema.names)})"
                )
            kind = schema.field(self._column).type
            if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise FormatError(f"{self.file}: column {self._column!r} holds {kind}, not strings")
            row = 0
            # iter_batches decodes one row group at a time and hands it out in slices.
            for batch in parquet.iter_batches(batch_size=_READ_ROWS, columns=[self._column]):
                yield _string_column(batch.column(0), f"{self.file}, column {self._column!r}", row)
                row += batch.num_rows


# ----------------------------------------------------------------------------- datasets


class _DatasetTexts(TextSource):
    def __init__(self, dataset: Any, column: str) -> None:
        self._dataset = dataset
        self._column = column
        self.name = f"dataset[{column!r}]"

    def pieces(self) -> Iterator[list[str]]:
        row = 0
        for batch in self._dataset.iter(batch_size=_READ_ROWS):
            values = batch[self._column]
            for i, text in enumerate(values):
                if not isinstance(text, str):
                    raise FormatError(
                        f"{self.name} row {row + i} is {type(text).__name__} {text!r:.60}, "
                        "not a text"
                    )
            yield list(values)
            row += len(values)


def from_dataset(dataset: Any, column: str = "text") -> TextSource:
    """The texts of a Hugging Face ``datasets.Dataset`` or ``IterableDataset`` (streaming:
    ``load_dataset(..., streaming=True)``) column ``column``, read a few thousand rows at a
    time. A streaming dataset is read from its start each time the texts are iterated (twice
    by :func:`negmine.embed_texts`). A ``DatasetDict`` (pick a split), a missing column, or a
    value that is not a string raise errors that say so."""
    kind = type(dataset).__name__
    if kind in ("DatasetDict", "IterableDatasetDict"):
        splits = ", ".join(map(repr, dataset))
        raise InvalidTypeError(
            f"from_dataset takes one split of a {kind} ({splits}), e.g. ds['train']"
        )
    if not callable(getattr(dataset, "iter", None)):
        raise InvalidTypeError(
            f"from_dataset takes a datasets.Dataset or IterableDataset, got {kind}"
        )
    names = getattr(dataset, "column_names", None)
    if names is not None and column not in names:
        raise InvalidArgumentError(
            f"the dataset has no column {column!r} (columns: {', '.join(names)})"
        )
    if callable(getattr(dataset, "select_columns", None)):
        dataset = dataset.select_columns([column])
    return _DatasetTexts(dataset, column)


# ------------------------------------------------------------------------------ hashing


@dataclass(frozen=True)
class TextScan:
    """What one pass over texts finds: how many, their SHA-256 (each text's UTF-8 bytes
    length-prefixed, in order, so no two different lists hash alike), and optionally the
    duplicate group of each row (the first row of identical text)."""

    count: int
    sha256: str
    groups: np.ndarray | None = None


def scan_texts(source: TextSource, *, groups: bool = False) -> TextScan:
    """Reads ``source`` once. The groups come from a 16-byte BLAKE2b hash per row, not from
    the texts: memory holds 16 bytes a row and one piece of texts."""
    whole = hashlib.sha256()
    row_hashes = bytearray()
    count = 0
    for piece in source.pieces():
        for text in piece:
            data = text.encode("utf-8")
            whole.update(len(data).to_bytes(8, "little"))
            whole.update(data)
            if groups:
                row_hashes += hashlib.blake2b(data, digest_size=16).digest()
        count += len(piece)
    if not groups:
        return TextScan(count, whole.hexdigest())
    hashes = np.frombuffer(bytes(row_hashes), dtype="<u8").reshape(-1, 2)
    return TextScan(count, whole.hexdigest(), _first_rows(hashes))


def _first_rows(hashes: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same hash (uint32)."""
    n = len(hashes)
    if n == 0:
        return np.empty(0, dtype=np.uint32)
    order = np.lexsort((hashes[:, 1], hashes[:, 0]))  # stable: equal hashes by row
    ordered = hashes[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    run = np.cumsum(starts) - 1
    out = np.empty(n, dtype=np.uint32)
    out[order] = order[starts][run]
    return out


__all__ = [
    "TextScan",
    "TextSource",
    "TextsLike",
    "as_source",
    "from_dataset",
    "load_texts",
    "open_texts",
    "scan_texts",
]
