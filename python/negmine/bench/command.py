"""``negmine bench``: its arguments and the run that measures, prints and writes."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from negmine.bench.benchmark_json import pytest_benchmark_document, write_json
from negmine.bench.data import Inputs, mem_available, open_inputs
from negmine.bench.machine import (
    blas_env_warning,
    limit_threads,
    machine_info,
    openblas_core,
    usable_cores,
)
from negmine.bench.mining import MiningRow, mining_rows
from negmine.bench.peers import fitting_peers, import_peers, negmine_methods, peer_methods
from negmine.bench.report import render
from negmine.bench.settings import (
    BENCH_CELL_BUDGET,
    DEFAULT_CORPUS,
    DEFAULT_DIM,
    DEFAULT_K,
    DEFAULT_QUERIES,
    DEFAULT_REPEATS,
    GIB,
    MIN_RUNS,
    PEERS,
    SKIPPABLE,
    stderr_log,
)
from negmine.bench.timing import Measurement, Method, measure
from negmine.cli.common import positive_int


def _k_list(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be k or a comma list like 10,100: {text}") from None
    if not ks or min(ks) <= 0:
        raise argparse.ArgumentTypeError(f"must be positive integers, got {text}")
    return ks


def add_parser(command: Callable[..., argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Adds ``negmine bench`` through the ``negmine`` command's subcommand factory
    (``command(name, help, description)``: its help format, exit codes and ``-q``)."""
    p = command(
        "bench",
        "time negmine against faiss, numpy, torch and hnswlib (those installed) here",
        "Time exact top-k search with negmine and with the peers installed "
        "(faiss, numpy, torch, hnswlib) in this process, on the same data and threads; check "
        "every result against negmine's exact one. Generated data by default "
        f"({DEFAULT_QUERIES:,} x {DEFAULT_CORPUS:,} x {DEFAULT_DIM}, about a minute on two "
        "cores), or your own with --corpus FILE.npy --queries FILE.npy.",
    )
    _add_data_arguments(p)
    _add_run_arguments(p)
    p.set_defaults(run=run)
    parser: argparse.ArgumentParser = p
    return parser


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """What to search: generated data of a size, or the user's files, and the k's."""
    p.add_argument(
        "--queries",
        metavar="N|FILE",
        default=None,
        help=f"number of generated queries (default {DEFAULT_QUERIES:,}), or with --corpus a "
        "Q x d .npy queries file (write ./N for a file named by a number)",
    )
    p.add_argument(
        "--corpus",
        metavar="FILE",
        default=None,
        help="N x d .npy corpus file (float32/float16), searched by negmine as a mapped file",
    )
    p.add_argument(
        "--corpus-size",
        type=positive_int,
        default=DEFAULT_CORPUS,
        help=f"generated corpus rows (default {DEFAULT_CORPUS:,})",
    )
    p.add_argument(
        "--dim", type=positive_int, default=DEFAULT_DIM, help=f"generated d ({DEFAULT_DIM})"
    )
    p.add_argument(
        "--k", type=_k_list, default=[DEFAULT_K], help=f"k, or a comma list (default {DEFAULT_K})"
    )
    p.add_argument(
        "--max-queries",
        type=positive_int,
        default=None,
        help=f"with --queries FILE: use its first rows only (default {DEFAULT_QUERIES:,})",
    )


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """How to run: threads, timed runs, the seed, the peers left out, the JSON output."""
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="threads for every method (default: the usable cores)",
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=DEFAULT_REPEATS,
        help=f"timed runs per cell, best and median kept (default {DEFAULT_REPEATS}; at least "
        f"{MIN_RUNS}, fewer than asked once a cell's runs pass {BENCH_CELL_BUDGET:g} s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="NAME",
        help="do not run a peer (repeatable, or a comma list): "
        f"{', '.join(PEERS)}; faiss-core: faiss with OPENBLAS_CORETYPE set; st: the mining "
        "table against sentence-transformers",
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        type=Path,
        default=None,
        help="also write the timings as pytest-benchmark JSON (pytest-benchmark compare FILE)",
    )


def installed(*names: str) -> bool:
    """Whether every module of ``names`` can be imported (without importing it)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in names)
    except ValueError:  # a module set to None in sys.modules: not importable
        return False


def _usage(text: str) -> int:
    print(f"negmine bench: error: {text}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """``negmine bench``: measures negmine and the peers that are installed and fit in memory,
    prints the tables and, with ``--json``, writes the pytest-benchmark document."""
    skip = {s.strip() for item in args.skip for s in item.split(",") if s.strip()}
    problem = _usage_problem(args, skip)
    if problem is not None:
        return _usage(problem)
    if args.json is not None and not args.json.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, "--json: output directory does not exist", str(args.json.parent)
        )
    threads = args.threads or usable_cores()
    log: Callable[[str], None] = (lambda text: None) if args.quiet else stderr_log
    not_run: list[str] = []  # peers missing or refused: printed under the table too

    def refuse(text: str) -> None:
        not_run.append(text)
        log(text)

    env_warnings = blas_env_warning("negmine bench ...")

    inputs = open_inputs(args)
    q, (n, d) = inputs.queries.shape[0], inputs.corpus.shape
    peers = import_peers(skip, threads, refuse)
    in_ram = isinstance(inputs.corpus, np.ndarray)
    peers, load = fitting_peers(peers, q, n, d, mem_available(), refuse, in_ram)
    measurements, mining = _measure_all(args, inputs, peers, load, skip, threads, log, refuse)

    info = machine_info(peers, env_warnings)
    shape = (q, n, d)
    print(
        render(
            measurements, info, inputs.description, shape, threads, args.repeats, not_run, mining
        )
    )
    if args.json is not None:
        options = {
            "k": args.k,
            "repeats": args.repeats,
            "seed": args.seed if args.corpus is None else None,
            "corpus_file": args.corpus,
            "queries_file": args.queries_file,
        }
        document = pytest_benchmark_document(
            measurements, info, shape, threads, args.repeats, options, mining
        )
        write_json(args.json, document)
        log(f"wrote {args.json} (pytest-benchmark compare {args.json})")
    return 0


def _usage_problem(args: argparse.Namespace, skip: set[str]) -> str | None:
    """What makes the arguments a usage error, or None. Splits ``--queries`` into a count
    (``args.queries``) or, with ``--corpus``, a file (``args.queries_file``)."""
    if skip - set(SKIPPABLE):
        return f"--skip: unknown {sorted(skip - set(SKIPPABLE))}; choose from {list(SKIPPABLE)}"
    args.queries_file = None
    if args.corpus is not None:
        if args.queries is None:
            return "--corpus FILE needs --queries FILE"
        args.queries_file, args.queries = args.queries, None
    elif args.queries is not None:
        if not args.queries.isdigit() or int(args.queries) <= 0:
            return f"--queries {args.queries}: a file needs --corpus FILE too"
        args.queries = int(args.queries)
    if args.max_queries is not None and args.corpus is None:
        return "--max-queries goes with --queries FILE; use --queries N"
    return None


def _measure_all(
    args: argparse.Namespace,
    inputs: Inputs,
    peers: dict[str, Any],
    load: bool,
    skip: set[str],
    threads: int,
    log: Callable[[str], None],
    refuse: Callable[[str], None],
) -> tuple[list[Measurement], list[MiningRow]]:
    """The search table's measurements (negmine's rows, then the ``peers`` when ``load``: the
    f32 corpus they need fits) and the mining table's rows, with every BLAS pool capped at
    ``threads``."""
    xq, corpus = inputs.queries, inputs.corpus
    limiter = limit_threads(threads)  # after the imports: they may have started their pools
    # Copies for the subprocesses and sentence-transformers' cache, in the system's temp
    # directory (never beside an output), removed at the end.
    scratch = tempfile.TemporaryDirectory(prefix="negmine-bench-")
    scratch_dir = Path(scratch.name)
    try:
        methods = negmine_methods(xq, corpus, threads, f16_copy=args.corpus is None)
        xb = _f32_corpus(corpus, log) if load else None
        if xb is not None:
            core = None if "faiss-core" in skip else openblas_core()
            methods += peer_methods(
                xq,
                xb,
                threads,
                peers,
                log=log,
                faiss_core=None if core is None else (core, scratch_dir),
            )
        cells = measure(methods, args.k, args.repeats, corpus.shape[0], BENCH_CELL_BUDGET, MIN_RUNS)
        measurements = list(_progress(cells, methods, args))
        mining: list[MiningRow] = []
        if "st" not in skip and xb is not None:
            if installed("sentence_transformers", "datasets", "faiss"):
                mining = mining_rows(
                    xq, xb, threads, args.repeats, BENCH_CELL_BUDGET, MIN_RUNS, log, scratch_dir
                )
            else:
                refuse(
                    "mining against sentence-transformers: not run (pip install "
                    "sentence-transformers datasets faiss-cpu)"
                )
    finally:
        scratch.cleanup()
        if limiter is not None:
            limiter.restore_original_limits()
    return measurements, mining


def _f32_corpus(corpus: Any, log: Callable[[str], None]) -> np.ndarray:
    """The corpus as the in-memory float32 array the peers search: itself when it is one, else
    a copy of the mapped file."""
    if isinstance(corpus, np.ndarray):
        return corpus
    n, d = corpus.shape
    log(f"loading the corpus as float32 for the peers: {n * d * 4 / GIB:.2f} GiB ...")
    return np.array(corpus, dtype=np.float32)


def _progress(
    cells: Iterator[Measurement], methods: Sequence[Method], args: argparse.Namespace
) -> Iterator[Measurement]:
    if args.quiet:
        yield from cells
        return
    from tqdm.auto import tqdm

    with tqdm(total=len(methods) * len(args.k), desc="bench", unit="cell", file=sys.stderr) as bar:
        for m in cells:
            bar.write(
                f"{m.method.name} ({m.method.corpus}) k={m.k}: {m.seconds:.3f} s "
                f"(runs: {', '.join(f'{x:.3f}' for x in m.timing.runs)})",
                file=sys.stderr,
            )
            bar.update()
            yield m
