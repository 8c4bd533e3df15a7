# Hand-written stubs of the Rust extension; checked by `python -m mypy.stubtest negmine._core`.
from collections.abc import Callable
from os import PathLike
from typing import Any, ClassVar, final

import numpy as np
import numpy.typing as npt

# A CSR pair (indptr, indices) of int64 arrays: row r holds indices[indptr[r]:indptr[r + 1]].
_Csr = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]

__version__: str

def cpu_features() -> list[str]: ...
def topk_result(
    rows: int, k: int, what: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...

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

def check_hnsw_index(
    path: str | PathLike[str], *, rows: int, dim: int, m: int, ef_construction: int
) -> None: ...
def open_embeddings(path: str | PathLike[str], *, mmap: bool = True) -> Embeddings: ...
def save_embeddings(
    path: str | PathLike[str],
    embeddings: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
) -> None: ...

# --- search (rust/py/src/search.rs) ---
@final
class SearchOptions:
    def __new__(
        cls,
        k: int,
        *,
        metric: str = ...,
        block_rows: int | None = None,
        query_batch: int | None = None,
        isa: str | None = None,
        precision: str = ...,
        stage_cuts: list[int] | None = None,
    ) -> SearchOptions: ...

def search(
    queries: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    corpus: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    options: SearchOptions,
    *,
    exclude: _Csr | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], dict[str, Any]]: ...
def merge_topk(
    parts: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
    k: int,
    *,
    threads: int | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def rescore(
    queries: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    corpus: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    candidates: npt.NDArray[np.int64],
    k: int,
    *,
    metric: str = ...,
    threads: int | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...

# --- mine (rust/py/src/mine.rs) ---
@final
class MineOptions:
    NAMES: ClassVar[list[str]]
    """The options, as the core declares them (``rust/core/src/mine/options.rs``)."""
    OPTIONS: ClassVar[tuple[dict[str, Any], ...]]
    """Each option's ``name``, ``type`` (``"int"``, ``"float"``, ``"str"``), ``optional``,
    ``choices``, ``default`` and ``help``, in declared order."""
    def __new__(cls, **options: object) -> MineOptions: ...
    @property
    def metric(self) -> str: ...

@final
class Mined:
    def __new__(
        cls,
        *,
        negative_ids: npt.NDArray[np.int64],
        negative_scores: npt.NDArray[np.float32],
        positive_scores: npt.NDArray[np.float32],
        found: npt.NDArray[np.uint32],
        depth: npt.NDArray[np.uint32],
        removed_query: npt.NDArray[np.int64],
        removed_id: npt.NDArray[np.int64],
        removed_filter: npt.NDArray[np.int64],
        removed_score: npt.NDArray[np.float32],
        removed_counts: npt.NDArray[np.uint64],
        fetches: npt.NDArray[np.uint32] | None = None,
        exact_finish: npt.NDArray[np.bool_] | None = None,
        teacher_scores: npt.NDArray[np.float32] | None = None,
        judged: npt.NDArray[np.uint32] | None = None,
        negative_ranks: npt.NDArray[np.uint32] | None = None,
        negative_sources: npt.NDArray[np.uint8] | None = None,
        incomplete: npt.NDArray[np.bool_] | None = None,
    ) -> Mined: ...
    @property
    def negative_ids(self) -> npt.NDArray[np.int64]: ...
    @property
    def negative_scores(self) -> npt.NDArray[np.float32]: ...
    @property
    def positive_scores(self) -> npt.NDArray[np.float32]: ...
    @property
    def found(self) -> npt.NDArray[np.uint32]: ...
    @property
    def depth(self) -> npt.NDArray[np.uint32]: ...
    @property
    def removed_query(self) -> npt.NDArray[np.int64]: ...
    @property
    def removed_id(self) -> npt.NDArray[np.int64]: ...
    @property
    def removed_filter(self) -> npt.NDArray[np.int64]: ...
    @property
    def removed_score(self) -> npt.NDArray[np.float32]: ...
    @property
    def removed_counts(self) -> npt.NDArray[np.uint64]: ...
    @property
    def fetches(self) -> npt.NDArray[np.uint32]: ...
    @property
    def exact_finish(self) -> npt.NDArray[np.bool_]: ...
    @property
    def teacher_scores(self) -> npt.NDArray[np.float32]: ...
    @property
    def judged(self) -> npt.NDArray[np.uint32]: ...
    @property
    def negative_ranks(self) -> npt.NDArray[np.uint32]: ...
    @property
    def negative_sources(self) -> npt.NDArray[np.uint8]: ...
    def arrays(self) -> dict[str, npt.NDArray[Any]]: ...

def mine(
    queries: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    corpus: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    positives: _Csr,
    exclude: _Csr,
    options: MineOptions,
    *,
    groups: npt.NDArray[np.uint32] | None = None,
    query_offset: int = 0,
    threads: int | None = None,
    progress: Callable[[int, int], object] | None = None,
    fetch: Callable[[npt.NDArray[np.int64], int], _Csr] | None = None,
    max_depth: int | None = None,
    teacher: Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], npt.NDArray[np.float32]]
    | None = None,
    teacher_positive_scores: npt.NDArray[np.float32] | None = None,
    fetch_ranked: bool = False,
) -> Mined: ...
def first_depth(options: MineOptions) -> int: ...
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
@final
class KMeansOptions:
    def __new__(
        cls,
        n_clusters: int,
        *,
        metric: str = ...,
        iterations: int = 10,
        seed: int = 0,
        sample: int | None = None,
        init: str = ...,
    ) -> KMeansOptions: ...

def kmeans(
    embeddings: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    options: KMeansOptions,
    *,
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
    weighting: str = ...,
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

# --- dataset (rust/py/src/dataset.rs) ---
def draw_example(
    index: int, positives: int, present: int, k: int, *, seed: int, epoch: int
) -> tuple[int | None, npt.NDArray[np.int64]]: ...

# --- lexical (rust/py/src/lexical.rs) ---
@final
class Bm25Index:
    def __new__(
        cls,
        texts: list[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        threads: int | None = None,
        progress: Callable[[int, int], object] | None = None,
    ) -> Bm25Index: ...
    @staticmethod
    def open(path: str | PathLike[str], *, key: bytes | None = None) -> Bm25Index: ...
    def save(self, path: str | PathLike[str], *, key: bytes | None = None) -> None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def mapped(self) -> bool: ...
    @property
    def nbytes(self) -> int: ...
    def search(
        self,
        queries: list[str],
        k: int,
        *,
        exclude: _Csr | None = None,
        exhaustive: bool = False,
        threads: int | None = None,
        progress: Callable[[int, int], object] | None = None,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]: ...
    def idf(self, term: str) -> float | None: ...
    @property
    def n_docs(self) -> int: ...
    @property
    def n_terms(self) -> int: ...
    @property
    def n_postings(self) -> int: ...
    @property
    def avgdl(self) -> float: ...
    @property
    def k1(self) -> float: ...
    @property
    def b(self) -> float: ...

def bm25_tokenize(text: str) -> list[str]: ...
def rrf_fuse(
    first: _Csr, second: _Csr, *, k: int = 60, threads: int | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint8]]: ...

# --- maxsim (rust/py/src/maxsim.rs) ---
_Tokens = npt.NDArray[np.float32] | npt.NDArray[np.float16] | Embeddings
_Texts = tuple[_Tokens, npt.NDArray[np.int64]]  # (tokens, offsets)

def maxsim_scores(
    queries: _Texts,
    corpus: _Texts,
    query_ids: npt.NDArray[np.int64],
    corpus_ids: npt.NDArray[np.int64],
    *,
    threads: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> npt.NDArray[np.float32]: ...
def maxsim_search(
    queries: _Texts,
    corpus: _Texts,
    k: int,
    *,
    candidates: _Csr | None = None,
    exclude: _Csr | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
def maxsim_pooled(
    tokens: _Tokens,
    offsets: npt.NDArray[np.int64],
    *,
    threads: int | None = None,
) -> npt.NDArray[np.float32]: ...
