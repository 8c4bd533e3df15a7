"""The masked losses of negmine.st against sentence-transformers' own losses (all ids distinct:
nothing to mask) and against float64 references written from the documented masks."""

from __future__ import annotations

import functools
import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.sentence_transformer import losses as st_losses  # noqa: E402

import negmine.st  # noqa: E402
from negmine.errors import InvalidArgumentError, InvalidTypeError  # noqa: E402
from negmine.st import MaskedGISTEmbedLoss, MaskedMultipleNegativesRankingLoss  # noqa: E402

ALL = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")
HARDNESS = (None, "in_batch_negatives", "hard_negatives", "all_negatives")


@functools.cache
def _model(path: str) -> Any:
    return SentenceTransformer(path, device="cpu")


def _cached_mnrl() -> Any:
    return negmine.st.CachedMaskedMultipleNegativesRankingLoss


def _cached_gist() -> Any:
    return negmine.st.CachedMaskedGISTEmbedLoss


@st.composite
def mnrl_options(draw: Any) -> dict[str, Any]:
    extra = draw(st.lists(st.sampled_from(ALL[1:]), unique=True))
    directions = tuple(draw(st.permutations(["query_to_doc", *extra])))
    same_kind = {"query_to_query", "doc_to_doc"} & set(directions)
    partition_mode = "joint" if same_kind else draw(st.sampled_from(["joint", "per_direction"]))
    hardness_mode = draw(st.sampled_from(HARDNESS))
    strength = 0.0 if hardness_mode is None else draw(st.sampled_from([0.5, 5.0, 9.0]))
    return {
        "directions": directions,
        "partition_mode": partition_mode,
        "hardness_mode": hardness_mode,
        "hardness_strength": strength,
        "scale": draw(st.sampled_from([1.0, 7.5, 20.0])),
    }


def _embeddings(seed: int, b: int, n: int, d: int = 6) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [torch.tensor(rng.standard_normal((b, d)), requires_grad=True) for _ in range(2 + n)]


def _distinct_ids(b: int, n: int) -> Any:
    """Every row's own query, positive and negatives: nothing in the batch to mask."""
    return torch.tensor([[q, 1000 + q, *(2000 + q * n + j for j in range(n))] for q in range(b)])


def _value_and_grads(fn: Any, embeddings: list[Any]) -> tuple[float, list[Any]]:
    leaves = [e.detach().clone().requires_grad_(True) for e in embeddings]
    value = fn(leaves)
    value.backward()
    return float(value.detach()), [e.grad for e in leaves]


def _assert_same(got: tuple[float, list[Any]], want: tuple[float, list[Any]]) -> None:
    assert math.isfinite(want[0])
    assert got[0] == pytest.approx(want[0], rel=1e-10, abs=1e-12)
    assert len(got[1]) == len(want[1])
    for g, w in zip(got[1], want[1]):
        # A column the reference never reads (every entry masked) has no gradient there.
        g = torch.zeros_like(w if g is None else g) if g is None else g
        w = torch.zeros_like(g) if w is None else w
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)


def _chunks(embeddings: list[Any], size: int) -> list[list[Any]]:
    return [list(torch.split(e, size)) for e in embeddings]


def _cached_value_and_grads(loss: Any, embeddings: list[Any], labels: Any, size: int) -> Any:
    """``calculate_loss(..., with_backward=True)``, as the gradient cache calls it: the gradients
    land on the mini-batch leaves."""
    reps = [
        [c.detach().clone().requires_grad_(True) for c in col] for col in _chunks(embeddings, size)
    ]
    value = loss.calculate_loss(reps, labels, with_backward=True)
    grads = [torch.cat([c.grad for c in col]) for col in reps]
    return float(value.detach()), grads


# --- empty mask: sentence-transformers' own MNRL -----------------------------------------------


@settings(max_examples=60)
@given(
    b=st.integers(1, 6),
    n=st.integers(0, 3),
    options=mnrl_options(),
    seed=st.integers(0, 2**16),
    mini_batch=st.integers(1, 4),
)
def test_with_nothing_to_mask_the_loss_is_sentence_transformers_mnrl(
    tiny_model: str, b: int, n: int, options: dict[str, Any], seed: int, mini_batch: int
) -> None:
    embeddings = _embeddings(seed, b, n)
    labels = _distinct_ids(b, n)
    theirs = st_losses.MultipleNegativesRankingLoss(None, **options)  # type: ignore[arg-type]
    want = _value_and_grads(lambda e: theirs.compute_loss_from_embeddings(e, None), embeddings)
    ours = MaskedMultipleNegativesRankingLoss(None, **options)
    _assert_same(
        _value_and_grads(lambda e: ours.compute_loss_from_embeddings(e, labels), embeddings), want
    )

    model = _model(tiny_model)
    cached_theirs = st_losses.CachedMultipleNegativesRankingLoss(
        model, mini_batch_size=mini_batch, **options
    )
    cached_ours = _cached_mnrl()(model, mini_batch_size=mini_batch, **options)
    want_cached = _cached_value_and_grads(cached_theirs, embeddings, None, mini_batch)
    _assert_same(want_cached, want)  # (the reference itself: chunking changes nothing)
    _assert_same(_cached_value_and_grads(cached_ours, embeddings, labels, mini_batch), want)


# --- a non-empty mask: a float64 reference -----------------------------------------------------


def _labelled(row: list[int], csr: Any, groups: Any) -> set[int]:
    """The keys (group ids) of the labelled positives of a row's query."""
    query, positive = row[0], row[1]
    ids = {positive} | set(csr[1][csr[0][query] : csr[0][query + 1]].tolist())
    return {int(groups[i]) for i in ids if i >= 0}


def _reference_mnrl(
    embeddings: list[Any], ids: list[list[int]], csr: Any, groups: Any, options: dict[str, Any]
) -> Any:
    """The documented masked MNRL, entry by entry, in float64."""
    anchors, columns = embeddings[0], embeddings[1:]
    b, n_docs = len(anchors), len(columns)
    docs = [(columns[k][j], ids[j][1 + k], j, k) for k in range(n_docs) for j in range(b)]
    labelled = [_labelled(r, csr, groups) for r in ids]
    key = [(-1 if d < 0 else int(groups[d])) for _, d, _, _ in docs]

    def cos(x: Any, y: Any) -> Any:
        return torch.dot(x, y) / (x.norm() * y.norm())

    scale, strength, mode = options["scale"], options["hardness_strength"], options["hardness_mode"]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(b):
        terms: dict[str, list[Any]] = {}
        q2d = []
        for c, (vec, doc_id, j, k) in enumerate(docs):
            own_positive = j == i and k == 0
            if not own_positive and (doc_id < 0 or key[c] in labelled[i]):
                continue
            s = cos(anchors[i], vec)
            penalised = {
                None: False,
                "in_batch_negatives": j != i,
                "hard_negatives": j == i and k > 0,
                "all_negatives": not own_positive,
            }[mode]
            q2d.append(s * scale + (strength * s.detach() if penalised else 0.0))
            if own_positive:
                target = q2d[-1]
        terms["query_to_doc"] = q2d
        if "doc_to_query" in options["directions"]:
            terms["doc_to_query"] = [
                cos(anchors[j], columns[0][i]) * scale
                for j in range(b)
                if j == i or not (ids[j][0] == ids[i][0] or int(groups[ids[i][1]]) in labelled[j])
            ]
        if "query_to_query" in options["directions"]:
            terms["query_to_query"] = [
                cos(anchors[i], anchors[j]) * scale
                for j in range(b)
                if j != i and ids[j][0] != ids[i][0] and not (labelled[i] & labelled[j])
            ]
        if "doc_to_doc" in options["directions"]:
            terms["doc_to_doc"] = [
                cos(vec, columns[0][i]) * scale
                for c, (vec, doc_id, j, _) in enumerate(docs)
                if j != i and doc_id >= 0 and key[c] not in labelled[i]
            ]
        present = [torch.stack(t) for t in terms.values() if t]
        if options["partition_mode"] == "joint":
            log_z = torch.logsumexp(torch.cat(present), 0)
        else:
            log_z = torch.stack([torch.logsumexp(t, 0) for t in present]).mean()
        total = total + log_z - target
    return total / b


@st.composite
def masked_batches(draw: Any) -> dict[str, Any]:
    """Rows with repeated queries, shared and duplicate documents, missing negatives; the
    positives of every query (the rows' own among them) and duplicate groups."""
    b, n = draw(st.integers(1, 6)), draw(st.integers(0, 3))
    n_queries, n_corpus = 4, 10
    query = draw(st.lists(st.integers(0, n_queries - 1), min_size=b, max_size=b))
    extra = [draw(st.lists(st.integers(0, n_corpus - 1), max_size=2)) for _ in range(n_queries)]
    rows, labelled = [], [set(e) for e in extra]
    for q in query:
        positive = draw(st.integers(0, n_corpus - 1))
        labelled[q].add(positive)
        negatives = draw(st.lists(st.integers(-1, n_corpus - 1), min_size=n, max_size=n))
        rows.append([q, positive, *negatives])
    lists = [sorted(s) for s in labelled]
    indptr = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    ids = np.array([i for x in lists for i in x], dtype=np.int64)
    groups = np.array(draw(st.lists(st.integers(0, 6), min_size=n_corpus, max_size=n_corpus)))
    use_csr, use_groups = draw(st.booleans()), draw(st.booleans())
    return {
        "ids": rows,
        "positives": (indptr, ids) if use_csr else None,
        "groups": groups if use_groups else None,
        # The reference reads the same definitions: without positives only the rows' own count.
        "csr": (indptr, ids) if use_csr else _own_positives(rows, n_queries),
        "keys": groups if use_groups else np.arange(n_corpus),
    }


def _own_positives(rows: list[list[int]], n_queries: int) -> tuple[Any, Any]:
    # Without positives= only the row's own positive is labelled: an empty CSR adds nothing.
    return np.zeros(n_queries + 1, dtype=np.int64), np.zeros(0, dtype=np.int64)


@settings(max_examples=60)
@given(
    batch=masked_batches(),
    options=mnrl_options(),
    seed=st.integers(0, 2**16),
    mini_batch=st.integers(1, 4),
)
def test_with_false_negatives_the_loss_is_the_masked_reference(
    tiny_model: str, batch: dict[str, Any], options: dict[str, Any], seed: int, mini_batch: int
) -> None:
    ids = batch["ids"]
    b, n = len(ids), len(ids[0]) - 2
    embeddings = _embeddings(seed, b, n)
    labels = torch.tensor(ids)
    want = _value_and_grads(
        lambda e: _reference_mnrl(e, ids, batch["csr"], batch["keys"], options), embeddings
    )
    masks = {"positives": batch["positives"], "groups": batch["groups"]}
    ours = MaskedMultipleNegativesRankingLoss(None, **masks, **options)
    _assert_same(
        _value_and_grads(lambda e: ours.compute_loss_from_embeddings(e, labels), embeddings), want
    )
    cached = _cached_mnrl()(_model(tiny_model), mini_batch_size=mini_batch, **masks, **options)
    _assert_same(_cached_value_and_grads(cached, embeddings, labels, mini_batch), want)


# --- GISTEmbed ---------------------------------------------------------------------------------


@st.composite
def gist_options(draw: Any) -> dict[str, Any]:
    return {
        "temperature": draw(st.sampled_from([0.01, 0.05, 1.0])),
        "margin_strategy": draw(st.sampled_from(["absolute", "relative"])),
        "margin": draw(st.sampled_from([0.0, 0.05, 0.3, -0.1])),
        "contrast_anchors": draw(st.booleans()),
        "contrast_positives": draw(st.booleans()),
    }


def _guided(seed: int, embeddings: list[Any]) -> list[Any]:
    """Guide embeddings near the model's, so the guide masks some candidates, not all."""
    rng = np.random.default_rng(seed + 1)
    return [
        e.detach() + 0.7 * torch.tensor(rng.standard_normal(tuple(e.shape))) for e in embeddings
    ]


@settings(max_examples=50)
@given(
    b=st.integers(1, 6),
    n=st.integers(0, 3),
    options=gist_options(),
    seed=st.integers(0, 2**16),
    mini_batch=st.integers(1, 4),
)
def test_with_nothing_to_mask_the_guided_loss_is_sentence_transformers_gist(
    tiny_model: str, b: int, n: int, options: dict[str, Any], seed: int, mini_batch: int
) -> None:
    model = _model(tiny_model)
    embeddings = _embeddings(seed, b, n)
    guide = _guided(seed, embeddings)
    labels = _distinct_ids(b, n)
    # CachedGISTEmbedLoss takes any number of negatives (GISTEmbedLoss one at most; its forward
    # is compared below), and its calculate_loss takes embeddings.
    theirs = st_losses.CachedGISTEmbedLoss(model, model, mini_batch_size=b, **options)
    want = _value_and_grads(
        lambda e: theirs.calculate_loss([[x] for x in e], [[g] for g in guide]), embeddings
    )
    ours = MaskedGISTEmbedLoss(model, model, **options)
    _assert_same(
        _value_and_grads(lambda e: ours.compute_loss_from_embeddings(e, guide, labels), embeddings),
        want,
    )
    cached = _cached_gist()(model, model, mini_batch_size=mini_batch, **options)
    _assert_same(_cached_value_and_grads(cached, embeddings, (labels, guide), mini_batch), want)


def _reference_gist(
    embeddings: list[Any],
    guide: list[Any],
    ids: list[list[int]],
    csr: Any,
    groups: Any,
    options: dict[str, Any],
) -> Any:
    anchors, columns = embeddings[0], embeddings[1:]
    g_anchors, g_columns = guide[0], guide[1:]
    b = len(anchors)
    labelled = [_labelled(r, csr, groups) for r in ids]

    def cos(x: Any, y: Any) -> Any:
        return torch.dot(x, y) / (x.norm() * y.norm())

    def key(doc: int) -> int:
        return -1 if doc < 0 else int(groups[doc])

    margin = options["margin"]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(b):
        g_pos = cos(g_anchors[i], g_columns[0][i])
        limit = g_pos - (
            abs(g_pos) * margin if options["margin_strategy"] == "relative" else margin
        )
        logits = []
        for k, column in enumerate(columns):
            for j in range(b):
                if k == 0 and j == i:
                    target = cos(anchors[i], column[i])
                    logits.append(target)
                    continue
                doc = ids[j][1 + k]
                if doc < 0 or key(doc) in labelled[i]:
                    continue
                if cos(g_anchors[i], g_columns[k][j]) > limit:
                    continue
                logits.append(cos(anchors[i], column[j]))
        if options["contrast_anchors"]:
            for j in range(b):
                same = j == i or ids[j][0] == ids[i][0] or labelled[i] & labelled[j]
                if not same and cos(g_anchors[i], g_anchors[j]) <= limit:
                    logits.append(cos(anchors[i], anchors[j]))
        if options["contrast_positives"]:
            for j in range(b):
                doc = ids[j][1]
                if j == i or doc < 0 or key(doc) in labelled[i]:
                    continue
                if cos(g_columns[0][i], g_columns[0][j]) <= limit:
                    logits.append(cos(columns[0][i], columns[0][j]))
        scores = torch.stack(logits) / options["temperature"]
        total = total + torch.logsumexp(scores, 0) - target / options["temperature"]
    return total / b


@settings(max_examples=50)
@given(
    batch=masked_batches(),
    options=gist_options(),
    seed=st.integers(0, 2**16),
    mini_batch=st.integers(1, 4),
)
def test_with_false_negatives_the_guided_loss_is_the_masked_reference(
    tiny_model: str, batch: dict[str, Any], options: dict[str, Any], seed: int, mini_batch: int
) -> None:
    model = _model(tiny_model)
    ids = batch["ids"]
    b, n = len(ids), len(ids[0]) - 2
    embeddings = _embeddings(seed, b, n)
    guide = _guided(seed, embeddings)
    labels = torch.tensor(ids)
    want = _value_and_grads(
        lambda e: _reference_gist(e, guide, ids, batch["csr"], batch["keys"], options), embeddings
    )
    masks = {"positives": batch["positives"], "groups": batch["groups"]}
    ours = MaskedGISTEmbedLoss(model, model, **masks, **options)
    _assert_same(
        _value_and_grads(lambda e: ours.compute_loss_from_embeddings(e, guide, labels), embeddings),
        want,
    )
    cached = _cached_gist()(model, model, mini_batch_size=mini_batch, **masks, **options)
    _assert_same(_cached_value_and_grads(cached, embeddings, (labels, guide), mini_batch), want)


def _step(model: Any, loss: Any, texts: list[list[str]], labels: Any) -> tuple[float, list[Any]]:
    """The loss of one batch through the model, and the model's parameter gradients."""
    model.zero_grad()
    value = loss([model.preprocess(t) for t in texts], labels)
    value.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return float(value.detach()), grads


def _perturbed(tiny_model: str, max_seq_length: int | None = None) -> Any:
    guide = SentenceTransformer(tiny_model, device="cpu")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=generator))
    if max_seq_length is not None:
        guide.max_seq_length = max_seq_length
    guide.to(torch.float64)
    return guide


@pytest.mark.parametrize("retokenize", [False, True])
def test_the_guided_loss_forward_is_gist_embed_loss_on_a_real_guide(
    tiny_model: str, retokenize: bool
) -> None:
    """Through the models: the same loss and parameter gradients as GISTEmbedLoss, with a guide
    sharing the model's tokens or (a shorter max_seq_length) tokenizing the texts again; the
    cached variant's too."""
    model = SentenceTransformer(tiny_model, device="cpu")
    model.eval()
    model.to(torch.float64)
    guide = _perturbed(tiny_model, 8 if retokenize else None)
    texts = [
        [f"query {c}{c}" for c in "abcdef"],
        [f"doc {c} {c}{c}" for c in "abcdef"],
        [f"doc {c}" for c in "zyxwvu"],
    ]
    labels = _distinct_ids(6, 1)
    options = {"margin": 0.02, "temperature": 0.05}

    def run(loss: Any) -> tuple[float, list[Any]]:
        return _step(model, loss, texts, labels)

    want = run(st_losses.GISTEmbedLoss(model, guide, **options))
    ours = MaskedGISTEmbedLoss(model, guide, **options)
    assert ours.must_retokenize is retokenize
    for loss in (ours, _cached_gist()(model, guide, mini_batch_size=4, **options)):
        got = run(loss)
        assert got[0] == pytest.approx(want[0], rel=1e-9)
        assert len(got[1]) == len(want[1]) > 0
        for a, w in zip(got[1], want[1]):
            torch.testing.assert_close(a, w, rtol=1e-7, atol=1e-12)


def test_the_cached_loss_with_the_new_options_trains_like_the_uncached_one(tiny_model: str) -> None:
    model = SentenceTransformer(tiny_model, device="cpu")
    model.eval()
    model.to(torch.float64)
    texts = [[f"query {c}" for c in "abcde"], [f"doc {c}{c}" for c in "abcde"], ["doc z"] * 5]
    labels = torch.tensor([[0, 10, 20], [1, 10, 21], [2, 12, 22], [3, 13, 20], [4, 14, 24]])
    options = {
        "directions": ALL,
        "hardness_mode": "all_negatives",
        "hardness_strength": 5.0,
        "positives": (np.array([0, 1, 2, 3, 4, 5]), np.array([10, 10, 12, 13, 14])),
    }

    def run(loss: Any) -> tuple[float, list[Any]]:
        return _step(model, loss, texts, labels)

    plain = run(MaskedMultipleNegativesRankingLoss(model, **options))
    cached = run(_cached_mnrl()(model, mini_batch_size=2, mini_batch_num_tokens=9, **options))
    assert cached[0] == pytest.approx(plain[0], rel=1e-9)
    for a, w in zip(cached[1], plain[1]):
        torch.testing.assert_close(a, w, rtol=1e-7, atol=1e-12)
    assert pickle.loads(pickle.dumps(_cached_gist())) is _cached_gist()


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"directions": "query_to_doc"}, InvalidTypeError, "directions must be a tuple"),
        ({"directions": ()}, InvalidArgumentError, "directions must name"),
        ({"directions": ("doc_to_query",)}, InvalidArgumentError, "directions must include"),
        ({"directions": ("query_to_doc", "doc2doc")}, InvalidArgumentError, "'doc2doc'"),
        (
            {"directions": ("query_to_doc", "doc_to_doc", "doc_to_doc")},
            InvalidArgumentError,
            "directions names a direction twice",
        ),
        ({"partition_mode": "separate"}, InvalidArgumentError, "partition_mode must be"),
        (
            {"partition_mode": "per_direction", "directions": ("query_to_doc", "query_to_query")},
            InvalidArgumentError,
            "partition_mode='per_direction' cannot take the directions 'query_to_query'",
        ),
        ({"hardness_mode": "hard"}, InvalidArgumentError, "hardness_mode must be None or one of"),
        ({"hardness_strength": -1.0}, InvalidArgumentError, "hardness_strength must be non-neg"),
        (
            {"hardness_strength": float("nan")},
            InvalidArgumentError,
            "hardness_strength must be fin",
        ),
        ({"hardness_strength": "5"}, InvalidTypeError, "hardness_strength must be a number"),
        ({"scale": 0.0}, InvalidArgumentError, "scale must be positive"),
        ({"scale": True}, InvalidTypeError, "scale must be a number"),
    ],
)
def test_bad_options_name_the_option(
    tiny_model: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        MaskedMultipleNegativesRankingLoss(None, **kwargs)
    with pytest.raises(error, match=match):
        _cached_mnrl()(_model(tiny_model), **kwargs)


def test_bad_cached_and_guided_options_name_the_option(tiny_model: str) -> None:
    model = _model(tiny_model)
    for kwargs, error, match in [
        ({"mini_batch_size": 0}, InvalidArgumentError, "mini_batch_size must be a positive"),
        ({"mini_batch_size": 2.0}, InvalidTypeError, "mini_batch_size must be a positive"),
        ({"mini_batch_num_tokens": 0}, InvalidArgumentError, "mini_batch_num_tokens must be"),
    ]:
        with pytest.raises(error, match=match):
            _cached_mnrl()(model, **kwargs)
        with pytest.raises(error, match=match):
            _cached_gist()(model, model, **kwargs)
    for kwargs, error, match in [
        ({"margin_strategy": "percent"}, InvalidArgumentError, "margin_strategy must be"),
        ({"temperature": 0}, InvalidArgumentError, "temperature must be positive"),
        ({"margin": float("inf")}, InvalidArgumentError, "margin must be finite"),
        ({"contrast_anchors": "yes"}, InvalidTypeError, "contrast_anchors must be True or False"),
    ]:
        with pytest.raises(error, match=match):
            MaskedGISTEmbedLoss(model, model, **kwargs)
    with pytest.raises(InvalidArgumentError, match="no tokenizer"):
        MaskedGISTEmbedLoss(model, torch.nn.Linear(2, 2))
    with pytest.warns(UserWarning, match="hardness_strength=0.0 changes nothing"):
        MaskedMultipleNegativesRankingLoss(None, hardness_mode="hard_negatives")


def test_the_config_names_every_option(tiny_model: str) -> None:
    loss = _cached_mnrl()(
        _model(tiny_model),
        directions=("query_to_doc", "doc_to_query"),
        partition_mode="per_direction",
        hardness_mode="in_batch_negatives",
        hardness_strength=9.0,
        mini_batch_num_tokens=64,
    )
    config = loss.get_config_dict()
    assert config["directions"] == ("query_to_doc", "doc_to_query")
    assert config["partition_mode"] == "per_direction"
    assert (config["hardness_mode"], config["hardness_strength"]) == ("in_batch_negatives", 9.0)
    assert (config["mini_batch_size"], config["mini_batch_num_tokens"]) == (32, 64)
    assert loss.temperature == pytest.approx(1 / 20)


def test_the_guided_losses_train_in_sentence_transformers_trainer(
    tiny_model: str, tmp_path: Any
) -> None:
    import datasets
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    rows = [[q, 100 + q, 200 + q] for q in range(8)]
    dataset = datasets.Dataset.from_dict(
        {
            "anchor": [f"query {chr(97 + q)}" for q in range(8)],
            "positive": [f"doc {chr(97 + q)}{chr(97 + q)}" for q in range(8)],
            "negative": [f"doc {q}" for q in range(8)],
            "label": rows,
        }
    )
    model = SentenceTransformer(tiny_model, device="cpu")
    guide = _perturbed(tiny_model).to(torch.float32)
    for loss in (
        MaskedGISTEmbedLoss(model, guide),
        _cached_gist()(model, guide, mini_batch_size=3),
        _cached_mnrl()(
            model,
            mini_batch_size=3,
            directions=ALL,
            hardness_mode="all_negatives",
            hardness_strength=5.0,
        ),
    ):
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / type(loss).__name__),
            per_device_train_batch_size=4,
            max_steps=2,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=dataset, loss=loss
        )
        assert math.isfinite(trainer.train().training_loss)
