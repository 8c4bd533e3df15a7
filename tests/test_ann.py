"""backend="hnsw": candidates from an hnswlib graph, rescored exactly (negmine.ann)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import negmine
from negmine import _digest, ann, sources

pytest.importorskip("hnswlib")

N_CORPUS, N_QUERIES, DIM, CLUSTERS = 2000, 150, 32, 30


def clustered(
    seed: int, dtype: type = np.float32
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Well separated clusters: HNSW finds the true neighbours there."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(CLUSTERS, DIM))
    corpus = centers[rng.integers(0, CLUSTERS, N_CORPUS)] + 0.3 * rng.normal(size=(N_CORPUS, DIM))
    labels = rng.integers(0, CLUSTERS, N_QUERIES)
    queries = centers[labels] + 0.3 * rng.normal(size=(N_QUERIES, DIM))
    positives = [[int(i)] for i in rng.integers(0, N_CORPUS, N_QUERIES)]
    return queries.astype(dtype), corpus.astype(dtype), positives


def index_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("corpus.npy.hnsw-*.bin"))


def built(result: negmine.MiningResult) -> bool:
    """Whether mining built its HNSW index (rather than loading a saved one)."""
    assert result.report.ann is not None
    return result.report.ann.built is True


def index_path(result: negmine.MiningResult) -> str | None:
    assert result.report.ann is not None
    return result.report.ann.path


def assert_same(a: negmine.MiningResult, b: negmine.MiningResult) -> None:
    np.testing.assert_array_equal(a.negative_ids, b.negative_ids)
    np.testing.assert_array_equal(a.negative_scores, b.negative_scores)
    np.testing.assert_array_equal(a.positive_scores, b.positive_scores)
    assert a.report.starved == b.report.starved
    assert a.report.negatives == b.report.negatives


@pytest.mark.parametrize(
    "options",
    [
        {"sampling_strategy": "top", "num_negatives": 5},
        {"sampling_strategy": "top", "num_negatives": 4, "range_min": 3, "relative_margin": 0.05},
        {"sampling_strategy": "random", "num_negatives": 3, "seed": 7},
    ],
    ids=["top", "top-window-margin", "random"],
)
def test_hnsw_matches_exact_on_clustered_data(options: dict[str, object]) -> None:
    queries, corpus, positives = clustered(1)
    exact = negmine.mine(queries, corpus, positives, **options)  # type: ignore[arg-type]
    approx = negmine.mine(
        queries,
        corpus,
        positives,
        backend="hnsw",
        target_recall=1.0,
        threads=1,
        **options,  # type: ignore[arg-type]
    )
    assert_same(exact, approx)
    assert approx.report.backend == "hnsw"
    info = approx.report.ann
    assert info is not None
    assert info.recall == 1.0 and info.target_recall == 1.0
    assert info.ef is not None and info.ef >= 32
    assert info.recall_depth is not None and info.recall_depth >= 16
    assert info.recall_sample == N_QUERIES  # fewer queries than the sample size
    text = str(approx.report)
    assert f"ef {info.ef}" in text and f"recall@{info.recall_depth} 1.0000" in text
    assert exact.report.backend == "exact" and exact.report.ann is None


def test_index_saved_beside_the_corpus_and_reused(tmp_path: Path) -> None:
    queries, corpus, positives = clustered(2)
    path = tmp_path / "corpus.npy"
    negmine.save_embeddings(path, corpus)
    first = negmine.mine(queries, path, positives, backend="hnsw", threads=1)
    assert built(first)
    (saved,) = index_files(tmp_path)
    assert index_path(first) == str(saved)
    sidecar = Path(f"{saved}.json")
    meta = json.loads(sidecar.read_text())
    assert meta["corpus"]["size"] == path.stat().st_size
    assert meta["params"] == {"metric": "cosine", "m": 16, "ef_construction": 200}
    stamp = saved.stat().st_mtime_ns, sidecar.stat().st_mtime_ns

    second = negmine.mine(queries, str(path), positives, backend="hnsw", threads=1)
    assert not built(second)  # loaded, not rebuilt
    assert index_path(second) == str(saved)
    assert (saved.stat().st_mtime_ns, sidecar.stat().st_mtime_ns) == stamp
    assert index_files(tmp_path) == [saved]
    assert_same(first, second)
    assert first.report.ann is not None and second.report.ann is not None
    assert first.report.ann.ef == second.report.ann.ef
    assert first.report.ann.recall == second.report.ann.recall

    # Other graph parameters or metric: another file, built once.
    assert built(negmine.mine(queries, path, positives, backend="hnsw", hnsw_m=8, threads=1))
    assert built(negmine.mine(queries, path, positives, backend="hnsw", metric="dot", threads=1))
    assert len(index_files(tmp_path)) == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_changed_corpus_file_is_rebuilt(tmp_path: Path) -> None:
    queries, corpus, positives = clustered(3, np.float16)
    path = tmp_path / "corpus.npy"
    negmine.save_embeddings(path, corpus)
    assert built(negmine.mine(queries, path, positives, backend="hnsw", threads=1))
    (saved,) = index_files(tmp_path)
    old_mtime = path.stat().st_mtime_ns

    # Same shape and size, other rows: the stale graph must not be used.
    _, new_corpus, _ = clustered(4, np.float16)
    negmine.save_embeddings(path, new_corpus)
    os.utime(path, ns=(old_mtime + 10**9, old_mtime + 10**9))
    approx = negmine.mine(queries, path, positives, backend="hnsw", target_recall=1.0, threads=1)
    assert built(approx)
    assert index_files(tmp_path) == [saved]  # replaced in place
    meta = json.loads(Path(f"{saved}.json").read_text())
    assert meta["corpus"]["blake2b"] == _digest.file_digest(path, "corpus")["blake2b"]
    assert_same(negmine.mine(queries, new_corpus, positives), approx)

    assert not built(negmine.mine(queries, path, positives, backend="hnsw", threads=1))


def test_in_memory_corpus_with_hnsw_path(tmp_path: Path) -> None:
    queries, corpus, positives = clustered(5)
    # In memory: nothing saved, nothing reused.
    for _ in range(2):
        result = negmine.mine(queries, corpus, positives, backend="hnsw", threads=1)
        assert built(result) and index_path(result) is None
    assert not list(tmp_path.iterdir())

    where = tmp_path / "graph.bin"
    first = negmine.mine(queries, corpus, positives, backend="hnsw", hnsw_path=where, threads=1)
    again = negmine.mine(
        queries, corpus.copy(), positives, backend="hnsw", hnsw_path=where, threads=1
    )
    assert built(first) and not built(again)  # same bytes: reused
    assert index_path(first) == index_path(again) == str(where)
    changed = corpus.copy()
    changed[0, 0] += 1
    assert built(
        negmine.mine(queries, changed, positives, backend="hnsw", hnsw_path=where, threads=1)
    )


def test_incomplete_queries_are_fetched_again() -> None:
    queries, corpus, positives = clustered(6)
    # Every row of the query's own cluster scores above 0.8: the first fetch (depth 16) is all
    # removed by max_score, so every query must go deeper to fill its window.
    options: dict[str, object] = {"num_negatives": 4, "max_score": 0.8}
    exact = negmine.mine(queries, corpus, positives, **options)  # type: ignore[arg-type]
    approx = negmine.mine(
        queries,
        corpus,
        positives,
        backend="hnsw",
        target_recall=1.0,
        threads=1,
        **options,  # type: ignore[arg-type]
    )
    assert exact.report.starved == []
    assert exact.report.removed["max_score"] > 16 * N_QUERIES
    assert_same(exact, approx)
    assert approx.report.refetched > N_QUERIES // 2
    assert approx.report.exact_fallback == 0
    assert "re-fetched deeper" in str(approx.report)


def test_starved_queries_end_like_exact() -> None:
    queries, corpus, positives = clustered(7)
    # Almost nothing passes: the fetch deepens past the graph limit to an exact scan of the
    # whole corpus, and queries end starved exactly as on the exact path.
    options: dict[str, object] = {"num_negatives": 3, "min_score": 0.95}
    exact = negmine.mine(queries, corpus, positives, **options)  # type: ignore[arg-type]
    approx = negmine.mine(
        queries,
        corpus,
        positives,
        backend="hnsw",
        threads=1,
        **options,  # type: ignore[arg-type]
    )
    assert exact.report.starved
    assert_same(exact, approx)
    assert approx.report.exact_fallback > 0
    np.testing.assert_array_equal(approx.removed["query"], exact.removed["query"])
    np.testing.assert_array_equal(approx.removed["id"], exact.removed["id"])


def test_over_fetch_by_exclusions_and_scattered_exact_fallback() -> None:
    queries, corpus, positives = clustered(13)
    # Three scattered queries exclude 1100 rows each: their fetch (16 + 2048) passes the graph
    # limit, so they get exact-search candidates; the others stay on the graph.
    for q in (10, 70, 140):
        positives[q] = sorted({positives[q][0], *range(q, q + 1100)})
    exact = negmine.mine(queries, corpus, positives, num_negatives=5)
    approx = negmine.mine(
        queries, corpus, positives, num_negatives=5, backend="hnsw", target_recall=1.0, threads=1
    )
    assert_same(exact, approx)
    assert approx.report.exact_fallback == 3
    for q in (10, 70, 140):
        assert not np.isin(approx.negative_ids[q], positives[q]).any()


def test_dimension_mismatch_is_a_value_error(tmp_path: Path) -> None:
    queries, corpus, positives = clustered(8)
    with pytest.raises(ValueError, match="dimension 31 but the corpus has 32"):
        negmine.mine(queries[:, :31].copy(), corpus, positives, backend="hnsw")

    index = ann.build_index(corpus, ann.HnswParams("cosine"), threads=1)
    short = np.ascontiguousarray(queries[:, :31])
    with pytest.raises(ValueError, match="dimension 31, the index has 32"):
        ann.knn(index, short, 5, 32)
    with pytest.raises(ValueError, match="k must be in"):
        ann.knn(index, queries, N_CORPUS + 1, 32)
    with pytest.raises(TypeError, match="float32"):
        ann.knn(index, queries.astype(np.float64), 5, 32)

    # A saved index of another dimension under the same name is rebuilt, not trusted.
    where = tmp_path / "graph.bin"
    negmine.mine(queries, corpus, positives, backend="hnsw", hnsw_path=where, threads=1)
    meta = json.loads(Path(f"{where}.json").read_text())
    q16, c16 = queries[:, :16].copy(), corpus[:, :16].copy()
    assert built(negmine.mine(q16, c16, positives, backend="hnsw", hnsw_path=where, threads=1))
    assert json.loads(Path(f"{where}.json").read_text()) != meta


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.0001, 2, float("nan"), float("inf"), True, "0.9"])
def test_bad_target_recall(bad: object) -> None:
    queries, corpus, positives = clustered(9)
    kind = TypeError if isinstance(bad, (bool, str)) else ValueError
    message = "must be a number" if kind is TypeError else r"must be in \(0, 1\]|finite"
    with pytest.raises(kind, match=f"target_recall {message}"):
        negmine.mine(queries, corpus, positives, backend="hnsw", target_recall=bad)  # type: ignore[arg-type]


def test_bad_backend_and_graph_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    queries, corpus, positives = clustered(9)
    names = list(sources.BACKENDS)
    listed = ", ".join(map(repr, names[:-1])) + f" or {names[-1]!r}"
    with pytest.raises(ValueError, match=re.escape(f"backend must be one of {listed}")):
        negmine.mine(queries, corpus, positives, backend="faiss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"hnsw_m must be in \[2, 32767\], got 0"):
        negmine.mine(queries, corpus, positives, backend="hnsw", hnsw_m=0)
    builds: list[object] = []
    monkeypatch.setattr(ann, "build_index", lambda *a, **k: builds.append(a))
    with pytest.raises(ValueError, match="larger than max_score"):  # before any build
        negmine.mine(queries, corpus, positives, backend="hnsw", min_score=0.9, max_score=0.1)
    with pytest.raises(ValueError, match="num_negatives"):
        negmine.mine(queries, corpus, positives, backend="hnsw", range_max=2, num_negatives=3)
    assert builds == []
    with pytest.raises(TypeError, match="hnsw_path must be a path"):
        negmine.mine(queries, corpus, positives, backend="hnsw", hnsw_path=3)  # type: ignore[arg-type]


def test_non_finite_corpus_row_is_named() -> None:
    corpus = clustered(10)[1]
    corpus[1234, 5] = np.nan
    with pytest.raises(ValueError, match="corpus row 1234"):
        ann.build_index(corpus, ann.HnswParams("cosine"), threads=1)


def test_target_missed_warns_and_reports() -> None:
    rng = np.random.default_rng(11)
    # Uniform random data in a tiny graph (M=2, ef_construction=4) with ef capped low.
    corpus = rng.normal(size=(N_CORPUS, DIM)).astype(np.float32)
    queries = rng.normal(size=(N_QUERIES, DIM)).astype(np.float32)
    positives = [[i] for i in range(N_QUERIES)]
    cap = ann.MAX_EF
    ann.MAX_EF = 32
    try:
        with pytest.warns(RuntimeWarning, match="below target_recall 1.0"):
            result = negmine.mine(
                queries,
                corpus,
                positives,
                backend="hnsw",
                target_recall=1.0,
                hnsw_m=2,
                hnsw_ef_construction=4,
                threads=1,
            )
    finally:
        ann.MAX_EF = cap
    assert result.report.ann is not None
    assert result.report.ann.recall is not None and result.report.ann.recall < 1.0
    assert result.report.ann.ef == 32
    assert "TARGET NOT REACHED" in str(result.report)


def test_report_round_trip_and_old_reports(tmp_path: Path) -> None:
    queries, corpus, positives = clustered(12)
    result = negmine.mine(queries, corpus, positives, backend="hnsw", threads=1)
    result.save(tmp_path / "out")
    loaded = negmine.MiningResult.load(tmp_path / "out")
    assert loaded.report == result.report
    data = result.report.to_dict()
    for key in ("format", "ann", "backend", "refetched", "exact_fallback"):
        del data[key]
    old = negmine.MiningReport.from_dict(data)  # a report.json from before the hnsw backend
    assert old.backend == "exact" and old.ann is None
    assert "backend" not in str(old)
