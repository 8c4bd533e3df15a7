"""Texts by row from a file, for the command line's text options (``negmine mine
--rescore-model``): :func:`load_texts`."""

from __future__ import annotations

import codecs
import json
import os

from negmine._paths import regular_file
from negmine.errors import FormatError


def load_texts(path: str | os.PathLike[str]) -> list[str]:
    """The texts of ``path``, one per row, in order.

    ``.jsonl`` files hold one JSON value per line: a string, or an object with a ``"text"``
    string. Any other file holds one text per line (UTF-8; a byte-order mark is skipped; the
    line ends are not part of the texts, so a text cannot contain a newline: use JSON lines
    for those). A line that does not parse, bytes that are not UTF-8, or a JSON text with a
    lone surrogate escape (``"\\ud800"``) raise :class:`~negmine.errors.FormatError` naming
    the file and line."""
    file = regular_file(path, "texts file")
    data = file.read_bytes()
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # The decoder counts from after a byte-order mark.
        at = e.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        number = data[:at].count(b"\n") + 1
        raise FormatError(f"{file}, line {number}: not UTF-8 at byte {at}") from None
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
        except (ValueError, RecursionError) as e:  # RecursionError: nested too deep
            raise FormatError(f"{file}, line {number}: not JSON ({e})") from None
        if isinstance(value, dict):
            value = value.get("text")
        if not isinstance(value, str):
            raise FormatError(
                f'{file}, line {number}: expected a JSON string or an object with a "text" string'
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            # A \ud800-style escape without its other half: JSON allows it, but it is no
            # character, and no tokenizer (nor a UTF-8 file written from it) takes it.
            raise FormatError(
                f"{file}, line {number}: the text holds a lone surrogate {value[e.start]!r} "
                f"at character {e.start} (half of a UTF-16 pair, not a character)"
            ) from None
        texts.append(value)
    return texts
