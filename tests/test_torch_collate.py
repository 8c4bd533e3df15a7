"""negmine.torch.HardNegativeDataset / collate: the in-batch false-negative mask, resampling."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

import negmine  # noqa: E402
from negmine.errors import FormatError, InvalidArgumentError, InvalidTypeError  # noqa: E402
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


# ---------------------------------------------------------------------------------------------
# Embedding lookup


def expected_rows(matrix: np.ndarray, ids: Any) -> np.ndarray:
    """Rows ``ids`` of ``matrix`` by plain numpy indexing, zeros for negative ids."""
    ids = np.asarray(ids)
    out = np.zeros((len(ids), matrix.shape[1]), dtype=matrix.dtype)
    out[ids >= 0] = matrix[ids[ids >= 0]]
    return out


def embeddings_arg(matrix: np.ndarray, kind: str, path: Path) -> Any:
    if kind == "array":
        return matrix
    if kind == "np.save":
        np.save(path, matrix)
    else:
        negmine.save_embeddings(path, matrix)
    return str(path) if kind == "str" else path


@pytest.mark.parametrize("np_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("kind", ["array", "str", "np.save"])
def test_embedding_lookup_matches_numpy(tmp_path: Path, np_dtype: Any, kind: str) -> None:
    r = random_result(11, n_queries=12, n_corpus=30, n=4)
    rng = np.random.default_rng(2)
    q = rng.standard_normal((12, 6)).astype(np_dtype)
    c = rng.standard_normal((30, 10)).astype(np_dtype)  # another dim than the queries
    ds = HardNegativeDataset(r)
    collator = ds.collator(
        query_embeddings=embeddings_arg(q, kind, tmp_path / "q.npy"),
        corpus_embeddings=embeddings_arg(c, kind, tmp_path / "c.npy"),
    )
    torch_dtype = torch.float32 if np_dtype == np.float32 else torch.float16
    for idx in ([0, 4, 7], [11, 3, 3, 0, 9], list(range(12))):
        batch = collator([ds[i] for i in idx])
        cand = batch["candidate_ids"].numpy()
        assert (cand == -1).any() or idx == [0, 4, 7]
        qe, ce = batch["query_embeddings"], batch["candidate_embeddings"]
        assert qe.shape == (len(idx), 6) and ce.shape == (len(cand), 10)
        assert qe.dtype == torch_dtype and ce.dtype == torch_dtype
        assert qe.is_contiguous() and ce.is_contiguous()
        np.testing.assert_array_equal(qe.numpy(), q[idx])
        np.testing.assert_array_equal(ce.numpy(), expected_rows(c, cand))
        # the tensors own writable memory: not views into a (read-only) map or the input array
        ce.add_(1)
        qe.add_(1)
        np.testing.assert_array_equal(ce.numpy(), expected_rows(c, cand) + np_dtype(1))
    # the ids and the mask are those of a collator without embeddings
    plain = ds.collator()([ds[i] for i in (0, 4, 7)])
    again = collator([ds[i] for i in (0, 4, 7)])
    for key, value in plain.items():
        assert torch.equal(again[key], value)
    assert set(again) == set(plain) | {"query_embeddings", "candidate_embeddings"}
    # the function form gives the same, and each side is optional
    items = [ds[i] for i in (5, 2)]
    only_corpus = collate(items, corpus_embeddings=c)
    assert "query_embeddings" not in only_corpus
    np.testing.assert_array_equal(
        only_corpus["candidate_embeddings"].numpy(),
        expected_rows(c, only_corpus["candidate_ids"].numpy()),
    )
    only_queries = Collator(query_embeddings=embeddings_arg(q, kind, tmp_path / "q2.npy"))(items)
    assert "candidate_embeddings" not in only_queries
    np.testing.assert_array_equal(only_queries["query_embeddings"].numpy(), q[[5, 2]])


def test_missing_ids_give_zero_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    q = rng.standard_normal((5, 4)).astype(np.float32) + 10  # no row is zero
    c = rng.standard_normal((9, 3)).astype(np.float16) + 10
    negmine.save_embeddings(tmp_path / "c.npy", c)
    items = [
        {"query": 1, "positive": -1, "negatives": np.array([-1, 8, 2])},
        {"query": -1, "positive": 0, "negatives": np.array([8, -1, -1])},
    ]
    batch = collate(items, query_embeddings=q, corpus_embeddings=tmp_path / "c.npy")
    assert batch["candidate_ids"].tolist() == [-1, 0, -1, 8, 2, 8, -1, -1]
    ce = batch["candidate_embeddings"].numpy()
    missing = [0, 2, 6, 7]
    assert not ce[missing].any()
    np.testing.assert_array_equal(ce[[1, 3, 4, 5]], c[[0, 8, 2, 8]])
    qe = batch["query_embeddings"].numpy()
    np.testing.assert_array_equal(qe[0], q[1])
    assert not qe[1].any()
    # missing candidates are masked in every row
    assert batch["false_negative_mask"][:, missing].all()
    # a batch of nothing but padding: all zeros, nothing read
    empty = collate([{"query": -1, "positive": -1, "negatives": [-1]}], corpus_embeddings=c)
    assert empty["candidate_embeddings"].shape == (2, 3) and not empty["candidate_embeddings"].any()


def test_dtype_conversion(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    c16 = rng.standard_normal((20, 8)).astype(np.float16)
    negmine.save_embeddings(tmp_path / "c.npy", c16)
    r = random_result(5, n_queries=6, n_corpus=20, n=3)
    ds = HardNegativeDataset(r)
    items = [ds[i] for i in range(6)]
    for target in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        batch = ds.collator(corpus_embeddings=tmp_path / "c.npy", dtype=target)(items)
        ce = batch["candidate_embeddings"]
        assert ce.dtype == target and ce.is_contiguous()
        want = torch.from_numpy(expected_rows(c16, batch["candidate_ids"].numpy())).to(target)
        assert torch.equal(ce, want)
    # float32 storage converted down
    c32 = c16.astype(np.float32) + np.float32(1e-4)
    batch = collate(items, corpus_embeddings=c32, dtype=torch.float16)
    assert batch["candidate_embeddings"].dtype == torch.float16
    np.testing.assert_array_equal(
        batch["candidate_embeddings"].numpy(),
        expected_rows(c32, batch["candidate_ids"].numpy()).astype(np.float16),
    )
    # float64 arrays are accepted as float32 (the package's usual rule)
    batch = collate(items, query_embeddings=rng.standard_normal((6, 2)))
    assert batch["query_embeddings"].dtype == torch.float32
    for bad in (np.float32, "float32", torch.int64, torch.bool):
        with pytest.raises(InvalidTypeError, match="dtype"):
            Collator(corpus_embeddings=c16, dtype=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            collate(items, corpus_embeddings=c16, dtype=bad)  # type: ignore[arg-type]


def test_out_of_range_ids(tmp_path: Path) -> None:
    r = random_result(6, n_queries=12, n_corpus=30, n=4)
    ds = HardNegativeDataset(r)
    c = np.zeros((20, 4), dtype=np.float32)  # corpus ids go up to 29
    path = tmp_path / "small_corpus.npy"
    negmine.save_embeddings(path, c)
    collator = ds.collator(corpus_embeddings=path)
    items = [ds[i] for i in range(12)]
    cand = collate(items)["candidate_ids"].numpy()
    bad = sorted(set(cand[cand >= 20].tolist()))
    assert bad, "the test needs ids past the file's rows"
    with pytest.raises(InvalidArgumentError) as info:
        collator(items)
    message = str(info.value)
    assert "small_corpus.npy" in message and "20 rows" in message
    assert str(bad[0]) in message and "candidate" in message
    # ids that fit are fine
    fits = [it for it in items if (np.asarray(it["negatives"]) < 20).all() and it["positive"] < 20]
    assert fits, "the test needs items whose ids all fit"
    assert collator(fits)["candidate_embeddings"].shape[0] == 5 * len(fits)
    # queries: 12 queries, 5 rows of query embeddings
    with pytest.raises(InvalidArgumentError, match=r"query ids 5, 7.*query_embeddings.*5 rows"):
        collate([ds[7], ds[2], ds[5]], query_embeddings=np.ones((5, 3), dtype=np.float16))


def test_bad_embeddings_fail_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Collator(corpus_embeddings=tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError):
        HardNegativeDataset(random_result(0)).collator(query_embeddings=str(tmp_path / "no.npy"))
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an npy file at all")
    with pytest.raises(FormatError):
        Collator(query_embeddings=garbage)
    np.save(tmp_path / "f64.npy", np.ones((3, 2)))
    with pytest.raises(FormatError, match="float64"):
        Collator(corpus_embeddings=tmp_path / "f64.npy")
    np.save(tmp_path / "3d.npy", np.ones((3, 2, 2), dtype=np.float32))
    with pytest.raises(FormatError):
        Collator(corpus_embeddings=tmp_path / "3d.npy")
    with pytest.raises(IsADirectoryError):
        Collator(corpus_embeddings=tmp_path)
    with pytest.raises(InvalidArgumentError, match="2-D"):
        Collator(corpus_embeddings=np.ones(4, dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="2-D"):
        collate([], query_embeddings=np.ones((2, 2, 2), dtype=np.float32))
    with pytest.raises(InvalidTypeError, match="corpus_embeddings"):
        Collator(corpus_embeddings=np.ones((3, 2), dtype=np.int64))
    # the two sides may have different dims (asymmetric models): no error
    Collator(
        query_embeddings=np.ones((3, 2), np.float32), corpus_embeddings=np.ones((5, 7), np.float16)
    )


def test_pickle_carries_the_path_not_the_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    c = rng.standard_normal((50_000, 64)).astype(np.float32)
    path = tmp_path / "corpus.npy"
    negmine.save_embeddings(path, c)
    neg = rng.integers(-1, 50_000, size=(10, 5))
    r = SimpleNamespace(
        negative_ids=neg,
        positive_indptr=np.arange(11, dtype=np.int64),
        positive_ids=rng.integers(0, 50_000, size=10),
    )
    ds = HardNegativeDataset(r)
    items = [ds[i] for i in range(10)]
    collator = ds.collator(corpus_embeddings=path, dtype=torch.float32)
    assert len(pickle.dumps(collator)) < 10_000
    first = collator(items)  # the file is mapped now: pickling must still leave it out
    blob = pickle.dumps(collator)
    assert len(blob) < 10_000
    clone = pickle.loads(blob)
    second = clone(items)
    assert torch.equal(first["candidate_embeddings"], second["candidate_embeddings"])
    np.testing.assert_array_equal(
        second["candidate_embeddings"].numpy(), expected_rows(c, second["candidate_ids"].numpy())
    )
    # the clone reads the file itself: one replaced by another shape is noticed
    fresh = pickle.loads(blob)
    negmine.save_embeddings(path, c[:100])
    with pytest.raises(InvalidArgumentError, match="changed"):
        fresh(items)
    # an in-memory array is pickled with the collator (documented: use a path for big corpora)
    assert len(pickle.dumps(Collator(corpus_embeddings=c[:1000]))) > c[:1000].nbytes


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_look_up_embeddings(tmp_path: Path, context: str) -> None:
    rng = np.random.default_rng(9)
    queries = rng.standard_normal((40, 8)).astype(np.float32)
    corpus = rng.standard_normal((120, 8)).astype(np.float32)
    positives = [[i, (i + 1) % 120] for i in range(40)]
    result = negmine.mine(queries, corpus, positives, num_negatives=4, duplicates=None)
    negmine.save_embeddings(tmp_path / "corpus.npy", corpus.astype(np.float16))
    ds = HardNegativeDataset(result, resample=True, num_negatives=3, seed=7)
    collator = ds.collator(
        query_embeddings=queries, corpus_embeddings=tmp_path / "corpus.npy", dtype=torch.float32
    )
    sampler = ClusterBatchSampler(rng.integers(0, 4, size=40), batch_size=8, seed=7)
    loader = DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=collator,
        num_workers=2,
        multiprocessing_context=context,
    )
    seen = []
    for e in range(2):
        sampler.set_epoch(e)
        ds.set_epoch(e)
        for batch in loader:
            b = len(batch["query_ids"])
            assert batch["candidate_embeddings"].shape == (4 * b, 8)
            assert batch["candidate_embeddings"].dtype == torch.float32
            np.testing.assert_array_equal(
                batch["query_embeddings"].numpy(), queries[batch["query_ids"].numpy()]
            )
            want = expected_rows(corpus.astype(np.float16), batch["candidate_ids"].numpy())
            np.testing.assert_array_equal(
                batch["candidate_embeddings"].numpy(), want.astype(np.float32)
            )
            seen.extend(batch["query_ids"].tolist())
    assert set(seen) == set(range(40))


def test_collator_built_before_a_swap_masks_the_new_positives() -> None:
    """The README's pattern: ``collate_fn=dataset.collator()`` built once, then a refresh swaps
    in a result whose positives ``query_dup_threshold`` changed (query 1 now duplicates query
    0 and shares its positive): the collator masks the served result's positives."""
    rng = np.random.default_rng(4)
    corpus = rng.standard_normal((40, 8)).astype(np.float32)
    queries = rng.standard_normal((4, 8)).astype(np.float32)
    positives = [[0], [1], [2], [3]]
    options: dict[str, Any] = {"num_negatives": 3, "query_dup_threshold": 0.99, "threads": 1}
    before = negmine.mine(queries, corpus, positives, **options)
    queries[1] = queries[0]
    after = negmine.mine(queries, corpus, positives, **options)
    assert before.positive_ids.tolist() == [0, 1, 2, 3]
    assert sorted(after.positive_ids[after.positive_indptr[1] : after.positive_indptr[2]]) == [0, 1]
    ds = HardNegativeDataset(before)
    collator = ds.collator()
    loader = DataLoader(ds, batch_size=4, collate_fn=collator)  # built before the swap
    ds.set_result(after)
    # Query 1 sampled its own positive (1); column 0 holds query 0's positive, corpus 0,
    # now a labelled positive of query 1 too.
    items = [
        {"query": 0, "positive": 0, "negatives": np.array([5, 6, 7])},
        {"query": 1, "positive": 1, "negatives": np.array([8, 9, 10])},
    ]
    for collate_fn in (collator, loader.collate_fn, pickle.loads(pickle.dumps(collator))):
        mask = collate_fn(items)["false_negative_mask"]
        assert mask[1, 0], "query 1's new positive served as its negative"
        expected = collate(items, positives=after)["false_negative_mask"]
        assert torch.equal(mask, expected)
    # Pickled (a spawned worker), it carries the positives served then, not the dataset; the
    # collator itself follows the next swap.
    blob = pickle.dumps(collator)
    assert b"HardNegativeDataset" not in blob
    ds.set_result(before)
    assert pickle.loads(blob)(items)["false_negative_mask"][1, 0]
    assert not collator(items)["false_negative_mask"][1, 0]
