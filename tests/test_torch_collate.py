"""negmine.torch.HardNegativeDataset / collate: the in-batch false-negative mask, resampling."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

import negmine  # noqa: E402
from negmine.torch import (  # noqa: E402
    ClusterBatchSampler,
    Collator,
    HardNegativeDataset,
    collate,
)


def random_result(seed: int, n_queries: int = 12, n_corpus: int = 30, n: int = 4) -> Any:
    """A duck-typed MiningResult: shared positives across queries, -1 padding."""
    rng = np.random.default_rng(seed)
    lists = [rng.choice(n_corpus, size=rng.integers(1, 4), replace=False) for _ in range(n_queries)]
    indptr = np.zeros(n_queries + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(x) for x in lists])
    ids = np.concatenate(lists).astype(np.int64)
    neg = rng.integers(0, n_corpus, size=(n_queries, n)).astype(np.int64)
    neg[rng.random(neg.shape) < 0.2] = -1
    return SimpleNamespace(negative_ids=neg, positive_indptr=indptr, positive_ids=ids)


def brute_mask(batch: dict[str, Any], result: Any, groups: np.ndarray | None) -> np.ndarray:
    q = batch["query_ids"].tolist()
    cand = batch["candidate_ids"].tolist()
    sampled = batch["positive_ids"].tolist()
    out = np.zeros((len(q), len(cand)), dtype=bool)
    for i, qi in enumerate(q):
        labelled = set(result.positives_of(qi).tolist()) | {sampled[i]}
        if groups is not None:
            labelled_g = {int(groups[p]) for p in labelled}
        for j, c in enumerate(cand):
            if c == -1:
                out[i, j] = True
            elif j == i:
                out[i, j] = False
            elif c in labelled or (groups is not None and int(groups[c]) in labelled_g):
                out[i, j] = True
    return out


def with_positives_of(r: Any) -> Any:
    r.positives_of = lambda q: r.positive_ids[r.positive_indptr[q] : r.positive_indptr[q + 1]]
    return r


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("use_groups", [False, True])
def test_mask_matches_brute_force(seed: int, use_groups: bool) -> None:
    r = with_positives_of(random_result(seed))
    rng = np.random.default_rng(1000 + seed)
    groups = rng.integers(0, 12, size=30).astype(np.int64) if use_groups else None
    ds = HardNegativeDataset(r, groups=groups, seed=seed)
    ds.set_epoch(seed)
    idx = rng.choice(len(ds), size=rng.integers(1, len(ds) + 1), replace=True)  # repeats too
    batch = ds.collator()([ds[int(i)] for i in idx])
    np.testing.assert_array_equal(
        batch["false_negative_mask"].numpy(), brute_mask(batch, r, groups)
    )
    # the same through the function form
    again = collate([ds[int(i)] for i in idx], groups=groups, positives=r)
    assert torch.equal(again["false_negative_mask"], batch["false_negative_mask"])
    # targets are never masked (every query has a positive here)
    b = len(idx)
    assert not batch["false_negative_mask"][torch.arange(b), torch.arange(b)].any()


def test_shapes_dtypes_and_layout() -> None:
    r = random_result(3, n=5)
    ds = HardNegativeDataset(r)
    items = [ds[i] for i in (0, 4, 7)]
    batch = ds.collator()(items)
    assert batch["query_ids"].shape == (3,) and batch["query_ids"].dtype == torch.int64
    assert batch["positive_ids"].shape == (3,) and batch["positive_ids"].dtype == torch.int64
    assert batch["negative_ids"].shape == (3, 5) and batch["negative_ids"].dtype == torch.int64
    assert batch["candidate_ids"].shape == (18,)
    assert batch["false_negative_mask"].shape == (3, 18)
    assert batch["false_negative_mask"].dtype == torch.bool
    assert batch["candidate_ids"][:3].tolist() == batch["positive_ids"].tolist()
    assert batch["candidate_ids"][3:].tolist() == batch["negative_ids"].reshape(-1).tolist()
    np.testing.assert_array_equal(batch["negative_ids"].numpy(), r.negative_ids[[0, 4, 7]])
    # usable as an InfoNCE mask: every row keeps a finite target
    logits = torch.randn(3, 18).masked_fill(batch["false_negative_mask"], float("-inf"))
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    assert torch.isfinite(loss)


def test_hand_made_case() -> None:
    # q0: positives {1, 2}; q1: positive {2} (shared); q2: positive {5}; 6 is a duplicate of 5.
    r = SimpleNamespace(
        negative_ids=np.array([[3, -1], [1, 4], [6, 7]], dtype=np.int64),
        positive_indptr=np.array([0, 2, 3, 4], dtype=np.int64),
        positive_ids=np.array([1, 2, 2, 5], dtype=np.int64),
    )
    groups = np.array([0, 1, 2, 3, 4, 5, 5, 7])
    ds = HardNegativeDataset(r, groups=groups)
    batch = ds.collator()([ds[0], ds[1], ds[2]])
    cand = batch["candidate_ids"].tolist()
    p0 = cand[0]
    assert p0 in (1, 2)
    assert cand == [p0, 2, 5, 3, -1, 1, 4, 6, 7]
    m = batch["false_negative_mask"].numpy()
    # row 0: positives {1,2} -> cols holding 1 or 2 (except its own), -1
    assert m[0].tolist() == [False, True, False, False, True, True, False, False, False]
    # row 1: positive {2}; col 0 masked only if q0 sampled 2
    assert m[1].tolist() == [p0 == 2, False, False, False, True, False, False, False, False]
    # row 2: positive {5}, 6 is in its group
    assert m[2].tolist() == [False, False, False, False, True, False, False, True, False]


def test_resample_is_seeded_per_epoch() -> None:
    rng = np.random.default_rng(0)
    neg = np.stack([rng.permutation(100)[:20] for _ in range(8)]).astype(np.int64)
    neg[0, 5:] = -1  # only 5 mined: all kept, -1 padded
    multi = [rng.choice(100, size=5, replace=False) for _ in range(8)]
    r = SimpleNamespace(
        negative_ids=neg,
        positive_indptr=np.arange(0, 41, 5, dtype=np.int64),
        positive_ids=np.concatenate(multi).astype(np.int64),
    )

    def epoch(ds: HardNegativeDataset, e: int) -> list[Any]:
        ds.set_epoch(e)
        return [(ds[i]["positive"], ds[i]["negatives"].tolist()) for i in range(len(ds))]

    a = HardNegativeDataset(r, resample=True, num_negatives=6, seed=1)
    b = HardNegativeDataset(r, resample=True, num_negatives=6, seed=1)
    assert epoch(a, 0) == epoch(b, 0)
    assert epoch(a, 3) == epoch(b, 3)
    assert epoch(a, 0) != epoch(a, 1)
    c = HardNegativeDataset(r, resample=True, num_negatives=6, seed=2)
    assert epoch(a, 0) != epoch(c, 0)
    a.set_epoch(4)
    for i in range(len(a)):
        item = a[i]
        negs = item["negatives"]
        assert negs.dtype == np.int64 and negs.shape == (6,)
        assert item["positive"] in set(multi[i].tolist())
        present = negs[negs >= 0]
        assert set(present.tolist()) <= set(neg[i][neg[i] >= 0].tolist())
        assert len(set(present.tolist())) == len(present)
    assert sorted(a[0]["negatives"].tolist()) == [-1, *sorted(neg[0, :5].tolist())]
    # without resample: the best-ranked ones, every epoch
    top = HardNegativeDataset(r, num_negatives=6)
    assert top[3]["negatives"].tolist() == neg[3, :6].tolist()
    top.set_epoch(9)
    assert top[3]["negatives"].tolist() == neg[3, :6].tolist()


def test_bad_inputs() -> None:
    r = random_result(0)
    with pytest.raises(ValueError):
        HardNegativeDataset(r, groups=np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError):
        HardNegativeDataset(r, num_negatives=0)
    with pytest.raises(ValueError):
        HardNegativeDataset(r, num_negatives=-2)
    with pytest.raises(ValueError):
        HardNegativeDataset(r, num_negatives=99)
    with pytest.raises(ValueError):
        Collator(groups=np.zeros(3, dtype=np.int64), positives=r)
    with pytest.raises(ValueError):
        collate([HardNegativeDataset(r)[0]], groups=np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError):
        collate([])
    with pytest.raises(IndexError):
        HardNegativeDataset(r)[len(r.negative_ids)]


def test_dataloader_with_cluster_sampler() -> None:
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((40, 8)).astype(np.float32)
    corpus = rng.standard_normal((120, 8)).astype(np.float32)
    positives = [[i, (i + 1) % 120] for i in range(40)]
    result = negmine.mine(queries, corpus, positives, num_negatives=4, duplicates=None)
    groups = np.arange(120) // 2
    ds = HardNegativeDataset(result, groups=groups, resample=True, num_negatives=3, seed=7)
    sampler = ClusterBatchSampler(rng.integers(0, 4, size=40), batch_size=8, seed=7)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collator(), num_workers=0)
    seen = []
    for e in range(2):
        sampler.set_epoch(e)
        ds.set_epoch(e)
        for batch in loader:
            b = len(batch["query_ids"])
            assert batch["negative_ids"].shape == (b, 3)
            assert batch["false_negative_mask"].shape == (b, 4 * b)
            assert not batch["false_negative_mask"][torch.arange(b), torch.arange(b)].any()
            np.testing.assert_array_equal(
                batch["false_negative_mask"].numpy(), brute_mask(batch, result, groups)
            )
            seen.extend(batch["query_ids"].tolist())
    assert set(seen) == set(range(40))
