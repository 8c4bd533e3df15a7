"""Writing mined negatives out: Parquet files and Hugging Face ``datasets``.

:func:`to_parquet` streams a :class:`~negmine.MiningResult` into a Parquet file, one row group
at a time, atomically (the destination is the old file or the complete new one).
:func:`to_dataset` builds a ``datasets.Dataset`` in exactly the column layouts of
sentence-transformers' ``mine_hard_negatives(output_format=...)``, so the result plugs into
their trainer and losses unchanged.

Both need optional packages: ``pip install 'negmine[parquet]'`` (pyarrow) and
``pip install 'negmine[datasets]'`` (datasets, which brings pyarrow).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np

from negmine import _numbers as numbers
from negmine._atomic import atomic_write
from negmine._core import __version__
from negmine._inputs import column_name, largest_id, text_list
from negmine._st_layouts import LAYOUTS, ResultArrays
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.result import MiningResult
from negmine.sources import source_labels

OutputFormat = Literal["triplet", "n-tuple", "labeled-pair", "labeled-list"]
OUTPUT_FORMATS: tuple[str, ...] = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
IdsSequence = Union[Sequence[str], Sequence[int], np.ndarray]


def _pyarrow(feature: str, extra: str) -> Any:
    try:
        return importlib.import_module("pyarrow")
    except ImportError as e:
        raise ImportError(
            f"{feature} needs pyarrow, which is not installed: pip install 'negmine[{extra}]'"
        ) from e


def _check_result(result: MiningResult) -> tuple[int, int]:
    if not isinstance(result, MiningResult):
        raise InvalidTypeError(f"expected a negmine MiningResult, got {type(result).__name__}")
    ids = result.negative_ids
    if ids.ndim != 2 or result.negative_scores.shape != ids.shape:
        raise InvalidArgumentError(
            f"negative_ids {ids.shape} and negative_scores {result.negative_scores.shape} must "
            "be two matrices of the same shape"
        )
    if len(result.positive_indptr) != ids.shape[0] + 1:
        raise InvalidArgumentError(
            f"positive_indptr has {len(result.positive_indptr)} entries for {ids.shape[0]} "
            "queries (expected one more than the queries)"
        )
    return int(ids.shape[0]), int(ids.shape[1])


def _teacher_scores(result: MiningResult) -> tuple[np.ndarray, np.ndarray] | None:
    """The teacher's scores of the negatives and positives, checked, or ``None``."""
    if result.teacher_scores is None:
        return None
    negatives = np.asarray(result.teacher_scores, dtype=np.float32)
    positives = np.asarray(result.positive_teacher_scores, dtype=np.float32)
    if negatives.shape != result.negative_ids.shape or positives.shape != (
        len(result.positive_ids),
    ):
        raise InvalidArgumentError(
            f"teacher_scores {negatives.shape} / positive_teacher_scores {positives.shape} "
            f"do not match the negatives {result.negative_ids.shape} / positives "
            f"({len(result.positive_ids)},)"
        )
    return negatives, positives


def _id_array(pa: Any, ids: IdsSequence | None, name: str, minimum: int) -> Any:
    """``ids`` as a pyarrow array (to ``take`` from), checked to cover ``minimum`` rows."""
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)):
        raise InvalidTypeError(f"{name} must be a sequence of ids, not a single string")
    array = pa.array(np.asarray(ids) if isinstance(ids, np.ndarray) else list(ids))
    if not (pa.types.is_integer(array.type) or pa.types.is_string(array.type)):
        raise InvalidTypeError(f"{name} must hold strings or integers, got {array.type}")
    if len(array) < minimum:
        raise InvalidArgumentError(
            f"{name} has {len(array):,} ids but the result refers to row {minimum - 1:,}"
        )
    if array.null_count:
        raise InvalidArgumentError(f"{name} must not contain None")
    return array


def _lookup(pa: Any, table: Any, rows: np.ndarray) -> Any:
    """Row numbers, or the ids at those rows when a lookup table is given."""
    indices = pa.array(rows, type=pa.int64())
    return indices if table is None else table.take(indices)


def _query_chunks(n_queries: int, per_query: int, batch_rows: int) -> Iterator[tuple[int, int]]:
    step = max(1, batch_rows // max(1, per_query))
    for start in range(0, n_queries, step):
        yield start, min(n_queries, start + step)


def _list_array(pa: Any, offsets: np.ndarray, values: Any) -> Any:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), type=pa.int32()), values)


def to_parquet(
    result: MiningResult,
    path: str | os.PathLike[str],
    *,
    query_ids: IdsSequence | None = None,
    corpus_ids: IdsSequence | None = None,
    layout: Literal["long", "wide"] = "long",
    batch_rows: int = 65_536,
    compression: str = "zstd",
) -> None:
    """Writes ``result`` to a Parquet file, streaming one row group of at most ``batch_rows``
    rows at a time, atomically (temp file in the same directory, fsync, rename).

    Columns of the ``"long"`` layout (one row per mined negative, missing ones left out):

    - ``query``: the query's row (or ``query_ids[row]``),
    - ``positives``: list of its positives' corpus rows (or ``corpus_ids``),
    - ``positive_scores``: list of float32, aligned with ``positives``,
    - ``rank``: int32, 1 for the hardest negative of the query (column ``rank - 1`` of
      ``result.negative_ids``),
    - ``negative``: the negative's corpus row (or its ``corpus_ids`` entry),
    - ``score``: float32, the negative's score.

    The ``"wide"`` layout has one row per query with ``query``, ``positives``,
    ``positive_scores``, ``negatives`` (list, hardest first, missing ones left out) and
    ``negative_scores`` (list of float32), so queries without negatives are kept too.

    A result mined with a teacher (``mine(rescore=...)``) adds its scores: ``teacher_score``
    (long) or ``negative_teacher_scores`` (wide), and ``positive_teacher_scores`` (both):
    the distillation targets, beside the retriever's.

    A result mined from several rankings (``backend="bm25"`` / ``"hybrid"``) adds which
    found each negative (:func:`negmine.sources.source_labels`: ``"bm25"``, ``"dense"`` or
    ``"bm25+dense"``): ``sources`` (long) or ``negative_sources`` (wide, a list of them).

    The file's metadata hold ``negmine.version`` and ``negmine.report`` (the report as JSON).

    Args:
        query_ids, corpus_ids: external ids (strings or integers) by row; without them the
            columns hold row numbers (int64).
        batch_rows: the most rows in one row group (memory use is proportional to it).
        compression: a Parquet codec pyarrow knows (``"zstd"``, ``"snappy"``, ``"none"`` ...).

    Raises:
        ImportError: pyarrow is missing (``pip install 'negmine[parquet]'``).
        FileNotFoundError / PermissionError: the directory is missing or not writable;
            nothing is created.
    """
    pa = _pyarrow("to_parquet", "parquet")
    pq = importlib.import_module("pyarrow.parquet")

    n_queries, n_cols = _check_result(result)
    layout = numbers.choice(layout, "layout", ("long", "wide"))  # type: ignore[assignment]
    batch_rows = numbers.count(batch_rows, "batch_rows")
    neg_ids = np.asarray(result.negative_ids)
    pos_ids = np.asarray(result.positive_ids, dtype=np.int64)
    teacher = _teacher_scores(result)
    q_table = _id_array(pa, query_ids, "query_ids", n_queries)
    c_table = _id_array(pa, corpus_ids, "corpus_ids", largest_id(neg_ids, pos_ids) + 1)
    rows = _ParquetRows(
        pa,
        layout,
        neg_ids,
        np.asarray(result.negative_scores, dtype=np.float32),
        np.asarray(result.positive_indptr, dtype=np.int64),
        pos_ids,
        np.asarray(result.positive_scores, dtype=np.float32),
        teacher,
        None if result.negative_sources is None else source_labels(result.negative_sources),
        q_table,
        c_table,
    )
    schema = rows.schema(
        {
            "negmine.version": __version__,
            "negmine.layout": layout,
            "negmine.report": json.dumps(result.report.to_dict(), sort_keys=True),
        }
    )
    per_query = n_cols if layout == "long" else 1
    with atomic_write(path) as f:
        writer = pq.ParquetWriter(f, schema, compression=compression)
        try:
            for start, stop in _query_chunks(n_queries, per_query, batch_rows):
                table = pa.Table.from_arrays(rows.columns(start, stop), schema=schema)
                if table.num_rows:
                    writer.write_table(table, row_group_size=batch_rows)
        finally:
            writer.close()


@dataclass
class _ParquetRows:
    """A result's arrays, and the columns of :func:`to_parquet`'s row groups made of them
    (``pa``: the pyarrow module; ``q_table`` / ``c_table``: the external ids, or ``None``)."""

    pa: Any
    layout: str
    neg_ids: np.ndarray
    neg_scores: np.ndarray
    indptr: np.ndarray
    pos_ids: np.ndarray
    pos_scores: np.ndarray
    teacher: tuple[np.ndarray, np.ndarray] | None
    labels: np.ndarray | None
    q_table: Any
    c_table: Any

    def schema(self, metadata: dict[str, str]) -> Any:
        """The file's schema (see :func:`to_parquet`)."""
        pa, long = self.pa, self.layout == "long"
        q_type = pa.int64() if self.q_table is None else self.q_table.type
        c_type = pa.int64() if self.c_table is None else self.c_table.type
        fields = [
            pa.field("query", q_type, nullable=False),
            pa.field("positives", pa.list_(c_type)),
            pa.field("positive_scores", pa.list_(pa.float32())),
        ]
        if long:
            fields += [
                pa.field("rank", pa.int32(), nullable=False),
                pa.field("negative", c_type, nullable=False),
                pa.field("score", pa.float32(), nullable=False),
            ]
        else:
            fields += [
                pa.field("negatives", pa.list_(c_type)),
                pa.field("negative_scores", pa.list_(pa.float32())),
            ]
        if self.teacher is not None:
            fields.append(pa.field("positive_teacher_scores", pa.list_(pa.float32())))
            if long:
                fields.append(pa.field("teacher_score", pa.float32(), nullable=False))
            else:
                fields.append(pa.field("negative_teacher_scores", pa.list_(pa.float32())))
        if self.labels is not None:
            if long:
                fields.append(pa.field("sources", pa.string(), nullable=False))
            else:
                fields.append(pa.field("negative_sources", pa.list_(pa.string())))
        return pa.schema(fields, metadata=metadata)

    def columns(self, start: int, stop: int) -> list[Any]:
        """The columns of queries ``start:stop``, in the schema's order."""
        pa = self.pa
        p0, p1 = int(self.indptr[start]), int(self.indptr[stop])
        pos_off = self.indptr[start : stop + 1] - p0
        positives = _list_array(pa, pos_off, _lookup(pa, self.c_table, self.pos_ids[p0:p1]))
        positive_scores = _list_array(pa, pos_off, pa.array(self.pos_scores[p0:p1]))
        t_pos = None
        if self.teacher is not None:
            t_pos = _list_array(pa, pos_off, pa.array(self.teacher[1][p0:p1]))
        if self.layout == "wide":
            return self._wide(start, stop, positives, positive_scores, t_pos)
        return self._long(start, stop, positives, positive_scores, t_pos)

    def _wide(
        self, start: int, stop: int, positives: Any, positive_scores: Any, t_pos: Any
    ) -> list[Any]:
        pa = self.pa
        ids, scores = self.neg_ids[start:stop], self.neg_scores[start:stop]
        found = ids >= 0
        off = np.concatenate(([0], np.cumsum(found.sum(axis=1))))
        columns = [
            _lookup(pa, self.q_table, np.arange(start, stop)),
            positives,
            positive_scores,
            _list_array(pa, off, _lookup(pa, self.c_table, ids[found])),
            _list_array(pa, off, pa.array(scores[found])),
        ]
        if self.teacher is not None:
            columns.append(t_pos)
            columns.append(_list_array(pa, off, pa.array(self.teacher[0][start:stop][found])))
        if self.labels is not None:
            tags = pa.array(self.labels[start:stop][found], pa.string())
            columns.append(_list_array(pa, off, tags))
        return columns

    def _long(
        self, start: int, stop: int, positives: Any, positive_scores: Any, t_pos: Any
    ) -> list[Any]:
        pa = self.pa
        ids, scores = self.neg_ids[start:stop], self.neg_scores[start:stop]
        rows, cols = np.nonzero(ids >= 0)
        take = pa.array(rows, type=pa.int64())
        columns = [
            _lookup(pa, self.q_table, rows + start),
            positives.take(take),
            positive_scores.take(take),
            pa.array(cols.astype(np.int32) + 1, type=pa.int32()),
            _lookup(pa, self.c_table, ids[rows, cols]),
            pa.array(scores[rows, cols], type=pa.float32()),
        ]
        if self.teacher is not None:
            columns.append(t_pos.take(take))
            columns.append(pa.array(self.teacher[0][start:stop][rows, cols], type=pa.float32()))
        if self.labels is not None:
            columns.append(pa.array(self.labels[start:stop][rows, cols], pa.string()))
        return columns


def _texts(texts: Sequence[str], name: str, expected: int, row: str, rows: str) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise InvalidTypeError(f"{name} must be a sequence of strings, not a single string")
    try:
        n = len(texts)
    except TypeError:
        raise InvalidTypeError(
            f"{name} must be a sequence of strings, got {type(texts).__name__}"
        ) from None
    if n != expected:
        raise InvalidArgumentError(
            f"{name} has {numbers.counted(n, 'text')} but the result has "
            f"{numbers.counted(expected, row, rows)}; pass one text per {row}, in row order"
        )
    return text_list(texts, name)


# The columns sentence-transformers' data collator hands to the loss instead of tokenizing.
ST_LABEL_COLUMNS = ("label", "labels", "score", "scores")


def to_dataset(
    result: MiningResult,
    query_texts: Sequence[str],
    corpus_texts: Sequence[str],
    *,
    output_format: OutputFormat = "triplet",
    include_scores: bool = False,
    score_source: Literal["retriever", "teacher"] = "retriever",
    anchor_column: str = "anchor",
    positive_column: str = "positive",
    ids_column: str | None = None,
    sources_column: str | None = None,
) -> Any:
    """A Hugging Face ``datasets.Dataset`` of the mined negatives, with exactly the columns
    and row order of sentence-transformers' ``mine_hard_negatives(output_format=...,
    output_scores=include_scores)`` (version 6.x), ready for its trainer:

    - ``"triplet"``: ``(anchor, positive, negative)``, one row per (query, positive,
      negative), i.e. exploded over several positives; ``include_scores`` adds ``scores``
      ``[positive_score, negative_score]``.
    - ``"n-tuple"``: ``(anchor, positive, negative_1, ..., negative_n)``, one row per (query,
      positive) that got all ``n`` negatives (others are left out, as in
      sentence-transformers); ``include_scores`` adds ``scores`` ``[pos, neg_1, ..., neg_n]``.
    - ``"labeled-pair"``: ``(anchor, positive, label)``: per query its positives with label 1
      and then its negatives with label 0; ``include_scores`` replaces ``label`` by ``score``.
    - ``"labeled-list"``: ``(anchor, positive, labels)``, one row per (query, positive) with
      at least one negative: ``positive`` is ``[positive, negatives...]``, ``labels``
      ``[1, 0, ...]``; ``include_scores`` replaces ``labels`` by ``scores``.

    Args:
        query_texts: one text per query row of ``result``.
        corpus_texts: one text per corpus row (the corpus that was mined).
        score_source: which scores ``include_scores`` writes: the retriever's, or ``"teacher"``:
            those of the teacher that judged the candidates (``mine(rescore=...)``), the
            distillation targets of e.g. ``MarginMSELoss`` (margins: ``scores[0] -
            scores[i]``) or ``DistillKLDivLoss``.
        anchor_column, positive_column: names of the first two columns (sentence-transformers
            keeps those of the input dataset: ``"anchor"``/``"positive"``, or e.g.
            ``"query"``/``"answer"``).
        ids_column: when given, a last column of that name records where each row comes
            from, as a list of int64: the query row of ``result`` first, then the corpus rows
            of the row's texts in column order (``"triplet"``: ``[query, positive,
            negative]``; ``"n-tuple"``: ``[query, positive, negative_1, ...]``;
            ``"labeled-pair"``: ``[query, document]``; ``"labeled-list"``: ``[query,
            positive, negatives...]``). Rows repeat their anchor (a ``"triplet"`` row per
            negative), so this is how :func:`negmine.st.topic_batch_sampler` keeps one query
            out of a batch twice, and how :class:`negmine.st.MaskedMultipleNegativesRankingLoss`
            builds the false-negative mask. For sentence-transformers' trainer name it
            ``"label"`` (with ``"triplet"``/``"n-tuple"``): its collator hands a ``label``
            column to the loss instead of tokenizing it as text, and the plain
            ``MultipleNegativesRankingLoss`` ignores it. The collator hands the loss only one
            such column (``label``, ``labels``, ``score``, ``scores``), so that name is
            refused beside ``include_scores`` or a labeled layout.
        sources_column: with a result mined from several rankings (``backend="bm25"`` /
            ``"hybrid"``), a column of that name (after ``ids_column``) saying which found
            each negative (``"bm25"``, ``"dense"`` or ``"bm25+dense"``): a string per
            ``"triplet"`` row, a list of one per negative per ``"n-tuple"`` row; not taken by
            the labeled layouts. sentence-transformers' trainer would tokenize it as a text
            column: drop it (``dataset.remove_columns``) before training.

    Raises:
        ImportError: ``datasets`` is missing (``pip install 'negmine[datasets]'``).
        InvalidArgumentError: texts of the wrong length, unknown ``output_format``.
    """
    _check_result(result)
    score_source = numbers.choice(score_source, "score_source", ("retriever", "teacher"))  # type: ignore[assignment]
    negative_scores, positive_scores = result.negative_scores, result.positive_scores
    if score_source == "teacher":
        judged = _teacher_scores(result)
        if judged is None:
            raise InvalidArgumentError(
                "score_source='teacher' needs a result mined with a teacher (mine(rescore=...))"
            )
        negative_scores, positive_scores = judged
    labels = None
    if sources_column is not None:
        if result.negative_sources is None:
            raise InvalidArgumentError(
                "sources_column needs a result mined from several rankings (backend='bm25' "
                "or 'hybrid'); this one has no negative_sources"
            )
        if output_format not in ("triplet", "n-tuple"):
            raise InvalidArgumentError(
                f"sources_column goes with the 'triplet' or 'n-tuple' layout, not {output_format!r}"
            )
        labels = (sources_column, source_labels(result.negative_sources))
    return dataset_from_arrays(
        result.negative_ids,
        negative_scores,
        result.positive_indptr,
        result.positive_ids,
        positive_scores,
        query_texts,
        corpus_texts,
        output_format=output_format,
        include_scores=include_scores,
        anchor_column=anchor_column,
        positive_column=positive_column,
        ids_column=ids_column,
        sources=labels,
    )


def dataset_from_arrays(
    negative_ids: np.ndarray,
    negative_scores: np.ndarray,
    positive_indptr: np.ndarray,
    positive_ids: np.ndarray,
    positive_scores: np.ndarray,
    query_texts: Sequence[str],
    corpus_texts: Sequence[str],
    *,
    output_format: OutputFormat = "triplet",
    include_scores: bool = False,
    anchor_column: str = "anchor",
    positive_column: str = "positive",
    ids_column: str | None = None,
    sources: tuple[str, np.ndarray] | None = None,
) -> Any:
    """:func:`to_dataset` of a result's arrays (``negative_ids`` -1 where missing), the
    scores being the ones to write; ``sources``: the name of the sources column and each
    negative's label (``"triplet"`` and ``"n-tuple"`` only)."""
    n_queries, n_cols = (int(n) for n in negative_ids.shape)
    if output_format not in OUTPUT_FORMATS:
        raise InvalidArgumentError(
            f"output_format must be one of {', '.join(map(repr, OUTPUT_FORMATS))}, "
            f"got {output_format!r}"
        )
    if anchor_column == positive_column or not anchor_column or not positive_column:
        raise InvalidArgumentError(
            "anchor_column and positive_column must be two different non-empty names"
        )
    if ids_column is not None:
        column_name(ids_column, "ids_column")
    try:
        datasets = importlib.import_module("datasets")
    except ImportError as e:
        raise ImportError(
            "to_dataset needs the Hugging Face datasets package, which is not installed: "
            "pip install 'negmine[datasets]'"
        ) from e
    pa = _pyarrow("to_dataset", "datasets")

    neg_ids = np.asarray(negative_ids)
    pos_ids = np.asarray(positive_ids, dtype=np.int64)
    corpus = _corpus_texts(corpus_texts, largest_id(neg_ids, pos_ids))
    arrays = ResultArrays(
        pa,
        pa.array(_texts(query_texts, "query_texts", n_queries, "query", "queries"), pa.string()),
        pa.array(corpus, pa.string()),
        neg_ids,
        np.asarray(negative_scores, dtype=np.float32),
        np.asarray(positive_indptr, dtype=np.int64),
        pos_ids,
        np.asarray(positive_scores, dtype=np.float32),
    )
    layout = LAYOUTS[output_format](arrays, anchor_column, positive_column, include_scores)
    columns = layout.columns
    if ids_column is not None:
        _check_ids_name(ids_column, columns, output_format, include_scores)
        flat = np.ascontiguousarray(layout.row_ids, dtype=np.int64).reshape(-1)
        columns[ids_column] = arrays.lists(layout.id_offsets, pa.array(flat, pa.int64()))
    if sources is not None:
        name, labels = sources
        if name in columns:
            raise InvalidArgumentError(
                f"sources_column {name!r} is already a column ({', '.join(columns)}); pick "
                "another name"
            )
        query = layout.query
        if layout.negative_column is not None:  # a negative per row
            columns[name] = pa.array(labels[query, layout.negative_column], pa.string())
        else:
            columns[name] = arrays.lists(
                np.arange(0, n_cols * len(query) + 1, n_cols),
                pa.array(labels[query].ravel(), pa.string()),
            )
    return datasets.Dataset(pa.table(columns))


def _corpus_texts(corpus_texts: Sequence[str], max_id: int) -> list[str]:
    """``corpus_texts`` checked to hold a text per corpus row up to ``max_id``."""
    n_corpus = len(corpus_texts) if not isinstance(corpus_texts, (str, bytes)) else 0
    if max_id >= n_corpus and not isinstance(corpus_texts, (str, bytes)):
        raise InvalidArgumentError(
            f"corpus_texts has {numbers.counted(n_corpus, 'text')} but the result refers to "
            f"corpus row {max_id:,}; pass one text per corpus row, in row order"
        )
    return _texts(corpus_texts, "corpus_texts", n_corpus, "corpus row", "corpus rows")


def _check_ids_name(
    ids_column: str, columns: dict[str, Any], output_format: str, include_scores: bool
) -> None:
    """``ids_column`` beside the layout's ``columns``: no name taken twice, and no second
    label column for sentence-transformers' trainer."""
    clash = [c for c in columns if c in ST_LABEL_COLUMNS]
    if ids_column in ST_LABEL_COLUMNS and clash:
        raise InvalidArgumentError(
            f"ids_column {ids_column!r} and the {output_format!r} layout's {clash[0]!r} "
            "column are both label columns to sentence-transformers' trainer, which hands "
            "only one to the loss and tokenizes the other as text; "
            + (
                "drop include_scores (the masked loss needs only the ids)"
                if include_scores and output_format in ("triplet", "n-tuple")
                else "use the 'triplet' or 'n-tuple' layout, or another name for the ids"
            )
        )
    if ids_column in columns:
        raise InvalidArgumentError(
            f"ids_column {ids_column!r} is already a column of the {output_format!r} layout "
            f"({', '.join(columns)}); pick another name"
        )


__all__ = ["OUTPUT_FORMATS", "OutputFormat", "to_dataset", "to_parquet"]
