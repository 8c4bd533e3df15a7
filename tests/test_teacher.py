"""Teacher rescoring (``mine(rescore=...)``): the score filters read a second scorer's scores,
checked against a brute-force walk of the retriever's full ranking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine.errors import InvalidArgumentError, InvalidTypeError


def _data(seed: int, n: int = 300, nq: int = 12, d: int = 16) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((nq, d)).astype(np.float32)
    positives = [
        sorted(rng.choice(n, size=int(rng.integers(0, 3)), replace=False).tolist())
        for _ in range(nq)
    ]
    return queries, corpus, positives  # type: ignore[return-value]


class Recording:
    """A teacher with a fixed score per pair (a hash, unrelated to the retriever), recording
    every pair it is asked for."""

    def __init__(self, seed: int, n: int) -> None:
        self.table = np.random.default_rng(seed + 1).standard_normal((64, n)).astype(np.float32)
        self.asked: list[tuple[int, int]] = []

    def __call__(self, q: np.ndarray, c: np.ndarray) -> np.ndarray:
        assert q.dtype == np.int64 and c.dtype == np.int64
        self.asked.extend(zip(q.tolist(), c.tolist()))
        return self.table[q, c]


def _oracle(queries, corpus, positives, teacher, *, num_negatives, metric, cut_of):
    """The first ``num_negatives`` rows of each query's full exact ranking (positives left
    out) that the teacher-score filter ``cut_of(teacher score, teacher positive scores)`` keeps."""
    n = len(corpus)
    out = []
    for q, pos in enumerate(positives):
        _, ids = negmine.search(
            queries[q : q + 1], corpus, n - len(pos), metric=metric, exclude=[pos]
        )
        t_pos = teacher.table[q, pos]
        kept = [int(i) for i in ids[0] if not cut_of(teacher.table[q, i], t_pos)]
        out.append((kept + [-1] * num_negatives)[:num_negatives])
    return np.array(out)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    margin=st.sampled_from(["absolute", "relative", "max"]),
    metric=st.sampled_from(["dot", "cosine"]),
    num_negatives=st.integers(1, 6),
)
def test_the_score_filters_read_the_teacher(
    seed: int, margin: str, metric: str, num_negatives: int
) -> None:
    queries, corpus, positives = _data(seed)
    teacher = Recording(seed, len(corpus))
    if margin == "absolute":
        kwargs = {"absolute_margin": 0.1}

        def cut_of(t: float, p: np.ndarray) -> bool:
            return len(p) > 0 and np.float32(t + np.float32(0.1)) > p.min()
    elif margin == "relative":
        kwargs = {"relative_margin": 0.05}

        def cut_of(t: float, p: np.ndarray) -> bool:
            if not len(p):
                return False
            m = p.min()
            return t > np.float32(m - np.float32(abs(m) * np.float32(0.05)))
    else:
        kwargs = {"max_score": 0.5}

        def cut_of(t: float, p: np.ndarray) -> bool:
            return bool(t > np.float32(0.5))

    result = negmine.mine(
        queries,
        corpus,
        positives,
        num_negatives=num_negatives,
        metric=metric,
        duplicates=None,
        rescore=teacher,
        **kwargs,
    )
    want = _oracle(
        queries,
        corpus,
        positives,
        teacher,
        num_negatives=num_negatives,
        metric=metric,
        cut_of=cut_of,
    )
    np.testing.assert_array_equal(result.negative_ids, want)
    # The teacher's scores of the negatives and positives come back.
    found = result.negative_ids >= 0
    rows = np.nonzero(found)[0]
    np.testing.assert_array_equal(
        result.teacher_scores[found], teacher.table[rows, result.negative_ids[found]]
    )
    assert np.isnan(result.teacher_scores[~found]).all()
    pos_rows = np.repeat(np.arange(len(positives)), np.diff(result.positive_indptr))
    np.testing.assert_array_equal(
        result.positive_teacher_scores, teacher.table[pos_rows, result.positive_ids]
    )
    # Every pair is asked for once.
    assert len(teacher.asked) == len(set(teacher.asked))
    assert result.report.teacher is not None
    assert result.report.teacher.pairs + result.report.teacher.positives == len(teacher.asked)


def test_a_teacher_that_agrees_with_the_retriever_changes_nothing() -> None:
    queries, corpus, positives = _data(3)

    def exact(q: np.ndarray, c: np.ndarray) -> np.ndarray:
        # The retriever's own scores, bit for bit.
        return np.array(
            [
                negmine.rescore(queries[i : i + 1], corpus, [[j]], metric="cosine")[0][0, 0]
                for i, j in zip(q, c)
            ],
            dtype=np.float32,
        )

    options = dict(
        num_negatives=4,
        metric="cosine",
        relative_margin=0.1,
        range_min=1,
        sampling_strategy="random",
        seed=5,
        duplicates=None,
    )
    plain = negmine.mine(queries, corpus, positives, **options)
    judged = negmine.mine(queries, corpus, positives, rescore=exact, **options)
    np.testing.assert_array_equal(judged.negative_ids, plain.negative_ids)
    np.testing.assert_array_equal(judged.negative_scores, plain.negative_scores)
    np.testing.assert_array_equal(judged.teacher_scores, plain.negative_scores)
    np.testing.assert_array_equal(judged.positive_teacher_scores, plain.positive_scores)
    for key in plain.removed:
        np.testing.assert_array_equal(judged.removed[key], plain.removed[key])
    assert judged.report.removed == plain.report.removed


def test_the_percentile_cut_drops_candidates_the_teacher_ranks_above_the_positives() -> None:
    queries, corpus, positives = _data(4)
    teacher = Recording(4, len(corpus))
    result = negmine.mine(
        queries,
        corpus,
        positives,
        num_negatives=5,
        duplicates=None,
        rescore=teacher,
        rescore_percentile=20,
    )
    t = result.report.teacher
    assert t is not None and t.percentile == 20
    want = np.float32(np.percentile(result.positive_teacher_scores.astype(np.float64), 20))
    assert t.cut == float(want)
    kept = result.teacher_scores[result.negative_ids >= 0]
    assert (kept <= want).all()
    assert result.report.removed["max_score"] > 0
    assert "teacher scores" in str(result.report)
    want_ids = _oracle(
        queries,
        corpus,
        positives,
        teacher,
        num_negatives=5,
        metric="cosine",
        cut_of=lambda s, p: s > want,
    )
    np.testing.assert_array_equal(result.negative_ids, want_ids)


def test_teacher_results_save_and_load(tmp_path) -> None:
    queries, corpus, positives = _data(5)
    result = negmine.mine(
        queries,
        corpus,
        positives,
        rescore=Recording(5, len(corpus)),
        max_score=0.0,
        duplicates=None,
    )
    result.save(tmp_path / "r")
    back = negmine.MiningResult.load(tmp_path / "r")
    np.testing.assert_array_equal(back.teacher_scores, result.teacher_scores)
    np.testing.assert_array_equal(back.positive_teacher_scores, result.positive_teacher_scores)
    assert back.report.teacher == result.report.teacher
    plain = negmine.mine(queries, corpus, positives, duplicates=None)
    plain.save(tmp_path / "p")
    assert not (tmp_path / "p" / "teacher_scores.npy").exists()
    assert negmine.MiningResult.load(tmp_path / "p").teacher_scores is None


def test_the_hnsw_backend_takes_the_teacher_too() -> None:
    queries, corpus, positives = _data(6)
    options = dict(num_negatives=3, absolute_margin=0.2, duplicates=None)
    exact = negmine.mine(queries, corpus, positives, rescore=Recording(6, len(corpus)), **options)
    graph = negmine.mine(
        queries,
        corpus,
        positives,
        rescore=Recording(6, len(corpus)),
        backend="hnsw",
        target_recall=1.0,
        **options,
    )
    np.testing.assert_array_equal(graph.negative_ids, exact.negative_ids)
    np.testing.assert_array_equal(graph.teacher_scores, exact.teacher_scores)


class Boom(Exception):
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rescore": 3}, InvalidTypeError, "rescore must be a callable"),
        ({"rescore_percentile": 50}, InvalidArgumentError, "needs a rescore"),
        (
            {"rescore": lambda q, c: np.zeros(len(q)), "rescore_percentile": 101},
            InvalidArgumentError,
            "rescore_percentile",
        ),
        (
            {"rescore": lambda q, c: np.zeros(len(q)), "rescore_batch_size": 0},
            InvalidArgumentError,
            "rescore_batch_size",
        ),
        ({"rescore": lambda q, c: np.zeros(len(q) + 1)}, InvalidArgumentError, "shape"),
        ({"rescore": lambda q, c: "x" * len(q)}, InvalidTypeError, "one float score per pair"),
        ({"rescore": lambda q, c: np.full(len(q), np.nan)}, InvalidArgumentError, "nan"),
        # Not real numbers: numpy would read "0.5" as 0.5, True as 1, drop an imaginary part.
        ({"rescore": lambda q, c: ["0.5"] * len(q)}, InvalidTypeError, "got list of strings"),
        ({"rescore": lambda q, c: np.ones(len(q), bool)}, InvalidTypeError, "ndarray of bools"),
        ({"rescore": lambda q, c: np.full(len(q), 1 + 2j)}, InvalidTypeError, "complex numbers"),
        ({"rescore": lambda q, c: [0.5] * (len(q) - 1) + [None]}, InvalidTypeError, "objects"),
        # Finite, but no float32: it was reported as the inf it became.
        (
            {"rescore": lambda q, c: np.full(len(q), 1e39)},
            InvalidArgumentError,
            r"scored query \d+ with corpus row \d+ as 1e\+39 \(beyond float32's range",
        ),
        ({"rescore": lambda q, c: (_ for _ in ()).throw(Boom("inside"))}, Boom, "inside"),
    ],
)
def test_bad_teachers_are_refused_by_name(kwargs, error, match) -> None:
    queries, corpus, positives = _data(7, n=50, nq=3)
    positives = [[1], [2], [3]]
    with pytest.raises(error, match=match):
        negmine.mine(queries, corpus, positives, **kwargs)


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised two-layer BERT cross-encoder saved locally (no download)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tiny-cross-encoder")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz0123456789"]
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(d / "vocab.txt")).save_pretrained(d)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(d)
    return str(d)


def test_a_cross_encoder_teacher_scores_the_texts_of_the_pairs(tiny_cross_encoder: str) -> None:
    from sentence_transformers import CrossEncoder

    rng = np.random.default_rng(8)
    corpus_texts = ["".join(rng.choice(list("abcdefgh"), 6)) for _ in range(40)]
    query_texts = ["".join(rng.choice(list("abcdefgh"), 4)) for _ in range(5)]
    queries, corpus, _ = _data(8, n=40, nq=5)
    teacher = negmine.teachers.cross_encoder(
        tiny_cross_encoder, query_texts, corpus_texts, batch_size=7, device="cpu"
    )
    q, c = np.array([0, 4, 2]), np.array([39, 0, 17])
    model = CrossEncoder(tiny_cross_encoder, device="cpu")
    want = model.predict([(query_texts[i], corpus_texts[j]) for i, j in zip(q, c)])
    np.testing.assert_allclose(teacher(q, c), want, rtol=1e-5)
    result = negmine.mine(
        queries,
        corpus,
        [[1], [2], [3], [4], [5]],
        num_negatives=3,
        rescore=teacher,
        rescore_percentile=50,
        duplicates=None,
    )
    assert result.report.teacher is not None and result.report.teacher.pairs > 0
    assert np.isfinite(result.teacher_scores).all()
    with pytest.raises(InvalidArgumentError, match="corpus row 40 has no text"):
        teacher(np.array([0]), np.array([40]))
    with pytest.raises(InvalidTypeError, match="CrossEncoder"):
        negmine.teachers.cross_encoder(object(), query_texts, corpus_texts)


def test_the_torch_backend_takes_the_teacher_too() -> None:
    pytest.importorskip("torch")
    queries, corpus, positives = _data(9)
    options = dict(num_negatives=3, relative_margin=0.05, duplicates=None, rescore_percentile=80)
    exact = negmine.mine(queries, corpus, positives, rescore=Recording(9, len(corpus)), **options)
    torch = negmine.mine(
        queries, corpus, positives, rescore=Recording(9, len(corpus)), backend="torch", **options
    )
    np.testing.assert_array_equal(torch.negative_ids, exact.negative_ids)
    np.testing.assert_array_equal(torch.teacher_scores, exact.teacher_scores)
    assert torch.report.teacher == exact.report.teacher


def test_outputs_carry_the_teacher_scores(tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    queries, corpus, positives = _data(10, n=60, nq=6)
    teacher = Recording(10, len(corpus))
    result = negmine.mine(
        queries, corpus, positives, num_negatives=3, rescore=teacher, duplicates=None
    )
    negmine.to_parquet(result, tmp_path / "long.parquet")
    long = pq.read_table(tmp_path / "long.parquet").to_pydict()
    q, neg = np.array(long["query"]), np.array(long["negative"])
    np.testing.assert_array_equal(
        np.array(long["teacher_score"], np.float32), teacher.table[q, neg]
    )
    for row, scores in zip(q, long["positive_teacher_scores"]):
        np.testing.assert_array_equal(np.float32(scores), teacher.table[row, positives[row]])
    negmine.to_parquet(result, tmp_path / "wide.parquet", layout="wide")
    wide = pq.read_table(tmp_path / "wide.parquet").to_pydict()
    for row, (ids, scores) in enumerate(zip(wide["negatives"], wide["negative_teacher_scores"])):
        np.testing.assert_array_equal(np.float32(scores), teacher.table[row, ids])
    # The distillation layout: sentence-transformers' `scores` column, from the teacher.
    texts_q = [f"q{i}" for i in range(6)]
    texts_c = [f"c{i}" for i in range(60)]
    ds = negmine.to_dataset(
        result,
        texts_q,
        texts_c,
        output_format="n-tuple",
        include_scores=True,
        score_source="teacher",
    )
    for row in ds:
        query = texts_q.index(row["anchor"])
        docs = [texts_c.index(row["positive"])] + [
            texts_c.index(row[f"negative_{j}"]) for j in (1, 2, 3)
        ]
        np.testing.assert_allclose(row["scores"], teacher.table[query, docs], rtol=0)
    plain = negmine.mine(queries, corpus, positives, duplicates=None)
    with pytest.raises(InvalidArgumentError, match="needs a result mined with a teacher"):
        negmine.to_dataset(plain, texts_q, texts_c, include_scores=True, score_source="teacher")
    negmine.to_parquet(plain, tmp_path / "plain.parquet")
    assert "teacher_score" not in pq.read_table(tmp_path / "plain.parquet").column_names


def test_the_cli_mines_with_a_cross_encoder_teacher(tiny_cross_encoder: str, tmp_path) -> None:
    from negmine.cli import main

    rng = np.random.default_rng(12)
    queries, corpus, positives = _data(12, n=50, nq=6)
    np.save(tmp_path / "q.npy", queries)
    np.save(tmp_path / "c.npy", corpus)
    (tmp_path / "qrels.tsv").write_text(
        "".join(f"{q}\t{p}\n" for q, pos in enumerate(positives) for p in pos)
    )
    query_texts = ["".join(rng.choice(list("abcdef"), 5)) for _ in range(6)]
    corpus_texts = ["".join(rng.choice(list("abcdef"), 7)) for _ in range(50)]
    (tmp_path / "q.txt").write_text("\n".join(query_texts) + "\n")
    (tmp_path / "c.jsonl").write_text(
        "".join(f'{{"text": "{t}"}}\n' if i % 2 else f'"{t}"\n' for i, t in enumerate(corpus_texts))
    )
    base = [
        "mine",
        "--queries",
        str(tmp_path / "q.npy"),
        "--corpus",
        str(tmp_path / "c.npy"),
        "--positives",
        str(tmp_path / "qrels.tsv"),
        "--no-duplicates",
        "--num-negatives",
        "3",
        "--relative-margin",
        "0.01",
    ]
    teach = [
        "--rescore-model",
        tiny_cross_encoder,
        "--query-texts",
        str(tmp_path / "q.txt"),
        "--corpus-texts",
        str(tmp_path / "c.jsonl"),
        "--rescore-percentile",
        "50",
    ]
    assert main([*base, "--out", str(tmp_path / "out"), *teach]) == 0
    got = negmine.MiningResult.load(tmp_path / "out")
    teacher = negmine.teachers.cross_encoder(tiny_cross_encoder, query_texts, corpus_texts)
    want = negmine.mine(
        queries,
        corpus,
        [sorted(p) for p in positives],
        num_negatives=3,
        relative_margin=0.01,
        duplicates=None,
        rescore=teacher,
        rescore_percentile=50,
        rescore_batch_size=64,
    )
    np.testing.assert_array_equal(got.negative_ids, want.negative_ids)
    np.testing.assert_allclose(got.teacher_scores, want.teacher_scores, rtol=1e-6)
    assert got.report.teacher is not None and got.report.teacher.cut is not None
    # Usage mistakes: exit code 2; texts of another length: a data error, exit code 1.
    assert main([*base, "--out", str(tmp_path / "o2"), "--rescore-model", tiny_cross_encoder]) == 2
    assert main([*base, "--out", str(tmp_path / "o3"), "--rescore-percentile", "50"]) == 2
    (tmp_path / "short.txt").write_text("a\nb\n")
    short = [*teach[:3], str(tmp_path / "short.txt"), *teach[4:]]
    assert main([*base, "--out", str(tmp_path / "o4"), *short]) == 1


def test_load_texts_reads_lines_and_json_lines(tmp_path) -> None:
    from negmine.errors import FormatError
    from negmine.texts import load_texts

    (tmp_path / "a.txt").write_bytes("\ufeffone\r\ntwo words\n\nlast".encode())
    assert load_texts(tmp_path / "a.txt") == ["one", "two words", "", "last"]
    (tmp_path / "b.jsonl").write_text('"x\\ny"\n{"text": "z"}\n')
    assert load_texts(tmp_path / "b.jsonl") == ["x\ny", "z"]
    (tmp_path / "c.jsonl").write_text('"ok"\n{"id": 3}\n')
    with pytest.raises(FormatError, match="line 2"):
        load_texts(tmp_path / "c.jsonl")
    (tmp_path / "d.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(FormatError, match="not UTF-8"):
        load_texts(tmp_path / "d.txt")


@pytest.mark.parametrize(
    ("scores", "error", "match"),
    [
        (["0.5", "0.25"], InvalidTypeError, "the cross-encoder must return one float score"),
        ([True, False], InvalidTypeError, "of bools"),
        ([1e39, 0.5], InvalidArgumentError, r"query row 0 with corpus row 3 as 1e\+39 \(beyond"),
    ],
)
def test_a_cross_encoder_teacher_takes_real_float32_scores_only(scores, error, match) -> None:
    class Fixed:
        def predict(self, pairs, **kwargs):
            return scores

    teacher = negmine.teachers.cross_encoder(Fixed(), ["q0", "q1"], [f"d{i}" for i in range(5)])
    with pytest.raises(error, match=match):
        teacher(np.array([0, 1]), np.array([3, 4]))
