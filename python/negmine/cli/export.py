"""`negmine export`: a mining result directory into training files, the sentence-transformers
layouts and FlagEmbedding's jsonl streamed a chunk of queries at a time, or negmine's own
Parquet table."""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from negmine._atomic import atomic_write
from negmine._numbers import counted
from negmine.cli.common import (
    Command,
    UsageError,
    add_text_field,
    load_optional_ids,
    positive_int,
    say,
)
from negmine.errors import InvalidArgumentError

TEXT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
EXPORT_FORMATS = (*TEXT_FORMATS, "parquet", "jsonl")


def _recorded_texts(directory: str, side: str) -> tuple[str, str] | None:
    """The text file of ``side`` (``"query_texts"`` / ``"corpus_texts"``) that the result in
    ``directory`` was mined from, checked to be unchanged, and its text field; None if it
    records none."""
    from negmine._digest import file_digest
    from negmine.result import TEXTS_SIDECAR, recorded_texts

    record = recorded_texts(directory)
    entry = None if record is None else record.get(side)
    if entry is None:
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)):
        raise InvalidArgumentError(
            f"{Path(directory) / TEXTS_SIDECAR} is not a negmine texts record"
        )
    entry = dict(entry)
    path = str(entry.pop("path"))
    field = str(entry.pop("field", "text"))
    option = "--" + side.replace("_", "-")
    if not Path(path).exists() or file_digest(path, side.replace("_", " ")) != entry:
        raise InvalidArgumentError(
            f"{path}, which {directory} was mined from, is missing or has changed since: "
            f"pass {option}"
        )
    return path, field


_EXPORT_SUFFIXES = {"parquet": (".parquet",), "jsonl": (".jsonl",)}
"""The extension of ``--out`` each format writes (the text formats: either)."""


def _check_export_usage(args: argparse.Namespace) -> None:
    """The options ``export`` refuses together, before reading anything."""
    texts = args.query_texts is not None or args.corpus_texts is not None
    ids = args.query_ids is not None or args.corpus_ids is not None
    suffixes = _EXPORT_SUFFIXES.get(args.format, (".jsonl", ".parquet"))
    if Path(args.out).suffix.lower() not in suffixes:
        written = (
            "writes a .jsonl or a .parquet file (by the extension of --out)"
            if len(suffixes) > 1
            else f"writes a {suffixes[0]} file"
        )
        raise UsageError(f"--format {args.format} {written}, got --out {args.out}")
    if args.format == "parquet":
        if texts:
            raise UsageError(
                "--format parquet writes corpus rows (or --query-ids / --corpus-ids), not "
                "texts; use --format jsonl or a sentence-transformers format for texts"
            )
        return
    if ids:
        raise UsageError("--query-ids and --corpus-ids go with --format parquet")
    if args.layout != "long":
        raise UsageError("--layout goes with --format parquet")


def _export_texts(args: argparse.Namespace) -> tuple[tuple[str, str], tuple[str, str]]:
    """The query and corpus text files (and text fields) of an export: the options, else the
    files the result records (``texts.json``). A side with neither is a usage error naming
    the option."""
    paths, missing = [], []
    for given, side in ((args.query_texts, "query_texts"), (args.corpus_texts, "corpus_texts")):
        path = (
            (given, args.text_field) if given is not None else _recorded_texts(args.directory, side)
        )
        paths.append(path)
        if path is None:
            missing.append(side)
    if missing:
        raise UsageError(
            f"--format {args.format} needs "
            + " and ".join("--" + side.replace("_", "-") for side in missing)
            + f" ({args.directory} records no "
            + " and no ".join(side.replace("_", " ") for side in missing)
            + ": it was mined from embeddings)"
        )
    query, corpus = paths
    assert query is not None and corpus is not None
    return query, corpus


def _score_arrays(result: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(negative scores, positive scores) of the retriever or of the teacher."""
    if source == "teacher":
        if result.teacher_scores is None:
            raise InvalidArgumentError(
                "--score-source teacher: this result was mined without a teacher "
                "(mine --rescore-model)"
            )
        return np.asarray(result.teacher_scores), np.asarray(result.positive_teacher_scores)
    return np.asarray(result.negative_scores), np.asarray(result.positive_scores)


def write_flag_jsonl(
    negative_ids: np.ndarray,
    negative_scores: np.ndarray,
    positive_indptr: np.ndarray,
    positive_ids: np.ndarray,
    positive_scores: np.ndarray,
    query_texts: Sequence[str],
    corpus_texts: Sequence[str],
    file: IO[bytes],
) -> int:
    """Writes FlagEmbedding's training lines of these queries, one per query with at least
    one positive and one negative: ``{"query", "pos", "neg", "pos_scores", "neg_scores"}``,
    negatives hardest first (``corpus_texts[i]`` is corpus row ``i``'s text). Returns the
    lines written."""
    written = 0
    for q in range(negative_ids.shape[0]):
        positives = slice(int(positive_indptr[q]), int(positive_indptr[q + 1]))
        found = negative_ids[q] >= 0
        if positives.start == positives.stop or not found.any():
            continue
        line = {
            "query": query_texts[q],
            "pos": [corpus_texts[c] for c in positive_ids[positives].tolist()],
            "neg": [corpus_texts[c] for c in negative_ids[q][found].tolist()],
            "pos_scores": positive_scores[positives].astype(float).tolist(),
            "neg_scores": negative_scores[q][found].astype(float).tolist(),
        }
        file.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        written += 1
    return written


def _write_table(table: Any, file: IO[bytes], suffix: str, writer: Any) -> Any:
    """Appends a pyarrow table to ``file``: Parquet (``suffix`` ``.parquet``) through
    ``writer``, a ``pyarrow.parquet.ParquetWriter`` made at the first table (returned, to be
    closed after the last), or JSON lines (one object per row)."""
    if suffix == ".parquet":
        if writer is None:
            pq = importlib.import_module("pyarrow.parquet")
            writer = pq.ParquetWriter(file, table.schema)
        writer.write_table(table)
        return writer
    for batch in table.to_batches():
        for row in batch.to_pylist():
            file.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    return None


def _cmd_export(args: argparse.Namespace) -> int:
    from negmine.outputs import to_parquet
    from negmine.result import MANIFEST, MiningResult

    _check_export_usage(args)
    text_paths = None
    if args.format != "parquet" and (Path(args.directory) / MANIFEST).exists():
        # Before the result is loaded (every array read and verified). A directory that is
        # no result is a data error, with or without texts: loading it says what it is.
        text_paths = _export_texts(args)
    result = MiningResult.load(args.directory)
    n_queries = result.negative_ids.shape[0]
    source: Literal["retriever", "teacher"] = args.score_source or (
        "teacher" if result.teacher_scores is not None else "retriever"
    )
    if args.format == "parquet":
        query_ids = load_optional_ids(args.query_ids, "query", n_queries)
        # The corpus' size is not in the result: to_parquet checks that the ids cover it.
        corpus_ids = load_optional_ids(args.corpus_ids, "corpus", None)
        to_parquet(result, args.out, query_ids=query_ids, corpus_ids=corpus_ids, layout=args.layout)
        say(args, f"{args.format} ({args.layout}) -> {args.out}")
        return 0
    assert text_paths is not None  # the result loaded, so it has a manifest
    written = _export_texts_streamed(args, result, text_paths, source)
    if args.format == "jsonl":
        skipped = n_queries - written
        left_out = f" ({skipped:,} queries without a positive or a negative left out)"
        say(args, f"{written:,} lines{left_out if skipped else ''} -> {args.out}")
    else:
        say(args, f"{written:,} {args.format} rows -> {args.out}")
    return 0


def _export_texts_streamed(
    args: argparse.Namespace,
    result: Any,
    text_paths: tuple[tuple[str, str], tuple[str, str]],
    source: str,
) -> int:
    """Writes a format of texts (a sentence-transformers layout or FlagEmbedding's jsonl) to
    ``--out``, ``--chunk-size`` queries at a time: the query texts are streamed beside them,
    the corpus texts copied once into a store beside ``--out`` and read back by row, so that
    memory holds a chunk's texts, not the corpus. Returns the rows (lines) written."""
    from negmine._text_store import text_store
    from negmine.outputs import dataset_from_arrays
    from negmine.texts import open_texts

    (query_path, query_field), (corpus_path, corpus_field) = text_paths
    query_source = open_texts(query_path, query_field)
    neg_ids = np.asarray(result.negative_ids)
    indptr = np.asarray(result.positive_indptr, dtype=np.int64)
    pos_ids = np.asarray(result.positive_ids, dtype=np.int64)
    neg_scores, pos_scores = _score_arrays(result, source)
    neg_scores = np.asarray(neg_scores, dtype=np.float32)
    pos_scores = np.asarray(pos_scores, dtype=np.float32)
    n_queries = neg_ids.shape[0]
    # Counted first, to refuse texts of another result before anything is written.
    n_query_texts = sum(len(piece) for piece in query_source.pieces())
    if n_query_texts != n_queries:
        raise InvalidArgumentError(
            f"--query-texts holds {counted(n_query_texts, 'text')} for "
            f"{counted(n_queries, 'query', 'queries')}"
        )
    step = args.chunk_size
    written = 0
    with (
        atomic_write(args.out) as f,
        text_store(open_texts(corpus_path, corpus_field), Path(args.out), step) as corpus,
    ):
        top = max(int(neg_ids.max(initial=-1)), int(pos_ids.max(initial=-1)))
        if top >= corpus.count:
            raise InvalidArgumentError(
                f"--corpus-texts holds {counted(corpus.count, 'text')} but the result refers "
                f"to corpus row {top:,}"
            )
        writer = None
        query_chunks = query_source.chunks(step)
        # At least one chunk: a result of no queries still writes its (empty) table.
        for a in range(0, max(n_queries, 1), step):
            b = min(n_queries, a + step)
            query_texts = next(query_chunks, []) if b > a else []
            negatives, positives = neg_ids[a:b], pos_ids[indptr[a] : indptr[b]]
            # The chunk's corpus rows, and its ids renumbered into them.
            rows = np.unique(np.concatenate([negatives[negatives >= 0], positives]))
            corpus_texts = corpus.take(rows)
            local_negatives = np.where(negatives >= 0, np.searchsorted(rows, negatives), -1)
            local_positives = np.searchsorted(rows, positives)
            local_indptr = indptr[a : b + 1] - indptr[a]
            if args.format == "jsonl":
                written += write_flag_jsonl(
                    local_negatives,
                    neg_scores[a:b],
                    local_indptr,
                    local_positives,
                    pos_scores[indptr[a] : indptr[b]],
                    query_texts,
                    corpus_texts,
                    f,
                )
                continue
            table = dataset_from_arrays(
                local_negatives,
                neg_scores[a:b],
                local_indptr,
                local_positives,
                pos_scores[indptr[a] : indptr[b]],
                query_texts,
                corpus_texts,
                output_format=args.format,
                include_scores=args.include_scores,
            ).data.table
            written += table.num_rows
            writer = _write_table(table, f, Path(args.out).suffix.lower(), writer)
        if writer is not None:
            writer.close()
    return written


def add_parser(command: Command) -> None:
    export = command(
        "export",
        "convert a mining result into training files",
        "Convert a mining result directory (negmine mine --out) into a training file, "
        "atomically. triplet, n-tuple, labeled-pair and labeled-list are the layouts of "
        "sentence-transformers' mine_hard_negatives (rows of texts), written as JSON lines "
        "or Parquet by the extension of --out (.jsonl / .parquet). jsonl is FlagEmbedding's "
        'training format, one line per query with a positive and a negative: {"query", '
        '"pos", "neg", "pos_scores", "neg_scores"}. parquet is negmine\'s own table of row '
        "numbers (or ids) and scores, one row per negative (--layout long) or per query "
        "(wide).",
    )
    export.add_argument("directory", help="a mining result (the --out of negmine mine)")
    export.add_argument(
        "--format", required=True, choices=EXPORT_FORMATS, help="what to write (see above)"
    )
    export.add_argument(
        "--out",
        required=True,
        help="the file to write: .jsonl or .parquet for the sentence-transformers formats, "
        ".jsonl for jsonl, .parquet for parquet",
    )
    export.add_argument(
        "--query-texts",
        default=None,
        help="the queries' texts, one per row, for every format but parquet (default: the "
        "file the result was mined from, recorded in its texts.json)",
    )
    export.add_argument(
        "--corpus-texts", default=None, help="the corpus' texts, one per row, as --query-texts"
    )
    add_text_field(export)
    export.add_argument(
        "--query-ids",
        default=None,
        help="with --format parquet: query ids, one per line in row order, written instead "
        "of row numbers",
    )
    export.add_argument(
        "--corpus-ids", default=None, help="with --format parquet: corpus ids, as --query-ids"
    )
    export.add_argument(
        "--layout",
        choices=["long", "wide"],
        default="long",
        help="with --format parquet: one row per negative (long) or per query (wide)",
    )
    export.add_argument(
        "--include-scores",
        action="store_true",
        help="sentence-transformers formats: add the scores column(s) (jsonl always has them)",
    )
    export.add_argument(
        "--score-source",
        choices=["retriever", "teacher"],
        default=None,
        help="whose scores to write (default: the teacher's for a result mined with "
        "--rescore-model, else the retriever's)",
    )
    export.add_argument(
        "--chunk-size",
        type=positive_int,
        default=4096,
        help="formats of texts: queries written at a time, and texts read at a time (the "
        "texts are streamed: memory holds a chunk's, the corpus is copied into a temporary "
        "store beside --out and read back by row)",
    )
    export.set_defaults(run=_cmd_export)
