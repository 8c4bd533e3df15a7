"""negmine.Bm25Index against bm25s on the same corpus (100k Zipf-like documents of 60 tokens,
2,000 queries of 6), in one run: build time and peak memory, then search time (k = 10, 100,
best of 3) and peak memory from each library's saved index, both memory-mapped
(``Bm25Index.open``, ``bm25s.BM25.load(mmap=True)``). Every step runs in its own process, so
its peak RSS (``VmHWM`` after the step, reset before it, minus the RSS before it: the inputs
already made) is its own. Times are wall-clock, best of 3, and CPU time of the process (all
its threads; on a shared machine the steadier figure). Ratios only. Needs bm25s.

    PYTHONPATH=python python benches/bm25_vs_bm25s.py [--docs N] [--threads T]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
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


def status(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Resets the peak RSS (Linux: ``clear_refs`` 5) to the current RSS, which it returns: the
    inputs made before a step do not hide its own peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status("VmRSS")


def peak() -> int:
    return status("VmHWM")


def best(run, reps: int = 3) -> tuple[float, float]:
    """The best wall-clock and the best CPU time of ``reps`` runs."""
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu)


def step(name: str, where: Path, n_docs: int, threads: int) -> dict[str, object]:
    import bm25s

    from negmine import Bm25Index

    out: dict[str, object] = {}
    if name == "build-negmine":
        texts = corpus(n_docs)
        base = reset_peak()
        t0 = time.perf_counter()
        index = Bm25Index(texts, threads=threads)
        out["time"] = time.perf_counter() - t0
        out["rss"] = peak() - base
        index.save(where / "negmine.idx")
        out["disk"] = (where / "negmine.idx").stat().st_size
    elif name == "build-bm25s":
        texts = corpus(n_docs)
        base = reset_peak()
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
        base = reset_peak()
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
    elif name.startswith("search-bm25s"):
        tokens = [tok(t) for t in queries()]
        base = reset_peak()
        # bm25s at its best: its numba backend (where numba is installed) on the same index.
        override = {"backend": "numba"} if name.endswith("numba") else None
        retriever = bm25s.BM25.load(where / "bm25s", mmap=True, override_params=override)
        if override:
            retriever.retrieve(tokens[:10], k=10, show_progress=False)  # compiles
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
    steps = ["build-negmine", "build-bm25s", "search-negmine", "search-bm25s"]
    if importlib.util.find_spec("numba") is not None:
        steps.append("search-bm25s-numba")
    with tempfile.TemporaryDirectory() as where:
        res = {}
        for name in steps:
            argv = [sys.executable, __file__, "--step", name, "--where", where]
            argv += ["--docs", str(args.docs), "--threads", str(args.threads)]
            proc = subprocess.run(argv, capture_output=True, text=True, check=True)
            res[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    nb, bb = res["build-negmine"], res["build-bm25s"]
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
    ns = res["search-negmine"]
    for peer in steps[3:]:
        ps = res[peer]
        label = peer.removeprefix("search-")
        for k in KS:
            (nw, nc), (pw, pc) = ns[f"k{k}"], ps[f"k{k}"]
            print(
                f"search k={k}: negmine {nw:.3f} s wall / {nc:.3f} s CPU, {label} {pw:.3f} s / "
                f"{pc:.3f} s: {label} / negmine {pw / nw:.1f}x wall, {pc / nc:.1f}x CPU"
            )
        print(
            f"search peak RSS (index opened mapped, searched at both k): negmine "
            f"{mib(ns['rss'])}, {label} {mib(ps['rss'])}: {label} / negmine "
            f"{ps['rss'] / max(ns['rss'], 1):.1f}x"
        )
    print(f"negmine's pruned ids equal its exhaustive ones: {ns['exact']}")


if __name__ == "__main__":
    main()
