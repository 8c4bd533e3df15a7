"""The `negmine` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from negmine import _core
from negmine._atomic import atomic_write
from negmine._paths import regular_file
from negmine.errors import InvalidArgumentError, NegmineError


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _shards(text: str) -> int | list[int]:
    """``--shards``: a count, or comma-separated corpus row boundaries ``0,b1,...,N``."""
    try:
        if "," not in text:
            return _positive_int(text)
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or boundaries like 0,1000,5000, got {text}"
        ) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from negmine.demo import DemoConfig, run

    run(
        DemoConfig(
            corpus_size=args.corpus_size,
            queries=args.queries,
            dim=args.dim,
            k=args.k,
            seed=args.seed,
            threads=args.threads,
            source=args.source,
            model=args.model,
            cache_dir=args.cache_dir,
        )
    )
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from negmine.search import search

    queries = _core.open_embeddings(regular_file(args.queries, "queries file"))
    corpus = _core.open_embeddings(regular_file(args.corpus, "corpus file"))
    start = time.perf_counter()
    scores, ids = search(
        queries, corpus, args.k, metric=args.metric, threads=args.threads, progress=True
    )
    elapsed = time.perf_counter() - start
    with atomic_write(args.out) as f:
        np.savez(f, scores=scores, ids=ids)
    print(f"top-{args.k} of {ids.shape[0]:,} queries in {elapsed:.2f} s -> {args.out}")
    return 0


def _cmd_mine(args: argparse.Namespace) -> int:
    from negmine.checkpoint import mine_to_directory
    from negmine.mine import MiningOptions

    options = MiningOptions(
        num_negatives=args.num_negatives,
        metric=args.metric,
        range_min=args.range_min,
        range_max=args.range_max,
        max_score=args.max_score,
        min_score=args.min_score,
        absolute_margin=args.absolute_margin,
        relative_margin=args.relative_margin,
        dup_threshold=args.dup_threshold,
        query_dup_threshold=args.query_dup_threshold,
        sampling_strategy=args.sampling_strategy,
        simans_a=args.simans_a,
        simans_b=args.simans_b,
        seed=args.seed,
    )
    if args.ray is None and (args.shards is not None or args.shard_by != "query"):
        print("negmine: error: --shard-by and --shards need --ray", file=sys.stderr)
        return 2
    duplicates = None if args.no_duplicates else "auto"
    teacher, identity = _teacher(args)
    if teacher is not None and args.ray is not None:
        print(
            "negmine: error: --rescore-model runs in this process, not with --ray", file=sys.stderr
        )
        return 2
    start = time.perf_counter()
    if args.ray is not None:
        from negmine import distributed

        result = distributed.mine(
            args.queries,
            args.corpus,
            args.positives,
            out=args.out,
            ray_address=args.ray,
            shard_by=args.shard_by,
            shards=args.shards,
            duplicates=duplicates,
            chunk_queries=args.chunk_queries,
            threads=args.threads,
            progress=True,
            **options.to_dict(),
        )
    else:
        result = mine_to_directory(
            args.queries,
            args.corpus,
            args.positives,
            args.out,
            options,
            duplicates=duplicates,
            chunk_queries=args.chunk_queries,
            threads=args.threads,
            teacher=teacher,
            teacher_identity=identity,
        )
    print(result.report)
    print(f"done in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


def _teacher(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """The cross-encoder teacher of ``--rescore-model`` over the text files, and what names
    it in the checkpoint (model, texts' content digests, percentile); ``(None, None)``."""
    texts = (args.query_texts, args.corpus_texts)
    if args.rescore_model is None:
        if args.rescore_percentile is not None or any(t is not None for t in texts):
            raise InvalidArgumentError(
                "--rescore-percentile, --query-texts and --corpus-texts go with --rescore-model"
            )
        return None, None
    if any(t is None for t in texts):
        raise InvalidArgumentError(
            "--rescore-model needs --query-texts and --corpus-texts (the texts it scores)"
        )
    from negmine._digest import file_digest
    from negmine.mine import make_teacher
    from negmine.teachers import cross_encoder
    from negmine.texts import load_texts

    query_texts, corpus_texts = load_texts(args.query_texts), load_texts(args.corpus_texts)
    queries, corpus = _core.open_embeddings(args.queries), _core.open_embeddings(args.corpus)
    for what, loaded, rows in (
        ("--query-texts", query_texts, queries.shape[0]),
        ("--corpus-texts", corpus_texts, corpus.shape[0]),
    ):
        if len(loaded) != rows:
            raise InvalidArgumentError(f"{what} holds {len(loaded):,} texts for {rows:,} rows")
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


def _cmd_report(args: argparse.Namespace) -> int:
    from negmine.result import MiningResult

    result = MiningResult.load(args.directory)
    print(result.report)
    if args.plot:
        try:
            result.plot(args.plot)
        except ImportError as e:
            print(f"negmine: error: {e}", file=sys.stderr)
            return 2
        print(f"histogram -> {args.plot}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    emb = _core.open_embeddings(args.path)
    print(f"{args.path}: {emb!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="negmine", description="Fast, exact, reproducible hard-negative mining."
    )
    parser.add_argument("--version", action="version", version=f"negmine {_core.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="mine hard negatives on stdlib docstrings (offline MiniLM) or generated "
        "embeddings, filters off vs on",
    )
    demo.add_argument("--source", choices=["auto", "text", "generated"], default="auto")
    demo.add_argument("--corpus-size", type=_positive_int, default=None)
    demo.add_argument("--queries", type=_positive_int, default=None)
    demo.add_argument("--dim", type=_positive_int, default=384)
    demo.add_argument("--k", type=_positive_int, default=5, help="negatives per query")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=_positive_int, default=None)
    demo.add_argument(
        "--model", default=None, help="sentence-transformers model (default: bundled MiniLM)"
    )
    demo.add_argument(
        "--cache-dir", default=None, help="embedding cache (default ~/.cache/negmine/demo)"
    )
    demo.set_defaults(run=_cmd_demo)

    search = sub.add_parser("search", help="exact top-k of .npy queries against a .npy corpus")
    search.add_argument("--queries", required=True, help="Q x d .npy file (float32/float16)")
    search.add_argument("--corpus", required=True, help="N x d .npy file (float32/float16)")
    search.add_argument("--k", type=_positive_int, required=True)
    search.add_argument("--metric", choices=["dot", "cosine"], default="dot")
    search.add_argument("--threads", type=_positive_int, default=None)
    search.add_argument("--out", required=True, help="output .npz with 'scores' and 'ids'")
    search.set_defaults(run=_cmd_search)

    mine = sub.add_parser(
        "mine",
        help="mine hard negatives (checkpointed: an interrupted run resumes)",
        description="Mine hard negatives for .npy queries against a .npy corpus with qrels "
        "positives. Writes one .npy per array, report.json and manifest.json into --out; "
        "rerun the same command after an interruption to resume. One run at a time per --out.",
    )
    mine.add_argument("--queries", required=True, help="Q x d .npy file (float32/float16)")
    mine.add_argument("--corpus", required=True, help="N x d .npy file (float32/float16)")
    mine.add_argument(
        "--positives", required=True, help="qrels TSV: query_row corpus_row [relevance]"
    )
    mine.add_argument(
        "--out",
        required=True,
        help="output directory: new, empty or a previous result (replaced as a whole); "
        "lock and checkpoint go beside it, in .<name>.partial",
    )
    mine.add_argument("--num-negatives", type=_positive_int, default=3)
    mine.add_argument("--metric", choices=["dot", "cosine"], default="cosine")
    mine.add_argument("--range-min", type=int, default=0)
    mine.add_argument("--range-max", type=_positive_int, default=None)
    mine.add_argument("--max-score", type=float, default=None)
    mine.add_argument("--min-score", type=float, default=None)
    mine.add_argument("--absolute-margin", type=float, default=None)
    mine.add_argument("--relative-margin", type=float, default=None)
    mine.add_argument("--dup-threshold", type=float, default=None)
    mine.add_argument("--query-dup-threshold", type=float, default=None)
    mine.add_argument("--sampling-strategy", choices=["top", "random", "simans"], default="top")
    mine.add_argument("--simans-a", type=float, default=1.0)
    mine.add_argument("--simans-b", type=float, default=0.0)
    mine.add_argument("--seed", type=int, default=0)
    mine.add_argument(
        "--no-duplicates", action="store_true", help="do not group identical corpus rows"
    )
    mine.add_argument("--chunk-queries", type=_positive_int, default=8192)
    mine.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="cores per process (with --ray: per actor, and the driver's)",
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
    mine.add_argument(
        "--rescore-model",
        metavar="MODEL",
        default=None,
        help="a sentence-transformers CrossEncoder (local path or name) that judges the "
        "candidates: the score filters (--max-score, --min-score, the margins) then read its "
        "scores (needs --query-texts and --corpus-texts)",
    )
    mine.add_argument(
        "--query-texts",
        default=None,
        help="the queries' texts, one per row: one per line, or a .jsonl of strings or "
        '{"text": ...} objects',
    )
    mine.add_argument("--corpus-texts", default=None, help="the corpus' texts, as --query-texts")
    mine.add_argument(
        "--rescore-percentile",
        type=float,
        default=None,
        help="with --rescore-model: also drop candidates the teacher scores above this "
        "percentile (0-100) of its positive scores",
    )
    mine.add_argument(
        "--rescore-batch-size",
        type=_positive_int,
        default=64,
        help="with --rescore-model: pairs per forward pass (default: 64)",
    )
    mine.set_defaults(run=_cmd_mine)

    report = sub.add_parser("report", help="print the report of a mining run again")
    report.add_argument("directory")
    report.add_argument("--plot", help="also write a PNG score histogram (needs matplotlib)")
    report.set_defaults(run=_cmd_report)

    info = sub.add_parser("info", help="validate a .npy embeddings file and print its shape")
    info.add_argument("path")
    info.set_defaults(run=_cmd_info)

    from negmine import bench

    bench.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (NegmineError, OSError) as e:
        print(f"negmine: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("negmine: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
