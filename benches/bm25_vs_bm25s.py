"""negmine.Bm25Index against bm25s on the same corpus (100k Zipf-like documents of 60 tokens,
2,000 queries of 6), in one run: build time and peak memory, then search time (k = 10, 100,
best of 3) and peak memory from each library's saved index, both memory-mapped
(``Bm25Index.open``, ``bm25s.BM25.load(mmap=True)``). Every step runs in its own process, so
its peak RSS (``ru_maxrss`` after the step minus before it, the inputs already made) is its
own. Ratios only. Needs bm25s.

    PYTHONPATH=python python benches/bm25_vs_bm25s.py [--docs N] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

QUERIES = 2000
KS = (10, 100)


def corpus(n_docs: int) -> list[str]:
    rng = np.random.default_rng(0)
    vocab = np.array([f"t{i}" for i in range(30000)])
    w = 1.0 / np.arange(1, len(vocab) + 1)
    w /= w.sum()
    words = rng.choice(vocab, size=(n_docs, 60), p=w)
    return [" ".join(row) for row in words]


def queries() -> list[str]:
    rng = np.random.default_rng(1)
    vocab = np.array([f"t{i}" for i in range(30000)])
    w = 1.0 / np.arange(1, len(vocab) + 1)
    w /= w.sum()
    return [" ".join(row) for row in rng.choice(vocab, size=(QUERIES, 6), p=w)]


def tok(text: str) -> list[str]:
    """negmine's tokens on this ASCII corpus (runs of letters and digits, lowercased)."""
    return re.findall(r"[a-z0-9]+", text.lower())


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def best(run, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def step(name: str, where: Path, n_docs: int, threads: int) -> dict[str, object]:
    import bm25s

    from negmine import Bm25Index

    out: dict[str, object] = {}
    if name == "build-negmine":
        texts = corpus(n_docs)
        base = peak()
        t0 = time.perf_counter()
        index = Bm25Index(texts, threads=threads)
        out["time"] = time.perf_counter() - t0
        out["rss"] = peak() - base
        index.save(where / "negmine.idx")
        out["disk"] = (where / "negmine.idx").stat().st_size
    elif name == "build-bm25s":
        texts = corpus(n_docs)
        base = peak()
        t0 = time.perf_counter()
        tokens = [tok(t) for t in texts]
        out["tokenize"] = time.perf_counter() - t0
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        out["time"] = time.perf_counter() - t0
        out["rss"] = peak() - base
        retriever.save(where / "bm25s")
        out["disk"] = sum(f.stat().st_size for f in (where / "bm25s").iterdir())
        out["backend"] = retriever.backend
    elif name == "search-negmine":
        texts = queries()
        base = peak()
        index = Bm25Index.open(where / "negmine.idx")
        for k in KS:
            out[f"k{k}"] = best(lambda k=k: index.search(texts, k, threads=threads))
        out["rss"] = peak() - base
        # Not timed: the pruned result is the exhaustive one.
        sample = texts[:200]
        same = all(
            (index.search(sample, k)[1] == index.search(sample, k, exhaustive=True)[1]).all()
            for k in KS
        )
        out["exact"] = bool(same)
    elif name == "search-bm25s":
        tokens = [tok(t) for t in queries()]
        base = peak()
        retriever = bm25s.BM25.load(where / "bm25s", mmap=True)
        for k in KS:
            out[f"k{k}"] = best(
                lambda k=k: retriever.retrieve(tokens, k=k, show_progress=False, n_threads=threads)
            )
        out["rss"] = peak() - base
    return out


def mib(n: object) -> str:
    return f"{float(n) / 2**20:,.0f} MiB"  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--where", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(args.step, Path(args.where), args.docs, args.threads)))
        return
    with tempfile.TemporaryDirectory() as where:
        res = {}
        for name in ("build-negmine", "build-bm25s", "search-negmine", "search-bm25s"):
            argv = [sys.executable, __file__, "--step", name, "--where", where]
            argv += ["--docs", str(args.docs), "--threads", str(args.threads)]
            proc = subprocess.run(argv, capture_output=True, text=True, check=True)
            res[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    nb, bb = res["build-negmine"], res["build-bm25s"]
    ns, bs = res["search-negmine"], res["search-bm25s"]
    print(f"{args.docs:,} documents, {QUERIES:,} queries, {args.threads} threads")
    print(
        f"build: negmine {nb['time']:.2f} s (tokenising included), bm25s {bb['time']:.2f} s "
        f"(of which tokenising {bb['tokenize']:.2f} s; backend {bb['backend']}): "
        f"bm25s / negmine {bb['time'] / nb['time']:.1f}x"
    )
    print(
        f"build peak RSS: negmine {mib(nb['rss'])}, bm25s {mib(bb['rss'])}: "
        f"bm25s / negmine {bb['rss'] / max(nb['rss'], 1):.1f}x; on disk: negmine "
        f"{mib(nb['disk'])}, bm25s {mib(bb['disk'])}"
    )
    for k in KS:
        print(
            f"search k={k}: negmine {ns[f'k{k}']:.3f} s, bm25s {bs[f'k{k}']:.3f} s: "
            f"bm25s / negmine {bs[f'k{k}'] / ns[f'k{k}']:.1f}x"
        )
    print(
        f"search peak RSS (index opened mapped, searched at both k): negmine {mib(ns['rss'])}, "
        f"bm25s {mib(bs['rss'])}: bm25s / negmine {bs['rss'] / max(ns['rss'], 1):.1f}x; "
        f"negmine's pruned ids equal its exhaustive ones: {ns['exact']}"
    )


if __name__ == "__main__":
    main()
