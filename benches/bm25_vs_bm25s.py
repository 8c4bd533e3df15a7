"""negmine.Bm25Index against bm25s on the same tokens (100k Zipf-like documents of 60 tokens,
2,000 queries of 6): build and search times from one run, ratios only. Needs bm25s."""

import re
import time

import bm25s
import numpy as np

from negmine import Bm25Index

rng = np.random.default_rng(0)
vocab = np.array([f"t{i}" for i in range(30000)])
w = 1.0 / np.arange(1, len(vocab) + 1)
w /= w.sum()
corpus = [" ".join(rng.choice(vocab, size=60, p=w)) for _ in range(100_000)]
queries = [" ".join(rng.choice(vocab, size=6, p=w)) for _ in range(2000)]


def tok(t):
    return re.findall(r"[a-z0-9]+", t.lower())


ct, qt = [tok(t) for t in corpus], [tok(t) for t in queries]
t0 = time.perf_counter()
idx = Bm25Index(corpus, threads=2)
t1 = time.perf_counter()
r = bm25s.BM25()
r.index(ct, show_progress=False)
t2 = time.perf_counter()
print(f"build: negmine {t1 - t0:.2f}s (incl. tokenising), bm25s {t2 - t1:.2f}s (pre-tokenised)")
for k in (10, 100):
    t0 = time.perf_counter()
    s, ids = idx.search(queries, k, threads=2)
    t1 = time.perf_counter()
    s2, ids2 = idx.search(queries, k, threads=2, exhaustive=True)
    t2 = time.perf_counter()
    res = r.retrieve(qt, k=k, show_progress=False, n_threads=2)
    t3 = time.perf_counter()
    print(
        f"k={k}: maxscore {t1 - t0:.2f}s, exhaustive {t2 - t1:.2f}s, bm25s {t3 - t2:.2f}s "
        f"(bm25s / maxscore {(t3 - t2) / (t1 - t0):.1f}x); same ids: {(ids == ids2).all()}"
    )
