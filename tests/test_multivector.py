"""Multi-vector (MaxSim) scoring, storage, candidate recall and mining, against numpy oracles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import negmine
import negmine.cli
from negmine import multivector as mv
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError


def texts(rng: np.random.Generator, n: int, lo: int, hi: int, dim: int) -> list[np.ndarray]:
    return [
        rng.standard_normal((int(rng.integers(lo, hi)), dim)).astype(np.float32) for _ in range(n)
    ]


def topical(seed: int = 0, n_corpus: int = 240, n_queries: int = 24, dim: int = 16) -> Any:
    """Texts whose tokens scatter around one of a few topics, and one positive per query."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((12, dim))

    def text(t: int, n: int) -> np.ndarray:
        return (topics[t] + 0.9 * rng.standard_normal((n, dim))).astype(np.float32)

    corpus_topics = rng.integers(0, 12, n_corpus)
    query_topics = corpus_topics[rng.choice(n_corpus, n_queries, replace=False)]
    corpus = [text(t, int(rng.integers(4, 30))) for t in corpus_topics]
    queries = [text(t, int(rng.integers(2, 8))) for t in query_topics]
    positives = [[int(np.flatnonzero(corpus_topics == t)[0])] for t in query_topics]
    return queries, corpus, positives


def oracle(queries: list[np.ndarray], corpus: list[np.ndarray]) -> np.ndarray:
    """Every MaxSim in float64."""
    return np.array(
        [
            [(q.astype(np.float64) @ c.astype(np.float64).T).max(axis=1).sum() for c in corpus]
            for q in queries
        ]
    )


def ranking(scores: np.ndarray, k: int) -> np.ndarray:
    """Ids by score descending, smaller id on ties (numpy's stable sort of the negation)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("seed", range(4))
def test_brute_force_search_matches_the_float64_oracle_and_any_thread_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dim = int(rng.choice([1, 7, 16, 33]))
    qa, ca = texts(rng, 9, 1, 14, dim), texts(rng, 60, 1, 40, dim)
    q, c = mv.MultiVectors.from_arrays(qa), mv.MultiVectors.from_arrays(ca)
    exact = oracle(qa, ca)
    scores, ids = mv.maxsim_search(q, c, 10, threads=1)
    # |f32 - f64| is bounded by dim * 2^-24 * sum |q_i d_i| per query token (< 1e-4 here).
    assert np.allclose(scores, np.take_along_axis(exact, ids, axis=1), rtol=1e-5, atol=1e-4)
    # The ranking is the f32 scores' (ties by smaller id); the f64 top scores are the same.
    assert np.allclose(np.sort(exact, axis=1)[:, ::-1][:, :10], scores, rtol=1e-5, atol=1e-4)
    again, again_ids = mv.maxsim_search(q, c, 10, threads=2)
    assert again.tobytes() == scores.tobytes() and np.array_equal(again_ids, ids)
    rows = np.repeat(np.arange(len(qa)), 10)
    pairs = mv.maxsim_scores(q, c, rows, ids.ravel(), threads=2)
    assert pairs.tobytes() == scores.ravel().tobytes()


def test_ties_by_smaller_id_padding_and_exclusions() -> None:
    token = np.ones((1, 4), np.float32)
    corpus = mv.MultiVectors.from_arrays([token] * 5)  # five equal texts
    queries = mv.MultiVectors.from_arrays([token, 2 * token])
    scores, ids = mv.maxsim_search(queries, corpus, 7, exclude=[[1, 3], []])
    assert ids.tolist() == [[0, 2, 4, -1, -1, -1, -1], [0, 1, 2, 3, 4, -1, -1]]
    assert scores[0, :3].tolist() == [4.0] * 3 and np.isneginf(scores[0, 3:]).all()
    _, ids = mv.maxsim_search(queries, corpus, 2, candidates=[[4, 3, 3], [2]])
    assert ids.tolist() == [[3, 4], [2, -1]]


def test_float16_tokens_score_as_their_float32_values() -> None:
    rng = np.random.default_rng(5)
    qa, ca = texts(rng, 4, 1, 9, 24), texts(rng, 30, 1, 20, 24)
    half = mv.MultiVectors.from_arrays(ca, dtype="float16")
    widened = mv.MultiVectors(np.asarray(half.tokens).astype(np.float32), half.offsets)
    q = mv.MultiVectors.from_arrays(qa)
    a, ai = mv.maxsim_search(q, half, 5)
    b, bi = mv.maxsim_search(q, widened, 5)
    assert a.tobytes() == b.tobytes() and np.array_equal(ai, bi)


def test_pooled_is_the_normalised_mean() -> None:
    rng = np.random.default_rng(1)
    arrays = texts(rng, 6, 1, 9, 5)
    pooled = mv.MultiVectors.from_arrays(arrays).pooled()
    means = np.array([a.astype(np.float64).mean(axis=0) for a in arrays])
    assert np.allclose(pooled, means / np.linalg.norm(means, axis=1, keepdims=True), atol=1e-6)
    raw = mv.MultiVectors.from_arrays(arrays).pooled(normalize=False)
    assert np.allclose(raw, means, atol=1e-6)


def test_save_and_open_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vectors = mv.MultiVectors.from_arrays(texts(rng, 7, 1, 12, 8), dtype="float16")
    path = mv.save_multi_vectors(tmp_path / "tokens", vectors)
    opened = negmine.open_multi_vectors(path)
    assert isinstance(opened.tokens, negmine.Embeddings) and opened.tokens.mapped
    assert np.array_equal(np.asarray(opened.tokens), np.asarray(vectors.tokens))
    assert np.array_equal(opened.offsets, vectors.offsets) and opened.dtype == np.float16
    assert np.array_equal(opened.text(3), vectors.text(3))
    copied = negmine.open_multi_vectors(path, mmap=False)
    assert not copied.tokens.mapped
    # Saving again replaces the directory as a whole, leaving no temporary name behind.
    mv.save_multi_vectors(path, mv.MultiVectors.from_arrays([np.ones((2, 8), np.float32)]))
    assert len(negmine.open_multi_vectors(path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens"]


def corrupt(path: Path, name: str, change: Any) -> None:
    if name == "manifest.json":
        manifest = json.loads((path / name).read_text())
        change(manifest)
        (path / name).write_text(json.dumps(manifest))
    else:
        np.save(path / name, change(np.load(path / name)))


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("manifest.json", lambda m: m.update(extra=1), "expected exactly the keys"),
        ("manifest.json", lambda m: m.update(version=2), "version 2 is not"),
        ("manifest.json", lambda m: m.update(dtype="float64"), "dtype must be float16 or float32"),
        ("manifest.json", lambda m: m.update(dim=7), "but the manifest says"),
        ("manifest.json", lambda m: m.update(texts=-1), "texts must be a non-negative integer"),
        ("offsets.npy", lambda o: o.astype(np.int32), "expected 1-D int64 offsets"),
        ("offsets.npy", lambda o: o[:-1], "offsets for 3 texts"),
        ("offsets.npy", lambda o: np.array([0, 3, 2, 5]), "text 1 has a negative token count"),
        ("offsets.npy", lambda o: np.array([0, 3, 3, 5]), "text 1 has no tokens"),
        ("offsets.npy", lambda o: np.array([1, 3, 4, 5]), "must start at 0"),
        ("offsets.npy", lambda o: np.array([0, 1, 2, 4]), "end at 4 but the token matrix has 5"),
    ],
)
def test_a_corrupt_store_is_refused_naming_the_problem(
    tmp_path: Path, name: str, change: Any, message: str
) -> None:
    tokens = [np.ones((3, 8), np.float32), np.ones((1, 8), np.float32), np.ones((1, 8), np.float32)]
    path = mv.save_multi_vectors(tmp_path / "store", mv.MultiVectors.from_arrays(tokens))
    corrupt(path, name, change)
    with pytest.raises(FormatError, match=message):
        negmine.open_multi_vectors(path)


def test_missing_and_malformed_stores(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such multi-vector directory"):
        negmine.open_multi_vectors(tmp_path / "absent")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(FormatError, match="is a directory, got a file"):
        negmine.open_multi_vectors(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match=r"manifest\.json: missing"):
        negmine.open_multi_vectors(tmp_path / "empty")
    path = mv.save_multi_vectors(tmp_path / "s", mv.MultiVectors.from_arrays([np.ones((2, 3))]))
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        negmine.open_multi_vectors(path)
    path = mv.save_multi_vectors(tmp_path / "t", mv.MultiVectors.from_arrays([np.ones((2, 3))]))
    data = (path / "tokens.npy").read_bytes()
    (path / "tokens.npy").write_bytes(data[:-4])
    with pytest.raises(FormatError, match="missing 4 bytes"):
        negmine.open_multi_vectors(path)


def test_bad_arrays_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"arrays\[1\] has dimension 3 but"):
        mv.MultiVectors.from_arrays([np.ones((2, 4)), np.ones((2, 3))])
    with pytest.raises(InvalidArgumentError, match=r"arrays\[0\] has no tokens"):
        mv.MultiVectors.from_arrays([np.ones((0, 4))])
    with pytest.raises(InvalidArgumentError, match=r"arrays\[0\] contains NaN"):
        mv.MultiVectors.from_arrays([np.full((2, 4), np.nan)])
    with pytest.raises(InvalidArgumentError, match="must be a 2-D tokens x dim array"):
        mv.MultiVectors.from_arrays([np.ones(4)])
    with pytest.raises(InvalidTypeError, match="dtype must be float32 or float16"):
        mv.MultiVectors.from_arrays([np.ones((2, 4))], dtype="float64")
    with pytest.raises(InvalidTypeError, match="token vectors must be float32 or float16"):
        mv.MultiVectors(np.ones((2, 4)), np.array([0, 2]))
    with pytest.raises(InvalidArgumentError, match="text 0 has no tokens"):
        mv.MultiVectors(np.ones((2, 4), np.float32), np.array([0, 0, 2]))
    q = mv.MultiVectors.from_arrays([np.ones((2, 4))])
    with pytest.raises(InvalidArgumentError, match="dimension 3 but corpus tokens have 4"):
        mv.maxsim_search(mv.MultiVectors.from_arrays([np.ones((2, 3))]), q, 1)
    huge = mv.MultiVectors.from_arrays([np.full((1, 4), 3e19)])
    with pytest.raises(InvalidArgumentError, match="could overflow float32"):
        mv.maxsim_search(huge, huge, 1)
    with pytest.raises(InvalidArgumentError, match=r"corpus_ids\[0\] = 5 is out of range"):
        mv.maxsim_scores(q, q, [0], [5])
    with pytest.raises(InvalidTypeError, match=r"must be negmine\.MultiVectors"):
        mv.maxsim_search(np.ones((2, 4)), q, 1)


class TwoSided:
    """A stand-in multi-vector model: a query gets 2 tokens, a document 3, from its length."""

    def encode_query(self, texts: list[str]) -> list[np.ndarray]:
        return [np.full((2, 4), len(t), np.float32) for t in texts]

    def encode_document(self, texts: list[str]) -> list[Any]:
        import torch

        return [torch.full((3, 4), float(len(t))) for t in texts]


def test_embedding_from_a_callable_or_a_model(tmp_path: Path) -> None:
    words = ["a", "bb", "ccc", "dddd", "eeeee"]
    calls: list[int] = []

    def encode(batch: list[str]) -> list[np.ndarray]:
        calls.append(len(batch))
        return [np.full((len(t), 3), i, np.float32) for i, t in enumerate(batch)]

    out = mv.embed_multi_vectors(words, encode, tmp_path / "v", batch_size=2, dtype="float32")
    assert calls == [2, 2, 1] and out.path == tmp_path / "v"
    assert out.offsets.tolist() == [0, 1, 3, 6, 10, 15] and out.dim == 3
    queries = mv.embed_multi_vectors(words, TwoSided(), is_query=True)
    docs = mv.embed_multi_vectors(words, TwoSided())
    assert queries.n_tokens == 10 and docs.n_tokens == 15 and docs.dtype == np.float16
    assert docs.text(2).tolist() == [[3.0] * 4] * 3
    with pytest.raises(InvalidArgumentError, match="returned 1 arrays for 2 texts"):
        mv.embed_multi_vectors(["a", "b"], lambda b: [np.ones((1, 2))])
    with pytest.raises(InvalidArgumentError, match=r"texts\[1\] has no tokens"):
        mv.embed_multi_vectors(["a", "b"], lambda b: [np.ones((1, 2)), np.ones((0, 2))])
    with pytest.raises(InvalidTypeError, match="the encoder must be a callable"):
        mv.embed_multi_vectors(["a"], 3)


def test_candidate_recall_and_the_depth_that_reaches_a_target() -> None:
    qa, ca, positives = topical(3)
    q, c = mv.MultiVectors.from_arrays(qa), mv.MultiVectors.from_arrays(ca)
    depths = [1, 5, 10, 20, 40, 80, 160, 240]
    measured = mv.candidate_recall(q, c, 10, depths=depths, exclude=positives)
    assert np.all(np.diff(measured.recall) >= 0) and measured.recall[-1] == 1.0
    # The ranks against an oracle: the pooled cosine ranking of each true top-10 text.
    exact = oracle(qa, ca)
    pooled_q, pooled_c = q.pooled(), c.pooled()
    cos = pooled_q.astype(np.float64) @ pooled_c.astype(np.float64).T
    for i, pos in enumerate(positives):
        exact[i, pos] = -np.inf
        cos[i, pos] = -np.inf
    truth = ranking(exact, 10)
    for i in range(len(qa)):
        order = list(np.argsort(-cos[i], kind="stable"))
        assert [order.index(t) for t in truth[i]] == measured.ranks[i].tolist()
    for target in (0.5, 0.9, 0.95, 1.0):
        depth = measured.depth_for(target)
        assert depth is not None
        at = mv.candidate_recall(
            q, c, 10, depths=[depth - 1, depth] if depth > 1 else [depth], exclude=positives
        )
        assert at.recall[-1] >= target - 1e-12
        if depth > 1:
            assert at.recall[0] < target


def numpy_mining(
    qa: list[np.ndarray], ca: list[np.ndarray], positives: list[list[int]], depth: int, n: int
) -> np.ndarray:
    """The maxsim backend's negatives without filters: per query, the pooled cosine top
    ``depth`` (positives left out) ranked by MaxSim, the first ``n``."""
    q, c = mv.MultiVectors.from_arrays(qa), mv.MultiVectors.from_arrays(ca)
    cos = q.pooled() @ c.pooled().T  # float32 like the core's dots, up to rounding
    exact = oracle(qa, ca)
    out = []
    for i, pos in enumerate(positives):
        cos[i, pos] = -np.inf
        pool = np.argsort(-cos[i], kind="stable")[: min(depth, len(ca) - len(pos))]
        out.append(pool[np.argsort(-exact[i, pool], kind="stable")][:n])
    return np.array(out)


def test_mine_with_maxsim_ranks_pooled_candidates_by_maxsim() -> None:
    qa, ca, positives = topical(4)
    result = mv.mine(qa, ca, positives, depth=100, num_negatives=4, duplicates=None)
    assert result.report.backend == "maxsim"
    assert np.array_equal(result.negative_ids, numpy_mining(qa, ca, positives, 100, 4))
    # A depth below the core's first fetch depth takes that many pooled candidates instead.
    first = negmine._core.first_depth(negmine.MiningOptions(num_negatives=4).core)
    shallow = mv.mine(qa, ca, positives, depth=10, num_negatives=4, duplicates=None)
    assert np.array_equal(shallow.negative_ids, numpy_mining(qa, ca, positives, first, 4))
    # MaxSim judges: the teacher scores are the negatives' MaxSim, descending.
    q, c = mv.MultiVectors.from_arrays(qa), mv.MultiVectors.from_arrays(ca)
    rows = np.repeat(np.arange(len(qa)), 4)
    want = mv.maxsim_scores(q, c, rows, result.negative_ids.ravel()).reshape(-1, 4)
    assert result.teacher_scores is not None
    assert result.teacher_scores.tobytes() == want.tobytes()
    assert np.all(np.diff(result.teacher_scores, axis=1) <= 0)
    # Margins read MaxSim: no negative scores within 5% of its query's positive's MaxSim.
    margin = mv.mine(
        qa, ca, positives, depth=100, num_negatives=4, relative_margin=0.05, duplicates=None
    )
    assert margin.positive_teacher_scores is not None and margin.teacher_scores is not None
    p = margin.positive_teacher_scores[:, None]
    real = margin.negative_ids >= 0
    assert np.all(
        margin.teacher_scores[real] <= np.broadcast_to(p - np.abs(p) * 0.05, real.shape)[real]
    )
    assert margin.report.removed["relative_margin"] > 0
    # Threads do not change anything.
    again = mv.mine(qa, ca, positives, depth=100, num_negatives=4, duplicates=None, threads=1)
    assert np.array_equal(again.negative_ids, result.negative_ids)


def test_maxsim_backend_needs_matching_tokens() -> None:
    qa, ca, positives = topical(5, n_corpus=40, n_queries=4)
    q, c = mv.MultiVectors.from_arrays(qa), mv.MultiVectors.from_arrays(ca)
    with pytest.raises(InvalidArgumentError, match="needs query_tokens and corpus_tokens"):
        negmine.mine(q.pooled(), c.pooled(), positives, backend="maxsim")
    with pytest.raises(
        InvalidArgumentError, match="corpus_tokens holds 39 texts but corpus has 40 rows"
    ):
        negmine.mine(
            q.pooled(),
            c.pooled(),
            positives,
            backend="maxsim",
            query_tokens=q,
            corpus_tokens=ca[:-1],
        )
    with pytest.raises(InvalidArgumentError, match="maxsim_depth"):
        negmine.mine(q.pooled(), c.pooled(), positives, maxsim_depth=0)
    from negmine import distributed

    # On Ray (issue 24) too, refused before a cluster is needed.
    with pytest.raises(InvalidArgumentError, match="needs query_tokens and corpus_tokens"):
        distributed.mine(q.pooled(), c.pooled(), positives, backend="maxsim")
    with pytest.raises(InvalidArgumentError, match="needs shard_by='query'"):
        distributed.mine(
            q.pooled(), c.pooled(), positives, backend="maxsim", shard_by="corpus", query_tokens=q
        )


def test_cli_embeds_multi_vectors_and_mines_with_maxsim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    qa, ca, positives = topical(6, n_corpus=60, n_queries=6)
    monkeypatch.setattr(mv, "load_model", lambda name: lambda batch: [ca[int(t)] for t in batch])
    (tmp_path / "corpus.txt").write_text("".join(f"{i}\n" for i in range(len(ca))))
    argv = ["-q", "embed", str(tmp_path / "corpus.txt"), "--multi-vector", "--model", "stand-in"]
    argv += ["--out", str(tmp_path / "corpus-tokens"), "--dtype", "float32"]
    assert negmine.cli.main(argv) == 0
    assert negmine.open_multi_vectors(tmp_path / "corpus-tokens").n_tokens == sum(map(len, ca))
    mv.save_multi_vectors(tmp_path / "query-tokens", mv.MultiVectors.from_arrays(qa))
    (tmp_path / "qrels.tsv").write_text("".join(f"{i}\t{p[0]}\n" for i, p in enumerate(positives)))
    argv = [
        "-q",
        "mine",
        "--positives",
        str(tmp_path / "qrels.tsv"),
        "--out",
        str(tmp_path / "out"),
    ]
    argv += ["--backend", "maxsim", "--query-tokens", str(tmp_path / "query-tokens")]
    argv += ["--corpus-tokens", str(tmp_path / "corpus-tokens"), "--maxsim-depth", "40"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--num-negatives", "3", "--no-duplicates"]
    assert negmine.cli.main(argv) == 0
    result = negmine.MiningResult.load(tmp_path / "out")
    assert np.array_equal(result.negative_ids, numpy_mining(qa, ca, positives, 64, 3))


def test_long_calls_report_progress_and_stop_on_a_callback_error() -> None:
    rng = np.random.default_rng(7)
    q = mv.MultiVectors.from_arrays(texts(rng, 70, 1, 5, 8))
    c = mv.MultiVectors.from_arrays(texts(rng, 30, 1, 5, 8))
    seen: list[tuple[int, int]] = []
    negmine._core.maxsim_search(
        (q.tokens, q.offsets),
        (c.tokens, c.offsets),
        3,
        threads=1,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen[-1] == (70, 70) and len(seen) > 1

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        negmine._core.maxsim_scores(
            (q.tokens, q.offsets),
            (c.tokens, c.offsets),
            np.zeros(5, np.int64),
            np.zeros(5, np.int64),
            progress=stop,
        )


def test_a_streamed_store_is_complete_or_absent(tmp_path: Path) -> None:
    words = [f"text {i}" for i in range(10)]

    def encode(batch: list[str]) -> list[np.ndarray]:
        return [np.full((1 + int(t.split()[1]) % 3, 4), float(t.split()[1])) for t in batch]

    path = tmp_path / "store"
    stored = mv.embed_multi_vectors(words, encode, path, batch_size=3, dtype="float32")
    expected = mv.MultiVectors.from_arrays(encode(words))
    assert np.array_equal(np.load(path / "tokens.npy"), np.asarray(expected.tokens))
    assert np.array_equal(stored.offsets, expected.offsets)

    def failing(batch: list[str]) -> list[np.ndarray]:
        if "text 6" in batch:
            raise RuntimeError("the model crashed")
        return encode(batch)

    with pytest.raises(RuntimeError, match="the model crashed"):
        mv.embed_multi_vectors(words, failing, path, batch_size=3)
    with pytest.raises(InvalidArgumentError, match=r"texts\[4\] has dimension 2"):
        mv.embed_multi_vectors(
            words, lambda b: [np.ones((1, 4 if t != "text 4" else 2)) for t in b], path
        )
    # The first store is still there, whole; nothing else is.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert np.array_equal(
        np.asarray(negmine.open_multi_vectors(path).tokens), np.asarray(expected.tokens)
    )
