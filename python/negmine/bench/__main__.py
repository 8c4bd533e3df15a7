"""``python -m negmine.bench faiss-child ...``: the subprocess that times faiss with
``OPENBLAS_CORETYPE`` set (see :func:`negmine.bench.faiss_core.faiss_core_method`)."""

from __future__ import annotations

import sys

from negmine.bench.faiss_core import faiss_child

if __name__ == "__main__":
    if sys.argv[1:2] == ["faiss-child"]:
        sys.exit(faiss_child(sys.argv[2:]))
    sys.exit("usage: python -m negmine.bench faiss-child DIR K REPEATS BUDGET MIN_RUNS THREADS")
