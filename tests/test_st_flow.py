"""From sentence-transformers' drop-in into the rest of negmine: mine_hard_negatives(...,
ids_column=...) and negmine.st.from_dataset feed topic_batch_sampler and the masked losses in
SentenceTransformerTrainer; RefreshCallback re-mines with the trainer's model at epoch
boundaries (one process, and 2 gloo processes under torchrun)."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")
pytest.importorskip("sentence_transformers")

import negmine  # noqa: E402
from negmine import MiningResult  # noqa: E402
from negmine.errors import InvalidArgumentError  # noqa: E402
from negmine.st import (  # noqa: E402
    MaskedMultipleNegativesRankingLoss,
    from_dataset,
    topic_batch_sampler,
)

CHARS = list("abcdefghij0123")


def pairs(seed: int = 0, groups: int = 10) -> tuple[Any, list[str]]:
    """(anchor, positive) pairs with in-batch false negatives to be had: anchors 2k and 2k+1
    share a positive, anchor 2k has a second one of its own (two rows), and one anchor is
    also a corpus text; plus a corpus of other texts. Texts are space-separated characters
    of the tiny model's vocabulary."""
    rng = np.random.default_rng(seed)

    def text(prefix: str) -> str:
        return prefix + " " + " ".join(rng.choice(CHARS, 5))

    anchors: list[str] = []
    positives: list[str] = []
    for _ in range(groups):
        shared, a0, a1 = text("doc"), text("query"), text("query")
        anchors += [a0, a0, a1]
        positives += [shared, text("doc"), shared]
    corpus = [text("doc") for _ in range(50)] + [anchors[3]]
    return datasets.Dataset.from_dict({"anchor": anchors, "positive": positives}), corpus


def positive_texts(ds: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, p in zip(list(ds["anchor"]), list(ds["positive"])):
        out.setdefault(a, set()).add(p)
    return out


def load_model(path: str) -> Any:
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    return SentenceTransformer(path, device="cpu")


@pytest.mark.parametrize("deep", [False, True])
@pytest.mark.parametrize("layout", ["triplet", "n-tuple", "labeled-pair", "labeled-list"])
def test_the_ids_column_names_the_rows_the_texts_came_from(
    tiny_model: str, layout: str, deep: bool
) -> None:
    ds, corpus = pairs()
    model = load_model(tiny_model)
    kwargs: dict[str, Any] = {
        "corpus": corpus,
        "num_negatives": 2,
        "output_format": layout,
        "verbose": False,
        "deep": deep,
        "seed": 1,
        "sampling_strategy": "random",
    }
    plain = negmine.mine_hard_negatives(ds, model, **kwargs)
    mined = from_dataset(ds, model, ids_column="ids", **kwargs)
    with_ids = negmine.mine_hard_negatives(ds, model, ids_column="ids", **kwargs)
    # Off by default, and when on, the same rows with one more column.
    assert mined.dataset.to_dict() == with_ids.to_dict()
    assert mined.dataset.column_names == [*plain.column_names, "ids"]
    assert mined.dataset.remove_columns("ids").to_dict() == plain.to_dict()
    # The ids' rows: distinct anchors in order of first appearance, corpus + positives with
    # repeated texts dropped.
    assert mined.query_texts == list(dict.fromkeys(list(ds["anchor"])))
    assert mined.corpus_texts == list(dict.fromkeys(corpus + list(ds["positive"])))
    text_columns = [c for c in plain.column_names if c not in ("label", "labels")]
    for row in mined.dataset:
        ids = row["ids"]
        assert row["anchor"] == mined.query_texts[ids[0]]
        texts: list[str] = []
        for column in text_columns[1:]:
            value = row[column]
            texts += value if isinstance(value, list) else [value]
        assert texts == [mined.corpus_texts[i] for i in ids[1:]]
    # The result holds what the dataset was built from: every query's positives, by text,
    # and the negatives of its rows.
    by_text = positive_texts(ds)
    result = mined.result
    for q, anchor in enumerate(mined.query_texts):
        assert {mined.corpus_texts[i] for i in result.positives_of(q)} == by_text[anchor]
    if layout == "triplet":
        for row in mined.dataset:
            assert row["ids"][2] in result.negative_ids[row["ids"][0]]
    np.testing.assert_allclose(np.linalg.norm(mined.query_embeddings, axis=1), 1.0, rtol=1e-5)
    assert mined.corpus_embeddings.shape == (len(mined.corpus_texts), 16)


def test_an_ids_column_the_trainer_would_tokenize_is_refused_before_encoding(
    tiny_model: str,
) -> None:
    ds, _ = pairs()

    class Refuses:
        def encode(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("encoded before the arguments were checked")

    for kwargs, remedy in (
        ({"output_scores": True}, "drop output_scores"),
        ({"output_format": "n-tuple-scores"}, "drop output_scores"),
        ({"output_format": "labeled-pair"}, "'triplet' or 'n-tuple'"),
        ({"output_format": "labeled-list"}, "'triplet' or 'n-tuple'"),
    ):
        with pytest.raises(InvalidArgumentError, match=remedy):
            negmine.mine_hard_negatives(ds, Refuses(), ids_column="label", **kwargs)
    with pytest.raises(InvalidArgumentError, match="non-empty name"):
        negmine.mine_hard_negatives(ds, Refuses(), ids_column="")


class _Recording:
    """Mixed into a masked loss: every batch's ids and the mask the loss applied."""

    seen: list[tuple[list[list[int]], Any]]

    def false_negative_mask(self, labels: Any, n_negatives: int) -> Any:
        mask = super().false_negative_mask(labels, n_negatives)  # type: ignore[misc]
        self.seen.append((labels.tolist(), mask.clone()))
        return mask


def test_mined_rows_train_through_the_topic_sampler_and_the_masked_losses(
    tiny_model: str, tmp_path: Path
) -> None:
    """The drop-in's output, straight into the trainer: the masks the losses apply are
    exactly the in-batch false negatives of an oracle that reads the input pairs' texts."""
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from negmine.st import CachedMaskedMultipleNegativesRankingLoss

    ds, corpus = pairs()
    model = load_model(tiny_model)
    mined = from_dataset(ds, model, corpus=corpus, num_negatives=2, verbose=False)
    wanted = positive_texts(ds)
    clusters = np.zeros(len(mined.query_texts), dtype=np.int64)  # one topic: mixed batches

    class Plain(_Recording, MaskedMultipleNegativesRankingLoss):
        pass

    class Cached(_Recording, CachedMaskedMultipleNegativesRankingLoss):  # type: ignore[misc, valid-type]
        pass

    for cls, extra in ((Plain, {}), (Cached, {"mini_batch_size": 3})):
        loss = cls(model, positives=mined.result, **extra)
        loss.seen = []
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / cls.__name__),
            per_device_train_batch_size=8,
            num_train_epochs=1,
            report_to="none",
            use_cpu=True,
            batch_sampler=topic_batch_sampler(clusters),
            save_strategy="no",
            seed=2,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=mined.dataset, loss=loss
        )
        assert np.isfinite(trainer.train().training_loss)
        rows_seen = sorted(tuple(r) for labels, _ in loss.seen for r in labels)
        assert rows_seen == sorted(map(tuple, mined.dataset["label"]))  # each row once
        masked = 0
        for labels, mask in loss.seen:
            ids = np.asarray(labels)
            b, n = len(ids), ids.shape[1] - 2
            anchors = [mined.query_texts[q] for q in ids[:, 0]]
            # MNRL's candidate order: the batch's positives, then each negative column.
            candidates = [mined.corpus_texts[ids[k, 1 + j]] for j in range(1 + n) for k in range(b)]
            oracle = np.array(
                [
                    [c != i and text in wanted[anchors[i]] for c, text in enumerate(candidates)]
                    for i in range(b)
                ]
            )
            np.testing.assert_array_equal(mask.numpy(), oracle)
            masked += int(oracle.sum())
        assert masked > 0  # the pairs put shared positives into common batches


def test_the_refresh_callback_serves_each_epoch_the_negatives_mined_with_the_trainer_model(
    tiny_model: str, tmp_path: Path
) -> None:
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    from negmine.st import RefreshCallback

    ds, corpus = pairs()
    model = load_model(tiny_model)
    mined = from_dataset(ds, model, corpus=corpus, num_negatives=2, verbose=False)
    # Random draws from a window of 12: every refresh serves other negatives than the last.
    options = {**mined.options, "sampling_strategy": "random", "range_max": 12}
    directory = tmp_path / "refresh"
    refresh = RefreshCallback(mined, directory=directory, options=options, overlap=False, keep=3)
    rows = refresh.train_dataset
    assert len(rows) == len(mined.result.positive_ids)  # one row per (query, positive)
    first = rows[0]
    assert list(first) == ["anchor", "positive", "negative_1", "negative_2", "label"]
    seen: list[tuple[int, list[list[int]], list[Any]]] = []

    class Recording(MaskedMultipleNegativesRankingLoss):
        def forward(self, features: Any, labels: Any) -> Any:
            assert refresh.refresher is not None
            features = list(features)
            seen.append(
                (refresh.refresher.live, labels.tolist(), [f["input_ids"] for f in features])
            )
            return super().forward(features, labels)

    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_train_epochs=3,
        learning_rate=1e-2,
        report_to="none",
        use_cpu=True,
        batch_sampler=topic_batch_sampler(np.arange(len(mined.query_texts)) % 2),
        save_strategy="no",
        seed=4,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        loss=Recording(model, positives=mined.result),
        callbacks=[refresh],
    )
    trainer.train()
    steps = len(seen) // 3
    assert [live for live, _, _ in seen] == [0] * steps + [1] * steps + [2] * steps
    served = {0: mined.result.negative_ids}
    for r in (1, 2):
        served[r] = MiningResult.load(directory / f"refresh-{r:06d}" / "result").negative_ids
    assert (served[1] != served[0]).any() and (served[2] != served[1]).any()
    for live, labels, input_ids in seen:
        ids = np.asarray(labels)
        # What the loss saw: the live refresh's negatives, and texts that are those rows'.
        np.testing.assert_array_equal(ids[:, 2:], served[live][ids[:, 0]])
        texts = [[mined.query_texts[q] for q in ids[:, 0]]] + [
            [mined.corpus_texts[i] if i >= 0 else "" for i in ids[:, col]] for col in range(1, 4)
        ]
        for column, tokens in zip(texts, input_ids):
            torch.testing.assert_close(model.tokenize(column)["input_ids"], tokens)
    # Each refresh encoded with the model as trained so far.
    embedded = np.load(directory / "refresh-000001" / "queries.npy").astype(np.float32)
    assert not np.allclose(embedded, mined.query_embeddings, atol=1e-3)
    # The trainer must train on the dataset the callback refreshes.
    other = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=mined.dataset,
        loss=MaskedMultipleNegativesRankingLoss(model, positives=mined.result),
        callbacks=[RefreshCallback(mined, directory=tmp_path / "other")],
    )
    with pytest.raises(InvalidArgumentError, match=r"train_dataset=callback\.train_dataset"):
        other.train()


# --- torchrun: 2 gloo processes ---------------------------------------------------------------

_REFRESH_DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("ignore")
    import numpy as np, torch
    import torch.distributed as dist
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments)
    from negmine.st import (MaskedMultipleNegativesRankingLoss, RefreshCallback, from_dataset,
        topic_batch_sampler)

    model_dir, out = sys.argv[1:3]
    pairs = Dataset.load_from_disk(os.path.join(out, "pairs"))
    with open(os.path.join(out, "corpus.json")) as f:
        corpus = json.load(f)
    model = SentenceTransformer(model_dir, device="cpu")
    # Every process mines the same rows ("top": no draw) with the same starting weights.
    mined = from_dataset(pairs, model, corpus=corpus, num_negatives=2, verbose=False)
    options = {**mined.options, "sampling_strategy": "random", "range_max": 12}
    refresh = RefreshCallback(mined, directory=os.path.join(out, "refresh"), options=options,
        overlap=False, keep=3)
    seen = []

    class Recording(MaskedMultipleNegativesRankingLoss):
        def forward(self, features, labels):
            seen.append([refresh.refresher.live, labels.tolist()])
            return super().forward(features, labels)

    args = SentenceTransformerTrainingArguments(
        output_dir=os.path.join(out, "st"), per_device_train_batch_size=4, num_train_epochs=3,
        learning_rate=1e-2, report_to="none", use_cpu=True, save_strategy="no",
        batch_sampler=topic_batch_sampler(np.zeros(len(mined.query_texts), dtype=np.int64)),
        seed=1, ddp_backend="gloo", disable_tqdm=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=refresh.train_dataset,
        loss=Recording(model, positives=mined.result), callbacks=[refresh]).train()
    rank = dist.get_rank()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(seen, f)
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.mark.slow  # two gloo processes
@pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform != "linux", reason="needs gloo"
)
def test_torchrun_refreshes_on_rank_0_and_every_rank_trains_on_the_new_negatives(
    tiny_model: str, tmp_path: Path
) -> None:
    from test_st_trainer import _torchrun

    # 24 rows: whole batches of 4 on 2 ranks (sentence-transformers sets dataloader_drop_last
    # under DDP, which would leave a short last batch out).
    ds, corpus = pairs(groups=8)
    ds.save_to_disk(str(tmp_path / "pairs"))
    (tmp_path / "corpus.json").write_text(json.dumps(corpus))
    _torchrun(_REFRESH_DDP_SCRIPT, tmp_path, tiny_model, str(tmp_path))
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1])  # no rank waits for the other
    steps = len(per_rank[0]) // 3
    for seen in per_rank:
        assert [live for live, _ in seen] == [0] * steps + [1] * steps + [2] * steps
    directory = tmp_path / "refresh"
    served = {
        r: MiningResult.load(directory / f"refresh-{r:06d}" / "result").negative_ids for r in (1, 2)
    }
    assert (served[1] != served[2]).any()
    model = load_model(tiny_model)
    served[0] = from_dataset(
        ds, model, corpus=corpus, num_negatives=2, verbose=False
    ).result.negative_ids
    assert (served[0] != served[1]).any()
    all_rows: list[tuple[int, int]] | None = None
    for epoch in range(3):
        rows = []
        for seen in per_rank:
            for live, labels in seen[epoch * steps : (epoch + 1) * steps]:
                ids = np.asarray(labels)
                np.testing.assert_array_equal(ids[:, 2:], served[live][ids[:, 0]])
                rows += [(int(q), int(p)) for q, p in ids[:, :2]]
        # Every (query, positive) row once per epoch across the ranks.
        assert len(rows) == len(set(rows))
        assert all_rows is None or sorted(rows) == all_rows
        all_rows = sorted(rows)
    assert all_rows is not None and len(all_rows) == len(ds)  # the pairs are distinct
