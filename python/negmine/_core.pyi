# Hand-written stubs of the Rust extension; checked by `python -m mypy.stubtest negmine._core`.
from collections.abc import Callable
from os import PathLike

import numpy as np
import numpy.typing as npt

__version__: str

def cpu_features() -> list[str]: ...

# --- store (negmine-py/src/store.rs) ---
class Embeddings:
    pass

def open_embeddings(path: str | PathLike[str]) -> Embeddings: ...

# --- search (negmine-py/src/search.rs) ---
def search(
    queries: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    corpus: Embeddings | npt.NDArray[np.float32] | npt.NDArray[np.float16],
    k: int,
    *,
    metric: str = "dot",
    exclude_indptr: npt.NDArray[np.int64] | None = None,
    exclude_indices: npt.NDArray[np.int64] | None = None,
    threads: int | None = None,
    block_rows: int | None = None,
    query_batch: int | None = None,
    isa: str | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]: ...
