"""negmine.batches: plans are partitions with the announced count (docs/reliability.md items
16-17: every row once or exactly the documented dropped tail; (seed, epoch) mixed by a hash),
topic batches are single-cluster, the conflicts constraint is never violated, margin-balanced
picks are uniform over non-empty bins, and bad input is a clear ValueError / TypeError.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine import batches
from negmine.batches import BatchPlan
from negmine.errors import InvalidArgumentError, InvalidTypeError

# Chi-square critical values at p = 0.001, by degrees of freedom.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 9: 27.88}


def chi2(observed: np.ndarray) -> float:
    expected = observed.sum() / len(observed)
    return float(((observed - expected) ** 2 / expected).sum())


def check_partition(plan: BatchPlan, n: int, batch_size: int, drop_last: bool) -> None:
    sizes = plan.sizes
    assert int(plan.offsets[0]) == 0 and int(plan.offsets[-1]) == len(plan.indices)
    if len(sizes):
        assert (sizes[:-1] == batch_size).all()
        assert 1 <= sizes[-1] <= batch_size
        if drop_last:
            assert sizes[-1] == batch_size
    assert len(np.unique(plan.indices)) == len(plan.indices), "a row twice"
    assert ((plan.indices >= 0) & (plan.indices < n)).all()
    if drop_last:
        # Exactly the documented tail: fewer than batch_size rows are left out.
        assert n - len(plan.indices) < batch_size
        assert len(plan.indices) % batch_size == 0
    else:
        assert len(plan.indices) == n


def key_sets(indptr: np.ndarray, keys: np.ndarray) -> list[set[int]]:
    return [set(keys[indptr[r] : indptr[r + 1]].tolist()) for r in range(len(indptr) - 1)]


def assert_separated(plan: BatchPlan, row_keys: list[set[int]]) -> None:
    for b, batch in enumerate(plan):
        seen: set[int] = set()
        for r in batch.tolist():
            assert not (seen & row_keys[r]), f"batch {b} repeats a key"
            seen |= row_keys[r]


clusters_st = st.integers(1, 12).flatmap(
    lambda k: st.lists(st.integers(0, k - 1), min_size=0, max_size=400)
)


# ---------------------------------------------------------------------------------------------
# Partitions and counts


@settings(max_examples=150, deadline=None)
@given(
    clusters=clusters_st,
    chunk=st.integers(1, 9),
    per_batch=st.integers(1, 3),
    drop_last=st.booleans(),
    weighting=st.sampled_from(["uniform", "size"]),
    seed=st.integers(0, 2**64 - 1),
    epoch=st.integers(0, 50),
)
def test_topic_is_a_partition_with_the_announced_count(
    clusters: list[int],
    chunk: int,
    per_batch: int,
    drop_last: bool,
    weighting: batches.Weighting,
    seed: int,
    epoch: int,
) -> None:
    batch_size = chunk * per_batch
    kw = dict(clusters_per_batch=per_batch, drop_last=drop_last)
    count = batches.topic_count(clusters, batch_size, **kw)  # type: ignore[arg-type]
    plan = batches.topic(clusters, batch_size, seed=seed, epoch=epoch, weighting=weighting, **kw)  # type: ignore[arg-type]
    assert len(plan) == count == len(list(plan))
    check_partition(plan, len(clusters), batch_size, drop_last)
    labels = np.asarray(clusters, dtype=np.int64)
    for batch in plan[: plan.topical]:
        _, per_cluster = np.unique(labels[batch], return_counts=True)
        assert len(per_cluster) <= per_batch
        assert (per_cluster % chunk == 0).all()
    # drop_last leaves out exactly the final short batch of the full plan, nothing else.
    full = batches.topic(
        clusters,
        batch_size,
        seed=seed,
        epoch=epoch,
        weighting=weighting,
        clusters_per_batch=per_batch,
    )
    assert np.array_equal(plan.indices, full.indices[: len(plan.indices)])
    again = batches.topic(clusters, batch_size, seed=seed, epoch=epoch, weighting=weighting, **kw)  # type: ignore[arg-type]
    assert np.array_equal(plan.indices, again.indices)


@settings(max_examples=100, deadline=None)
@given(
    clusters=clusters_st,
    batch_size=st.integers(1, 30),
    drop_last=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_ngame_is_a_partition_with_the_announced_count(
    clusters: list[int], batch_size: int, drop_last: bool, seed: int
) -> None:
    plan = batches.ngame(clusters, batch_size, seed=seed, epoch=2, drop_last=drop_last)
    assert len(plan) == batches.ngame_count(len(clusters), batch_size, drop_last=drop_last)
    check_partition(plan, len(clusters), batch_size, drop_last)
    full = batches.ngame(clusters, batch_size, seed=seed, epoch=2)
    assert np.array_equal(plan.indices, full.indices[: len(plan.indices)])
    # Clusters are contiguous: the cluster changes at most (#clusters - 1) times.
    seq = np.asarray(clusters, dtype=np.int64)[plan.indices]
    assert (np.diff(seq) != 0).sum() <= max(len(set(clusters)) - 1, 0)


def test_counts_by_hand() -> None:
    clusters = [0] * 10 + [1] * 3 + [2] * 7
    # Whole chunks of 4: 2 + 0 + 1 = 3 topical batches; leftovers 2 + 3 + 3 = 8 rows: 2 more.
    plan = batches.topic(clusters, 4, seed=0, epoch=0)
    assert (len(plan), plan.topical) == (5, 3)
    # Batch 6: 1 + 0 + 1 topical; 8 leftover rows: 1 batch + 2 dropped rows with drop_last.
    assert batches.topic_count(clusters, 6, drop_last=True) == 3
    assert batches.topic_count(clusters, 6) == 4
    assert batches.ngame_count(20, 6) == 4
    assert batches.ngame_count(20, 6, drop_last=True) == 3
    assert batches.ngame_count(0, 6) == 0
    assert len(batches.topic([], 4, seed=0, epoch=0)) == 0


def test_count_is_independent_of_seed_and_epoch() -> None:
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 50, size=5000)
    counts = {
        len(batches.topic(clusters, 32, seed=s, epoch=e, clusters_per_batch=2, drop_last=d))
        for s in range(3)
        for e in range(3)
        for d in (False,)
    }
    assert counts == {batches.topic_count(clusters, 32, clusters_per_batch=2)}


# ---------------------------------------------------------------------------------------------
# Seeds and epochs


@pytest.mark.parametrize("make", ["topic", "ngame", "margin"])
def test_seed_and_epoch_are_mixed_by_a_hash(make: str) -> None:
    rng = np.random.default_rng(1)
    clusters = rng.integers(0, 20, size=2000)
    margins = rng.normal(size=(500, 8))

    def plan(seed: int, epoch: int) -> np.ndarray:
        if make == "topic":
            return batches.topic(clusters, 16, seed=seed, epoch=epoch).indices
        if make == "ngame":
            return batches.ngame(clusters, 16, seed=seed, epoch=epoch).indices
        return batches.margin_balanced(None, margins, seed=seed, epoch=epoch)

    assert np.array_equal(plan(5, 7), plan(5, 7))
    assert not np.array_equal(plan(0, 0), plan(0, 1)), "new epoch, new plan"
    assert not np.array_equal(plan(1, 0), plan(0, 1)), "seed + epoch is not the key"
    assert not np.array_equal(plan(3, 2), plan(2, 3))
    assert not np.array_equal(plan(0, 0), plan(1, 0))


def test_same_plan_in_another_process() -> None:
    import subprocess
    import sys

    code = (
        "import numpy as np; from negmine import batches;"
        "c = np.arange(300) % 7;"
        "print(batches.topic(c, 8, seed=11, epoch=3, weighting='size').indices.tolist())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = batches.topic(np.arange(300) % 7, 8, seed=11, epoch=3, weighting="size")
    assert out.stdout.strip() == str(here.indices.tolist())


# ---------------------------------------------------------------------------------------------
# Topic purity and weighting


def test_topic_batches_are_single_cluster() -> None:
    rng = np.random.default_rng(2)
    clusters = rng.integers(0, 30, size=3000) * 1000  # sparse ids
    plan = batches.topic(clusters, 16, seed=1, epoch=0, drop_last=True)
    assert plan.topical >= len(plan) - 30
    for batch in plan[: plan.topical]:
        assert len(set(clusters[batch].tolist())) == 1
    assert plan.uniform and plan.to_array().shape == (len(plan), 16)


def mean_in_batch_cosine(plan: BatchPlan, x: np.ndarray) -> float:
    total = pairs = 0.0
    for batch in plan:
        q = x[batch]
        sims = q @ q.T
        total += float(sims.sum() - np.trace(sims))
        pairs += len(batch) * (len(batch) - 1)
    return total / pairs


def test_topic_batches_from_kmeans_are_more_similar_than_random_batches() -> None:
    # Queries around 40 topics, clustered by negmine.kmeans: a topic batch holds related
    # queries (hard in-batch negatives), a random one mostly unrelated ones.
    import negmine

    rng = np.random.default_rng(5)
    centers = rng.standard_normal((40, 32)).astype(np.float32)
    x = centers[rng.integers(0, 40, 4000)] + 0.8 * rng.standard_normal((4000, 32)).astype(
        np.float32
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, clusters, _ = negmine.kmeans(x, 40, metric="cosine", seed=0)
    random_plan = batches.ngame(np.zeros(len(x), dtype=np.int64), 32, seed=0, epoch=0)
    topic = mean_in_batch_cosine(batches.topic(clusters, 32, seed=0, epoch=0), x)
    two = mean_in_batch_cosine(
        batches.topic(clusters, 32, seed=0, epoch=0, clusters_per_batch=2), x
    )
    base = mean_in_batch_cosine(random_plan, x)
    assert topic > two > base
    assert topic / base > 3, (topic, base)


def test_uniform_weighting_vs_size_weighting() -> None:
    # 90 rows in cluster 0, 10 in cluster 1, batch 1: the first batch is cluster 1 with
    # probability 1/2 (uniform) or 1/10 (size).
    clusters = [0] * 90 + [1] * 10
    firsts = {
        w: np.mean(
            [
                clusters[batches.topic(clusters, 1, seed=s, epoch=0, weighting=w)[0][0]] == 1
                for s in range(2000)
            ]
        )
        for w in ("uniform", "size")
    }
    assert abs(firsts["uniform"] - 0.5) < 0.05, firsts
    assert abs(firsts["size"] - 0.1) < 0.03, firsts


# ---------------------------------------------------------------------------------------------
# No in-batch false negatives


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(1, 300),
    batch_size=st.integers(1, 12),
    n_keys=st.integers(1, 400),
    keys_per_row=st.integers(0, 3),
    drop_last=st.booleans(),
    plan_kind=st.sampled_from(["topic", "ngame"]),
    seed=st.integers(0, 10_000),
)
def test_conflicting_rows_never_share_a_batch(
    n: int,
    batch_size: int,
    n_keys: int,
    keys_per_row: int,
    drop_last: bool,
    plan_kind: str,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    clusters = rng.integers(0, 5, size=n)
    rows = [
        rng.integers(0, n_keys, size=rng.integers(0, keys_per_row + 1)).tolist() for _ in range(n)
    ]
    make = batches.topic if plan_kind == "topic" else batches.ngame
    plain = make(clusters, batch_size, seed=seed, epoch=1, drop_last=drop_last)
    try:
        plan = make(clusters, batch_size, seed=seed, epoch=1, drop_last=drop_last, conflicts=rows)
    except InvalidArgumentError as e:
        assert "conflict key" in str(e) or "cannot keep" in str(e)
        return
    assert len(plan) == len(plain)
    assert np.array_equal(plan.offsets, plain.offsets), "batch sizes are kept"
    assert np.array_equal(np.sort(plan.indices), np.sort(plain.indices)), "same rows"
    assert_separated(plan, [set(r) for r in rows])


def test_conflicts_succeed_when_feasible_and_fail_clearly_when_not() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    clusters = rng.integers(0, 40, size=n)
    # A heavy key on 150 rows (250 batches available) plus pair keys (shared positives).
    positives = [[int(rng.integers(0, n // 2))] for _ in range(n)]
    for r in rng.choice(n, size=150, replace=False):
        positives[r].append(10**9)
    indptr, keys = batches.conflict_keys(positives)
    plan = batches.topic(clusters, 16, seed=0, epoch=0, conflicts=(indptr, keys))
    assert len(plan) == batches.topic_count(clusters, 16)
    assert_separated(plan, key_sets(indptr, keys))
    # 300 rows sharing a key cannot be spread over 250 batches.
    crowded = [[7] if r < 300 else [] for r in range(n)]
    with pytest.raises(InvalidArgumentError, match=r"conflict key 7 is shared by 300 rows"):
        batches.ngame(clusters, 16, seed=0, epoch=0, conflicts=crowded)


def test_conflict_keys_cover_groups_and_components() -> None:
    # Rows 0 and 1 have different positives in one duplicate group; rows 2 and 3 are linked
    # queries; row 4 conflicts with nobody.
    groups = np.array([0, 0, 1, 2, 3, 4], dtype=np.uint32)
    positives = [[0], [1], [2], [3], [5]]
    components = [0, 1, 2, 2, 3]
    indptr, keys = batches.conflict_keys(positives, groups=groups, components=components)
    sets = key_sets(indptr, keys)
    assert sets[0] & sets[1] and sets[2] & sets[3]
    assert not (sets[4] & (sets[0] | sets[1] | sets[2] | sets[3]))
    assert not (sets[0] & sets[2])
    for seed in range(20):
        plan = batches.ngame([0] * 5, 2, seed=seed, epoch=0, conflicts=(indptr, keys))
        assert_separated(plan, sets)
    # Without groups, positives conflict by id.
    indptr, keys = batches.conflict_keys(negmine.Csr([0, 1, 2, 3], [4, 4, 5]))
    assert key_sets(indptr, keys) == [{8}, {8}, {10}]


def test_separate_a_given_plan() -> None:
    plan = BatchPlan(np.arange(8), np.array([0, 2, 4, 6, 8]))
    conflicts = [[], [], [], [], [], [], [1], [1]]
    sep = batches.separate(plan, conflicts)
    assert np.array_equal(sep.offsets, plan.offsets)
    assert_separated(sep, [set(c) for c in conflicts])
    assert sorted(sep.indices.tolist()) == list(range(8))
    with pytest.raises(InvalidArgumentError, match=r"0\.\.3"):
        batches.separate(plan, [[], [], []])
    with pytest.raises(InvalidTypeError):
        batches.separate(plan.tolist(), conflicts)  # type: ignore[arg-type]


def test_plans_from_core_arrays_stay_usable() -> None:
    # Arrays made by the core (not owning a numpy buffer) go back in as inputs.
    plan = batches.ngame(np.arange(10) % 3, 4, seed=0, epoch=0)
    sep = batches.separate(plan, [[r // 2] for r in range(10)])
    again = batches.topic(sep.indices % 3, 2, seed=0, epoch=0)
    assert len(again) == 5
    plan.indices[0] = plan.indices[0]  # still writeable


# ---------------------------------------------------------------------------------------------
# TAS-Balanced margin sampling


def test_margin_bins_are_picked_uniformly() -> None:
    # Margins over [0, 10]: pairs in bins 0 (x5), 3 (x1), 9 (x3).
    pattern = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 3.5, 9.1, 9.5, 10.0])
    margins = np.tile(pattern, (30_000, 1))
    picks = batches.margin_balanced(None, margins, bins=10, seed=4, epoch=1)
    per_pair = np.bincount(picks, minlength=9)
    per_bin = np.array([per_pair[:5].sum(), per_pair[5], per_pair[6:].sum()])
    assert chi2(per_bin) < CHI2_999[2], per_bin
    assert chi2(per_pair[:5]) < CHI2_999[4], per_pair
    assert chi2(per_pair[6:]) < CHI2_999[2], per_pair


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 15), min_size=0, max_size=40),
    bins=st.integers(1, 12),
    seed=st.integers(0, 2**64 - 1),
)
def test_margin_picks_land_in_non_empty_bins(lengths: list[int], bins: int, seed: int) -> None:
    rng = np.random.default_rng(seed % 2**32)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    margins = rng.normal(size=int(indptr[-1]))
    picks = batches.margin_balanced(indptr, margins, bins=bins, seed=seed, epoch=0)
    assert len(picks) == len(lengths)
    for q, n in enumerate(lengths):
        assert picks[q] == -1 if n == 0 else 0 <= picks[q] < n


def test_margin_balanced_by_query_uniform_over_epochs() -> None:
    # One query with pairs in two bins (1 pair and 4 pairs): across epochs each bin ~1/2.
    margins = np.array([[0.0, 1.0, 1.0, 1.0, 1.0]])
    picks = np.array(
        [batches.margin_balanced(None, margins, bins=2, seed=9, epoch=e)[0] for e in range(4000)]
    )
    assert chi2(np.array([(picks == 0).sum(), (picks > 0).sum()])) < CHI2_999[1]


# ---------------------------------------------------------------------------------------------
# BatchPlan and bad input


def test_batch_plan_accessors() -> None:
    plan = batches.ngame(np.zeros(10, dtype=np.int64), 4, seed=0, epoch=0)
    assert len(plan) == 3 and list(plan.sizes) == [4, 4, 2] and not plan.uniform
    assert np.array_equal(plan[-1], plan.indices[8:])
    assert len(plan[0:2]) == 2
    with pytest.raises(IndexError):
        plan[3]
    with pytest.raises(InvalidArgumentError, match="different sizes"):
        plan.to_array()
    assert sorted(r for batch in plan.tolist() for r in batch) == list(range(10))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: batches.topic([0, 1], 0, seed=0, epoch=0), InvalidArgumentError, "batch_size"),
        (lambda: batches.topic([0, 1], -2, seed=0, epoch=0), InvalidArgumentError, "batch_size"),
        (lambda: batches.ngame([0, 1], 0, seed=0, epoch=0), InvalidArgumentError, "batch_size"),
        (lambda: batches.ngame_count(3, 0), InvalidArgumentError, "batch_size"),
        (lambda: batches.ngame_count(-1, 2), InvalidArgumentError, "n_rows"),
        (lambda: batches.topic_count([0], 0), InvalidArgumentError, "batch_size"),
        (lambda: batches.topic([0, -1], 2, seed=0, epoch=0), InvalidArgumentError, "clusters"),
        (lambda: batches.ngame([-5], 2, seed=0, epoch=0), InvalidArgumentError, "non-negative"),
        (
            lambda: batches.topic([0, 1], 3, seed=0, epoch=0, clusters_per_batch=2),
            InvalidArgumentError,
            "multiple",
        ),
        (
            lambda: batches.topic([0], 2, seed=0, epoch=0, clusters_per_batch=0),
            InvalidArgumentError,
            "clusters_per_batch",
        ),
        (
            lambda: batches.topic([0], 2, seed=0, epoch=0, weighting="big"),  # type: ignore[arg-type]
            InvalidArgumentError,
            "weighting",
        ),
        (lambda: batches.topic([0.5], 2, seed=0, epoch=0), InvalidTypeError, "integers"),
        (lambda: batches.topic([[0]], 2, seed=0, epoch=0), InvalidArgumentError, "1-D"),
        (lambda: batches.topic([0], 2, seed=-1, epoch=0), InvalidArgumentError, "seed"),
        (lambda: batches.topic([0], 2, seed=0, epoch=2**64), InvalidArgumentError, "epoch"),
        (lambda: batches.topic([0], 2, seed=0.5, epoch=0), InvalidTypeError, "seed"),  # type: ignore[arg-type]
        (lambda: batches.topic([0], True, seed=0, epoch=0), InvalidTypeError, "batch_size"),
        (
            lambda: batches.topic([0, 0], 2, seed=0, epoch=0, conflicts=[[1]]),
            InvalidArgumentError,
            "2",
        ),
        (
            lambda: batches.topic([0, 0], 2, seed=0, epoch=0, conflicts=negmine.Csr([0, 1], [3])),
            InvalidArgumentError,
            "one entry per row",
        ),
        (
            lambda: batches.ngame([0, 0], 2, seed=0, epoch=0, conflicts=[[1], [-1]]),
            InvalidArgumentError,
            "non-negative",
        ),
        (
            lambda: batches.margin_balanced([0, 1], [0.5], bins=0, seed=0, epoch=0),
            InvalidArgumentError,
            "bins",
        ),
        (
            lambda: batches.margin_balanced([0, 3], [0.5, 1.0], seed=0, epoch=0),
            InvalidArgumentError,
            "end at",
        ),
        (
            lambda: batches.margin_balanced([0, 2, 1], [0.5, 1.0], seed=0, epoch=0),
            InvalidArgumentError,
            "non-decreasing",
        ),
        (
            lambda: batches.margin_balanced([0, 1], [np.nan], seed=0, epoch=0),
            InvalidArgumentError,
            "finite",
        ),
        (
            lambda: batches.margin_balanced(None, [0.5, 1.0], seed=0, epoch=0),
            InvalidArgumentError,
            "2-D",
        ),
        (
            lambda: batches.margin_balanced([0, 1], ["a"], seed=0, epoch=0),
            InvalidTypeError,
            "numbers",
        ),
        (
            lambda: batches.conflict_keys([[0]], groups=[0], components=[0, 1]),
            InvalidArgumentError,
            "components",
        ),
        (
            lambda: batches.conflict_keys([[3]], groups=[0]),
            InvalidArgumentError,
            "group",
        ),
    ],
)
def test_bad_input_is_a_clear_error(call, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        call()


def test_core_rejects_bad_counts_without_the_python_layer() -> None:
    from negmine import _core

    with pytest.raises(ValueError, match="batch_size must be positive, got -1"):
        _core.topic_plan(np.zeros(3, dtype=np.int64), -1, seed=0, epoch=0)
    with pytest.raises(ValueError, match="bins must be positive"):
        _core.margin_balanced(np.zeros(1, dtype=np.int64), np.zeros(0), -4, seed=0, epoch=0)
    with pytest.raises(ValueError, match="given together"):
        _core.ngame_plan(
            np.zeros(3, dtype=np.int64), 2, seed=0, epoch=0, conflicts=(np.zeros(1, np.int64),)
        )


def test_throughput_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """Plan generation speed (printed with -s; never asserted)."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    clusters = rng.integers(0, 1000, size=n)
    conflicts = (np.arange(n + 1, dtype=np.int64), rng.integers(0, n // 2, size=n))
    lines = []
    for name, run in [
        ("topic", lambda: batches.topic(clusters, 64, seed=0, epoch=0)),
        ("ngame", lambda: batches.ngame(clusters, 64, seed=0, epoch=0)),
        (
            "topic+conflicts",
            lambda: batches.topic(clusters, 64, seed=0, epoch=0, conflicts=conflicts),
        ),
    ]:
        start = time.perf_counter()
        plan = run()
        seconds = time.perf_counter() - start
        assert len(plan.indices) == n
        lines.append(f"{name}: {n / seconds / 1e6:.1f} M indices/s")
    with capsys.disabled():
        print("\n" + "; ".join(lines))
