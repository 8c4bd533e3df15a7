"""negmine against its peers, all measured in one process on the same data and threads.

Exact top-k throughput (negmine f32/f16, faiss.knn, numpy, torch, hnswlib), small-query
latency, and streaming peak memory for an on-disk f16 corpus. Defaults are the official sizes
(4096 queries x 200 000 x 768, k in 10/100/1000, 2 threads; ~15 minutes of both cores); use
``--quick`` for a smoke run. Generated data is cached under ``bench-data/``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/compare.py --write-readme
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import negmine
from negmine import bench
from negmine.bench import Result
from readme_block import write_block
from streaming import DEFAULT_DATA_DIR, REPO, corpus_file, queries_file

METHODS = tuple(bench.PEERS)  # peers; negmine is the reference
SECTIONS = ("throughput", "latency", "streaming")
MIB = 1 << 20


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--queries", type=int, default=4096, help="Q (default 4096)")
    p.add_argument("--corpus", type=int, default=200_000, help="N (default 200000)")
    p.add_argument("--dim", type=int, default=768, help="d (default 768)")
    p.add_argument("--k", type=_int_list, default=[10, 100, 1000], help="comma list")
    p.add_argument("--threads", type=int, default=2, help="threads for every method")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell (best is kept)")
    p.add_argument(
        "--cell-budget",
        type=float,
        default=45.0,
        help="stop repeating a cell once its timed runs add up to this many seconds",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="512 x 20000 x 256 smoke run")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="NAME",
        help="skip a method or section (repeatable, or a comma list): "
        f"{', '.join(METHODS + SECTIONS)}",
    )
    p.add_argument("--numpy-chunk", type=int, default=1024, help="queries per numpy matmul")
    p.add_argument("--torch-chunk", type=int, default=1024, help="queries per torch matmul")
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--hnsw-ef-construction", type=int, default=200)
    p.add_argument("--rebuild-hnsw", action="store_true", help="ignore the cached hnswlib index")
    p.add_argument("--latency-k", type=int, default=10)
    p.add_argument("--latency-runs", type=int, default=30, help="runs per latency cell (median)")
    p.add_argument("--stream-sizes", type=_int_list, help="corpus sizes for the streaming table")
    p.add_argument("--stream-queries", type=int, default=1024, help="queries per streaming search")
    p.add_argument("--stream-k", type=int, default=100)
    p.add_argument("--big", action="store_true", help="also stream a ~6 GB f16 file (4M x 768)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--json", type=Path, help="also write all raw numbers here")
    p.add_argument("--write-readme", action="store_true", help="rewrite the bench block")
    p.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = p.parse_args(argv)
    args.skip = {s.strip() for item in args.skip for s in item.split(",") if s.strip()}
    unknown = args.skip - set(METHODS + SECTIONS)
    if unknown:
        p.error(f"--skip: unknown {sorted(unknown)}; choose from {METHODS + SECTIONS}")
    if args.quick:
        args.queries, args.corpus, args.dim = 512, 20_000, 256
        args.latency_runs = min(args.latency_runs, 10)
        args.stream_queries = min(args.stream_queries, 256)
    if args.stream_sizes is None:
        # Official: 200k and 2M rows (0.3 and 3 GB at d = 768); --big adds 4M rows (~6 GB).
        base = [20_000, 200_000] if args.quick else [200_000, 2_000_000]
        args.stream_sizes = base + ([base[-1] * 2] if args.big else [])
    if max(args.k) > args.corpus:
        p.error(f"k = {max(args.k)} exceeds the corpus size {args.corpus}")
    return args


def _int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


# --------------------------------------------------------------------------- methods


def hnsw_index(args: argparse.Namespace, hnswlib: Any, xb: np.ndarray) -> tuple[Any, str]:
    """Builds (or loads the cached) index; returns it and the note on its build.

    The build time of a cached index comes from the run that built it (same data and params).
    """
    n, d = xb.shape
    params = f"M{args.hnsw_m}-efc{args.hnsw_ef_construction}-t{args.threads}"
    name = f"hnsw-s{args.seed}-{n}x{d}-{params}"
    path, meta = args.data_dir / f"{name}.bin", args.data_dir / f"{name}.json"
    if path.exists() and meta.exists() and not args.rebuild_hnsw:
        index = hnswlib.Index(space="ip", dim=d)
        index.load_index(str(path), max_elements=n)
        build = float(json.loads(meta.read_text())["build_seconds"])
        return index, f"build {build:.1f} s (cached index), M={args.hnsw_m}"
    print("hnswlib: building index ...", file=sys.stderr, flush=True)
    index, build = bench.build_hnsw(
        hnswlib, xb, args.hnsw_m, args.hnsw_ef_construction, args.threads
    )
    args.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    index.save_index(str(tmp))
    os.replace(tmp, path)
    meta.write_text(json.dumps({"build_seconds": build, "threads": args.threads}))
    return index, f"build {build:.1f} s, M={args.hnsw_m}"


# --------------------------------------------------------------------------- sections


@dataclass
class Row:
    method: str
    dtype: str
    k: int
    seconds: float
    gflops: float
    vs_faiss: float | None = None
    recall: float | None = None
    same_order: float | None = None
    kth_score_diff: float | None = None
    note: str = ""
    runs: list[float] = field(default_factory=list)


def throughput_section(
    args: argparse.Namespace, xq: np.ndarray, xb: np.ndarray, peers: dict[str, Any]
) -> list[Row]:
    q, n, d = xq.shape[0], xb.shape[0], xb.shape[1]
    flop = 2.0 * q * n * d
    t = args.threads
    methods = bench.negmine_methods(xq, xb, t, precisions=("f32", "int8"), f16_copy=True)
    hnsw = hnsw_index(args, peers["hnswlib"], xb) if "hnswlib" in peers else None
    methods += bench.peer_methods(
        xq,
        xb,
        t,
        peers,
        hnsw=hnsw,
        numpy_chunk=args.numpy_chunk,
        torch_chunk=args.torch_chunk,
        log=lambda text: print(text, file=sys.stderr, flush=True),
    )
    rows: list[Row] = []
    for m in bench.measure(methods, args.k, args.repeats, n, args.cell_budget):
        print(
            f"{m.method.name} {m.method.corpus} k={m.k}  {m.seconds:.3f} s "
            f"(runs: {', '.join(f'{x:.3f}' for x in m.timing.runs)})",
            file=sys.stderr,
            flush=True,
        )
        rows.append(
            Row(
                m.method.name,
                m.method.corpus,
                m.k,
                m.seconds,
                flop / m.seconds / 1e9,
                note=m.note,
                runs=m.timing.runs,
                **m.agreement,
            )
        )
    for k in args.k:
        faiss_seconds = next((r.seconds for r in rows if r.k == k and r.method == "faiss"), None)
        for row in rows:
            if row.k == k and faiss_seconds is not None:
                row.vs_faiss = faiss_seconds / row.seconds
    return rows


def latency_section(
    args: argparse.Namespace, xq: np.ndarray, xb: np.ndarray, peers: dict[str, Any]
) -> list[dict[str, Any]]:
    k, t = args.latency_k, args.threads
    xb16 = xb.astype(np.float16)
    methods: list[tuple[str, str, Callable[[np.ndarray], object]]] = [
        ("negmine", "f32", lambda x: negmine.search(x, xb, k, threads=t)),
        ("negmine", "f16", lambda x: negmine.search(x, xb16, k, threads=t)),
    ]
    if "faiss" in peers:
        faiss = peers["faiss"]
        methods.append(
            ("faiss", "f32", lambda x: faiss.knn(x, xb, k, metric=faiss.METRIC_INNER_PRODUCT))
        )
    if "numpy" in peers:
        methods.append(("numpy", "f32", lambda x: bench.numpy_topk(x, xb, k, x.shape[0])))
    out = []
    for nq in (1, 16):
        x = np.ascontiguousarray(xq[:nq])
        for method, dtype, fn in methods:
            for _ in range(2):  # warm-up
                fn(x)
            runs = []
            for _ in range(args.latency_runs):
                t0 = time.perf_counter()
                fn(x)
                runs.append(time.perf_counter() - t0)
            out.append(
                {
                    "method": method,
                    "dtype": dtype,
                    "queries": nq,
                    "median_ms": statistics.median(runs) * 1e3,
                    "min_ms": min(runs) * 1e3,
                }
            )
    return out


def streaming_section(args: argparse.Namespace, refs16: Result | None) -> list[dict[str, Any]]:
    """One fresh subprocess per corpus size: a clean memory baseline, and no allocator arenas
    left over from the in-RAM benchmarks to hide (or inflate) the search's own allocations."""
    qpath = queries_file(args.data_dir, args.seed, args.queries, args.dim)
    script = Path(__file__).with_name("streaming.py")
    out = []
    for n in args.stream_sizes:
        print(f"streaming: preparing {n} x {args.dim} f16 file ...", file=sys.stderr, flush=True)
        cpath = corpus_file(args.data_dir, args.seed, n, args.dim, "f16")
        with tempfile.TemporaryDirectory() as tmp:
            ids_path = Path(tmp) / "ids.npy"
            cmd = [
                sys.executable,
                str(script),
                f"--corpus={cpath}",
                f"--queries={qpath}",
                f"--query-rows={args.stream_queries}",
                f"--k={args.stream_k}",
                f"--threads={args.threads}",
                f"--save-ids={ids_path}",
                "--json",
            ]
            print(f"streaming: {n} rows ...", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                out.append({"n": n, "error": proc.stderr.strip().splitlines()[-1:]})
                continue
            res = json.loads(proc.stdout)
            # Same values in RAM and on disk when N matches: the streamed ids must be identical.
            if refs16 is not None and n == args.corpus:
                ids = np.load(ids_path)
                res["matches_in_ram"] = bool(np.array_equal(ids, refs16[1][: ids.shape[0]]))
        out.append(res)
    return out


# --------------------------------------------------------------------------- reporting


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def render(
    args: argparse.Namespace,
    command: str,
    info: list[str],
    rows: list[Row],
    latency: list[dict[str, Any]],
    streaming: list[dict[str, Any]],
) -> str:
    q, n, d = args.queries, args.corpus, args.dim
    out = [f"Command: `{command}`", "", *info]
    if rows:
        out += [
            "",
            f"Exact top-k, {q} queries x {n} corpus rows x d = {d}, {args.threads} threads for "
            f"every method, best of up to {args.repeats} timed runs after a warm-up; "
            "GFLOP/s = 2*Q*N*d / s; 'vs faiss' = faiss seconds / method seconds (> 1: faster "
            "than faiss); recall and 'same order' are against negmine f32's ids.",
            "",
            "| method | corpus | k | seconds | GFLOP/s | vs faiss | recall@k | same order "
            "| max Δ k-th score | note |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
    for r in rows:
        out.append(
            f"| {r.method} | {r.dtype} | {r.k} | {r.seconds:.3f} | {r.gflops:.1f} | "
            f"{_fmt(r.vs_faiss, '.2f')} | {_fmt(r.recall, '.4f')} | "
            f"{_fmt(r.same_order, '.3f')} | {_fmt(r.kth_score_diff, '.1e')} | {r.note} |"
        )
    if latency:
        out += [
            "",
            f"Small-query latency, k = {args.latency_k}, corpus {n} x {d} in RAM, "
            f"median (min) of {args.latency_runs} runs, milliseconds:",
            "",
            "| method | corpus | Q = 1 | Q = 16 |",
            "|---|---|---:|---:|",
        ]
        by_key: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        for e in latency:
            by_key.setdefault((e["method"], e["dtype"]), {})[e["queries"]] = e
        for (method, dtype), cells in by_key.items():
            text = [f"{c['median_ms']:.2f} ({c['min_ms']:.2f})" for c in cells.values()]
            out.append(f"| {method} | {dtype} | {' | '.join(text)} |")
    if streaming:
        out += [
            "",
            f"Streaming an on-disk f16 .npy corpus (d = {d}), {args.stream_queries} queries, "
            f"k = {args.stream_k}, one fresh process per row; peaks sampled from "
            "/proc/self/status every 5 ms, '+' = growth over the process before the search. "
            "Anonymous growth should stay near queries + results + a few blocks, whatever N.",
            "",
            "| N | file | opened with | seconds | GFLOP/s | RssAnon peak (+) | RssFile peak (+) "
            "| VmRSS peak | queries+results | same ids as in RAM |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for s in streaming:
            if "error" in s:
                out.append(f"| {s['n']} | | failed: {' '.join(s['error'])} | | | | | | | |")
                continue
            pk, dl = s["peak"], s["delta"]
            match = s.get("matches_in_ram")
            same = "" if match is None else ("yes" if match else "**no**")
            out.append(
                f"| {s['n']} | {s['file_bytes'] / (1 << 30):.2f} GiB | {s['opened_with']} | "
                f"{s['seconds']:.2f} | {s['gflops']:.1f} | "
                f"{pk['RssAnon'] / MIB:.0f} MiB (+{dl['RssAnon'] / MIB:.0f}) | "
                f"{pk['RssFile'] / MIB:.0f} MiB (+{dl['RssFile'] / MIB:.0f}) | "
                f"{pk['VmRSS'] / MIB:.0f} MiB | {s['queries_plus_results_bytes'] / MIB:.1f} MiB "
                f"| {same} |"
            )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(argv)
    env_warnings = bench.blas_env_warning("python benches/compare.py ...")
    peers = bench.import_peers(args.skip, args.threads)
    # Imported libraries may have started their pools already; cap them all now.
    limiter = bench.limit_threads(args.threads)

    print("loading data ...", file=sys.stderr, flush=True)
    xq = np.load(queries_file(args.data_dir, args.seed, args.queries, args.dim))
    xb = np.load(corpus_file(args.data_dir, args.seed, args.corpus, args.dim, "f32"))

    rows = [] if "throughput" in args.skip else throughput_section(args, xq, xb, peers)
    latency = [] if "latency" in args.skip else latency_section(args, xq, xb, peers)
    streaming: list[dict[str, Any]] = []
    if "streaming" not in args.skip:
        if not Path("/proc/self/status").exists():
            print("streaming section needs Linux /proc; skipped", file=sys.stderr)
        else:
            ref16 = None
            if args.corpus in args.stream_sizes:
                # Reference for the streamed file of the same N: same values, so same ids.
                xq_s = xq[: args.stream_queries]
                ref16 = negmine.search(
                    xq_s, xb.astype(np.float16), args.stream_k, threads=args.threads
                )
            del xb  # the streaming subprocesses need the page cache more than we need xb
            streaming = streaming_section(args, ref16)

    info = bench.machine_lines(bench.machine_info(peers, env_warnings))
    block = render(args, command, info, rows, latency, streaming)
    print(block)
    if args.json:
        bench.write_json(
            args.json,
            {
                "command": command,
                "machine": info,
                "throughput": [r.__dict__ for r in rows],
                "latency": latency,
                "streaming": streaming,
            },
        )
    if args.write_readme:
        write_block("bench", block, args.readme)
    if limiter is not None:
        limiter.restore_original_limits()


if __name__ == "__main__":
    main()
