"""The candidate-source seam (``negmine.sources``): every entry point (the CLI's ``mine`` and
``search``, the checkpointed directory runs) mines with ``backend=`` as ``negmine.mine`` does,
byte for byte; a source added by one module and one registry line reaches all of them."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import negmine
from negmine import sources
from negmine.checkpoint import mine_to_directory, partial_directory
from negmine.cli import main as cli_main
from negmine.errors import InvalidArgumentError
from negmine.result import MiningResult

OPTIONS = {"num_negatives": 4, "relative_margin": 0.05, "sampling_strategy": "random", "seed": 7}
FLAGS = ["--num-negatives", "4", "--relative-margin", "0.05", "--sampling-strategy", "random"]
FLAGS += ["--seed", "7", "--chunk-queries", "6", "--quiet"]


def write_inputs(directory: Path, n_queries: int = 25, n_corpus: int = 500, dim: int = 16):
    rng = np.random.default_rng(3)
    corpus = rng.normal(size=(n_corpus, dim)).astype(np.float32)
    pos = rng.choice(n_corpus, size=n_queries, replace=False)
    queries = (rng.normal(size=(n_queries, dim)) + 2 * corpus[pos]).astype(np.float32)
    corpus[pos[::4] + 1 - 2 * (pos[::4] == n_corpus - 1)] = corpus[pos[::4]]  # duplicates
    q, c, r = directory / "q.npy", directory / "c.npy", directory / "qrels.tsv"
    np.save(q, queries)
    np.save(c, corpus)
    r.write_text("".join(f"{i}\t{p}\n" for i, p in enumerate(pos)))
    return q, c, r


def comparable(result: MiningResult) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every array's bytes and the report, but whether this run built the graph or loaded it
    and how many corpus passes torch made (one per chunk of queries at least: the CLI's chunks
    are smaller)."""
    report = result.report.to_dict()
    if report.get("ann"):
        report["ann"] = {k: v for k, v in report["ann"].items() if k != "built"}
    if report.get("torch"):
        report["torch"] = {k: v for k, v in report["torch"].items() if "scans" not in k}
    return {k: v.tobytes() for k, v in result.arrays().items()}, report


@pytest.fixture
def hnswlib() -> None:
    pytest.importorskip("hnswlib")


@pytest.fixture
def torch() -> None:
    pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("backend", "flags", "settings"),
    [
        ("exact", [], {}),
        ("torch", ["--tile-rows", "64", "--torch-slack", "3"], {"tile_rows": 64, "torch_slack": 3}),
        ("hnsw", ["--target-recall", "0.9", "--hnsw-m", "8"], {"target_recall": 0.9, "hnsw_m": 8}),
    ],
)
def test_cli_mine_with_a_backend_equals_the_api(
    tmp_path: Path, backend: str, flags: list[str], settings: dict[str, Any]
) -> None:
    pytest.importorskip({"exact": "numpy", "torch": "torch", "hnsw": "hnswlib"}[backend])
    q, c, r = write_inputs(tmp_path)
    # The API builds the graph beside the corpus file (one thread: deterministic); the CLI
    # loads it: both mine from the same graph.
    api = negmine.mine(
        np.load(q), str(c), str(r), backend=backend, threads=1, **settings, **OPTIONS
    )  # type: ignore[arg-type]
    argv = ["mine", "--queries", str(q), "--corpus", str(c), "--positives", str(r), *FLAGS]
    assert cli_main([*argv, "--out", str(tmp_path / "out"), "--backend", backend, *flags]) == 0
    got = MiningResult.load(tmp_path / "out")
    assert comparable(got) == comparable(api)
    assert got.report.backend == backend
    if backend == "hnsw":
        assert got.report.ann is not None and got.report.ann.built is False  # loaded
    if backend == "torch":  # exact, bit for bit
        exact = negmine.mine(np.load(q), np.load(c), str(r), **OPTIONS)  # type: ignore[arg-type]
        assert comparable(got)[0] == comparable(exact)[0]


def test_cli_search_with_torch_equals_the_api(tmp_path: Path, torch: None) -> None:
    q, c, _ = write_inputs(tmp_path)
    argv = ["search", "--queries", str(q), "--corpus", str(c), "--k", "9", "--quiet"]
    assert cli_main([*argv, "--out", str(tmp_path / "t.npz"), "--backend", "torch"]) == 0
    assert cli_main([*argv, "--out", str(tmp_path / "e.npz")]) == 0
    api = negmine.search(np.load(q), np.load(c), 9, backend="torch", tile_rows=100)
    for name in ("t", "e"):
        with np.load(tmp_path / f"{name}.npz") as z:
            assert z["scores"].tobytes() == api[0].tobytes()
            assert z["ids"].tobytes() == api[1].tobytes()


def test_a_checkpoint_of_other_graph_settings_is_not_resumed(tmp_path: Path, hnswlib: None) -> None:
    q, c, r = write_inputs(tmp_path)
    options = negmine.MiningOptions(**OPTIONS)
    out = tmp_path / "out"
    calls = 0

    def stop_after_one(done: int, total: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first chunk is checkpointed
            raise KeyboardInterrupt

    settings = {"target_recall": 0.9}
    run = {"chunk_queries": 6, "threads": 1, "backend": "hnsw"}
    with pytest.raises(KeyboardInterrupt):
        mine_to_directory(
            q, c, r, out, options, progress=stop_after_one, **run, backend_options=settings
        )  # type: ignore[arg-type]
    manifest = json.loads((partial_directory(out) / "manifest.json").read_text())
    assert manifest["backend"]["target_recall"] == 0.9
    with pytest.raises(InvalidArgumentError, match="interrupted run of other inputs or options"):
        mine_to_directory(
            q, c, r, out, options, progress=False, **run, backend_options={"target_recall": 0.8}
        )  # type: ignore[arg-type]
    resumed = mine_to_directory(
        q, c, r, out, options, progress=False, **run, backend_options=settings
    )  # type: ignore[arg-type]
    api = negmine.mine(np.load(q), str(c), str(r), backend="hnsw", target_recall=0.9, **OPTIONS)  # type: ignore[arg-type]
    assert comparable(resumed)[0] == comparable(api)[0]


def test_torch_and_exact_checkpoints_resume_each_other(tmp_path: Path, torch: None) -> None:
    q, c, r = write_inputs(tmp_path)
    options = negmine.MiningOptions(**OPTIONS)
    out = tmp_path / "out"

    def stop(done: int, total: int) -> None:
        if 0 < done < total:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mine_to_directory(q, c, r, out, options, chunk_queries=6, progress=stop, backend="torch")
    resumed = mine_to_directory(q, c, r, out, options, chunk_queries=6, progress=False)
    assert comparable(resumed)[0] == comparable(negmine.mine(str(q), str(c), str(r), **OPTIONS))[0]  # type: ignore[arg-type]


# --- a new source: one module and one registry line ---------------------------------------------


@dataclass(frozen=True)
class ScanSettings:
    """A toy source: numpy scores of the whole corpus (the docs/internals.md example)."""

    scan_rows: int = 0

    def identity(self) -> None:
        return None


@dataclass
class Scan:
    normalize: bool
    name: str = "scan"
    chunk_rows: int | None = 10
    max_depth: int | None = None
    ranked: bool = False  # the core ranks the candidates by their exact scores

    def fetch(
        self,
        start: int,
        queries: np.ndarray,
        excluded: tuple[np.ndarray, np.ndarray],
        corpus: Any,
    ) -> sources.Fetch:
        def unit(x: np.ndarray) -> np.ndarray:
            x = x.astype(np.float64)
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)

        c = np.asarray(corpus)
        q, c = (unit(queries), unit(c)) if self.normalize else (queries, c)

        def fetch(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
            scores = np.asarray(q[rows], np.float64) @ np.asarray(c, np.float64).T
            # Generously deep: the core rescores, drops excluded ids and keeps the best.
            want = min(len(c), 2 * depth + 16 + int(np.diff(excluded[0]).max(initial=0)))
            return sources.candidate_csr(np.argsort(-scores, axis=1, kind="stable")[:, :want])

        return fetch

    def negative_sources(self, fetch: Any, part: Any) -> None:
        return None

    def report(self, report: Any, parts: Sequence[Any]) -> None:
        report.backend = "scan"
        sources.count_fallbacks(report, parts)


def scan_open(job: sources.Job, settings: ScanSettings) -> Scan:
    return Scan(job.metric == "cosine")


@pytest.fixture
def scan_source(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("scan_source")
    module.Settings = ScanSettings  # type: ignore[attr-defined]
    module.open = scan_open  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "scan_source", module)
    monkeypatch.setitem(sources.BACKENDS, "scan", "scan_source")


def test_a_new_source_reaches_mine_and_the_checkpointed_runs(
    tmp_path: Path, scan_source: None
) -> None:
    q, c, r = write_inputs(tmp_path)
    exact = negmine.mine(str(q), str(c), str(r), **OPTIONS)  # type: ignore[arg-type]
    scanned = negmine.mine(str(q), str(c), str(r), backend="scan", **OPTIONS)  # type: ignore[arg-type]
    assert comparable(scanned)[0] == comparable(exact)[0]
    assert scanned.report.backend == "scan"
    options = negmine.MiningOptions(**OPTIONS)
    directory = mine_to_directory(
        q, c, r, tmp_path / "out", options, chunk_queries=7, progress=False, backend="scan"
    )
    assert comparable(directory) == comparable(scanned)


def test_unknown_backends_and_settings_are_named(tmp_path: Path) -> None:
    q, c, r = write_inputs(tmp_path)
    names = list(sources.BACKENDS)
    listed = ", ".join(map(repr, names[:-1])) + f" or {names[-1]!r}"
    with pytest.raises(ValueError, match=re.escape(f"backend must be one of {listed}")):
        mine_to_directory(q, c, r, tmp_path / "o", negmine.MiningOptions(), backend="faiss")
    with pytest.raises(ValueError, match="tile_rows"):
        negmine.mine(str(q), str(c), str(r), tile_rows=0)
    argv = ["mine", "--queries", str(q), "--corpus", str(c), "--positives", str(r)]
    with pytest.raises(SystemExit) as exit:
        cli_main([*argv, "--out", str(tmp_path / "o"), "--backend", "faiss"])
    assert exit.value.code == 2
    assert cli_main([*argv, "--out", str(tmp_path / "o"), "--backend", "torch", "--ray", "x"]) == 2


def test_sources_import_no_mining_module() -> None:
    """The seam sits below mining, search, the checkpoint and Ray: no circle through it."""
    for name in sources.BACKENDS.values():
        text = (
            Path(sys.modules["negmine.sources"].__file__)
            .with_name(  # type: ignore[arg-type]
                name.rsplit(".", 1)[1] + ".py"
            )
            .read_text()
        )
        for module in ("negmine.mine", "negmine.search", "negmine.checkpoint"):
            assert f"from {module} " not in text and f"import {module}" not in text, name
