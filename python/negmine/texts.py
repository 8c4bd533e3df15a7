"""Texts by row from a file, for the command line's text options (``negmine mine
--rescore-model``): :func:`load_texts`."""

from __future__ import annotations

import json
import os

from negmine._paths import regular_file
from negmine.errors import FormatError


def load_texts(path: str | os.PathLike[str]) -> list[str]:
    """The texts of ``path``, one per row, in order.

    ``.jsonl`` files hold one JSON value per line: a string, or an object with a ``"text"``
    string. Any other file holds one text per line (UTF-8; a byte-order mark is skipped; the
    line ends are not part of the texts, so a text cannot contain a newline: use JSON lines
    for those). A line that does not parse, or bytes that are not UTF-8, raise
    :class:`~negmine.errors.FormatError` naming the file and line."""
    file = regular_file(path, "texts file")
    try:
        content = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"{file}: not UTF-8 at byte {e.start}") from None
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line end
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if file.suffix.lower() != ".jsonl":
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        try:
            value = json.loads(line)
        except ValueError as e:
            raise FormatError(f"{file}, line {number}: not JSON ({e})") from None
        if isinstance(value, dict):
            value = value.get("text")
        if not isinstance(value, str):
            raise FormatError(
                f'{file}, line {number}: expected a JSON string or an object with a "text" string'
            )
        texts.append(value)
    return texts
