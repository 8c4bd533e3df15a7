"""The `negmine` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from negmine import _core
from negmine._atomic import atomic_write
from negmine.errors import NegmineError


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


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
        )
    )
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from negmine.search import search

    queries = _core.open_embeddings(args.queries)
    corpus = _core.open_embeddings(args.corpus)
    start = time.perf_counter()
    scores, ids = search(
        queries, corpus, args.k, metric=args.metric, threads=args.threads, progress=True
    )
    elapsed = time.perf_counter() - start
    with atomic_write(args.out) as f:
        np.savez(f, scores=scores, ids=ids)
    print(f"top-{args.k} of {ids.shape[0]:,} queries in {elapsed:.2f} s -> {args.out}")
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

    demo = sub.add_parser("demo", help="search a generated corpus and report what was found")
    demo.add_argument("--corpus-size", type=_positive_int, default=100_000)
    demo.add_argument("--queries", type=_positive_int, default=2_000)
    demo.add_argument("--dim", type=_positive_int, default=384)
    demo.add_argument("--k", type=_positive_int, default=10)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=_positive_int, default=None)
    demo.set_defaults(run=_cmd_demo)

    search = sub.add_parser("search", help="exact top-k of .npy queries against a .npy corpus")
    search.add_argument("--queries", required=True, help="Q x d .npy file (float32/float16)")
    search.add_argument("--corpus", required=True, help="N x d .npy file (float32/float16)")
    search.add_argument("--k", type=_positive_int, required=True)
    search.add_argument("--metric", choices=["dot", "cosine"], default="dot")
    search.add_argument("--threads", type=_positive_int, default=None)
    search.add_argument("--out", required=True, help="output .npz with 'scores' and 'ids'")
    search.set_defaults(run=_cmd_search)

    info = sub.add_parser("info", help="validate a .npy embeddings file and print its shape")
    info.add_argument("path")
    info.set_defaults(run=_cmd_info)
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
