"""Qrels files: relevance judgements as CSR positives (:func:`load_qrels`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from negmine._inputs import Csr
from negmine._numbers import MAX_ID
from negmine._paths import regular_file
from negmine.errors import InvalidArgumentError

_HEADER_WORDS = frozenset(
    {
        "query", "query-id", "query_id", "queryid", "qid", "q", "topic", "topic-id",
        "topic_id", "anchor", "corpus", "corpus-id", "corpus_id", "corpusid", "doc", "doc-id",
        "doc_id", "docid", "document", "document-id", "document_id", "did", "passage",
        "passage-id", "passage_id", "pid", "positive", "positive-id", "positive_id", "iter",
        "iteration", "score", "relevance", "rel", "label", "grade", "judgment", "judgement",
    }
)  # fmt: skip
"""Words a qrels header is made of (BEIR, MS MARCO, TREC, sentence-transformers)."""


def _header_word(text: str) -> bool:
    return text.strip().lower() in _HEADER_WORDS


def load_qrels(
    path: str | os.PathLike[str],
    query_ids: Sequence[str] | None = None,
    corpus_ids: Sequence[str] | None = None,
    *,
    n_queries: int | None = None,
    n_corpus: int | None = None,
) -> Csr:
    """Reads a qrels TSV (``query_id<TAB>corpus_id`` per line, optional header, optional third
    relevance column where ``0`` means not relevant; TREC's four columns too) into CSR
    positives.

    Without ``query_ids`` / ``corpus_ids`` the ids are row indices, checked against
    ``n_queries`` / ``n_corpus`` when given. With them, ids are looked up by name. The file is
    UTF-8 (a byte-order mark is skipped). Line 1 is skipped only when it is a header: its id
    fields are header words (``query-id``, ``qid``, ``corpus-id``, ``docid``, ``pid``...).
    Every other line must parse: an unknown or malformed id, an empty field (a doubled tab), a
    relevance that is not a finite number, or bytes that are not UTF-8 raise
    :class:`~negmine.InvalidArgumentError` naming the file and line, never a silent skip.
    """
    source = regular_file(path, "qrels file")
    if n_queries is not None and query_ids is not None and n_queries != len(query_ids):
        raise InvalidArgumentError(
            f"n_queries ({n_queries}) differs from the number of query_ids ({len(query_ids)})"
        )
    q_index = {name: i for i, name in enumerate(query_ids)} if query_ids is not None else None
    c_index = {name: i for i, name in enumerate(corpus_ids)} if corpus_ids is not None else None
    q_limit = len(query_ids) if query_ids is not None else n_queries
    pairs: list[tuple[int, int]] = []

    def row_id(text: str, index: dict[str, int] | None, what: str, limit: int | None) -> int:
        if index is not None:
            if text not in index:
                raise ValueError(f"unknown {what} id {text!r}")
            return index[text]
        try:
            value = int(text)
        except ValueError:
            raise ValueError(
                f"{what} ids must be integers (row indices) unless query_ids / corpus_ids are "
                f"given, got {text!r}"
            ) from None
        if value < 0:
            raise ValueError(f"negative {what} id {value}")
        if value > MAX_ID or (limit is not None and value >= limit):
            rows = "queries" if what == "query" else "corpus rows"
            bound = f"{limit} {rows}" if limit is not None else "int64 ids"
            raise ValueError(f"{what} {value} is out of range for {bound}")
        return value

    with open(source, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            where = f"{source}:{line_no}"
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise InvalidArgumentError(
                    f"{where}: not UTF-8 text (byte {raw[e.start : e.start + 1]!r} at column "
                    f"{e.start + 1}); save the qrels as UTF-8"
                ) from None
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            fields = text.rstrip().split("\t") if "\t" in text else text.split()
            if len(fields) not in (2, 3, 4):
                raise InvalidArgumentError(
                    f"{where}: expected 'query_id corpus_id [relevance]' (or TREC's 'query_id "
                    f"iteration corpus_id relevance'), got {len(fields)} fields in {text!r}"
                )
            if any(not field.strip() for field in fields):
                raise InvalidArgumentError(
                    f"{where}: empty field in {text!r} (a doubled or stray tab?)"
                )
            fields = [field.strip() for field in fields]
            if len(fields) == 4:  # TREC: query iteration doc relevance
                fields = [fields[0], fields[2], fields[3]]
            if line_no == 1 and _header_word(fields[0]) and _header_word(fields[1]):
                continue
            try:
                if len(fields) == 3:
                    try:
                        relevance = float(fields[2])
                    except ValueError:
                        raise ValueError(f"relevance must be a number, got {fields[2]!r}") from None
                    if not math.isfinite(relevance):
                        raise ValueError(f"relevance must be finite, got {fields[2]!r}")
                    if relevance <= 0:
                        continue
                q = row_id(fields[0], q_index, "query", q_limit)
                c = row_id(fields[1], c_index, "corpus", n_corpus)
            except ValueError as e:
                raise InvalidArgumentError(f"{where}: {e}") from None
            pairs.append((q, c))
    if not pairs:
        raise InvalidArgumentError(f"{source}: no positive pairs found")
    arr = np.unique(np.asarray(pairs, dtype=np.int64), axis=0)
    rows = q_limit if q_limit is not None else int(arr[:, 0].max()) + 1
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.add.at(indptr, arr[:, 0] + 1, 1)
    return Csr(np.cumsum(indptr), arr[:, 1].copy())
