"""k-means: valid labels, finite centroids, non-increasing training inertia, agreement with a
NumPy Lloyd oracle, determinism, and the bad inputs of reliability item 10."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine import _core


def blobs(rng: np.random.Generator, n: int, d: int, k: int, spread: float = 0.05) -> np.ndarray:
    centers = rng.standard_normal((k, d)).astype(np.float32) * 3
    return (centers[np.arange(n) % k] + spread * rng.standard_normal((n, d))).astype(np.float32)


def lloyd_l2(x: np.ndarray, init: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain Lloyd iterations in float64 (the oracle); empty clusters keep their centroid."""
    c = init.astype(np.float64)
    xd = x.astype(np.float64)
    for _ in range(iterations):
        d2 = ((xd[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        a = d2.argmin(1)
        for j in range(len(c)):
            if (a == j).any():
                c[j] = xd[a == j].mean(0)
    d2 = ((xd[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    return c, d2.argmin(1)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(5, 120),
    d=st.integers(1, 12),
    k=st.integers(1, 6),
    metric=st.sampled_from(["cosine", "l2"]),
    seed=st.integers(0, 2**32),
    f16=st.booleans(),
)
def test_labels_valid_centroids_finite_inertia_non_increasing(n, d, k, metric, seed, f16):
    k = min(k, n)
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    if f16:
        x = x.astype(np.float16)
    options = _core.KMeansOptions(k, metric=metric, iterations=6, seed=seed)
    centroids, assignments, inertia, history = _core.kmeans(x, options)
    assert centroids.shape == (k, d) and np.isfinite(centroids).all()
    assert assignments.shape == (n,) and assignments.max() < k
    assert np.isfinite(inertia) and inertia >= 0
    assert np.all(np.diff(history) <= 1e-4 * (1 + np.abs(history[:-1])))
    if metric == "cosine":
        norms = np.linalg.norm(centroids.astype(np.float64), axis=1)
        assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))


def test_matches_a_numpy_lloyd_oracle_on_separated_blobs():
    rng = np.random.default_rng(0)
    x = blobs(rng, 600, 8, 4)
    centroids, assignments, inertia = negmine.kmeans(x, 4, metric="l2", iterations=8, seed=3)
    # Same partition as the oracle started from negmine's own converged centroids.
    oracle_c, oracle_a = lloyd_l2(x, centroids, 1)
    assert np.array_equal(assignments, oracle_a)
    assert np.allclose(centroids, oracle_c, atol=1e-4)
    expected = ((x.astype(np.float64) - oracle_c[oracle_a]) ** 2).sum()
    assert inertia == pytest.approx(expected, rel=1e-4)
    # Each blob is one cluster.
    for j in range(4):
        assert len(set(assignments[np.arange(600) % 4 == j])) == 1


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_identical_for_any_thread_count_and_seeded(metric):
    x = blobs(np.random.default_rng(1), 3000, 16, 12, spread=1.0)
    runs = [negmine.kmeans(x, 12, metric=metric, seed=5, threads=t) for t in (1, 2, 3)]
    for c, a, i in runs[1:]:
        assert np.array_equal(c, runs[0][0]) and np.array_equal(a, runs[0][1])
        assert i == runs[0][2]
    other = negmine.kmeans(x, 12, metric=metric, seed=6)
    assert not np.array_equal(other[0], runs[0][0])


def test_sample_training_assigns_every_row_and_works_on_a_mapped_file(tmp_path):
    x = blobs(np.random.default_rng(2), 2000, 8, 5)
    path = tmp_path / "x.npy"
    negmine.save_embeddings(path, x.astype(np.float16))
    _c, a, inertia = negmine.kmeans(path, 5, metric="l2", sample=500, seed=0)
    assert a.shape == (2000,) and a.max() < 5
    for j in range(5):
        assert len(set(a[np.arange(2000) % 5 == j])) == 1
    assert inertia < 2000 * 8 * 0.01


def test_all_identical_points_give_finite_centroids():
    x = np.ones((50, 4), dtype=np.float32)
    for metric in ("cosine", "l2"):
        c, _a, inertia = negmine.kmeans(x, 5, metric=metric, seed=0)
        assert np.isfinite(c).all() and inertia == pytest.approx(0, abs=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_clusters": 0}, "n_clusters must be positive"),
        ({"n_clusters": 11}, "larger than the number of rows"),
        ({"n_clusters": 2, "sample": 1}, "smaller than n_clusters"),
        ({"n_clusters": 2, "metric": "manhattan"}, "metric must be"),
        ({"n_clusters": 2, "iterations": -1}, "iterations must be"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    x = np.ones((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        negmine.kmeans(x, **kwargs)


def test_non_finite_rows_are_named():
    x = np.ones((10, 3), dtype=np.float32)
    x[7, 1] = np.inf
    with pytest.raises(ValueError, match="row 7"):
        negmine.kmeans(x, 2)


def test_coarsen_clusters_merges_neighbouring_clusters():
    # 6 well-separated regions, each holding 4 tight sub-blobs: 24 fine clusters merged into
    # 6 groups must give back the regions (every sub-blob of a region in one group).
    rng = np.random.default_rng(4)
    regions = rng.standard_normal((6, 16)).astype(np.float32) * 10
    subs = (np.repeat(regions, 4, axis=0) + rng.standard_normal((24, 16)) * 1.0).astype(np.float32)
    label = np.arange(2400) % 24
    x = (subs[label] + 0.05 * rng.standard_normal((2400, 16))).astype(np.float32)
    centroids, fine, _ = negmine.kmeans(x, 24, metric="l2", seed=0)
    coarse = negmine.coarsen_clusters(centroids, fine, 6, metric="l2", seed=0)
    assert coarse.dtype == np.int64 and coarse.shape == (2400,)
    # Each fine cluster maps to exactly one group, and each group is one region.
    for c in range(24):
        assert len(np.unique(coarse[fine == c])) == 1
    for g in range(6):
        assert len(np.unique(label[coarse == g] // 4)) == 1
    assert len(np.unique(coarse)) == 6
    again = negmine.coarsen_clusters(centroids, fine, 6, metric="l2", seed=0)
    assert np.array_equal(coarse, again)


@pytest.mark.parametrize(
    ("assignments", "n_clusters", "error", "message"),
    [
        (np.array([0, 1, 5]), 2, ValueError, r"assignments must be in \[0, 4\)"),
        (np.array([0, -1]), 2, ValueError, "assignments must be in"),
        (np.array([[0, 1]]), 2, ValueError, "1-D integer"),
        (np.array([0.0, 1.0]), 2, ValueError, "1-D integer"),
        (np.array([0, 1]), 5, ValueError, "n_clusters"),
    ],
)
def test_coarsen_clusters_bad_input(assignments, n_clusters, error, message):
    centroids = np.eye(4, dtype=np.float32)
    with pytest.raises(error, match=message):
        negmine.coarsen_clusters(centroids, assignments, n_clusters)
