"""``backend="bm25"`` and the core's ``Bm25Index``: scores equal to the formula written here
independently (and to bm25s, where installed) on a few thousand generated documents; top-k
ids equal with ties broken by id; pruning equal to exhaustive scoring; mining walks the BM25
ranking with the filters on the embeddings' exact scores; bad inputs named."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest

import negmine
from negmine import _core
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError

K1, B = 1.5, 0.75


def generated(n: int, seed: int, length: int = 12) -> list[str]:
    """Texts over a Zipf-like vocabulary (rare to ubiquitous terms, many tied documents), with
    case and punctuation that the tokenizer removes, some texts empty."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"t{i}" for i in range(2000)])
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    texts = []
    for _ in range(n):
        picked = rng.choice(vocab, size=int(rng.integers(0, length + 1)), p=weights)
        texts.append(" ".join(w.upper() + "," if rng.random() < 0.1 else w for w in picked))
    return texts


def tokens(text: str) -> list[str]:
    """The tokenizer on ASCII text: runs of letters and digits, lowercased."""
    return re.findall(r"[a-z0-9]+", text.lower())


def reference(corpus: list[str], queries: list[str], k1: float = K1, b: float = B):
    """Every document's BM25 score per query, from the formula in docs/internals.md: bm25s'
    default variant (Lucene's idf and saturation), terms summed in the query's order of first
    occurrence, each weighted by its count in the query."""
    docs = [Counter(tokens(t)) for t in corpus]
    lengths = [sum(d.values()) for d in docs]
    n = len(docs)
    avgdl = sum(lengths) / n
    df = Counter(t for d in docs for t in d)
    norms = [k1 * (1 - b + b * dl / avgdl) for dl in lengths]
    scores = np.zeros((len(queries), n))
    for qi, query in enumerate(queries):
        counts = Counter(tokens(query))  # insertion order: order of first occurrence
        for d, doc in enumerate(docs):
            score = 0.0
            for term, qtf in counts.items():
                if doc[term]:
                    idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                    tf = doc[term]
                    score += (qtf * idf) * (tf / (tf + norms[d]))
            scores[qi, d] = score
    return scores


def ranked(scores: np.ndarray, k: int, excluded=()):
    """The top k of one query's scores: score descending, id ascending; positive scores only."""
    order = [d for d in np.lexsort((np.arange(len(scores)), -scores)) if d not in set(excluded)]
    return [d for d in order if scores[d] > 0][:k]


@pytest.fixture(scope="module")
def texts():
    return generated(3000, seed=1), generated(200, seed=2, length=6)


def test_scores_and_topk_equal_the_formula(texts) -> None:
    corpus, queries = texts
    expected = reference(corpus, queries)
    index = _core.Bm25Index(corpus)
    assert (index.n_docs, index.k1, index.b) == (3000, K1, B)
    for k in (1, 10, 100):
        scores, ids = index.search(queries, k)
        assert scores.shape == ids.shape == (len(queries), k)
        for q in range(len(queries)):
            want = ranked(expected[q], k)
            got = ids[q][ids[q] >= 0]
            assert got.tolist() == want, q
            np.testing.assert_allclose(scores[q, : len(want)], expected[q, want], rtol=1e-12)
            assert np.isnan(scores[q, len(want) :]).all()
    # Ties are common here (identical documents, identical term profiles): the rule is tested.
    scores, ids = index.search(queries, 100)
    valid = ids >= 0
    assert (np.diff(np.where(valid, scores, 0), axis=1)[valid[:, 1:]] == 0).any()


def test_scores_equal_bm25s(texts) -> None:
    bm25s = pytest.importorskip("bm25s")
    corpus, queries = texts
    retriever = bm25s.BM25(k1=K1, b=B)  # method "lucene", its default
    retriever.index([tokens(t) for t in corpus], show_progress=False)
    index = _core.Bm25Index(corpus)
    scores, ids = index.search(queries, 3000)
    for q, query in enumerate(queries):
        found = ids[q][ids[q] >= 0]
        known = [t for t in tokens(query) if t in retriever.vocab_dict]
        if not known:  # bm25s refuses a query with no indexed token
            assert len(found) == 0
            continue
        theirs = np.asarray(retriever.get_scores(known), dtype=np.float64)
        np.testing.assert_allclose(scores[q, : len(found)], theirs[found], rtol=1e-5)
        assert (theirs[np.setdiff1d(np.arange(len(corpus)), found)] == 0).all()


def test_pruning_and_threads_do_not_change_the_result(texts) -> None:
    corpus, queries = texts
    index = _core.Bm25Index(corpus, k1=1.2, b=0.5, threads=2)
    rng = np.random.default_rng(0)
    excluded = [np.sort(rng.choice(3000, size=30, replace=False)) for _ in queries]
    indptr = np.concatenate(([0], np.cumsum([len(e) for e in excluded]))).astype(np.int64)
    exclude = (indptr, np.concatenate(excluded).astype(np.int64))
    pruned = index.search(queries, 20, exclude=exclude, threads=1)
    exhaustive = index.search(queries, 20, exclude=exclude, exhaustive=True, threads=2)
    np.testing.assert_array_equal(pruned[1], exhaustive[1])
    np.testing.assert_array_equal(pruned[0], exhaustive[0])  # bit for bit (NaN padding too)
    expected = reference(corpus, queries, k1=1.2, b=0.5)
    for q in range(len(queries)):
        assert pruned[1][q][pruned[1][q] >= 0].tolist() == ranked(expected[q], 20, excluded[q])


def test_tokenizer() -> None:
    assert _core.bm25_tokenize("Hello, WORLD x_y 3.14") == ["hello", "world", "x", "y", "3", "14"]
    assert _core.bm25_tokenize("ÉCOLE naïve Straße 東京") == ["école", "naïve", "straße", "東京"]
    index = _core.Bm25Index(["Éva's café", "cafe"])
    assert index.idf("café") is not None and index.idf("CAFÉ") is None


def test_bad_parameters() -> None:
    with pytest.raises(InvalidArgumentError, match="k1"):
        _core.Bm25Index(["a"], k1=-1.0)
    with pytest.raises(InvalidArgumentError, match="b must be"):
        _core.Bm25Index(["a"], b=2.0)
    index = _core.Bm25Index(["a", "b"])
    bad = (np.array([0, 1], np.int64), np.array([5], np.int64))
    with pytest.raises(InvalidArgumentError, match="exclude"):
        index.search(["a"], 1, exclude=bad)


# ----------------------------------------------------------------------------------- mining


def mining_inputs(n_queries: int = 40, n_corpus: int = 600, dim: int = 8, seed: int = 5):
    """Integer-valued embeddings (dot scores exact in float32, so the oracle's filter decisions
    are the core's), texts sharing words with some documents, one positive per query."""
    rng = np.random.default_rng(seed)
    corpus_texts = generated(n_corpus, seed=seed)
    query_texts = [
        " ".join(corpus_texts[int(i)].split()[:3]) for i in rng.integers(0, n_corpus, n_queries)
    ]
    corpus = rng.integers(-3, 4, size=(n_corpus, dim)).astype(np.float32)
    queries = rng.integers(-3, 4, size=(n_queries, dim)).astype(np.float32)
    positives = [[int(p)] for p in rng.integers(0, n_corpus, n_queries)]
    return queries, corpus, positives, query_texts, corpus_texts


def test_mine_walks_the_bm25_ranking_with_dense_filters() -> None:
    queries, corpus, positives, query_texts, corpus_texts = mining_inputs()
    margin, n_neg = 1.0, 5
    result = negmine.mine(
        queries,
        corpus,
        positives,
        backend="bm25",
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        duplicates=None,
        metric="dot",
        num_negatives=n_neg,
        absolute_margin=margin,
        threads=1,
    )
    assert result.report.backend == "bm25"
    bm25 = reference(corpus_texts, query_texts)
    dense = queries.astype(np.float64) @ corpus.T.astype(np.float64)
    fallback = 0
    for q in range(len(queries)):
        p = dense[q, positives[q][0]]
        ranking = ranked(bm25[q], len(corpus_texts), excluded=positives[q])
        kept = [(r, d) for r, d in enumerate(ranking) if dense[q, d] + margin <= p]
        if len(kept) < n_neg:
            fallback += 1  # too few lexical matches: the exact search finishes it
            continue
        want = kept[:n_neg]
        assert result.negative_ids[q].tolist() == [d for _, d in want], q
        assert result.negative_ranks[q].tolist() == [r for r, _ in want], q
        np.testing.assert_array_equal(result.negative_scores[q], dense[q, [d for _, d in want]])
    assert result.report.exact_fallback == fallback
    again = negmine.mine(
        queries,
        corpus,
        positives,
        backend="bm25",
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        duplicates=None,
        metric="dot",
        num_negatives=n_neg,
        absolute_margin=margin,
        threads=2,
    )
    np.testing.assert_array_equal(again.negative_ids, result.negative_ids)


def test_mine_sampling_and_duplicate_groups_from_texts() -> None:
    queries, corpus, positives, query_texts, corpus_texts = mining_inputs(seed=9)
    corpus_texts[1] = corpus_texts[0]  # identical texts: one duplicate group
    options = dict(
        backend="bm25",
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        num_negatives=3,
        sampling_strategy="random",
        range_max=20,
        seed=3,
    )
    first = negmine.mine(queries, corpus, positives, **options)
    second = negmine.mine(queries, corpus, positives, **options)
    np.testing.assert_array_equal(first.negative_ids, second.negative_ids)
    for q, negatives in enumerate(first.negative_ids.tolist()):
        assert positives[q][0] not in negatives
        assert not {0, 1} <= set(negatives)


def test_mine_refuses_missing_or_mismatched_texts() -> None:
    queries, corpus, positives, query_texts, corpus_texts = mining_inputs()
    with pytest.raises(InvalidArgumentError, match="needs query_texts"):
        negmine.mine(queries, corpus, positives, backend="bm25", corpus_texts=corpus_texts)
    with pytest.raises(InvalidArgumentError, match="needs corpus_texts"):
        negmine.mine(queries, corpus, positives, backend="bm25", query_texts=query_texts)
    with pytest.raises(InvalidArgumentError, match="query_texts has 39 texts for 40 rows"):
        negmine.mine(
            queries,
            corpus,
            positives,
            backend="bm25",
            query_texts=query_texts[:-1],
            corpus_texts=corpus_texts,
        )
    with pytest.raises(InvalidTypeError, match="single string"):
        negmine.mine(
            queries, corpus, positives, backend="bm25", query_texts="q", corpus_texts=corpus_texts
        )
    with pytest.raises(InvalidArgumentError, match="bm25_b"):
        negmine.mine(queries, corpus, positives, bm25_b=1.5)


def test_saved_index_opens_mapped_with_the_same_results(tmp_path, texts) -> None:
    corpus, queries = texts
    built = _core.Bm25Index(corpus, k1=1.2, b=0.5)
    key = bytes(range(32))
    path = tmp_path / "corpus.idx"
    built.save(path, key=key)
    opened = _core.Bm25Index.open(str(path), key=key)
    assert opened.mapped and not built.mapped
    assert opened.key == key and built.key is None
    assert (opened.n_docs, opened.n_terms, opened.n_postings, opened.nbytes) == (
        built.n_docs,
        built.n_terms,
        built.n_postings,
        path.stat().st_size,
    )
    assert (opened.k1, opened.b, opened.avgdl) == (built.k1, built.b, built.avgdl)
    for exhaustive in (False, True):
        a = built.search(queries, 25, exhaustive=exhaustive)
        b = opened.search(queries, 25, exhaustive=exhaustive)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.idx"]  # no temp file left


def test_corrupt_truncated_or_stale_index_is_refused_by_name(tmp_path) -> None:
    path = tmp_path / "bm25.idx"
    _core.Bm25Index(generated(300, 4)).save(path, key=b"k" * 32)
    good = path.read_bytes()
    with pytest.raises(FormatError, match=r"bm25\.idx: BM25 index: stale"):
        _core.Bm25Index.open(path, key=b"x" * 32)
    with pytest.raises(InvalidArgumentError, match="key must be 32 bytes, got 3"):
        _core.Bm25Index.open(path, key=b"abc")
    cases = {
        "truncated": good[: len(good) // 2],
        "missing 8 bytes": good[:-8],
        "trailing bytes": good + b"\0" * 8,
        "not a negmine BM25 index": b"\0" * len(good),
        "checksum": good[:-3] + bytes([good[-3] ^ 1]) + good[-2:],
        "header is corrupt": good[:30] + bytes([good[30] ^ 4]) + good[31:],
    }
    for problem, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(FormatError, match=rf"bm25\.idx: BM25 index: .*{problem}"):
            _core.Bm25Index.open(path)
    with pytest.raises(FileNotFoundError):
        _core.Bm25Index.open(tmp_path / "absent.idx")
    with pytest.raises(IsADirectoryError):
        _core.Bm25Index.open(tmp_path)


def test_mining_caches_the_index_and_rebuilds_a_bad_one(tmp_path) -> None:
    queries, corpus, positives, query_texts, corpus_texts = mining_inputs()
    options = dict(
        backend="bm25",
        query_texts=query_texts,
        corpus_texts=corpus_texts,
        num_negatives=4,
        metric="dot",
        bm25_cache_dir=tmp_path,
    )
    fresh = negmine.mine(queries, corpus, positives, **{**options, "bm25_cache_dir": None})
    first = negmine.mine(queries, corpus, positives, **options)
    (saved,) = tmp_path.iterdir()
    assert re.fullmatch(r"bm25-[0-9a-f]{64}\.idx", saved.name)
    stamp = saved.stat().st_mtime_ns
    second = negmine.mine(queries, corpus, positives, **options)
    assert saved.stat().st_mtime_ns == stamp  # mapped, not built again
    saved.write_bytes(saved.read_bytes()[:-1])
    third = negmine.mine(queries, corpus, positives, **options)
    _core.Bm25Index.open(saved)  # rebuilt and replaced
    for result in (first, second, third):
        np.testing.assert_array_equal(result.negative_ids, fresh.negative_ids)
    # Other texts or parameters: another file.
    negmine.mine(queries, corpus, positives, **{**options, "bm25_k1": 1.0})
    assert len(list(tmp_path.iterdir())) == 2
