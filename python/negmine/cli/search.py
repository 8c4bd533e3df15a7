"""`negmine search`: exact top-k of .npy queries against a .npy corpus, into an .npz."""

from __future__ import annotations

import argparse
import time

import numpy as np

from negmine import _core
from negmine._atomic import atomic_write
from negmine._paths import regular_file
from negmine.cli.common import Command, add_backend_options, backend_settings, positive_int, say


def _cmd_search(args: argparse.Namespace) -> int:
    from negmine.search import search

    queries = _core.open_embeddings(regular_file(args.queries, "queries file"))
    corpus = _core.open_embeddings(regular_file(args.corpus, "corpus file"))
    start = time.perf_counter()
    scores, ids = search(
        queries,
        corpus,
        args.k,
        metric=args.metric,
        threads=args.threads,
        progress=not args.quiet,
        backend=args.backend,
        **backend_settings(args),
    )
    elapsed = time.perf_counter() - start
    with atomic_write(args.out) as f:
        np.savez(f, scores=scores, ids=ids)
    say(args, f"top-{args.k} of {ids.shape[0]:,} queries in {elapsed:.2f} s -> {args.out}")
    return 0


def add_parser(command: Command) -> None:
    search = command(
        "search",
        "exact top-k of .npy queries against a .npy corpus",
        "Exact top-k of .npy queries against a .npy corpus, written to an .npz. --backend torch "
        "takes candidates from a torch matmul with a proven error bound and rescores them: the "
        "same result, bit for bit.",
    )
    search.add_argument("--queries", required=True, help="Q x d .npy file (float32/float16)")
    search.add_argument("--corpus", required=True, help="N x d .npy file (float32/float16)")
    search.add_argument("--k", type=positive_int, required=True, help="neighbours per query")
    search.add_argument(
        "--metric", choices=["dot", "cosine"], default="dot", help="similarity of two rows"
    )
    search.add_argument(
        "--threads", type=positive_int, default=None, help="cores to use (default: all)"
    )
    search.add_argument("--out", required=True, help="output .npz with 'scores' and 'ids'")
    add_backend_options(search, for_mine=False)
    search.set_defaults(run=_cmd_search)
