"""The overhead of mining on Ray (``negmine.distributed.mine``) against one process, on the
same machine and the same work, with the results checked equal bit for bit.

Data: Q queries x N corpus rows x d (unit Gaussian rows plus a planted positive per query,
float32, cosine), ``relative_margin=0.05``, 5 negatives, "top". Every method uses all the
machine's cores in total:

- ``one process``: ``negmine.mine`` with ``threads=cores``.
- ``ray by query``: one actor with ``threads=cores``, chunks of ``--chunk`` queries (the
  corpus, an in-memory array, put once into the object store).
- ``ray by corpus``: ``cores`` shards of ``threads=1``; the driver rescores and walks with
  ``threads=cores`` while the shards wait (one chunk at a time).

Ray's start (``ray.init``, a few seconds) is timed apart: a cluster is started once for many
runs. The bytes a by-corpus chunk moves are counted from the arrays it sends and gets back.

    python benches/ray_overhead.py                        # 4096 x 50 000 x 128
    python benches/ray_overhead.py --queries 1024 --corpus 20000   # quick
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import negmine
from negmine import distributed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=4096)
    parser.add_argument("--corpus", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=1024)
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(args.corpus, args.dim)).astype(np.float32)
    positives = rng.integers(0, args.corpus, args.queries)
    queries = (corpus[positives] + rng.normal(size=(args.queries, args.dim))).astype(np.float32)
    lists = [[int(p)] for p in positives]
    options = {"num_negatives": 5, "relative_margin": 0.05, "duplicates": None}

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, object_store_memory=512 * 1024**2)
    ray_start = time.perf_counter() - start

    def timed(label: str, run: object) -> negmine.MiningResult:
        start = time.perf_counter()
        result: negmine.MiningResult = run()  # type: ignore[operator]
        print(f"{label:<15} {time.perf_counter() - start:7.2f} s")
        return result

    print(
        f"{args.queries} queries x {args.corpus} x {args.dim}, {cores} cores, "
        f"chunks of {args.chunk}; ray.init {ray_start:.2f} s"
    )
    expected = timed(
        "one process",
        lambda: negmine.mine(queries, corpus, lists, threads=cores, **options),  # type: ignore[arg-type]
    )
    by_query = timed(
        "ray by query",
        lambda: distributed.mine(
            queries, corpus, lists, shards=1, chunk_queries=args.chunk, threads=cores, **options
        ),
    )
    by_corpus = timed(
        "ray by corpus",
        lambda: distributed.mine(
            queries,
            corpus,
            lists,
            shard_by="corpus",
            shards=cores,
            chunk_queries=args.chunk,
            threads=1,
            **options,
        ),
    )
    ray.shutdown()
    for name, got in (("by query", by_query), ("by corpus", by_corpus)):
        np.testing.assert_array_equal(expected.negative_ids, got.negative_ids, err_msg=name)
        np.testing.assert_array_equal(expected.negative_scores, got.negative_scores)
    mining = {k: v for k, v in options.items() if k != "duplicates"}
    depth = negmine._core.first_depth(negmine.MiningOptions(**mining).core)
    sent = args.chunk * args.dim * 4 * cores
    back = args.chunk * depth * 12 * cores
    print(
        f"identical results; a by-corpus chunk moves {sent / 2**20:.1f} MiB of queries out "
        f"and {back / 2**20:.1f} MiB of top-{depth} lists back (first depth)"
    )


if __name__ == "__main__":
    main()
