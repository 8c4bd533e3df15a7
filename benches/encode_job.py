"""Encoding throughput: negmine.embed_texts (streamed, chunked, checkpointed, written into a
pre-sized .npy) vs sentence-transformers' model.encode on the same texts, model, batch size and
threads, alternating the two so that a noisy machine affects both alike; also the rows agree.

    PYTHONPATH=python python benches/encode_job.py --texts 4000 --repeats 2

The texts are sentences of 5 to 60 words (the spread of lengths is what sorting by length
helps), streamed from a function; the model is the offline all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from negmine import embed_texts
from realtext import load_model

WORDS = [
    "the",
    "a",
    "negative",
    "positive",
    "passage",
    "query",
    "retrieval",
    "model",
    "dense",
    "sparse",
    "index",
    "corpus",
    "token",
    "embedding",
    "cosine",
    "margin",
    "teacher",
    "student",
    "batch",
    "epoch",
    "loss",
    "gradient",
    "mining",
    "hard",
    "false",
]


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(5, 60))) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torch

    model = load_model(args.device)
    texts = sentences(args.texts)
    model.encode(texts[:128], batch_size=args.batch_size)  # warm-up
    st_times, job_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        want = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)
        st_times.append(time.perf_counter() - start)
        cache = Path(tempfile.mkdtemp(prefix="encode-job-"))
        try:
            start = time.perf_counter()
            got = embed_texts(
                lambda: iter(texts),
                model,
                cache_dir=cache,
                batch_size=args.batch_size,
                chunk_size=args.chunk_size,
                progress=False,
            )
            job_times.append(time.perf_counter() - start)
            diff = float(np.abs(np.asarray(got) - want).max())
        finally:
            shutil.rmtree(cache)
    n = len(texts)
    print(
        f"{n} texts, batch {args.batch_size}, chunk {args.chunk_size}, {args.device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"model.encode      best {n / min(st_times):8.1f} texts/s  (runs: {st_times})")
    print(f"negmine embed job best {n / min(job_times):8.1f} texts/s  (runs: {job_times})")
    print(f"max |difference| of the rows: {diff:.2e}")


if __name__ == "__main__":
    main()
