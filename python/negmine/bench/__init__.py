"""`negmine bench`: negmine against the search libraries installed beside it, on this machine.

Every method runs on the same data with the same thread count (numpy's and faiss' BLAS pools
capped with threadpoolctl when it is installed), the best and the median of ``--repeats`` timed
runs after one warm-up with their spread, and its result is checked against negmine's exact
one (recall@k, same order, largest difference of the k-th score). The peers are the ones
installed: faiss (``faiss.knn`` as shipped, the same in a subprocess with ``OPENBLAS_CORETYPE``
set to this CPU's best OpenBLAS core, since faiss-cpu's bundled OpenBLAS takes some CPUs for
a "Prescott", and its int8 ``IndexScalarQuantizer``), numpy (matmul + argpartition), torch
(mm + topk) and hnswlib (an approximate graph index); each row names the BLAS library and
kernels it ran. With sentence-transformers installed, a second table times mining: negmine's
``mine`` against its ``mine_hard_negatives`` (faiss path) on the same embeddings, injected
through its embedding cache. The report names the CPU and negmine's kernels, and warns when
``OPENBLAS_CORETYPE`` or ``OPENBLAS_L2_SIZE`` make OpenBLAS run other kernels than users get.

The same functions run the project's official comparison (``benches/compare.py``).

The package, by job: ``settings`` (the peers, default sizes, budgets), ``data`` (generated or
the user's queries and corpus), ``machine`` (CPU, kernels, BLAS, thread caps), ``timing``
(methods, timed runs, the agreement checks), ``peers`` (negmine's and the peers' methods, which
are installed and fit in memory), ``faiss_core`` (faiss with ``OPENBLAS_CORETYPE`` set, in a
subprocess), ``mining`` (the mining table's runs), ``report`` (the printed tables),
``benchmark_json`` (``--json``: pytest-benchmark's layout) and ``command`` (``negmine bench``'s
arguments and run).
"""

from __future__ import annotations

from negmine.bench.benchmark_json import (
    pytest_benchmark_document,
    quartiles,
    run_stats,
    write_json,
)
from negmine.bench.command import add_parser, installed, run
from negmine.bench.data import (
    GEN_CHUNK,
    Inputs,
    generate_queries,
    generate_rows,
    mem_available,
    open_inputs,
)
from negmine.bench.faiss_core import faiss_core_method
from negmine.bench.machine import (
    blas_env_warning,
    blas_info,
    blas_label,
    blas_libraries,
    cpu_flags,
    limit_threads,
    machine_info,
    machine_lines,
    negmine_kernels,
    openblas_core,
    torch_blas,
    usable_cores,
)
from negmine.bench.mining import InjectedModel, MiningRow, mining_rows, st_cache_hash
from negmine.bench.peers import (
    build_hnsw,
    faiss_sq8,
    fitting_peers,
    hnsw_ef,
    import_peers,
    make_torch_topk,
    negmine_methods,
    numpy_topk,
    peer_memory,
    peer_methods,
)
from negmine.bench.report import render, render_mining
from negmine.bench.settings import (
    BENCH_CELL_BUDGET,
    BLAS_ENV,
    CELL_BUDGET,
    DEFAULT_CORPUS,
    DEFAULT_DIM,
    DEFAULT_K,
    DEFAULT_QUERIES,
    DEFAULT_REPEATS,
    GIB,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
    MIN_RUNS,
    MINE_NEGATIVES,
    MINE_RELATIVE_MARGIN,
    NUMPY_CHUNK,
    PEERS,
    SKIPPABLE,
    ST_MODEL_NAME,
    TORCH_CHUNK,
    stderr_log,
)
from negmine.bench.timing import (
    Measurement,
    Method,
    Result,
    Timing,
    agreement,
    measure,
    recall,
    time_best,
)

__all__ = [
    "BENCH_CELL_BUDGET",
    "BLAS_ENV",
    "CELL_BUDGET",
    "DEFAULT_CORPUS",
    "DEFAULT_DIM",
    "DEFAULT_K",
    "DEFAULT_QUERIES",
    "DEFAULT_REPEATS",
    "GEN_CHUNK",
    "GIB",
    "HNSW_EF_CONSTRUCTION",
    "HNSW_M",
    "MINE_NEGATIVES",
    "MINE_RELATIVE_MARGIN",
    "MIN_RUNS",
    "NUMPY_CHUNK",
    "PEERS",
    "SKIPPABLE",
    "ST_MODEL_NAME",
    "TORCH_CHUNK",
    "InjectedModel",
    "Inputs",
    "Measurement",
    "Method",
    "MiningRow",
    "Result",
    "Timing",
    "add_parser",
    "agreement",
    "blas_env_warning",
    "blas_info",
    "blas_label",
    "blas_libraries",
    "build_hnsw",
    "cpu_flags",
    "faiss_core_method",
    "faiss_sq8",
    "fitting_peers",
    "generate_queries",
    "generate_rows",
    "hnsw_ef",
    "import_peers",
    "installed",
    "limit_threads",
    "machine_info",
    "machine_lines",
    "make_torch_topk",
    "measure",
    "mem_available",
    "mining_rows",
    "negmine_kernels",
    "negmine_methods",
    "numpy_topk",
    "open_inputs",
    "openblas_core",
    "peer_memory",
    "peer_methods",
    "pytest_benchmark_document",
    "quartiles",
    "recall",
    "render",
    "render_mining",
    "run",
    "run_stats",
    "st_cache_hash",
    "stderr_log",
    "time_best",
    "torch_blas",
    "usable_cores",
    "write_json",
]
