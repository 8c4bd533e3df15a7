"""Batch-sampler throughput: negmine's plans and ``ClusterBatchSampler`` vs torch's samplers.

    python benches/sampler_compare.py                 # 1M rows, batch 64, 4096 topics
    python benches/sampler_compare.py --write-readme  # rewrites <!-- sampler-bench:... -->

One epoch = build the epoch's plan (for negmine) and iterate every batch as the DataLoader
does (a ``list[int]`` per batch). Every method runs in the same process on the same data;
each time is the best of ``--repeats`` epochs (a new epoch each time). A training step of a
dense retriever takes milliseconds, so a sampler at ~1M indices/s (64 rows in ~60 us) is
never its bottleneck.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Sized

import numpy as np

from negmine import batches
from readme_block import publish


def skewed_clusters(n: int, n_clusters: int, seed: int) -> np.ndarray:
    """Cluster ids with log-normal sizes, like k-means topics of real queries."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, n_clusters)
    return rng.choice(n_clusters, size=n, p=weights / weights.sum()).astype(np.int64)


def shared_positives(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One or two positive ids per row; about 20% of rows share a positive with another row."""
    rng = np.random.default_rng([seed, 1])
    counts = rng.integers(1, 3, n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    ids = rng.integers(0, 4 * n, indptr[-1])
    shared = rng.random(indptr[-1]) < 0.1
    ids[shared] = rng.integers(0, n // 10, int(shared.sum()))
    return indptr, ids


def epoch_seconds(make_epoch: Callable[[int], Iterable[Sized]], repeats: int) -> float:
    """Best time of draining one epoch's batches (list[int] each)."""
    best = float("inf")
    for epoch in range(repeats):
        start = time.perf_counter()
        total = 0
        for batch in make_epoch(epoch):
            total += len(batch)
        best = min(best, time.perf_counter() - start)
        if total == 0:
            raise RuntimeError("an epoch yielded no rows")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=4096)
    parser.add_argument("--world-size", type=int, default=8, help="for the DDP rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite its block in docs/performance.md"
    )
    args = parser.parse_args()
    import torch
    from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler

    from negmine.torch import ClusterBatchSampler

    n, bs, ws = args.rows, args.batch_size, args.world_size
    clusters = skewed_clusters(n, args.clusters, 0)
    keys = batches.conflict_keys(shared_positives(n, 0))

    def plan_only(plan: Callable[[int], batches.BatchPlan]) -> Callable[[int], list[Sized]]:
        def run(epoch: int) -> list[Sized]:
            return [plan(epoch).indices]  # built, not iterated

        return run

    def sampler(**kw: object) -> Callable[[int], Iterable[list[int]]]:
        s = ClusterBatchSampler(clusters, bs, seed=0, **kw)  # type: ignore[arg-type]

        def run(epoch: int) -> Iterable[list[int]]:
            s.set_epoch(epoch)
            return s

        return run

    def torch_random(epoch: int) -> Iterable[list[int]]:
        g = torch.Generator().manual_seed(epoch)
        return BatchSampler(RandomSampler(range(n), generator=g), bs, drop_last=False)

    def torch_distributed(epoch: int) -> Iterable[list[int]]:
        d = DistributedSampler(range(n), num_replicas=ws, rank=ws // 2, seed=0)
        d.set_epoch(epoch)
        return BatchSampler(d, bs, drop_last=False)

    methods: list[tuple[str, Callable[[int], Iterable[Sized]], int]] = [
        (
            "plan only: batches.topic",
            plan_only(lambda e: batches.topic(clusters, bs, seed=0, epoch=e)),
            n,
        ),
        (
            "plan only: batches.ngame",
            plan_only(lambda e: batches.ngame(clusters, bs, seed=0, epoch=e)),
            n,
        ),
        (
            "plan only: batches.topic + conflicts",
            plan_only(lambda e: batches.topic(clusters, bs, seed=0, epoch=e, conflicts=keys)),
            n,
        ),
        ("ClusterBatchSampler topic", sampler(plan="topic"), n),
        ("ClusterBatchSampler ngame", sampler(plan="ngame"), n),
        ("ClusterBatchSampler topic + conflicts", sampler(plan="topic", conflicts=keys), n),
        ("torch BatchSampler(RandomSampler)", torch_random, n),
        (
            f"ClusterBatchSampler topic, rank of {ws}",
            sampler(plan="topic", num_replicas=ws, rank=ws // 2),
            -(-n // ws),
        ),
        (f"torch BatchSampler(DistributedSampler), rank of {ws}", torch_distributed, -(-n // ws)),
    ]
    lines = [
        f"{n:,} rows, batch {bs}, {args.clusters} topics (log-normal sizes), best of "
        f"{args.repeats} epochs; torch {torch.__version__}",
        "",
        "| sampler | s / epoch | rows / epoch | M indices / s | vs torch |",
        "|---|---:|---:|---:|---:|",
    ]
    print(lines[0], flush=True)
    reference = {}
    timed = []
    for name, run, rows in methods:
        seconds = epoch_seconds(run, args.repeats)
        timed.append((name, seconds, rows))
        if name.startswith("torch"):
            reference[rows] = rows / seconds
    for name, seconds, rows in timed:
        rate = rows / seconds
        # Building a plan is not a sampler epoch: no ratio for those rows.
        vs = "" if name.startswith("plan") else f"{rate / reference[rows]:.2f}x"
        line = f"| {name} | {seconds:.3f} | {rows:,} | {rate / 1e6:.1f} | {vs} |"
        lines.append(line)
        print(line, flush=True)
    publish("sampler-bench", lines, args.write_readme)


if __name__ == "__main__":
    main()
