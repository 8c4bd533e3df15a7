"""`negmine bench`: a tiny run through the CLI prints the ratios and writes pytest-benchmark
JSON that names the machine; the user's own .npy files work; bad input gives negmine errors.
Speed is never asserted: only that the numbers printed and written are the ones measured."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import negmine
from negmine import bench
from negmine.cli import main

TINY = ["--queries", "64", "--corpus-size", "2000", "--dim", "32", "--repeats", "1"]
ONLY_NUMPY = ["--skip", "faiss,torch,hnswlib,st"]


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    found = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


def _bench(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["bench", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    """The printed table by (method, corpus); cells split on runs of two or more spaces."""
    rows = {}
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 9 and cells[2].isdigit():
            rows[(cells[0], cells[1])] = cells
    return rows


def test_tiny_run_prints_ratios_and_writes_pytest_benchmark_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "bench.json"
    code, out, err = _bench([*TINY, "--k", "10", *ONLY_NUMPY, "--json", str(out_json)], capsys)
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= doc.keys()
    by_name = {b["name"]: b for b in doc["benchmarks"]}
    assert set(by_name) == {"negmine[f32-k10]", "negmine[f16-k10]", "numpy[f32-k10]"}
    for b in doc["benchmarks"]:
        assert b["group"] == "top-10 64x2000x32"
        stats = b["stats"]
        assert {"min", "max", "mean", "stddev", "rounds", "median", "ops", "data"} <= stats.keys()
        assert stats["rounds"] == len(stats["data"]) == 1
        assert stats["min"] == stats["max"] == stats["median"] == stats["data"][0] > 0
        assert b["extra_info"]["threads"] >= 1
    # The ratio is numpy's best time over negmine's, in the JSON and in the printed table.
    negmine_s = by_name["negmine[f32-k10]"]["stats"]["min"]
    numpy_s = by_name["numpy[f32-k10]"]["stats"]["min"]
    assert by_name["numpy[f32-k10]"]["extra_info"]["negmine_speedup"] == pytest.approx(
        numpy_s / negmine_s
    )
    rows = _rows(out)
    assert rows[("numpy", "f32")][7] == f"{numpy_s / negmine_s:.2f}x"
    assert rows[("negmine", "f32")][7] == "1.00x"
    # numpy is exact: it finds negmine's ids (up to a near-tie at the k-th place).
    assert by_name["numpy[f32-k10]"]["extra_info"]["recall"] >= 0.99
    assert float(rows[("numpy", "f32")][8]) >= 0.99
    # The machine is named: the CPU model, negmine's kernels, the BLAS numpy uses.
    info = doc["machine_info"]
    if _cpu_model() is not None:
        assert info["cpu"]["brand_raw"] == _cpu_model()
        assert f"CPU: {_cpu_model()}" in out
    features = [f for f in negmine.cpu_features() if f != "avx512vnni"]
    assert info["negmine"]["kernels"] == features[-1]
    assert f"kernels: {features[-1]}" in out
    # Skipped on request, not reported missing (nor run). A BLAS line may name faiss' own
    # OpenBLAS: it is loaded whenever an earlier test imported faiss in this process.
    assert not [line for line in out.splitlines() if "faiss" in line and "openblas" not in line]


def test_pytest_benchmark_compare_reads_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pytest_benchmark")
    out_json = tmp_path / "0001_bench.json"
    code, _, err = _bench([*TINY, "--k", "5", *ONLY_NUMPY, "--json", str(out_json)], capsys)
    assert code == 0, err
    shown = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(out_json)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert shown.returncode == 0, shown.stderr
    assert "top-5 64x2000x32" in shown.stdout
    assert "numpy[f32-k5]" in shown.stdout


@pytest.mark.parametrize(
    "runs", [[3.0], [2.0, 1.0], [1.0, 5.0, 2.0], [4, 1, 3, 2, 9], [1, 2, 3, 4, 5, 6, 30]]
)
def test_run_stats_match_pytest_benchmark(runs: list[float]) -> None:
    stats_mod: Any = pytest.importorskip("pytest_benchmark.stats")
    theirs = stats_mod.Stats()
    for x in runs:
        theirs.update(float(x))
    ours = bench.run_stats([float(x) for x in runs])
    for name in stats_mod.Stats.fields:
        expected = getattr(theirs, name)
        if isinstance(expected, str):  # "outliers": "stddev;iqr" counts
            assert ours[name] == expected
        else:
            assert ours[name] == pytest.approx(expected), name


def test_own_npy_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    corpus, queries = tmp_path / "corpus.npy", tmp_path / "queries.npy"
    np.save(corpus, rng.standard_normal((500, 16)).astype(np.float16))
    np.save(queries, rng.standard_normal((40, 16)).astype(np.float32))
    out_json = tmp_path / "own.json"
    args = ["--corpus", str(corpus), "--queries", str(queries), "--max-queries", "20"]
    code, out, err = _bench(
        [*args, "--k", "5", "--repeats", "2", *ONLY_NUMPY, "--json", str(out_json)], capsys
    )
    assert code == 0, err
    assert "first 20 of 40 queries" in out
    assert "20 queries x 500 corpus rows x d = 16" in out
    rows = _rows(out)
    assert set(rows) == {("negmine", "f16"), ("numpy", "f32")}  # the file as it is: no copies
    # numpy searched the f32 copy of the same f16 values: the same neighbours.
    assert float(rows[("numpy", "f32")][8]) >= 0.99
    doc = json.loads(out_json.read_text())
    assert [b["stats"]["rounds"] for b in doc["benchmarks"]] == [2, 2]


def test_dimension_mismatch_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus, queries = tmp_path / "corpus.npy", tmp_path / "queries.npy"
    np.save(corpus, np.ones((50, 16), np.float32))
    np.save(queries, np.ones((4, 8), np.float32))
    code, _, err = _bench(["--corpus", str(corpus), "--queries", str(queries), "--k", "3"], capsys)
    assert code != 0
    assert "dimension mismatch" in err and "d = 8" in err and "d = 16" in err
    missing = tmp_path / "nope.npy"
    code, _, err = _bench(["--corpus", str(missing), "--queries", str(queries)], capsys)
    assert code != 0
    assert "corpus file not found" in err
    np.save(queries, np.ones((4, 16), np.float32))
    code, _, err = _bench(["--corpus", str(corpus), "--queries", str(queries), "--k", "51"], capsys)
    assert code != 0
    assert "--k 51 exceeds the corpus' 50 rows" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--queries", "q.npy"], "a file needs --corpus FILE too"),
        (["--corpus", "c.npy"], "--corpus FILE needs --queries FILE"),
        (["--skip", "annoy"], "--skip: unknown ['annoy']"),
        (["--max-queries", "5"], "--max-queries goes with --queries FILE"),
    ],
)
def test_usage_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _bench(args, capsys)
    assert code == 2
    assert message in err


def test_peers_that_cannot_hold_the_corpus_are_refused() -> None:
    q, n, d = 1000, 100_000, 256
    base = n * d * 4
    notes: list[str] = []
    kept, load = bench.fitting_peers({"numpy": np}, q, n, d, base // 2, notes.append)
    assert (kept, load) == ({}, False)
    assert "need the corpus in RAM as float32: 0.1 GiB" in notes[0]
    # The corpus fits, numpy's 1000 x N score block and its argpartition indices do not.
    notes.clear()
    peers = {"numpy": np, "faiss": object()}
    kept, load = bench.fitting_peers(peers, q, n, d, int(1.5 * base), notes.append)
    assert load and list(kept) == ["faiss"]
    assert notes and notes[0].startswith("numpy: not run: needs")


def test_generated_data_larger_than_memory_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _bench(["--corpus-size", "1000000000", "--dim", "1024"], capsys)
    assert code != 0
    assert "generating 2,048 queries and 1,000,000,000 corpus rows of d = 1024 needs" in err


def test_missing_peer_is_named_with_its_pip_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # None in sys.modules: import fails
    code, out, err = _bench([*TINY, "--k", "5", "--skip", "torch,hnswlib", "--quiet"], capsys)
    assert code == 0, err
    assert "- faiss: not installed, not run (pip install faiss-cpu)" in out
    assert "mining against sentence-transformers: not run (pip install" in out
    assert set(_rows(out)) == {("negmine", "f32"), ("negmine", "f16"), ("numpy", "f32")}
    assert err == ""  # --quiet: the table only


def test_json_into_a_missing_directory_fails_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "bench.json"
    code, out, err = _bench([*TINY, *ONLY_NUMPY, "--json", str(target)], capsys)
    assert code != 0
    assert "output directory does not exist" in err and out == ""


def test_peers_name_their_kernels_and_faiss_runs_at_its_best_core(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """faiss as shipped and in a subprocess with OPENBLAS_CORETYPE set to this CPU's core: the
    subprocess's OpenBLAS reports those kernels; every peer names its BLAS; best and median
    are the runs' minimum and median; with sentence-transformers, the mining table."""
    pytest.importorskip("faiss")
    core = bench.openblas_core()
    if core is None:
        pytest.skip("no AVX2 or AVX-512: no OPENBLAS_CORETYPE to set")
    out_json = tmp_path / "b.json"
    code, out, err = _bench(
        [*TINY, "--k", "5", "--repeats", "3", "--skip", "hnswlib", "--json", str(out_json)], capsys
    )
    assert code == 0, err
    rows = _rows(out)
    assert rows[("faiss", "f32")][-1].startswith("as shipped: openblas")
    tuned = rows[(f"faiss {core}", "f32")]
    assert tuned[-1].startswith(f"OPENBLAS_CORETYPE={core}: openblas")
    assert tuned[-1].endswith(f"{core} kernels")  # the subprocess really ran them
    assert float(tuned[8]) >= 0.99
    assert "kernels" in rows[("numpy", "f32")][-1]
    by_name = {b["name"]: b["stats"] for b in json.loads(out_json.read_text())["benchmarks"]}
    for (method, corpus), cells in rows.items():
        stats = by_name[f"{method.replace(' ', '_')}[{corpus}-k5]"]
        assert stats["rounds"] == 3  # at least 3 runs: tiny cells never reach the budget
        assert cells[3] == f"{stats['min']:.3f}" and cells[4] == f"{stats['median']:.3f}"
        assert cells[5] == f"{stats['max'] / stats['min'] - 1:.0%}"
    if bench.installed("sentence_transformers", "datasets"):
        mined = [
            line
            for line in out.splitlines()
            if line.startswith(("negmine mine_", "negmine.mine", "sentence-"))
        ]
        assert [re.split(r"\s{2,}", line)[0] for line in mined] == [
            "negmine mine_hard_negatives",
            "sentence-transformers",
            "negmine.mine",
        ]
        # Every query has a nearest row as its positive and 2,000 rows to mine from.
        assert all(re.split(r"\s{2,}", line)[5] == "64" for line in mined)
        # The JSON has the mining rows too, with their runs' statistics.
        for line in mined:
            name = re.split(r"\s{2,}", line)[0]
            stats = by_name[f"mining[{name}]".replace(" ", "_")]
            assert stats["rounds"] >= 1 and f"{stats['min']:.3f}" in line


def test_timing_keeps_best_median_spread_and_at_least_min_runs() -> None:
    calls = []
    timing = bench.time_best(
        lambda: calls.append(1), repeats=5, warmup=True, budget=0.0, min_runs=3
    )
    assert len(timing.runs) == 3 and len(calls) == 4  # budget spent: the minimum, + warm-up
    assert len(bench.time_best(lambda: None, 2, False, 0.0, 3).runs) == 2  # never past repeats
    assert len(bench.time_best(lambda: None, 4, False, 1e9, 3).runs) == 4
    fixed = bench.Timing(1.0, [2.0, 1.0, 4.0, 3.0], None)
    assert (fixed.median, fixed.spread) == (2.5, 3.0)


@pytest.mark.parametrize(
    ("flags", "core"),
    [({"avx512f", "avx2", "fma"}, "SkylakeX"), ({"avx2", "fma"}, "Haswell"), ({"sse4_2"}, None)],
)
def test_openblas_core_for_the_cpu(flags: set[str], core: str | None) -> None:
    assert bench.openblas_core(flags) == core
