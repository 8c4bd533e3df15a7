"""How hard are in-batch negatives under each batch plan? Measured on real embeddings.

    python benches/topic_quality.py                  # 20k Debian (package name, description) pairs
    python benches/topic_quality.py --write-readme   # rewrites <!-- topic-bench:... -->

Real data (see ``realtext.py``): the query is a package name, its positive the package's
one-line description, both embedded by all-MiniLM-L6-v2 (offline, cached in ``bench-data/``;
the first run encodes ~40k short texts, a few minutes on 2 cores). Without ``apt-cache`` the
Python standard library is the source (qualified name -> docstring).

For one epoch of each plan (batch 64, k-means topics on the query embeddings) it reports:

- ``query-query cos``: mean cosine of distinct query pairs in a batch (the issue's measure of
  topic quality; ``vs random`` is its ratio to random batches);
- ``in-batch negative cos``: mean cosine of a query to the *other* rows' positives, i.e. the
  scores of its in-batch negatives (what the loss sees);
- ``in-batch false negatives``: pairs of rows whose positives are the same description
  (several packages share one), which a plan without ``conflicts`` puts together and an
  InfoNCE loss would push apart; ``conflicts=`` keeps them out of every batch.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import negmine
from negmine import batches
from readme_block import publish
from realtext import DEFAULT_DATA_DIR, load_model, source_pairs


def batch_stats(
    plan: batches.BatchPlan, queries: np.ndarray, positives: np.ndarray, positive_ids: np.ndarray
) -> tuple[float, float, int]:
    """(mean query-query cos, mean query-to-other-positive cos, same-positive pairs)."""
    qq_sum = neg_sum = 0.0
    qq_n = neg_n = dup = 0
    for b in range(len(plan)):
        rows = np.asarray(plan[b])
        m = len(rows)
        if m < 2:
            continue
        q = queries[rows]
        sims = q @ q.T
        qq_sum += float(sims.sum() - np.trace(sims))
        qq_n += m * (m - 1)
        cross = q @ positives[rows].T
        neg_sum += float(cross.sum() - np.trace(cross))
        neg_n += m * (m - 1)
        ids = positive_ids[rows]
        same = ids[:, None] == ids[None, :]
        dup += int((same.sum() - m) // 2)
    return qq_sum / qq_n, neg_sum / neg_n, dup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--source", choices=("auto", "debian", "stdlib"), default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=None, help="default: pairs // 100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite its block in docs/performance.md"
    )
    args = parser.parse_args()

    source = args.source
    if source == "auto":
        source = "debian" if shutil.which("apt-cache") else "stdlib"
    pairs = source_pairs(source)
    rng = np.random.default_rng(args.seed)
    chosen = [pairs[i] for i in np.sort(rng.choice(len(pairs), min(args.pairs, len(pairs)), False))]
    names = [a for a, _ in chosen]
    descriptions = list(dict.fromkeys(p for _, p in chosen))
    index = {t: i for i, t in enumerate(descriptions)}
    positive_ids = np.array([index[p] for _, p in chosen], dtype=np.int64)
    model = load_model()
    cache = args.data_dir / "topic-quality"
    start = time.perf_counter()
    queries = np.asarray(negmine.embed_texts(names, model, cache_dir=cache, batch_size=128))
    corpus = np.asarray(negmine.embed_texts(descriptions, model, cache_dir=cache, batch_size=128))
    print(f"embeddings ready in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    positives = corpus[positive_ids]
    n, bs = len(names), args.batch_size
    n_clusters = args.clusters or max(2, n // 100)
    _, clusters, _ = negmine.kmeans(queries, n_clusters, metric="cosine", seed=args.seed)
    keys = batches.conflict_keys((np.arange(n + 1, dtype=np.int64), positive_ids))

    random_plan = batches.ngame(np.zeros(n, dtype=np.int64), bs, seed=args.seed, epoch=0)
    plans = [
        ("random batches", random_plan),
        ("topic", batches.topic(clusters, bs, seed=args.seed, epoch=0)),
        (
            "topic, 2 clusters per batch",
            batches.topic(clusters, bs, seed=args.seed, epoch=0, clusters_per_batch=2),
        ),
        ("ngame", batches.ngame(clusters, bs, seed=args.seed, epoch=0)),
        ("topic + conflicts", batches.topic(clusters, bs, seed=args.seed, epoch=0, conflicts=keys)),
    ]
    shared = int(np.sum(np.bincount(positive_ids) > 1))
    lines = [
        f"{n:,} {source} (name, description) pairs "
        f"({len(descriptions):,} distinct descriptions, {shared:,} shared by several names), "
        f"all-MiniLM-L6-v2, batch {bs}, {n_clusters} k-means topics, one epoch",
        "",
        "| plan | query-query cos | vs random | in-batch negative cos | vs random "
        "| in-batch false negatives |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    print(lines[0], flush=True)
    base = None
    for name, plan in plans:
        qq, neg, dup = batch_stats(plan, queries, positives, positive_ids)
        base = base or (qq, neg)
        line = (
            f"| {name} | {qq:.3f} | {qq / base[0]:.2f}x | {neg:.3f} | {neg / base[1]:.2f}x "
            f"| {dup:,} |"
        )
        lines.append(line)
        print(line, flush=True)
    publish("topic-bench", lines, args.write_readme)


if __name__ == "__main__":
    main()
