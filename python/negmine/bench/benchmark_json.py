"""The run as pytest-benchmark JSON (``negmine bench --json``), so that ``pytest-benchmark
compare`` shows it and compares it with other runs."""

from __future__ import annotations

import datetime
import json
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from negmine import _core
from negmine._atomic import atomic_write
from negmine.bench.mining import MiningRow
from negmine.bench.settings import BENCH_CELL_BUDGET, CELL_BUDGET
from negmine.bench.timing import Measurement


def quartiles(data: Sequence[float]) -> tuple[float, float]:
    """Q1 and Q3 of sorted ``data`` as pytest-benchmark computes them: the medians of the lower
    and upper halves for an even count, Tukey's hinges interpolated (Wikipedia's "method 3")
    for an odd one."""
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2 == 0:
        return statistics.median(data[: n // 2]), statistics.median(data[n // 2 :])
    m = n // 4
    if n % 4 == 1:
        return 0.25 * data[m - 1] + 0.75 * data[m], 0.75 * data[3 * m] + 0.25 * data[3 * m + 1]
    return 0.75 * data[m] + 0.25 * data[m + 1], 0.25 * data[3 * m + 1] + 0.75 * data[3 * m + 2]


def run_stats(runs: Sequence[float]) -> dict[str, Any]:
    """The ``stats`` of one pytest-benchmark entry from the timed runs (one iteration each),
    with that format's field meanings: quartiles, Tukey (1.5 IQR) and 1-stddev outliers."""
    data = sorted(runs)
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if len(data) > 1 else 0.0
    q1, q3 = quartiles(data)
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    tukey = sum(1 for x in data if x < low or x > high)
    spread = sum(1 for x in data if x < mean - stddev or x > mean + stddev)
    total = sum(data)
    return {
        "min": data[0],
        "max": data[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": len(data),
        "median": statistics.median(data),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": tukey,
        "stddev_outliers": spread,
        "outliers": f"{spread};{tukey}",
        "ld15iqr": min(x for x in data if x >= low),
        "hd15iqr": max(x for x in data if x <= high),
        "ops": len(data) / total if total else 0.0,
        "total": total,
        "data": list(runs),
        "iterations": 1,
    }


def pytest_benchmark_document(
    measurements: Sequence[Measurement],
    info: dict[str, Any],
    shape: tuple[int, int, int],
    threads: int,
    repeats: int,
    options: dict[str, Any],
    mining: Sequence[MiningRow] = (),
) -> dict[str, Any]:
    """The run in pytest-benchmark's JSON layout, so ``pytest-benchmark compare`` can show it
    and compare it with other runs (one benchmark per method and k, grouped by k; the mining
    table's rows in a group of their own)."""
    q, n, d = shape
    size = {"queries": q, "corpus_rows": n, "dim": d, "threads": threads}
    benchmarks = [_search_benchmark(m, size, repeats) for m in measurements]
    benchmarks += [_mining_benchmark(row, size, repeats) for row in mining]
    return {
        "machine_info": _machine_info(info),
        # No source checkout to name: the installed negmine's version is what was measured.
        "commit_info": {
            "id": None,
            "time": None,
            "author_time": None,
            "dirty": False,
            "project": "negmine",
            "branch": None,
            "negmine_version": _core.__version__,
        },
        "benchmarks": benchmarks,
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": _core.__version__,
        "options": options,
    }


def _search_benchmark(m: Measurement, size: dict[str, int], repeats: int) -> dict[str, Any]:
    """The entry of one method and k of the search table (``size``: its queries, corpus rows,
    dim and threads)."""
    q, n, d = size["queries"], size["corpus_rows"], size["dim"]
    return _benchmark(
        f"{m.method.name}[{m.method.corpus}-k{m.k}]",
        f"top-{m.k} {q}x{n}x{d}",
        {"corpus": m.method.corpus, "k": m.k},
        f"{m.method.corpus}-k{m.k}",
        {
            "method": m.method.name,
            "corpus_dtype": m.method.corpus,
            "k": m.k,
            **size,
            "queries_per_second": q / m.seconds,
            "gflops": 2.0 * q * n * d / m.seconds / 1e9,
            "negmine_speedup": m.seconds / m.reference_seconds,
            "approximate": m.method.approximate,
            "note": m.note,
            **m.agreement,
        },
        repeats,
        CELL_BUDGET,
        m.timing.runs,
    )


def _mining_benchmark(row: MiningRow, size: dict[str, int], repeats: int) -> dict[str, Any]:
    """The entry of one row of the mining table."""
    return _benchmark(
        f"mining[{row.name}]",
        f"mining {size['queries']}x{size['corpus_rows']}x{size['dim']}",
        {"method": row.name},
        row.name,
        {
            "method": row.name,
            **size,
            "rows_filled": row.rows,
            "same_negatives": row.same,
            "note": row.note,
        },
        repeats,
        BENCH_CELL_BUDGET,
        row.timing.runs,
    )


def _benchmark(
    name: str,
    group: str,
    params: dict[str, Any],
    param: str,
    extra_info: dict[str, Any],
    repeats: int,
    max_time: float,
    runs: Sequence[float],
) -> dict[str, Any]:
    """One pytest-benchmark entry (its name with ``_`` for spaces)."""
    name = name.replace(" ", "_")
    return {
        "group": group,
        "name": name,
        "fullname": f"negmine bench::{name}",
        "params": params,
        "param": param,
        "extra_info": extra_info,
        "options": {
            "disable_gc": False,
            "timer": "perf_counter",
            "min_rounds": repeats,
            "max_time": max_time,
            "min_time": 0,
            "warmup": True,
        },
        "stats": run_stats(runs),
    }


def _machine_info(info: dict[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's ``machine_info``, with negmine's own (``machine_info``) inside."""
    uname = platform.uname()
    return {
        "node": uname.node,
        "processor": uname.processor,
        "machine": uname.machine,
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(),
        "python_build": list(platform.python_build()),
        "release": uname.release,
        "system": uname.system,
        "cpu": {
            "brand_raw": info["cpu"],
            "arch": uname.machine,
            "count": info["cores"],
            "flags": info["flags"],
        },
        "negmine": info,
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    with atomic_write(path) as f:
        f.write(json.dumps(document, indent=1).encode())
