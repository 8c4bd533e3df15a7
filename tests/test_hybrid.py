"""``backend="hybrid"``: the reciprocal-rank fusion against a Python oracle in exact fractions;
mining walks the fused ranking with the filters on the embeddings' scores, tags each negative
with the rankings that found it and counts them in the report; the same for any thread count;
bad inputs named; the CLI and the checkpointed runs give the API's bytes (bm25 and hybrid)."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine import _core
from negmine.errors import InvalidArgumentError
from negmine.result import MiningResult
from negmine.sources import source_counts, source_labels
from test_bm25 import mining_inputs


def fuse_oracle(first: list[int], second: list[int], k: int) -> list[tuple[int, int]]:
    """RRF as the docs state it, in exact fractions: ``(id, source bits)``, best first."""
    score: dict[int, Fraction] = {}
    bits: dict[int, int] = {}
    for bit, ranking in ((1, first), (2, second)):
        for rank, doc in enumerate(ranking, start=1):
            score[doc] = score.get(doc, Fraction(0)) + Fraction(1, k + rank)
            bits[doc] = bits.get(doc, 0) | bit
    return [(d, bits[d]) for d in sorted(score, key=lambda d: (-score[d], d))]


def csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.concatenate(([0], np.cumsum([len(x) for x in lists]))).astype(np.int64)
    ids = np.array([i for x in lists for i in x], dtype=np.int64)
    return indptr, ids


rankings = st.lists(
    st.tuples(
        st.lists(st.integers(0, 40), unique=True, max_size=30),
        st.lists(st.integers(0, 40), unique=True, max_size=30),
    ),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(rankings, st.integers(0, 100))
def test_rrf_fuse_equals_the_exact_oracle(lists, k) -> None:
    first, second = [a for a, _ in lists], [b for _, b in lists]
    got = [_core.rrf_fuse(csr(first), csr(second), k=k, threads=t) for t in (1, 2)]
    for a, b in zip(got[0], got[1]):
        np.testing.assert_array_equal(a, b)
    indptr, ids, bits = got[0]
    for q, (a, b) in enumerate(lists):
        lo, hi = indptr[q], indptr[q + 1]
        assert list(zip(ids[lo:hi].tolist(), bits[lo:hi].tolist())) == fuse_oracle(a, b, k)


def test_rrf_fuse_breaks_rational_ties_by_id_and_refuses_repeats() -> None:
    # 1/63 + 1/126 == 1/84 + 1/84 exactly (k = 60): ids 9 and 4 tie, 4 first.
    first = [100 + i for i in range(66)]
    second = [200 + i for i in range(66)]
    first[2], second[65], first[23], second[23] = 9, 9, 4, 4
    _, ids, _ = _core.rrf_fuse(csr([first]), csr([second]), k=60)
    assert ids[:2].tolist() == [4, 9]
    with pytest.raises(InvalidArgumentError, match="holds id 3 twice"):
        _core.rrf_fuse(csr([[3, 3]]), csr([[]]))
    with pytest.raises(InvalidArgumentError, match="indptr"):
        _core.rrf_fuse(csr([[1]]), csr([[1], [2]]))


def dense_ranking(queries, corpus, q, excluded, depth) -> list[int]:
    """Query ``q``'s exact dot ranking (integer embeddings: exact), ties by id."""
    scores = queries[q].astype(np.float64) @ corpus.T.astype(np.float64)
    order = sorted(
        (d for d in range(len(corpus)) if d not in excluded), key=lambda d: (-scores[d], d)
    )
    return order[:depth]


def bm25_ranking(corpus_texts, query_text, excluded, depth) -> list[int]:
    index = _core.Bm25Index(corpus_texts)
    exclude = (np.array([0, len(excluded)], np.int64), np.array(sorted(excluded), np.int64))
    _, ids = index.search([query_text], depth, exclude=exclude, exhaustive=True)
    return [int(i) for i in ids[0] if i >= 0]


HYBRID = dict(duplicates=None, metric="dot", num_negatives=5, absolute_margin=1.0, rrf_k=60)


def test_mine_walks_the_fused_ranking_and_tags_the_sources() -> None:
    queries, corpus, positives, query_texts, corpus_texts = mining_inputs()
    depth = 40
    result = negmine.mine(
        queries,
        corpus,
        positives,
        backend="hybrid",
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        hybrid_depth=depth,
        threads=1,
        **HYBRID,
    )
    assert result.report.backend == "hybrid"
    dense = queries.astype(np.float64) @ corpus.T.astype(np.float64)
    fallback = 0
    both = 0
    for q in range(len(queries)):
        excluded = set(positives[q])
        fused = fuse_oracle(
            bm25_ranking(corpus_texts, query_texts[q], excluded, depth),
            dense_ranking(queries, corpus, q, excluded, depth),
            HYBRID["rrf_k"],
        )
        p = dense[q, positives[q][0]]
        kept = [(r, d, b) for r, (d, b) in enumerate(fused) if dense[q, d] + 1.0 <= p]
        if len(kept) < 5:
            fallback += 1  # the fused list cannot fill the window: the exact search does
            tags = result.negative_sources[q][result.negative_ids[q] >= 0]
            assert (tags & 2).all()
            continue
        assert result.negative_ids[q].tolist() == [d for _, d, _ in kept[:5]], q
        assert result.negative_ranks[q].tolist() == [r for r, _, _ in kept[:5]], q
        assert result.negative_sources[q].tolist() == [b for _, _, b in kept[:5]], q
        both += sum(b == 3 for _, _, b in kept[:5])
    assert both > 0, "the data must have negatives that both rankings found"
    assert result.report.exact_fallback == fallback
    # The report's counts are the tags', and sum to the negatives.
    assert result.report.sources == source_counts(result.negative_sources)
    assert sum(result.report.sources.values()) == result.report.negatives
    assert result.report.sources["bm25+dense"] == int((result.negative_sources == 3).sum())
    assert "by bm25+dense" in str(result.report)
    again = negmine.mine(
        queries,
        corpus,
        positives,
        backend="hybrid",
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        hybrid_depth=depth,
        threads=2,
        **HYBRID,
    )
    for name, array in result.arrays().items():
        np.testing.assert_array_equal(array, again.arrays()[name], err_msg=name)
    assert again.report.to_dict() == result.report.to_dict()


def test_tags_survive_saving_and_reach_the_outputs(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    queries, corpus, positives, query_texts, corpus_texts = mining_inputs(seed=3)
    result = negmine.mine(
        queries,
        corpus,
        positives,
        backend="hybrid",
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        num_negatives=3,
    )
    result.save(tmp_path / "r")
    loaded = MiningResult.load(tmp_path / "r")
    np.testing.assert_array_equal(loaded.negative_sources, result.negative_sources)
    assert loaded.report.sources == result.report.sources
    labels = source_labels(result.negative_sources)
    found = result.negative_ids >= 0
    negmine.to_parquet(result, tmp_path / "long.parquet")
    table = pq.read_table(tmp_path / "long.parquet")
    assert table.column("sources").to_pylist() == labels[found].tolist()
    negmine.to_parquet(result, tmp_path / "wide.parquet", layout="wide")
    wide = pq.read_table(tmp_path / "wide.parquet").column("negative_sources").to_pylist()
    assert wide == [labels[q][found[q]].tolist() for q in range(len(queries))]
    pytest.importorskip("datasets")
    triplets = negmine.to_dataset(result, query_texts, corpus_texts, sources_column="sources")
    rows = [(q, j) for q in range(len(queries)) for j in range(3) if found[q, j]]
    assert triplets["sources"] == [labels[q, j] for q, j in rows]
    tuples = negmine.to_dataset(
        result, query_texts, corpus_texts, output_format="n-tuple", sources_column="how"
    )
    assert tuples["how"] == [labels[q].tolist() for q in range(len(queries)) if found[q].all()]
    with pytest.raises(InvalidArgumentError, match="triplet"):
        negmine.to_dataset(
            result, query_texts, corpus_texts, output_format="labeled-pair", sources_column="s"
        )
    dense = negmine.mine(queries, corpus, positives, num_negatives=3)
    assert dense.negative_sources is None and dense.report.sources is None
    with pytest.raises(InvalidArgumentError, match="several rankings"):
        negmine.to_dataset(dense, query_texts, corpus_texts, sources_column="s")


def test_bm25_tags_its_negatives_and_the_exact_finish() -> None:
    queries, corpus, positives, query_texts, corpus_texts = mining_inputs()
    result = negmine.mine(
        queries,
        corpus,
        positives,
        backend="bm25",
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        **{k: v for k, v in HYBRID.items() if k != "rrf_k"},
    )
    found = result.negative_ids >= 0
    assert set(np.unique(result.negative_sources[found]).tolist()) == {1, 2}
    assert (result.negative_sources[~found] == 0).all()
    # A query's negatives all come from one ranking: BM25's, or the exact search's.
    rows = [
        set(tags[ids >= 0].tolist())
        for tags, ids in zip(result.negative_sources, result.negative_ids)
    ]
    assert all(len(r) <= 1 for r in rows)
    assert sum(r == {2} for r in rows) == result.report.exact_fallback
    assert result.report.sources["bm25"] + result.report.sources["dense"] == result.report.negatives


def test_hybrid_refuses_bad_inputs() -> None:
    queries, corpus, positives, query_texts, corpus_texts = mining_inputs()
    texts = {"query_texts": query_texts, "corpus_texts": corpus_texts}
    with pytest.raises(InvalidArgumentError, match="backend='hybrid' needs query_texts"):
        negmine.mine(queries, corpus, positives, backend="hybrid", corpus_texts=corpus_texts)
    with pytest.raises(InvalidArgumentError, match="query_texts has 41 texts for 40 rows"):
        negmine.mine(
            queries,
            corpus,
            positives,
            backend="hybrid",
            query_texts=[*query_texts, "one more"],
            corpus_texts=corpus_texts,
        )
    with pytest.raises(InvalidArgumentError, match="corpus_texts has 599 texts for 600"):
        negmine.mine(
            queries,
            corpus,
            positives,
            backend="hybrid",
            query_texts=query_texts,
            corpus_texts=corpus_texts[:-1],
        )
    with pytest.raises(InvalidArgumentError, match="rrf_k"):
        negmine.mine(queries, corpus, positives, backend="hybrid", rrf_k=-1, **texts)
    with pytest.raises(InvalidArgumentError, match="hybrid_depth"):
        negmine.mine(queries, corpus, positives, backend="hybrid", hybrid_depth=0, **texts)


# --- the command line and the checkpointed runs ------------------------------------------


def write_inputs(directory: Path, seed: int = 5):
    queries, corpus, positives, query_texts, corpus_texts = mining_inputs(seed=seed)
    paths = {
        name: directory / name for name in ("q.npy", "c.npy", "qrels.tsv", "q.jsonl", "c.jsonl")
    }
    np.save(paths["q.npy"], queries)
    np.save(paths["c.npy"], corpus)
    lines = ["query-id\tcorpus-id\tscore", *(f"{q}\t{p[0]}\t1" for q, p in enumerate(positives))]
    paths["qrels.tsv"].write_text("\n".join(lines) + "\n")
    for name, texts in (("q.jsonl", query_texts), ("c.jsonl", corpus_texts)):
        paths[name].write_text("".join(json.dumps(t) + "\n" for t in texts))
    return paths, query_texts, corpus_texts


OPTIONS = {"num_negatives": 4, "relative_margin": 0.1, "sampling_strategy": "random", "seed": 7}
FLAGS = ["--num-negatives", "4", "--relative-margin", "0.1", "--sampling-strategy", "random"]
FLAGS += ["--seed", "7"]


@pytest.mark.parametrize("backend", ["bm25", "hybrid"])
def test_cli_equals_the_api_byte_for_byte(tmp_path: Path, backend: str) -> None:
    paths, query_texts, corpus_texts = write_inputs(tmp_path)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "negmine.cli", "-q", "mine", "--queries", paths["q.npy"]]
    argv += ["--corpus", paths["c.npy"], "--positives", paths["qrels.tsv"], "--out", out]
    argv += ["--query-texts", paths["q.jsonl"], "--corpus-texts", paths["c.jsonl"]]
    argv += ["--backend", backend, "--chunk-queries", "7", "--bm25-k1", "1.2", *FLAGS]
    argv += ["--cache-dir", tmp_path / "cache"]
    proc = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # The BM25 index is kept in --cache-dir for the next run over the same texts.
    (saved,) = (tmp_path / "cache").glob("bm25-*.idx")
    assert _core.Bm25Index.open(saved).n_docs == len(corpus_texts)
    got = MiningResult.load(out)
    api = negmine.mine(
        np.load(paths["q.npy"]),
        np.load(paths["c.npy"]),
        str(paths["qrels.tsv"]),
        backend=backend,
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        bm25_k1=1.2,
        **OPTIONS,  # type: ignore[arg-type]
    )
    assert got.arrays().keys() == api.arrays().keys()
    for name, array in api.arrays().items():
        assert array.tobytes() == got.arrays()[name].tobytes(), name
    assert got.report.to_dict() == api.report.to_dict()
    assert got.report.sources is not None

    missing = [a for a in argv if a != paths["q.jsonl"]]
    missing.remove("--query-texts")
    proc = subprocess.run(list(map(str, missing)), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"--backend {backend} needs --query-texts and --corpus-texts" in proc.stderr


def test_checkpoint_resumes_and_refuses_other_settings_or_texts(tmp_path: Path) -> None:
    from negmine.checkpoint import mine_to_directory, partial_directory

    paths, query_texts, corpus_texts = write_inputs(tmp_path)
    options = negmine.MiningOptions(**OPTIONS)
    run = {
        "backend": "hybrid",
        "backend_options": {"rrf_k": 10},
        "query_texts": query_texts,
        "corpus_texts": corpus_texts,
        "chunk_queries": 8,
    }
    files = (paths["q.npy"], paths["c.npy"], paths["qrels.tsv"])
    reference = tmp_path / "reference"
    whole = mine_to_directory(*files, reference, options, progress=False, **run)  # type: ignore[arg-type]
    calls: list[int] = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:  # two chunks checkpointed
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        mine_to_directory(*files, out, options, progress=interrupt, **run)  # type: ignore[arg-type]
    assert len(list(partial_directory(out).glob("chunk_*.npz"))) == 2
    for change in (
        {"backend_options": {"rrf_k": 11}},
        {"backend_options": {"rrf_k": 10, "hybrid_depth": 100}},
        {"backend": "bm25", "backend_options": {}},
        {"query_texts": [*query_texts[:-1], "other words"]},
    ):
        with pytest.raises(InvalidArgumentError, match="interrupted run of other"):
            mine_to_directory(*files, out, options, progress=False, **{**run, **change})  # type: ignore[arg-type]
    done: list[int] = []
    resumed = mine_to_directory(*files, out, options, progress=lambda d, t: done.append(d), **run)  # type: ignore[arg-type]
    assert done[0] == 16  # resumed after two chunks
    for name in sorted(p.name for p in reference.iterdir()):
        assert (reference / name).read_bytes() == (out / name).read_bytes(), name
    api = negmine.mine(
        np.load(paths["q.npy"]),
        np.load(paths["c.npy"]),
        str(paths["qrels.tsv"]),
        backend="hybrid",
        rrf_k=10,
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        **OPTIONS,  # type: ignore[arg-type]
    )
    for name, array in api.arrays().items():
        assert array.tobytes() == resumed.arrays()[name].tobytes() == whole.arrays()[name].tobytes()
