"""The settings every part of the bench shares: the peers, the default sizes, the timing
budgets, the mining table's options, and the log that progress goes to by default."""

from __future__ import annotations

import sys

PEERS = {"faiss": "faiss-cpu", "numpy": "numpy", "torch": "torch", "hnswlib": "hnswlib"}
"""The peers, by import name, with the pip package that provides each."""
SKIPPABLE = (*PEERS, "faiss-core", "st")
"""What ``--skip`` takes: a peer, faiss with ``OPENBLAS_CORETYPE`` set (``faiss-core``), the
mining table against sentence-transformers (``st``)."""
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
GIB = 1 << 30

# Generated data at a size where the search decides (79 GFLOP: 0.6-1.3 s per exact run on two
# cores), not the fixed costs of a call (at 1,000 x 20,000 they decided: 0.1 s runs), and that
# takes about a minute of two cores with every peer installed.
DEFAULT_QUERIES, DEFAULT_CORPUS, DEFAULT_DIM, DEFAULT_K = 2_048, 50_000, 384, 100
DEFAULT_REPEATS = 5
MIN_RUNS = 3  # `negmine bench`'s timed runs of a cell before its budget may stop it
NUMPY_CHUNK = TORCH_CHUNK = 1024  # queries per matmul: one Q x N score block would not fit
# ef_construction 100, not hnswlib's usual 200: at the default size the build took 25 s of the
# minute; the note under the row says which.
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 100
CELL_BUDGET = 45.0  # seconds of timed runs after which a cell stops repeating
BENCH_CELL_BUDGET = 5.0  # the same for `negmine bench`, which must stay near a minute
MINE_NEGATIVES, MINE_RELATIVE_MARGIN = 5, 0.05  # the mining table's setting (NV-Retriever's)
ST_MODEL_NAME = "negmine-bench/injected"


def stderr_log(text: str) -> None:
    """The default log: one line on stderr, flushed (progress beside a table on stdout)."""
    print(text, file=sys.stderr, flush=True)
