"""faiss with ``OPENBLAS_CORETYPE`` set to this CPU's best OpenBLAS core: OpenBLAS reads it
when it loads, so this row runs in a subprocess (``python -m negmine.bench faiss-child``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from negmine.bench.machine import blas_label, blas_libraries, limit_threads
from negmine.bench.timing import Method, Result, Timing, time_best


def faiss_core_method(
    xq: np.ndarray, xb: np.ndarray, threads: int, core: str, directory: Path
) -> Method:
    """``faiss.knn`` with ``OPENBLAS_CORETYPE=core``: OpenBLAS reads it when it loads, so it
    runs in a subprocess (``python -m negmine.bench faiss-child``) on copies of the data in
    ``directory`` (the caller's scratch, removed by it); the note names the kernels that
    subprocess's OpenBLAS reports."""
    np.save(directory / "xq.npy", xq)
    np.save(directory / "xb.npy", xb)
    ran: dict[str, str] = {}

    def timed(k: int, repeats: int, budget: float, min_runs: int) -> Timing:
        env = {**os.environ, "OPENBLAS_CORETYPE": core}
        argv = [str(x) for x in (directory, k, repeats, budget, min_runs, threads)]
        proc = subprocess.run(
            [sys.executable, "-m", "negmine.bench", "faiss-child", *argv],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"faiss with OPENBLAS_CORETYPE={core} failed in its subprocess: "
                f"{proc.stderr.strip()[-2000:]}"
            )
        record = json.loads((directory / "timing.json").read_text())
        ran["blas"] = record["blas"]
        result = (np.load(directory / "scores.npy"), np.load(directory / "ids.npy"))
        return Timing(min(record["runs"]), record["runs"], result)

    def run(k: int) -> Result:
        raise RuntimeError("timed in its subprocess")

    return Method(
        f"faiss {core}",
        "f32",
        run,
        note=lambda k: f"OPENBLAS_CORETYPE={core}: {ran.get('blas', '?')}",
        timed=timed,
    )


def faiss_child(argv: Sequence[str]) -> int:
    """The subprocess of :func:`faiss_core_method`: times ``faiss.knn`` on the saved data and
    writes the result, the runs and the kernels OpenBLAS chose."""
    directory = Path(argv[0])
    k, repeats, budget, min_runs, threads = (
        int(argv[1]),
        int(argv[2]),
        float(argv[3]),
        int(argv[4]),
        int(argv[5]),
    )
    import faiss

    faiss.omp_set_num_threads(threads)
    limiter = limit_threads(threads)
    xq, xb = np.load(directory / "xq.npy"), np.load(directory / "xb.npy")
    timing = time_best(
        lambda: faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT),
        repeats,
        True,
        budget,
        min_runs,
    )
    if limiter is not None:
        limiter.restore_original_limits()
    scores, ids = timing.result
    np.save(directory / "scores.npy", np.asarray(scores, np.float32))
    np.save(directory / "ids.npy", np.asarray(ids, np.int64))
    record = {"runs": timing.runs, "blas": blas_label(blas_libraries().get("faiss_cpu"))}
    (directory / "timing.json").write_text(json.dumps(record))
    return 0
