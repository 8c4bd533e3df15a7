"""The column layouts of sentence-transformers' ``mine_hard_negatives(output_format=...)``, one
function per format, over a mined result's arrays (:func:`negmine.to_dataset` checks the
arguments and adds the ids and sources columns)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


@dataclass
class ResultArrays:
    """A result's arrays (``negative_ids`` -1 where missing; the scores those to write) and
    its texts as pyarrow string arrays (``pa``: the pyarrow module)."""

    pa: Any
    query_texts: Any
    corpus_texts: Any
    negative_ids: np.ndarray
    negative_scores: np.ndarray
    positive_indptr: np.ndarray
    positive_ids: np.ndarray
    positive_scores: np.ndarray
    positives_per_query: np.ndarray = field(init=False)
    found: np.ndarray = field(init=False)
    """Where a negative is (``negative_ids >= 0``)."""
    pair_query: np.ndarray = field(init=False)
    """The query of each (query, positive) pair, in CSR order."""

    def __post_init__(self) -> None:
        self.positives_per_query = np.diff(self.positive_indptr)
        self.found = self.negative_ids >= 0
        n_queries = len(self.negative_ids)
        self.pair_query = np.repeat(np.arange(n_queries), self.positives_per_query)

    def take(self, texts: Any, rows: np.ndarray) -> Any:
        """``texts`` (a pyarrow array) at ``rows``."""
        return texts.take(self.pa.array(rows, type=self.pa.int64()))

    def floats(self, values: np.ndarray) -> Any:
        """Scores as sentence-transformers writes them: Python floats (float64)."""
        return self.pa.array(values.astype(np.float64), type=self.pa.float64())

    def lists(self, offsets: np.ndarray, values: Any) -> Any:
        """A list column: row ``i`` holds ``values[offsets[i]:offsets[i + 1]]``."""
        return self.pa.ListArray.from_arrays(self.pa.array(offsets, type=self.pa.int32()), values)


class Layout(NamedTuple):
    """A format's columns, and where each row comes from (for the ids and sources columns)."""

    columns: dict[str, Any]
    row_ids: np.ndarray
    """Each row's ids, the query first, then the corpus rows of its texts in column order:
    ``(rows, k)``, or flat (with ``id_offsets``) when the rows differ in length."""
    id_offsets: np.ndarray
    """Row ``i``'s ids are ``row_ids.ravel()[id_offsets[i]:id_offsets[i + 1]]``."""
    query: np.ndarray
    """Each row's query."""
    negative_column: np.ndarray | None
    """``"triplet"``: each row's negative's column in ``negative_ids``."""


def _fixed_offsets(row_ids: np.ndarray) -> np.ndarray:
    """The ``id_offsets`` of ``(rows, k)`` ids."""
    return np.arange(0, row_ids.size + 1, max(1, row_ids.shape[1]))


def triplet(r: ResultArrays, anchor: str, positive: str, include_scores: bool) -> Layout:
    """``(anchor, positive, negative)``, one row per (query, positive, negative);
    ``include_scores`` adds ``scores`` ``[positive_score, negative_score]``."""
    pair, col = np.nonzero(r.found[r.pair_query])
    query = r.pair_query[pair]
    columns = {
        anchor: r.take(r.query_texts, query),
        positive: r.take(r.corpus_texts, r.positive_ids[pair]),
        "negative": r.take(r.corpus_texts, r.negative_ids[query, col]),
    }
    row_ids = np.stack([query, r.positive_ids[pair], r.negative_ids[query, col]], axis=1)
    if include_scores:
        pairs = np.stack([r.positive_scores[pair], r.negative_scores[query, col]], axis=1)
        columns["scores"] = r.lists(np.arange(0, 2 * len(pair) + 1, 2), r.floats(pairs.ravel()))
    return Layout(columns, row_ids, _fixed_offsets(row_ids), query, col)


def n_tuple(r: ResultArrays, anchor: str, positive: str, include_scores: bool) -> Layout:
    """``(anchor, positive, negative_1, ..., negative_n)``, one row per (query, positive) that
    got all ``n`` negatives; ``include_scores`` adds ``scores`` ``[pos, neg_1, ..., neg_n]``."""
    n_cols = r.negative_ids.shape[1]
    complete: np.ndarray = np.asarray(r.found.all(axis=1))
    pair = np.flatnonzero(complete[r.pair_query])
    query = r.pair_query[pair]
    columns = {
        anchor: r.take(r.query_texts, query),
        positive: r.take(r.corpus_texts, r.positive_ids[pair]),
    }
    for j in range(n_cols):
        columns[f"negative_{j + 1}"] = r.take(r.corpus_texts, r.negative_ids[query, j])
    row_ids = np.concatenate(
        [query[:, None], r.positive_ids[pair, None], r.negative_ids[query]], axis=1
    )
    if include_scores:
        block = np.concatenate([r.positive_scores[pair, None], r.negative_scores[query]], axis=1)
        step = n_cols + 1
        columns["scores"] = r.lists(
            np.arange(0, step * len(pair) + 1, step), r.floats(block.ravel())
        )
    return Layout(columns, row_ids, _fixed_offsets(row_ids), query, None)


def labeled_pair(r: ResultArrays, anchor: str, positive: str, include_scores: bool) -> Layout:
    """``(anchor, positive, label)``: per query its positives (label 1), then its negatives
    (label 0); ``include_scores`` writes ``score`` instead of ``label``."""
    n_pos = r.positives_per_query
    counts = n_pos + r.found.sum(axis=1)
    rows = np.repeat(np.arange(len(r.negative_ids)), counts)
    is_pos = np.zeros(len(rows), dtype=bool)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    within = np.arange(len(r.positive_ids)) - np.repeat(r.positive_indptr[:-1], n_pos)
    is_pos[np.repeat(starts, n_pos) + within] = True
    docs = np.empty(len(rows), dtype=np.int64)
    scores = np.empty(len(rows), dtype=np.float32)
    docs[is_pos], scores[is_pos] = r.positive_ids, r.positive_scores
    docs[~is_pos], scores[~is_pos] = r.negative_ids[r.found], r.negative_scores[r.found]
    columns = {anchor: r.take(r.query_texts, rows), positive: r.take(r.corpus_texts, docs)}
    if include_scores:
        columns["score"] = r.floats(scores)
    else:
        columns["label"] = r.pa.array(is_pos.astype(np.int64), type=r.pa.int64())
    row_ids = np.stack([rows, docs], axis=1)
    return Layout(columns, row_ids, _fixed_offsets(row_ids), rows, None)


def labeled_list(r: ResultArrays, anchor: str, positive: str, include_scores: bool) -> Layout:
    """``(anchor, positive, labels)``, one row per (query, positive) with at least one
    negative: ``positive`` is ``[positive, negatives...]``, ``labels`` ``[1, 0, ...]``;
    ``include_scores`` writes ``scores`` instead of ``labels``."""
    pa = r.pa
    pair_counts = r.found.sum(axis=1)[r.pair_query]
    pair = np.flatnonzero(pair_counts > 0)
    query = r.pair_query[pair]
    sizes = 1 + pair_counts[pair]
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    docs = np.empty(int(offsets[-1]), dtype=np.int64)
    scores = np.empty(int(offsets[-1]), dtype=np.float32)
    head = offsets[:-1]
    docs[head], scores[head] = r.positive_ids[pair], r.positive_scores[pair]
    tail = np.ones(len(docs), dtype=bool)
    tail[head] = False
    sel = r.found[query]
    docs[tail], scores[tail] = r.negative_ids[query][sel], r.negative_scores[query][sel]
    columns = {
        anchor: r.take(r.query_texts, query),
        positive: r.lists(offsets, r.take(r.corpus_texts, docs)),
    }
    if include_scores:
        columns["scores"] = r.lists(offsets, r.floats(scores))
    else:
        columns["labels"] = r.lists(offsets, pa.array((~tail).astype(np.int64), pa.int64()))
    row_ids = np.insert(docs, offsets[:-1], query)
    return Layout(columns, row_ids, offsets + np.arange(len(offsets)), query, None)


LAYOUTS: dict[str, Callable[[ResultArrays, str, str, bool], Layout]] = {
    "triplet": triplet,
    "n-tuple": n_tuple,
    "labeled-pair": labeled_pair,
    "labeled-list": labeled_list,
}
"""Each output format's layout."""
