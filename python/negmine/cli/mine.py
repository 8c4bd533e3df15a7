"""`negmine mine`: hard negatives for queries against a corpus, checkpointed into a
directory; the queries and corpus given as embeddings or as texts embedded on the way, mined
in this process or on Ray, optionally judged by a cross-encoder teacher."""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from negmine import _core, _ranks
from negmine._atomic import atomic_write
from negmine._numbers import counted
from negmine._paths import regular_file
from negmine.cli.common import (
    Command,
    UsageError,
    add_backend_options,
    backend_settings,
    default_cache_dir,
    hide_library_bars,
    load_optional_ids,
    positive_int,
    say,
)
from negmine.cli.embed import add_embedding_options, embed_with_options
from negmine.errors import InvalidArgumentError, NegmineError

if TYPE_CHECKING:
    from negmine.texts import TextSource


def _shards(text: str) -> int | list[int]:
    """``--shards``: a count, or comma-separated corpus row boundaries ``0,b1,...,N``."""
    try:
        if "," not in text:
            return positive_int(text)
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or boundaries like 0,1000,5000, got {text}"
        ) from None


def _check_mine_usage(args: argparse.Namespace) -> None:
    """The option combinations ``mine`` refuses before reading anything."""
    if args.ray is None and (args.shards is not None or args.shard_by != "query"):
        raise UsageError("--shard-by and --shards need --ray")
    if args.ray is not None and args.backend == "torch":
        raise UsageError("--backend torch runs in this process, not with --ray")
    if args.ray is not None and args.backend != "exact" and args.shard_by == "corpus":
        raise UsageError(f"--backend {args.backend} with --ray needs --shard-by query")
    from negmine import sources

    if sources.reads_texts(args.backend) and (
        args.query_texts is None or args.corpus_texts is None
    ):
        raise UsageError(
            f"--backend {args.backend} needs --query-texts and --corpus-texts (its BM25 index "
            "is built over the corpus texts and searched with the query texts)"
        )
    if args.rescore_model is not None and args.ray is not None:
        raise UsageError("--rescore-model runs in this process, not with --ray")
    if args.rescore_model is None and args.rescore_percentile is not None:
        raise UsageError("--rescore-percentile goes with --rescore-model")
    if args.rescore_model is not None and (args.query_texts is None or args.corpus_texts is None):
        raise UsageError(
            "--rescore-model needs --query-texts and --corpus-texts (the texts it scores)"
        )
    embedded = False
    for side, embeddings, texts, prompt in (
        ("query", args.queries, args.query_texts, args.query_prompt),
        ("corpus", args.corpus, args.corpus_texts, args.corpus_prompt),
    ):
        option = "--queries" if side == "query" else "--corpus"
        pooled = args.backend == "maxsim" and getattr(args, f"{side}_tokens") is not None
        if embeddings is None and texts is None and not pooled:
            raise UsageError(
                f"give {option} (a .npy of embeddings) or --{side}-texts (embedded with --model)"
            )
        if embeddings is not None and prompt is not None:
            raise UsageError(f"--{side}-prompt goes with --{side}-texts, without {option}")
        embedded = embedded or embeddings is None
    if not embedded and args.model is not None:
        raise UsageError("--model embeds texts: it goes with --query-texts or --corpus-texts")


def _add_mining_options(parser: argparse.ArgumentParser) -> None:
    """A flag per mining option, read from the core's declaration of them (``--name`` with
    dashes; type, default, choices and help as declared); :func:`_mining_options` checks
    them."""
    from negmine.mine import OPTIONS

    for name, spec in OPTIONS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=_FLAG_TYPES[spec["type"]],
            choices=list(spec["choices"]) or None,
            default=spec["default"],
            help=spec["help"].replace("%", "%%"),
        )


_FLAG_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _mining_options(args: argparse.Namespace) -> Any:
    from negmine.mine import OPTIONS, MiningOptions

    try:
        return MiningOptions(**{name: getattr(args, name) for name in OPTIONS})
    except NegmineError as e:  # an option's value, checked as the options are built
        raise UsageError(str(e)) from None


def _row_qrels(args: argparse.Namespace, n_queries: int, n_corpus: int, cache: Path) -> str:
    """``--positives`` with row indices: the file itself, or (with ``--query-ids`` /
    ``--corpus-ids``) its pairs by row written to ``cache/qrels-<sha256>.tsv``, named by
    content so that a rerun finds the same file and resumes."""
    if args.query_ids is None and args.corpus_ids is None:
        return str(args.positives)
    from negmine.qrels import load_qrels

    query_ids = load_optional_ids(args.query_ids, "query", n_queries)
    corpus_ids = load_optional_ids(args.corpus_ids, "corpus", n_corpus)
    csr = load_qrels(args.positives, query_ids, corpus_ids, n_queries=n_queries, n_corpus=n_corpus)
    indptr, indices = np.asarray(csr.indptr), np.asarray(csr.indices)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    text = "".join(f"{q}\t{c}\n" for q, c in zip(rows.tolist(), indices.tolist()))
    data = text.encode()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"qrels-{hashlib.sha256(data).hexdigest()}.tsv"
    if not path.exists():
        with atomic_write(path) as f:
            f.write(data)
    return str(path)


def _cmd_mine(args: argparse.Namespace) -> int:
    from negmine.checkpoint import mine_to_directory
    from negmine.texts import open_texts

    _check_mine_usage(args)
    options = _mining_options(args)
    cache = Path(args.cache_dir) if args.cache_dir is not None else default_cache_dir()
    # Streamed: read a chunk at a time (to embed, count, group duplicates), never held.
    query_texts: TextSource | None = None
    corpus_texts: TextSource | None = None
    if args.query_texts is not None:
        query_texts = open_texts(args.query_texts, args.text_field)
    if args.corpus_texts is not None:
        corpus_texts = open_texts(args.corpus_texts, args.text_field)
    # Under torchrun every process encodes its share of the texts; rank 0 alone mines.
    with _ranks.ranks(None) as ranks:
        embedded = {
            side: embed_with_options(args, texts, cache, prompt)
            for side, given, texts, prompt in (
                ("queries", args.queries, query_texts, args.query_prompt),
                ("corpus", args.corpus, corpus_texts, args.corpus_prompt),
            )
            if given is None and texts is not None
        }
    if ranks.rank > 0:
        return 0
    inputs, shapes = _inputs(args, query_texts, corpus_texts, embedded, cache)
    positives = _row_qrels(args, shapes["queries"][0], shapes["corpus"][0], cache)
    duplicates = None if args.no_duplicates else "auto"
    teacher, identity = _teacher(args)
    record = _texts_record(args)
    start = time.perf_counter()
    if args.ray is not None:
        from negmine import distributed

        result = distributed.mine(
            inputs["queries"],
            inputs["corpus"],
            positives,
            out=args.out,
            ray_address=args.ray,
            shard_by=args.shard_by,
            shards=args.shards,
            duplicates=duplicates,
            corpus_texts=corpus_texts,
            query_texts=query_texts,
            texts_record=record,
            chunk_queries=args.chunk_queries,
            threads=args.threads,
            progress=not args.quiet,
            backend=args.backend,
            **options.to_dict(),
            **backend_settings(args),
        )
    else:
        result = mine_to_directory(
            inputs["queries"],
            inputs["corpus"],
            positives,
            args.out,
            options,
            duplicates=duplicates,
            corpus_texts=corpus_texts,
            query_texts=query_texts,
            chunk_queries=args.chunk_queries,
            threads=args.threads,
            progress=not args.quiet,
            teacher=teacher,
            teacher_identity=identity,
            texts_record=record,
            backend=args.backend,
            backend_options=backend_settings(args),
        )
    say(args, result.report, f"done in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


def _inputs(
    args: argparse.Namespace,
    query_texts: TextSource | None,
    corpus_texts: TextSource | None,
    embedded: dict[str, _core.Embeddings],
    cache: Path,
) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """The embeddings files of the queries and the corpus (given, embedded from their texts
    in ``embedded``, or pooled from ``--query-tokens`` / ``--corpus-tokens``) and their
    shapes; texts given beside embeddings are checked to have one per row."""
    from negmine.texts import scan_texts

    inputs: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for side, given, texts, tokens in (
        ("queries", args.queries, query_texts, args.query_tokens),
        ("corpus", args.corpus, corpus_texts, args.corpus_tokens),
    ):
        if given is None and texts is None:
            embedded[side] = _pooled(tokens, cache, args.threads)
    for side, given, texts, what in (
        ("queries", args.queries, query_texts, "queries file"),
        ("corpus", args.corpus, corpus_texts, "corpus file"),
    ):
        if given is None:
            embeddings = embedded[side]
            inputs[side] = str(embeddings.path)
        else:
            embeddings = _core.open_embeddings(regular_file(given, what))
            inputs[side] = str(given)
        shapes[side] = embeddings.shape
        # Embedded texts have one row each; texts beside embeddings are counted.
        n_texts = None if texts is None or given is None else scan_texts(texts).count
        if n_texts is not None and n_texts != embeddings.shape[0]:
            option = "--query-texts" if side == "queries" else "--corpus-texts"
            raise InvalidArgumentError(
                f"{option} holds {counted(n_texts, 'text')} for "
                f"{counted(embeddings.shape[0], 'row')}"
            )
    return inputs, shapes


def _pooled(tokens: str, cache: Path, threads: int | None) -> _core.Embeddings:
    """The pooled (mean, normalised) vectors of the multi-vector directory ``tokens``: the
    embeddings ``--backend maxsim`` takes its candidates from, cached by content."""
    from negmine._digest import array_digest
    from negmine.multivector import open_multi_vectors
    from negmine.store import save_embeddings

    vectors = open_multi_vectors(tokens)
    key = array_digest(vectors.offsets) + array_digest(np.asarray(vectors.tokens))
    path = cache / f"pooled-{hashlib.sha256(key.encode()).hexdigest()}.npy"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        save_embeddings(path, vectors.pooled(threads=threads))
    return _core.open_embeddings(path)


def _texts_record(args: argparse.Namespace) -> dict[str, Any] | None:
    """Which text files the result is mined from (absolute path and content digest of each),
    saved with it as ``texts.json`` so that ``export`` finds them without options; None
    without texts."""
    from negmine._digest import file_digest

    field = {} if args.text_field == "text" else {"field": args.text_field}
    recorded = {
        key: {"path": str(Path(path).absolute()), **field, **file_digest(path, what)}
        for key, path, what in (
            ("query_texts", args.query_texts, "query texts"),
            ("corpus_texts", args.corpus_texts, "corpus texts"),
        )
        if path is not None
    }
    return recorded or None


def _teacher(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """The cross-encoder teacher of ``--rescore-model`` over the texts (already checked to
    have one per row), and what names it in the checkpoint (model, texts' content digests,
    percentile); ``(None, None)`` without ``--rescore-model``."""
    if args.rescore_model is None:
        return None, None
    from negmine._digest import file_digest
    from negmine.mine import make_teacher
    from negmine.teachers import cross_encoder
    from negmine.texts import load_texts

    # The teacher scores any (query, passage) pair it is asked about: it holds the texts.
    query_texts = load_texts(args.query_texts, args.text_field)
    corpus_texts = load_texts(args.corpus_texts, args.text_field)

    if args.quiet:
        hide_library_bars()
    score = cross_encoder(
        args.rescore_model, query_texts, corpus_texts, batch_size=args.rescore_batch_size
    )
    teacher = make_teacher(score, args.rescore_percentile, args.rescore_batch_size)
    identity = {
        "model": str(args.rescore_model),
        "percentile": args.rescore_percentile,
        "query_texts": file_digest(Path(args.query_texts), "query texts"),
        "corpus_texts": file_digest(Path(args.corpus_texts), "corpus texts"),
    }
    return teacher, identity


# ------------------------------------------------------------------------------- the parser


def add_parser(command: Command) -> None:
    mine = command(
        "mine",
        "mine hard negatives (checkpointed: an interrupted run resumes)",
        "Mine hard negatives for queries against a corpus with qrels positives. Queries and "
        "corpus are .npy embeddings (--queries, --corpus) or texts (--query-texts, "
        "--corpus-texts) embedded with --model and cached in --cache-dir, so a rerun or "
        "resume does not embed again. Writes one .npy per array, report.json and "
        "manifest.json into --out (and texts.json: which text files it was mined from); rerun "
        "the same command after an interruption to resume. One run at a time per --out. "
        "negmine export turns the result into training files.",
    )
    mine.add_argument(
        "--queries",
        default=None,
        help="Q x d .npy file (float32/float16) (default: embed --query-texts)",
    )
    mine.add_argument(
        "--corpus",
        default=None,
        help="N x d .npy file (float32/float16) (default: embed --corpus-texts)",
    )
    mine.add_argument(
        "--positives",
        required=True,
        help="qrels TSV: query corpus [relevance] per line, optional header; row numbers, "
        "or ids with --query-ids / --corpus-ids (BEIR's query-id corpus-id score)",
    )
    mine.add_argument(
        "--query-ids",
        default=None,
        help="the queries' ids for --positives, one per line in row order (default: "
        "--positives holds query row numbers)",
    )
    mine.add_argument(
        "--corpus-ids",
        default=None,
        help="the corpus' ids for --positives, as --query-ids (default: corpus row numbers)",
    )
    mine.add_argument(
        "--out",
        required=True,
        help="output directory: new, empty or a previous result (replaced as a whole); "
        "lock and checkpoint go beside it, in .<name>.partial",
    )
    _add_mining_options(mine)
    mine.add_argument(
        "--no-duplicates",
        action="store_true",
        help="do not group identical corpus rows (a copy of a positive may then be mined)",
    )
    mine.add_argument(
        "--chunk-queries",
        type=positive_int,
        default=8192,
        help="queries per checkpointed chunk",
    )
    _add_process_options(mine)
    _add_text_options(mine)
    _add_rescore_options(mine)
    add_backend_options(mine, for_mine=True)
    mine.set_defaults(run=_cmd_mine)


def _add_process_options(mine: argparse.ArgumentParser) -> None:
    """``mine``'s threads, and the Ray cluster it may run on."""
    mine.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="cores per process (with --ray: per actor, and the driver's) (default: all)",
    )
    mine.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="mine on a Ray cluster (pip install 'negmine[ray]'): auto, ray://host:10001, "
        "host:6379, or local (a new local cluster); same output and resume as without",
    )
    mine.add_argument(
        "--shard-by",
        choices=["query", "corpus"],
        default="query",
        help="with --ray: actors mine chunks of queries against the whole corpus (query), or "
        "each searches a range of corpus rows and the driver merges (corpus)",
    )
    mine.add_argument(
        "--shards",
        type=_shards,
        default=None,
        help="with --ray: number of actors / corpus ranges (default: one per node), or "
        "corpus row boundaries 0,b1,...,N",
    )


def _add_text_options(mine: argparse.ArgumentParser) -> None:
    """``mine``'s texts: what it embeds (with the options of ``embed``), scores and records."""
    mine.add_argument(
        "--query-texts",
        default=None,
        help="the queries' texts, one per row: one per line, or a .jsonl of strings or "
        '{"text": ...} objects; embedded with --model when --queries is not given, scored '
        "by --rescore-model, and recorded (texts.json) for negmine export",
    )
    mine.add_argument("--corpus-texts", default=None, help="the corpus' texts, as --query-texts")
    mine.add_argument(
        "--query-prompt",
        default=None,
        help='text put before each query when embedding it, e.g. "query: " (default: none)',
    )
    mine.add_argument(
        "--corpus-prompt",
        default=None,
        help='text put before each corpus text when embedding it, e.g. "passage: " (default: none)',
    )
    add_embedding_options(mine, for_mine=True)


def _add_rescore_options(mine: argparse.ArgumentParser) -> None:
    """``mine``'s cross-encoder teacher."""
    mine.add_argument(
        "--rescore-model",
        metavar="MODEL",
        default=None,
        help="a sentence-transformers CrossEncoder (local path or name) that judges the "
        "candidates: the score filters (--max-score, --min-score, the margins) then read its "
        "scores (needs --query-texts and --corpus-texts)",
    )
    mine.add_argument(
        "--rescore-percentile",
        type=float,
        default=None,
        help="with --rescore-model: also drop candidates the teacher scores above this "
        "percentile (0-100) of its positive scores (default: off)",
    )
    mine.add_argument(
        "--rescore-batch-size",
        type=positive_int,
        default=64,
        help="with --rescore-model: pairs per forward pass",
    )
