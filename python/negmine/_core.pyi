# Hand-written stubs of the Rust extension; checked by `python -m mypy.stubtest negmine._core`.
from collections.abc import Callable
from os import PathLike
from typing import Any, final

import numpy as np
import numpy.typing as npt

# A CSR pair (indptr, indices) of int64 arrays: row r holds indices[indptr[r]:indptr[r + 1]].
_Csr = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]

__version__: str

def cpu_features() -> list[str]: ...

# --- store (rust/py/src/store.rs) ---
@final
class Embeddings:
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def path(self) -> str: ...
    @property
    def mapped(self) -> bool: ...
    def __len__(self) -> int: ...
    def numpy(self) -> npt.NDArray[Any]: ...
    def __array__(
        self, dtype: npt.DTypeLike | None = None, copy: bool | None = None
    ) -> npt.NDArray[Any]: ...

def open_embeddings(path: str | PathLike[str], *, mmap: bool = True) -> Embeddings: ...
def save_embeddings(
    path: str | PathLike[str],
    embeddings: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
) -> None: ...

# --- search (rust/py/src/search.rs) ---
def search(
    queries: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    corpus: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    k: int,
    *,
    metric: str = "dot",
    exclude: _Csr | None = None,
    threads: int | None = None,
    block_rows: int | None = None,
    query_batch: int | None = None,
    isa: str | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...

# --- mine (rust/py/src/mine.rs) ---
def mine(
    queries: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    corpus: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    positives: _Csr,
    exclude: _Csr,
    *,
    num_negatives: int,
    metric: str = "cosine",
    range_min: int = 0,
    range_max: int | None = None,
    max_score: float | None = None,
    min_score: float | None = None,
    absolute_margin: float | None = None,
    relative_margin: float | None = None,
    dup_threshold: float | None = None,
    sampling_strategy: str = "top",
    simans_a: float = 1.0,
    simans_b: float = 0.0,
    seed: int = 0,
    groups: npt.NDArray[np.uint32] | None = None,
    query_offset: int = 0,
    threads: int | None = None,
    block_rows: int | None = None,
    query_batch: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    candidates: _Csr | None = None,
    max_depth: int | None = None,
    record_removed: int | None = None,
) -> dict[str, npt.NDArray[Any]]: ...
def filter_names() -> list[str]: ...
def duplicate_groups(
    corpus: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    *,
    threads: int | None = None,
) -> npt.NDArray[np.uint32]: ...
def link_queries(
    queries: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    threshold: float,
    *,
    neighbors: int = 16,
    threads: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> npt.NDArray[np.uint32]: ...

# --- kmeans (rust/py/src/kmeans.rs) ---
def kmeans(
    embeddings: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    n_clusters: int,
    *,
    metric: str = "cosine",
    iterations: int = 10,
    seed: int = 0,
    sample: int | None = None,
    init: str = "k-means++",
    threads: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint32], float, npt.NDArray[np.float64]]: ...

# --- batches (rust/py/src/batches.rs) ---
def topic_plan(
    clusters: npt.NDArray[np.int64],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    clusters_per_batch: int = 1,
    weighting: str = "uniform",
    drop_last: bool = False,
    conflicts: _Csr | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]: ...
def topic_count(
    clusters: npt.NDArray[np.int64],
    batch_size: int,
    *,
    clusters_per_batch: int = 1,
    drop_last: bool = False,
) -> tuple[int, int]: ...
def ngame_plan(
    clusters: npt.NDArray[np.int64],
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    drop_last: bool = False,
    conflicts: _Csr | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]: ...
def ngame_count(n_rows: int, batch_size: int, *, drop_last: bool = False) -> int: ...
def separate_plan(
    indices: npt.NDArray[np.int64],
    offsets: npt.NDArray[np.int64],
    n_rows: int,
    conflicts: _Csr,
    *,
    topical: int = 0,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]: ...
def margin_balanced(
    margins_indptr: npt.NDArray[np.int64],
    margins: npt.NDArray[np.float64],
    bins: int = 10,
    *,
    seed: int,
    epoch: int,
) -> npt.NDArray[np.int64]: ...
