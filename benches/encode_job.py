"""Encoding throughput: negmine.embed_texts (streamed, chunked, checkpointed, written into a
pre-sized .npy) vs sentence-transformers' model.encode on the same texts, model, batch size and
threads, alternating the two so that a noisy machine affects both alike; also the rows agree.

    PYTHONPATH=python python benches/encode_job.py --texts 4000 --repeats 2

With ``--processes N`` (N > 1) it measures the job shared by N processes instead: the same
texts encoded by one process with 1 thread, by one process with N threads, and under torchrun
by N processes of 1 thread each (as torchrun sets them; each rank loads the model and waits
at a barrier before the clock starts, so model loading and process start are not timed but
reported apart), alternated over the repeats; the N-process file is compared with the
one-thread one's byte for byte.

    PYTHONPATH=python python benches/encode_job.py --texts 2000 --chunk-size 256 --processes 2

(a chunk is the unit of work a rank takes: with fewer chunks than processes some idle)

The texts are sentences of 5 to 60 words (the spread of lengths is what sorting by length
helps), streamed from a function; the model is the offline all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
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


def _job(texts: list[str], model: object, cache: Path, args: argparse.Namespace) -> Path:
    emb = embed_texts(
        lambda: iter(texts),
        model,
        cache_dir=cache,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        progress=False,
    )
    return Path(emb.path)


def _rank_worker(args: argparse.Namespace) -> None:
    """One rank of the torchrun job: model loaded and warmed up before a barrier, then the
    job timed from the barrier to its return on every rank; rank 0 writes the times."""
    import torch
    import torch.distributed as dist

    started = time.perf_counter()
    dist.init_process_group("gloo")
    model = load_model(args.device)
    texts = sentences(args.texts)
    model.encode(texts[:128], batch_size=args.batch_size)  # warm-up
    loaded = time.perf_counter() - started
    dist.barrier()
    start = time.perf_counter()
    path = _job(texts, model, Path(args.cache), args)
    elapsed = time.perf_counter() - start
    times: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(times, (elapsed, loaded, torch.get_num_threads()))
    if dist.get_rank() == 0:
        Path(args.report).write_text(json.dumps({"ranks": times, "path": str(path)}))
    dist.destroy_process_group()


def _torchrun(args: argparse.Namespace, cache: Path, report: Path) -> tuple[float, float, dict]:
    """The job on ``args.processes`` ranks; (job seconds, whole torchrun seconds, report)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={args.processes}", __file__, "--rank-worker"]
    cmd += ["--texts", str(args.texts), "--batch-size", str(args.batch_size)]
    cmd += ["--chunk-size", str(args.chunk_size), "--device", args.device]
    cmd += ["--cache", str(cache), "--report", str(report)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    whole = time.perf_counter() - start
    result = json.loads(report.read_text())
    return max(r[0] for r in result["ranks"]), whole, result


def _processes(args: argparse.Namespace) -> None:
    import torch

    n = args.texts
    texts = sentences(n)
    model = load_model(args.device)
    model.encode(texts[:128], batch_size=args.batch_size)  # warm-up
    runs: dict[str, list[float]] = {
        "1 process, 1 thread": [],
        f"1 process, {args.processes} threads": [],
    }
    ranks_key = f"{args.processes} processes (torchrun), 1 thread each"
    runs[ranks_key] = []
    wholes, loads = [], []
    same = True
    for _ in range(args.repeats):
        work = Path(tempfile.mkdtemp(prefix="encode-job-"))
        try:
            for threads in (1, args.processes):
                torch.set_num_threads(threads)
                start = time.perf_counter()
                path = _job(texts, model, work / f"t{threads}", args)
                runs[f"1 process, {threads} thread{'s' if threads > 1 else ''}"].append(
                    time.perf_counter() - start
                )
                if threads == 1:
                    one_thread = path.read_bytes()
            job, whole, report = _torchrun(args, work / "ranks", work / "report.json")
            runs[ranks_key].append(job)
            wholes.append(whole)
            loads.append(max(r[1] for r in report["ranks"]))
            same = same and Path(report["path"]).read_bytes() == one_thread
        finally:
            shutil.rmtree(work)
    print(
        f"{n} texts, batch {args.batch_size}, chunk {args.chunk_size}, {args.device}, "
        f"{os.cpu_count()} CPUs seen, {args.repeats} alternated repeats"
    )
    for name, times in runs.items():
        rounded = [round(t, 2) for t in times]
        print(f"{name:42s} best {n / min(times):7.1f} texts/s  (runs: {rounded} s)")
    print(
        f"torchrun whole (process start, imports, model load, job): "
        f"{[round(w, 1) for w in wholes]} s; per-rank load + warm-up "
        f"{[round(x, 1) for x in loads]} s"
    )
    print(f"{args.processes}-process file == 1-process 1-thread file: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="above 1: 1 process with 1 and with N threads vs N torchrun processes of 1 thread",
    )
    parser.add_argument("--rank-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_worker:
        _rank_worker(args)
        return
    if args.processes > 1:
        _processes(args)
        return
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
