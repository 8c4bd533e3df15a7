"""Hostile input at the Python boundary (issue 8): qrels files, aliasing inputs, ambiguous id
lists, and every numeric argument of every public function fed values at and past the
int64/uint64 limits, NaN, inf, bools and numpy scalars."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import negmine
from negmine import batches
from negmine.errors import InternalError, InvalidArgumentError, InvalidTypeError, NegmineError


def corpus(n: int = 200, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Item 1: qrels lines are never dropped silently


def mined_negatives(qrels: str, c: np.ndarray) -> negmine.MiningResult:
    return negmine.mine(c[[5, 6]] + 0.01, c, qrels, num_negatives=3, duplicates=None)


def test_qrels_with_a_byte_order_mark_keeps_its_first_pair(tmp_path):
    c = corpus()
    path = tmp_path / "q.tsv"
    with open(path, "w", encoding="utf-8-sig") as f:
        f.write("0\t5\n1\t6\n")
    result = mined_negatives(str(path), c)
    assert result.positive_ids.tolist() == [5, 6]
    assert 5 not in result.negative_ids[0] and 6 not in result.negative_ids[1]


@pytest.mark.parametrize(
    ("first_line", "needle"),
    [
        ("0x\t5", "q.tsv:1"),  # a typo
        ("0\t\t5", "empty field"),  # a doubled tab
        ("q_0\td5", "q.tsv:1"),  # ids that are not row indices
        ("0\t5\tyes", "relevance"),
        ("0\t5\tnan", "finite"),
        ("0\t5\tinf", "finite"),
        (f"0\t{2**64}", "out of range"),
        ("0\t999", "out of range"),  # past the 200 corpus rows
        ("7\t5", "query 7 is out of range for 2 queries"),  # past the 2 queries
    ],
)
def test_a_bad_first_qrels_line_is_an_error_naming_the_line(tmp_path, first_line, needle):
    path = tmp_path / "q.tsv"
    path.write_text(first_line + "\n1\t6\n", encoding="utf-8")
    with pytest.raises(InvalidArgumentError, match=needle):
        mined_negatives(str(path), corpus())


@pytest.mark.parametrize(
    "header",
    [
        "query-id\tcorpus-id\tscore",
        "qid\tpid",
        "query_id\tdoc_id",
        "QID DOCID",
        "topic iter docid rel",
    ],
)
def test_known_headers_are_skipped(tmp_path, header):
    path = tmp_path / "q.tsv"
    four = len(header.split()) == 4
    path.write_text(header + ("\n0 0 5 1\n1 0 6 1\n" if four else "\n0\t5\n1\t6\n"))
    assert negmine.load_qrels(path).indices.tolist() == [5, 6]


def test_trailing_whitespace_and_crlf_are_tolerated(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_bytes(b"0\t5\t\r\n1\t6 \r\n")
    indptr, ids = negmine.load_qrels(path)
    assert indptr.tolist() == [0, 1, 2] and ids.tolist() == [5, 6]


def test_non_utf8_qrels_name_the_line(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_bytes("0\t5\n1\t6\tcaf\u00e9\n".encode("latin-1"))
    with pytest.raises(InvalidArgumentError, match=r"q\.tsv:2: not UTF-8"):
        negmine.load_qrels(path)


def test_nan_relevance_is_not_relevant_but_an_error(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("0\t5\t1\n1\t6\tnan\n")
    with pytest.raises(InvalidArgumentError, match=r"q\.tsv:2: relevance must be finite"):
        negmine.load_qrels(path)


def test_qrels_names_mode_refuses_an_unknown_first_line(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("qa \tdx\nqb\tdy\n")  # a stray space is stripped, not a header
    ids = negmine.load_qrels(path, ["qa", "qb"], ["dx", "dy"]).indices
    assert ids.tolist() == [0, 1]
    path.write_text("qz\tdx\nqb\tdy\n")
    with pytest.raises(InvalidArgumentError, match=r"q\.tsv:1: unknown query id 'qz'"):
        negmine.load_qrels(path, ["qa", "qb"], ["dx", "dy"])


# ---------------------------------------------------------------------------------------------
# Item 10: non-regular qrels files are refused without being opened


def test_a_fifo_or_device_as_qrels_is_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo.tsv"
    os.mkfifo(fifo)
    # In a subprocess with a timeout: a regression would block forever on open().
    code = (
        "import negmine, numpy as np\n"
        "c = np.ones((4, 2), np.float32)\n"
        f"for path in [{str(fifo)!r}, '/dev/zero', {str(tmp_path)!r}]:\n"
        "    try:\n"
        "        negmine.mine(c, c, path)\n"
        "    except negmine.InvalidArgumentError as e:\n"
        "        print('refused:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "FIFO" in out and "character device" in out and "directory" in out
    assert out.count("refused:") == 3
    with pytest.raises(FileNotFoundError, match="qrels file not found"):
        negmine.load_qrels(tmp_path / "missing.tsv")


# ---------------------------------------------------------------------------------------------
# Item 2: inputs that alias each other


def aliasing_cases() -> list[tuple[str, Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]]]:
    return [
        ("queries are a view of the corpus", lambda c: (c[:10], c)),
        ("corpus is a view of the queries", lambda c: (c, c[:50])),
        ("view of a view", lambda c: (c[5:][:10], c)),
        ("two views of one base", lambda c: (c[:10], c[10:])),
        ("the same array twice", lambda c: (c, c)),
        ("a view of a view and its parent", lambda c: (c[2:][1:9], c[2:])),
    ]


@pytest.mark.parametrize(("name", "make"), aliasing_cases(), ids=[n for n, _ in aliasing_cases()])
def test_aliasing_inputs_search_and_stay_writeable(name, make):
    base = corpus(1000, 32)
    q, c = make(base)
    arrays = [base, q, c]
    expected = negmine.search(q.copy(), c.copy(), 3)
    got = negmine.search(q, c, 3)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])
    assert all(a.flags.writeable for a in arrays), name
    result = negmine.mine(q, c, [[]] * len(q), num_negatives=2, duplicates=None)
    assert result.negative_ids.shape == (len(q), 2)
    assert all(a.flags.writeable for a in arrays), name


def test_a_read_only_input_stays_read_only_and_views_of_it_untouched():
    base = corpus(300, 8)
    view = base[:20]
    base.flags.writeable = False  # the view stays writeable (numpy allows it), base does not
    negmine.search(view, base, 2)
    assert not base.flags.writeable and view.flags.writeable


def test_concurrent_calls_on_a_base_and_its_view_restore_both():
    base = corpus(20_000, 64)
    view = base[:100]
    errors: list[BaseException] = []

    def run(q: np.ndarray, c: np.ndarray) -> None:
        try:
            for _ in range(5):
                negmine.search(q, c, 5, threads=1)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=(view, base)),
        threading.Thread(target=run, args=(base[:50], view)),
        threading.Thread(target=run, args=(base, base)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert base.flags.writeable and view.flags.writeable


# ---------------------------------------------------------------------------------------------
# Item 5: a tuple of two lists is ambiguous


def test_a_tuple_of_two_lists_is_refused_with_both_spellings():
    q, c = corpus(2, 8, 1), corpus(20, 8)
    with pytest.raises(
        InvalidTypeError, match=r"Csr\(indptr, indices\).*\[\[0, 1, 2\], \[5, 7\]\]"
    ):
        negmine.search(q, c, 17, exclude=([0, 1, 2], [5, 7]))
    with pytest.raises(InvalidTypeError, match="Csr"):
        negmine.mine(q, c, ([0, 1, 2], [5, 7]))


def test_every_unambiguous_spelling_excludes_the_same_rows():
    q, c = corpus(2, 8, 1), corpus(20, 8)
    lists = [[0, 1, 2], [5, 7]]
    forms: list[Any] = [
        lists,
        negmine.Csr([0, 3, 5], [0, 1, 2, 5, 7]),
        (np.array([0, 3, 5]), np.array([0, 1, 2, 5, 7])),
        [np.array([0, 1, 2]), np.array([5, 7])],
    ]
    results = [negmine.search(q, c, 15, exclude=form)[1] for form in forms]
    for ids in results:
        np.testing.assert_array_equal(ids, results[0])
    assert not set(results[0][0]) & {0, 1, 2} and not set(results[0][1]) & {5, 7}


def test_load_qrels_returns_a_csr_that_mine_accepts(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("0\t5\n1\t6\n")
    csr = negmine.load_qrels(path)
    assert isinstance(csr, negmine.Csr)
    c = corpus()
    a = negmine.mine(c[[5, 6]], c, csr, duplicates=None)
    b = negmine.mine(c[[5, 6]], c, str(path), duplicates=None)
    np.testing.assert_array_equal(a.negative_ids, b.negative_ids)


def test_float64_values_past_float32_are_refused_by_row_not_cast_to_inf():
    q = np.zeros((3, 4))
    q[2, 1] = 1e39
    with pytest.raises(InvalidArgumentError, match=r"queries row 2 holds 1e\+39 .*float32"):
        negmine.search(q, corpus(20, 4), 2)


def test_ids_past_int64_are_invalid_arguments():
    q, c = corpus(1, 8), corpus(20, 8)
    for exclude in (
        [[2**64 - 1]],
        [[2**63]],
        negmine.Csr(np.array([0, 1]), np.array([2**64 - 1], dtype=np.uint64)),
    ):
        with pytest.raises(InvalidArgumentError, match="2\\*\\*63 - 1"):
            negmine.search(q, c, 2, exclude=exclude)


# ---------------------------------------------------------------------------------------------
# Item 11: positives, metrics, aliases


def test_empty_positive_lists_are_allowed_and_none_is_explained():
    q, c = corpus(3, 8, 1), corpus(50, 8)
    result = negmine.mine(q, c, [[], [4], []], relative_margin=0.05, duplicates=None)
    assert (result.negative_ids >= 0).all()
    with pytest.raises(InvalidArgumentError, match="may be empty"):
        negmine.mine(q, c, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("alias", "canonical"), [("ip", "dot"), ("inner_product", "dot"), ("cos", "cosine")]
)
def test_documented_metric_aliases_are_canonicalised(alias, canonical):
    q, c = corpus(3, 8, 1), corpus(50, 8)
    for a, b in zip(
        negmine.search(q, c, 4, metric=alias), negmine.search(q, c, 4, metric=canonical)
    ):
        np.testing.assert_array_equal(a, b)
    options = negmine.MiningOptions(metric=alias)  # type: ignore[arg-type]
    assert options.metric == canonical


@pytest.mark.parametrize("metric", [None, 3, b"dot"])
def test_a_metric_that_is_not_a_string_is_a_type_error(metric):
    q = corpus(3, 8)
    with pytest.raises(InvalidTypeError, match="metric must be a string, 'dot' or 'cosine'"):
        negmine.search(q, q, 2, metric=metric)
    with pytest.raises(InvalidTypeError, match="metric must be a string"):
        negmine.mine(q, q, [[0], [1], [2]], metric=metric)


def test_numpy_scalars_are_plain_values_in_options_and_reports(tmp_path):
    q, c = corpus(3, 8, 1), corpus(50, 8)
    result = negmine.mine(
        q,
        c,
        [[1], [2], [3]],
        num_negatives=np.int64(2),
        seed=np.uint64(7),
        max_score=np.float32(0.9),
    )
    assert result.report.options["seed"] == 7 and type(result.report.options["seed"]) is int
    result.save(tmp_path / "r")  # the report serialises to JSON
    assert negmine.MiningResult.load(tmp_path / "r").report.options == result.report.options


# ---------------------------------------------------------------------------------------------
# The class: every numeric argument of every public function


HOSTILE_INTEGERS = [
    2**62,
    2**62 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    2**70,
    -1,
    -(2**63),
    -(2**63) - 1,
    -(2**64),
    0,
    np.int64(2**63 - 1),
    np.int64(-(2**63)),
    np.uint64(2**64 - 1),
    np.int8(-1),
    np.uint8(3),
]
HOSTILE_OTHERS = [
    True,
    False,
    np.bool_(True),
    float("nan"),
    float("inf"),
    -float("inf"),
    1.5,
    np.float32("nan"),
    np.float64(1e300),
    "3",
    None,
    [3],
]

Q = corpus(6, 8, 1)
C = corpus(40, 8)
POS = [[1], [2], [], [3], [4], [5]]
CLUSTERS = np.array([0, 1, 0, 1, 2, 2, 0, 1])


def _calls() -> dict[str, Callable[[Any], object]]:
    calls: dict[str, Callable[[Any], object]] = {}
    for name in ("k", "threads", "block_rows", "query_batch"):
        kwargs = {"k": 3}
        calls[f"search.{name}"] = lambda v, n=name, kw=kwargs: negmine.search(Q, C, **{**kw, n: v})
    for name in (
        "num_negatives",
        "range_min",
        "range_max",
        "seed",
        "max_depth",
        "record_removed",
        "threads",
        "max_score",
        "min_score",
        "absolute_margin",
        "relative_margin",
        "dup_threshold",
        "query_dup_threshold",
        "simans_a",
        "simans_b",
        "target_recall",
        "hnsw_m",
        "hnsw_ef_construction",
    ):
        calls[f"mine.{name}"] = lambda v, n=name: negmine.mine(Q, C, POS, duplicates=None, **{n: v})
    for name in ("n_clusters", "iterations", "seed", "sample", "threads"):
        kwargs = {"n_clusters": 3}
        calls[f"kmeans.{name}"] = lambda v, n=name, kw=kwargs: negmine.kmeans(C, **{**kw, n: v})
    for name in ("n_clusters", "iterations", "seed"):
        kwargs = {"n_clusters": 2}
        calls[f"coarsen_clusters.{name}"] = lambda v, n=name, kw=kwargs: negmine.coarsen_clusters(
            C[:4], np.arange(4) % 4, **{**kw, n: v}
        )
    for name in ("batch_size", "seed", "epoch", "clusters_per_batch"):
        kwargs = {"batch_size": 2, "seed": 0, "epoch": 0}
        calls[f"batches.topic.{name}"] = lambda v, n=name, kw=kwargs: batches.topic(
            CLUSTERS, **{**kw, n: v}
        )
    for name in ("batch_size", "seed", "epoch"):
        kwargs = {"batch_size": 2, "seed": 0, "epoch": 0}
        calls[f"batches.ngame.{name}"] = lambda v, n=name, kw=kwargs: batches.ngame(
            CLUSTERS, **{**kw, n: v}
        )
    calls["batches.ngame_count.n_rows"] = lambda v: batches.ngame_count(v, 2)
    calls["batches.ngame_count.batch_size"] = lambda v: batches.ngame_count(8, v)
    if importlib.util.find_spec("torch") is not None:
        from negmine.torch import ClusterBatchSampler

        for name in ("batch_size", "seed", "clusters_per_batch", "num_replicas", "rank"):
            kwargs = {"batch_size": 2, "num_replicas": 2, "rank": 0}
            calls[f"ClusterBatchSampler.{name}"] = lambda v, n=name, kw=kwargs: list(
                ClusterBatchSampler(CLUSTERS, **{**kw, n: v})
            )
    if importlib.util.find_spec("pyarrow") is not None:
        result = negmine.mine(Q, C, POS, duplicates=None)

        def parquet(value: object) -> None:
            with tempfile.TemporaryDirectory() as d:
                negmine.to_parquet(result, os.path.join(d, "x.parquet"), batch_rows=value)

        calls["to_parquet.batch_rows"] = parquet
    return calls


CALLS = _calls()


def check_boundary(call: Callable[[Any], object], value: object) -> None:
    """The call succeeds or raises one of negmine's argument errors; nothing else."""
    try:
        call(value)
    except (InvalidArgumentError, InvalidTypeError):
        pass
    except ImportError:
        pass  # an optional backend reached with a valid value
    except NegmineError as e:
        assert not isinstance(e, InternalError), f"an internal error for {value!r}: {e}"
    except BaseException as e:
        raise AssertionError(f"{type(e).__module__}.{type(e).__name__} for {value!r}: {e}") from e


@pytest.mark.parametrize("name", sorted(CALLS))
@pytest.mark.parametrize("value", HOSTILE_INTEGERS + HOSTILE_OTHERS, ids=repr)
def test_every_numeric_argument_refuses_hostile_values_with_negmine_errors(name, value):
    check_boundary(CALLS[name], value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(CALLS)),
    value=st.one_of(
        st.integers(min_value=-(2**80), max_value=2**80),
        st.integers(min_value=-3, max_value=50),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**63 - 1).map(np.int64),
        st.integers(min_value=0, max_value=2**64 - 1).map(np.uint64),
    ),
)
def test_numeric_boundary_property(name, value):
    check_boundary(CALLS[name], value)


def test_the_messages_name_the_argument_and_the_limit():
    with pytest.raises(
        InvalidArgumentError,
        match=r"k must be at most 2\*\*62|k must be at most 4611686018427387904",
    ):
        negmine.search(Q, C, 2**63)
    with pytest.raises(InvalidArgumentError, match="threads must be at most"):
        negmine.search(Q, C, 3, threads=2**64)
    with pytest.raises(InvalidArgumentError, match=r"seed must be in \[0, 2\*\*64\)"):
        negmine.kmeans(C, 3, seed=-1)
    with pytest.raises(InvalidTypeError, match="k must be an integer, got bool"):
        negmine.search(Q, C, True)
    with pytest.raises(InvalidArgumentError, match="max_score must be a finite number"):
        negmine.mine(Q, C, POS, max_score=float("nan"))
    with pytest.raises(InvalidArgumentError, match=r"target_recall must be in \(0"):
        negmine.mine(Q, C, POS, target_recall=0)


def test_a_padded_result_larger_than_memory_is_refused_before_any_work():
    # Linux overcommits: without the check the pages are touched and the process is killed.
    # 2**30 negatives per query (the largest rank) is over 100 GiB for these queries.
    with pytest.raises(InvalidArgumentError, match=r"num_negatives = 1073741824 .* needs"):
        negmine.mine(Q, C, POS, num_negatives=2**30)


# ---------------------------------------------------------------------------------------------
# Issue 20, item 15: a text that is not one (None, a number, bytes, a lone surrogate) is refused
# by every function taking texts, never embedded or hashed as str(value)


class _Encoder:
    name_or_path = "test/encoder"

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        return np.ones((len(texts), 4), dtype=np.float32)


class _CrossEncoder:
    def predict(self, pairs: list[tuple[str, str]], **kwargs: Any) -> np.ndarray:
        return np.zeros(len(pairs), dtype=np.float32)


def _embed(texts: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as cache:
        negmine.embed_texts(texts, _Encoder(), cache_dir=cache, progress=False)


def _group(texts: list[Any]) -> None:
    c = corpus(len(texts), 4)
    negmine.mine(c[:1], c, [[]], corpus_texts=texts)


def _teacher(texts: list[Any]) -> None:
    negmine.teachers.cross_encoder(_CrossEncoder(), ["q"], texts)


def _export(texts: list[Any]) -> None:
    c = corpus(len(texts), 4)
    result = negmine.mine(c[:1], c, [[0]], num_negatives=1, duplicates=None)
    negmine.to_dataset(result, ["q"], texts)


TEXT_TAKERS = {
    "embed_texts": _embed,
    "mine": _group,
    "cross_encoder": _teacher,
    "to_dataset": _export,
}
BAD_TEXTS = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.binary(),
    st.builds(lambda a, s, b: a + chr(s) + b, st.text(), st.integers(0xD800, 0xDFFF), st.text()),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(TEXT_TAKERS)),
    texts=st.lists(st.text(max_size=8), min_size=2, max_size=6),
    bad=BAD_TEXTS,
    data=st.data(),
)
def test_every_text_argument_refuses_what_is_not_a_text_by_index(name, texts, bad, data):
    if name == "to_dataset":
        pytest.importorskip("datasets")
    at = data.draw(st.integers(0, len(texts) - 1))
    texts[at] = bad
    with pytest.raises(
        negmine.errors.InvalidTextError,
        match=rf"\[{at}\] (must be a string|holds a lone surrogate)",
    ):
        TEXT_TAKERS[name](texts)
