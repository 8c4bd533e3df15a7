"""negmine: fast, exact, reproducible hard-negative mining for dense retrievers.

The heavy lifting is in Rust (``negmine._core``); this package validates arguments, shows
progress and offers the Python API.
"""

from __future__ import annotations

from negmine import batches, multivector, teachers
from negmine._core import Bm25Index, Embeddings, __version__, cpu_features
from negmine._inputs import Csr
from negmine.batches import BatchPlan
from negmine.cluster import coarsen_clusters, kmeans
from negmine.embed import embed_texts
from negmine.errors import (
    FormatError,
    InternalError,
    InvalidArgumentError,
    InvalidTypeError,
    NegmineError,
)
from negmine.hard_negatives import mine_hard_negatives
from negmine.mine import MiningOptions, mine
from negmine.multivector import MultiVectors, open_multi_vectors, save_multi_vectors
from negmine.outputs import to_dataset, to_parquet
from negmine.qrels import load_qrels
from negmine.report import MiningReport
from negmine.result import MiningResult
from negmine.search import SearchStats, merge_topk, rescore, search
from negmine.store import open_embeddings, save_embeddings

__all__ = [
    "BatchPlan",
    "Bm25Index",
    "Csr",
    "Embeddings",
    "FormatError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "MiningOptions",
    "MiningReport",
    "MiningResult",
    "MultiVectors",
    "NegmineError",
    "SearchStats",
    "__version__",
    "batches",
    "coarsen_clusters",
    "cpu_features",
    "embed_texts",
    "kmeans",
    "load_qrels",
    "merge_topk",
    "mine",
    "mine_hard_negatives",
    "multivector",
    "open_embeddings",
    "open_multi_vectors",
    "rescore",
    "save_embeddings",
    "save_multi_vectors",
    "search",
    "teachers",
    "to_dataset",
    "to_parquet",
]
