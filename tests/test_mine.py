"""negmine.mine against a pure-NumPy oracle of the documented semantics (rust/core/src/mine/),
false-negative filtering on planted duplicates, the report, bad input, and load_qrels
(docs/reliability.md item 19: hard negatives never include a labelled positive).

The oracle is exact: scores are ``dot`` products of small-integer rows (every sum is exact in
float32 and float64), the margins are evaluated with the same float32 operations as the core,
and the near-duplicate cosine is the core's unit-row 8-lane float32 sum, emulated operation by
operation. So ``sampling_strategy="top"`` must agree id for id and bit for bit.

A Rust panic surfaces as ``pyo3_runtime.PanicException`` (a ``BaseException``): every error path
goes through ``expect_error``, which fails loudly on anything that is not an ``Exception``.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine.errors import InternalError
from negmine.mine import OPTIONS, MiningOptions, assemble, mine_prepared, prepare
from negmine.qrels import load_qrels
from negmine.report import FILTERS

F32 = np.float32

# ---------------------------------------------------------------------------------------------
# Helpers


def expect_error(kind, fn, *args, match: str | None = None, **kwargs):
    """Calls ``fn`` and checks that it raises ``kind`` (an ``Exception``, never a panic and
    never an InternalError, which is a caught panic)."""
    try:
        fn(*args, **kwargs)
    except BaseException as error:
        assert isinstance(error, Exception), (
            f"{type(error).__module__}.{type(error).__name__} is not an Exception "
            f"(a Rust panic?): {error}"
        )
        assert not isinstance(error, InternalError), f"a caught panic: {error}"
        assert isinstance(error, kind), f"expected {kind}, got {type(error).__name__}: {error}"
        if match is not None:
            assert re.search(match, str(error)), f"{str(error)!r} does not match {match!r}"
        return error
    pytest.fail(f"no {kind} raised")


def unit(row: np.ndarray) -> np.ndarray:
    """``pack::normalize``: sum of squares in f64 (8 lanes), f64 scale, rounded to f32."""
    x = row.astype(np.float32).astype(np.float64)
    lanes = np.zeros(8)
    for i, v in enumerate(x):
        lanes[i % 8] += v * v
    total = 0.0
    for lane in lanes:
        total += lane
    inv = 1.0 / np.sqrt(total) if total > 0.0 else 0.0
    return (x * inv).astype(np.float32)


def unit_dot(a: np.ndarray, b: np.ndarray) -> np.float32:
    """The core's ``unit_dot``: f32 products added into 8 lanes, lanes summed, plus the tail."""
    n8 = len(a) // 8 * 8
    lanes = np.zeros(8, dtype=np.float32)
    for start in range(0, n8, 8):
        lanes = lanes + a[start : start + 8] * b[start : start + 8]
    tail = F32(0.0)
    for x, y in zip(a[n8:], b[n8:]):
        tail = F32(tail + F32(x * y))
    total = F32(0.0)
    for lane in lanes:
        total = F32(total + lane)
    return F32(total + tail)


def auto_groups(corpus: np.ndarray) -> np.ndarray:
    """Identical rows (``-0.0 == 0.0``): each row gets the index of the first equal row."""
    first: dict[bytes, int] = {}
    canon = corpus.astype(np.float32) + F32(0.0)
    return np.array([first.setdefault(r.tobytes(), i) for i, r in enumerate(canon)])


def oracle(
    queries,
    corpus,
    positives,
    *,
    num_negatives,
    range_min=0,
    range_max=None,
    max_score=None,
    min_score=None,
    absolute_margin=None,
    relative_margin=None,
    dup_threshold=None,
    groups=None,
    sampling="top",
):
    """The documented walk, for ``metric="dot"`` on integer data.

    Returns per query ``(chosen, window, removed)``: for ``top`` the chosen ``(score, id)``;
    for the samplers the window ``(score, id)`` they draw from; ``removed`` lists
    ``(query, id, score, filter name)`` in walk order (for the samplers without the
    ``near_duplicate_of_negative`` skips, which depend on the draw)."""
    scores = (queries.astype(np.float64) @ corpus.astype(np.float64).T).astype(np.float32)
    n = len(corpus)
    top = sampling == "top"
    end = range_max if range_max is not None else (None if top else range_min + 10 * num_negatives)
    t = None if dup_threshold is None else F32(dup_threshold)
    out = []
    for q, pos in enumerate(positives):
        pos = sorted(set(pos))
        excluded = set(pos)
        if groups is not None:
            pos_groups = {groups[p] for p in pos}
            excluded |= {i for i in range(n) if groups[i] in pos_groups}
        ids = np.array([i for i in range(n) if i not in excluded], dtype=np.int64)
        ranking = ids[np.lexsort((ids, -scores[q, ids].astype(np.float64)))]
        p = min((scores[q, i] for i in pos), default=None)
        pos_units = [unit(corpus[i]) for i in pos]
        kept_groups: set = set()
        rank = 0
        chosen, window, removed, chosen_units = [], [], [], []
        for i in ranking:
            i = int(i)
            s = scores[q, i]

            def drop(name, q=q, i=i, s=s, removed=removed):
                removed.append((q, i, s, name))

            if max_score is not None and s > F32(max_score):
                drop("max_score")
                continue
            if min_score is not None and s < F32(min_score):
                drop("min_score")
                continue
            if p is not None:
                if absolute_margin is not None and F32(s + F32(absolute_margin)) > p:
                    drop("absolute_margin")
                    continue
                if relative_margin is not None and s > F32(p - F32(abs(p) * F32(relative_margin))):
                    drop("relative_margin")
                    continue
            u = unit(corpus[i]) if t is not None else None
            if t is not None and any(unit_dot(pu, u) >= t for pu in pos_units):
                drop("near_duplicate_of_positive")
                continue
            if groups is not None:
                if groups[i] in kept_groups:
                    drop("duplicate_group")
                    continue
                kept_groups.add(groups[i])
            rank += 1
            if rank <= range_min:
                drop("range_min")
                continue
            if top:
                if t is not None:
                    if any(unit_dot(c, u) >= t for c in chosen_units):
                        drop("near_duplicate_of_negative")
                        continue
                    chosen_units.append(u)
                chosen.append((s, i))
                if len(chosen) == num_negatives or (end is not None and rank >= end):
                    break
            else:
                window.append((s, i))
                if end is not None and rank >= end:
                    break
        out.append((chosen, window, removed))
    return out


def int_data(rng, n_queries, n_corpus, dim, lo=-3, hi=3):
    q = rng.integers(lo, hi + 1, (n_queries, dim)).astype(np.float32)
    c = rng.integers(lo, hi + 1, (n_corpus, dim)).astype(np.float32)
    return q, c


def removed_tuples(result, *, skip=()):
    r = result.removed
    return [
        (int(q), int(i), F32(s), FILTERS[f])
        for q, i, s, f in zip(r["query"], r["id"], r["score"], r["filter"])
        if FILTERS[f] not in skip
    ]


def assert_results_equal(a, b, what=""):
    """Two MiningResults are identical: every array bit for bit, and the report."""
    for name, x in a.arrays().items():
        y = b.arrays()[name]
        assert x.dtype == y.dtype and x.shape == y.shape, f"{name} {what}"
        assert x.tobytes() == y.tobytes(), f"{name} differs {what}"
    assert a.report.to_dict() == b.report.to_dict(), what


def group_option(choice, corpus, rng_groups):
    """(duplicates argument, the oracle's groups) for a drawn duplicate-group choice."""
    if choice == "none":
        return None, None
    if choice == "auto":
        return "auto", auto_groups(corpus)
    return np.asarray(rng_groups, dtype=np.int64), np.asarray(rng_groups)


# ---------------------------------------------------------------------------------------------
# Hypothesis: the oracle


@st.composite
def problems(draw, sampling="top"):
    n_q = draw(st.integers(1, 4))
    n_c = draw(st.integers(1, 24))
    dim = draw(st.sampled_from([1, 2, 3, 5, 8, 11]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Narrow value ranges give many ties and many identical rows (duplicate groups).
    hi = draw(st.sampled_from([1, 2, 3]))
    q, c = int_data(rng, n_q, n_c, dim, -hi, hi)
    positives = [
        sorted(draw(st.sets(st.integers(0, n_c - 1), max_size=min(3, n_c)))) for _ in range(n_q)
    ]
    num = draw(st.integers(1, 5))
    range_min = draw(st.integers(0, 3))
    range_max = draw(st.one_of(st.none(), st.integers(range_min + num, range_min + num + 6)))
    cut = st.one_of(st.none(), st.integers(-12, 12).map(lambda x: x / 2))
    max_score, min_score = draw(cut), draw(cut)
    if max_score is not None and min_score is not None and min_score > max_score:
        max_score, min_score = min_score, max_score
    kw = dict(
        num_negatives=num,
        range_min=range_min,
        range_max=range_max,
        max_score=max_score,
        min_score=min_score,
        absolute_margin=draw(st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0, 3.0, -1.0]))),
        relative_margin=draw(st.one_of(st.none(), st.sampled_from([0.0, 0.05, 0.25, 0.5, 0.95]))),
        dup_threshold=draw(st.one_of(st.none(), st.sampled_from([-1.0, 0.0, 0.5, 0.8, 0.95, 1.0]))),
    )
    if sampling != "top" and kw["range_max"] is None and draw(st.booleans()):
        kw["range_max"] = range_min + num + draw(st.integers(0, 8))
    choice = draw(st.sampled_from(["none", "auto", "array"]))
    dup_arg, groups = group_option(choice, c, rng.integers(0, max(1, n_c // 3), n_c))
    return q, c, positives, kw, dup_arg, groups


@settings(max_examples=300)
@given(problems())
def test_top_equals_oracle(problem):
    q, c, positives, kw, dup_arg, groups = problem
    result = negmine.mine(q, c, positives, metric="dot", duplicates=dup_arg, **kw)
    expected = oracle(q, c, positives, groups=groups, **kw)
    num = kw["num_negatives"]
    starved = []
    for qi, (chosen, _, _) in enumerate(expected):
        ids = [i for _, i in chosen] + [-1] * (num - len(chosen))
        scores = [s for s, _ in chosen] + [np.nan] * (num - len(chosen))
        assert result.negative_ids[qi].tolist() == ids, f"query {qi}"
        np.testing.assert_array_equal(result.negative_scores[qi], np.array(scores, np.float32))
        if len(chosen) < num:
            starved.append(qi)
    assert result.negative_ids.dtype == np.int64 and result.negative_scores.dtype == np.float32
    # Every removal, in walk order, with its score and filter.
    want_removed = [r for _, _, removed in expected for r in removed]
    assert removed_tuples(result) == want_removed
    counts = {name: 0 for name in FILTERS}
    for *_, name in want_removed:
        counts[name] += 1
    report = result.report
    assert report.removed == counts
    assert report.starved == starved
    assert report.negatives == sum(len(ch) for ch, _, _ in expected)
    assert report.positives == sum(len(set(p)) for p in positives)
    if groups is None:
        assert report.excluded_duplicates == 0
    else:
        dup_members = 0
        for pos in positives:
            pg = {groups[p] for p in pos}
            dup_members += sum(1 for i in range(len(c)) if groups[i] in pg and i not in pos)
        assert report.excluded_duplicates == dup_members
    # Positive scores: per query, its positives in id order.
    want_pos = [F32(q[qi] @ c[p]) for qi, pos in enumerate(positives) for p in sorted(set(pos))]
    np.testing.assert_array_equal(result.positive_scores, np.array(want_pos, np.float32))
    # Never a positive, never a member of a positive's group (reliability item 19).
    for qi, pos in enumerate(positives):
        got = set(result.negative_ids[qi].tolist()) - {-1}
        assert not got & set(pos)
        if groups is not None:
            assert not {groups[i] for i in got} & {groups[p] for p in pos}


@settings(max_examples=150)
@given(problems(sampling="random"), st.sampled_from(["random", "simans"]), st.integers(0, 2**63))
def test_samplers_draw_from_the_oracle_window(problem, sampling, seed):
    q, c, positives, kw, dup_arg, groups = problem
    run_kw = dict(metric="dot", duplicates=dup_arg, sampling_strategy=sampling, seed=seed, **kw)
    if sampling == "simans":
        run_kw.update(simans_a=0.5, simans_b=-1.0)
    result = negmine.mine(q, c, positives, **run_kw)
    expected = oracle(q, c, positives, groups=groups, sampling="random", **kw)
    num = kw["num_negatives"]
    t = kw["dup_threshold"]
    assert removed_tuples(result, skip={"near_duplicate_of_negative"}) == [
        r for _, _, removed in expected for r in removed
    ]
    skipped = {
        (qi, i) for qi, i, _, name in removed_tuples(result) if name == "near_duplicate_of_negative"
    }
    for qi, (_, window, _) in enumerate(expected):
        ids, scores = result.negative_ids[qi], result.negative_scores[qi]
        found = int((ids >= 0).sum())
        assert (ids[found:] == -1).all() and np.isnan(scores[found:]).all()
        ids, scores = ids[:found].tolist(), scores[:found]
        in_window = dict((i, s) for s, i in window)
        assert set(ids) <= set(in_window), f"query {qi}: {ids} not in window {window}"
        assert len(set(ids)) == found
        assert not set(ids) & set(positives[qi])
        for i, s in zip(ids, scores):
            assert s == in_window[i]
        # Ranked by score, ties by id.
        pairs = [(-float(s), i) for s, i in zip(scores, ids)]
        assert pairs == sorted(pairs)
        if t is None:
            assert found == min(num, len(window))
        else:
            units = [unit(c[i]) for i in ids]
            for a in range(found):
                for b in range(a + 1, found):
                    assert unit_dot(units[a], units[b]) < F32(t)
            # Each window entry is chosen, skipped as a near-duplicate, or never offered.
            window_ids = set(in_window)
            assert {i for qq, i in skipped if qq == qi} <= window_ids - set(ids)
            if found < num:
                assert len(window_ids) == found + len({i for qq, i in skipped if qq == qi})
    if groups is not None:
        for qi, pos in enumerate(positives):
            got = set(result.negative_ids[qi].tolist()) - {-1}
            assert not {groups[i] for i in got} & {groups[p] for p in pos}
    # Reproducible; identical for any thread count.
    again = negmine.mine(q, c, positives, threads=1, **run_kw)
    assert_results_equal(result, again, "same seed, 1 thread")


def chunked(q, c, positives, options, bounds, *, duplicates="auto", threads=None):
    prepared = prepare(
        q,
        c,
        positives,
        duplicates=duplicates,
        query_dup_threshold=options.query_dup_threshold,
        threads=threads,
    )
    parts = [
        mine_prepared(
            np.ascontiguousarray(q[a:b]),
            c,
            prepared.rows(a, b),
            options,
            query_offset=a,
            threads=threads,
        )
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    return assemble(prepared, options, parts)


@settings(max_examples=40)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from(["top", "random", "simans"]),
    st.lists(st.integers(1, 11), min_size=1, max_size=4),
)
def test_chunked_and_threaded_runs_equal_one_call(seed, sampling, cuts):
    rng = np.random.default_rng(seed)
    q, c = int_data(rng, 12, 60, 7)
    positives = [rng.choice(60, rng.integers(0, 3), replace=False).tolist() for _ in range(12)]
    options = MiningOptions(
        num_negatives=3,
        metric="dot",
        range_min=1,
        relative_margin=0.1,
        dup_threshold=0.9,
        query_dup_threshold=0.95,
        sampling_strategy=sampling,
        seed=seed,
    )
    kw = {k: v for k, v in options.to_dict().items()}
    one = negmine.mine(q, c, positives, **kw)
    for threads in (1, 2, 3):
        assert_results_equal(one, negmine.mine(q, c, positives, threads=threads, **kw), threads)
    bounds = [0, *sorted(set(cuts)), 12]
    assert_results_equal(one, chunked(q, c, positives, options, bounds), f"chunks {bounds}")
    assert_results_equal(one, chunked(q, c, positives, options, [0, 12], threads=2), "one chunk")


# ---------------------------------------------------------------------------------------------
# Samplers: statistics


def test_seeds_change_the_draw_and_random_is_uniform():
    rng = np.random.default_rng(7)
    n_q, n_c, dim = 400, 40, 4
    # Every query identical: each gets an independent draw from the same 20-row window.
    q1, c = int_data(rng, 1, n_c, dim, -5, 5)
    q = np.tile(q1, (n_q, 1))
    positives = [[0]] * n_q
    kw = dict(
        num_negatives=2,
        metric="dot",
        duplicates=None,
        range_max=20,
        sampling_strategy="random",
        seed=1,
    )
    a = negmine.mine(q, c, positives, **kw).negative_ids
    b = negmine.mine(q, c, positives, **{**kw, "seed": 2}).negative_ids
    a2 = negmine.mine(q, c, positives, **kw).negative_ids
    np.testing.assert_array_equal(a, a2)
    differ = np.mean([set(x) != set(y) for x, y in zip(a, b)])
    assert differ > 0.7, f"only {differ:.0%} of the draws changed with the seed"
    # Queries get independent streams: not all the same pair.
    assert len({tuple(r) for r in a.tolist()}) > 50
    # Uniform over the window: 800 draws over 20 rows, 40 expected each.
    window = oracle(q[:1], c, [[0]], num_negatives=2, range_max=20, sampling="random")[0][1]
    counts = {i: 0 for _, i in window}
    for i in a.ravel():
        counts[int(i)] += 1
    assert set(counts) == {i for _, i in window}
    chi2 = sum((v - 40) ** 2 / 40 for v in counts.values())
    assert chi2 < 50, f"chi-square {chi2:.1f} with 19 degrees of freedom: {counts}"


def test_simans_prefers_scores_near_the_positive():
    rng = np.random.default_rng(3)
    n_q, n_c, dim = 300, 30, 8
    q = np.tile(rng.normal(size=(1, dim)).astype(np.float32), (n_q, 1))
    c = rng.normal(size=(n_c, dim)).astype(np.float32)
    positives = [[0]] * n_q
    common = dict(num_negatives=1, range_max=29, metric="dot", seed=5)
    uniform = negmine.mine(q, c, positives, sampling_strategy="random", **common)
    simans = negmine.mine(
        q, c, positives, sampling_strategy="simans", simans_a=5.0, simans_b=0.0, **common
    )
    p = uniform.positive_scores[0]
    dist_uniform = np.abs(uniform.negative_scores[:, 0] - p).mean()
    dist_simans = np.abs(simans.negative_scores[:, 0] - p).mean()
    assert dist_simans < 0.7 * dist_uniform, (dist_simans, dist_uniform)


# ---------------------------------------------------------------------------------------------
# Deeper search, starved queries


@pytest.mark.parametrize(
    "strict",
    [dict(max_score=0.5), dict(relative_margin=0.9), dict(absolute_margin=36.0)],
    ids=lambda x: next(iter(x)),
)
def test_strict_filters_deepen_the_search_instead_of_starving(strict):
    rng = np.random.default_rng(11)
    q, c = int_data(rng, 6, 3000, 6, -4, 4)
    c[:6] = q  # each query's positive is itself: p = |q|^2
    positives = [[i] for i in range(6)]
    kw = dict(num_negatives=5, range_min=3, **strict)
    result = negmine.mine(q, c, positives, metric="dot", duplicates=None, **kw)
    expected = oracle(q, c, positives, **kw)
    # The filters removed far more than the first fetch (depth 16) could hold.
    assert sum(result.report.removed.values()) > 6 * 100
    assert result.report.starved == []
    assert (result.negative_ids >= 0).all()
    for qi, (chosen, _, _) in enumerate(expected):
        assert result.negative_ids[qi].tolist() == [i for _, i in chosen]


def test_starved_only_when_the_corpus_is_used_up():
    q = np.array([[1, 0], [0, 1]], np.float32)
    c = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.5, 0.5], [-1, 0]], np.float32)
    result = negmine.mine(q, c, [[0], [2]], num_negatives=3, metric="dot", max_score=0.6)
    # Query 0: candidates 1 (0.9, cut), 3 (0.5), 2 (0), 4 (-1): three kept. Query 1: 3 (0.5),
    # 1 (0.1), 0 (0), 4 (0): all four eligible, three kept.
    assert result.report.starved == []
    strict = negmine.mine(q, c, [[0], [2]], num_negatives=3, metric="dot", min_score=0.05)
    assert strict.negative_ids.tolist() == [[1, 3, -1], [3, 1, -1]]
    assert np.isnan(strict.negative_scores[:, 2]).all()
    assert strict.report.starved == [0, 1]
    assert strict.report.negatives == 4
    assert strict.report.removed["min_score"] == 4
    # A corpus holding only positives: everything missing.
    only = negmine.mine(q[:1], c[:1], [[0]], num_negatives=2)
    assert only.negative_ids.tolist() == [[-1, -1]] and only.report.starved == [0]
    assert "fewer than 2" in str(only.report)


# ---------------------------------------------------------------------------------------------
# False negatives: planted duplicates of positives


def planted(seed=0, n_q=20, n_rand=400, dim=32, exact=2, near=3, hard=2):
    """Queries close to their positive; per query ``exact`` identical copies and ``near``
    near-duplicates (cosine > 0.98) of the positive, ``hard`` pairs of identical hard negatives
    (cosine ~0.8 to the query, ~0.64 to each other), and random filler rows (cosine < 0.7)."""
    rng = np.random.default_rng(seed)
    rows = [rng.normal(size=(n_rand, dim))]
    pos_ids, queries, copies, nears, hards = [], [], [], [], []
    start = n_rand
    for _ in range(n_q):
        p = rng.normal(size=dim)
        p /= np.linalg.norm(p)
        block = [p]
        block += [p.copy() for _ in range(exact)]
        for _ in range(near):
            x = p + 0.08 * rng.normal(size=dim) / np.sqrt(dim)
            block.append(x * rng.uniform(0.5, 2))
        for _ in range(hard):
            h = 0.8 * p + 0.6 * np.linalg.qr(np.stack([p, rng.normal(size=dim)]).T)[0][:, 1]
            block += [h, h.copy()]
        ids = list(range(start, start + len(block)))
        pos_ids.append(ids[0])
        copies.append(ids[1 : 1 + exact])
        nears.append(ids[1 + exact : 1 + exact + near])
        hards.append(ids[1 + exact + near :])
        queries.append(p + 0.02 * rng.normal(size=dim) / np.sqrt(dim))
        rows.append(np.stack(block))
        start += len(block)
    corpus = np.concatenate(rows).astype(np.float32)
    q = np.stack(queries).astype(np.float32)
    return q, corpus, pos_ids, copies, nears, hards


def test_planted_false_negatives_are_never_mined_and_counted_exactly():
    q, c, pos, copies, nears, hards = planted()
    for p, ns in zip(pos, nears):
        assert all(unit_dot(unit(c[p]), unit(c[n])) > 0.98 for n in ns)
    positives = [[p] for p in pos]
    planted_fn = [set(a) | set(b) for a, b in zip(copies, nears)]
    # Without the filters every query's negatives are planted false negatives: the test bites.
    naive = negmine.mine(q, c, positives, num_negatives=2, duplicates=None)
    for row, fn in zip(naive.negative_ids.tolist(), planted_fn):
        assert set(row) <= fn
    result = negmine.mine(q, c, positives, num_negatives=2, duplicates="auto", dup_threshold=0.95)
    mined = result.negative_ids.tolist()
    assert sum(len(set(row) & fn) for row, fn in zip(mined, planted_fn)) == 0
    # The walk: copies excluded by id, near-duplicates removed, then the first hard pair's
    # lower id is mined and its twin removed as a group duplicate, then the second pair's.
    for row, h in zip(mined, hards):
        assert set(row) == {h[0], h[2]}
    report = result.report
    n_q = len(q)
    assert report.excluded_duplicates == sum(len(x) for x in copies) == 2 * n_q
    assert report.removed["near_duplicate_of_positive"] == 3 * n_q
    assert report.removed["duplicate_group"] == n_q
    assert sum(report.removed.values()) == 4 * n_q
    assert report.starved == [] and report.negatives == 2 * n_q
    rem = result.removed
    where = {name: rem["filter"] == k for k, name in enumerate(FILTERS)}
    pairs = {
        name: set(zip(rem["query"][m].tolist(), rem["id"][m].tolist())) for name, m in where.items()
    }
    assert pairs["near_duplicate_of_positive"] == {
        (qi, i) for qi, ns in enumerate(nears) for i in ns
    }
    twins = {(qi, h[1]) for qi, h in enumerate(hards)} | {(qi, h[3]) for qi, h in enumerate(hards)}
    assert pairs["duplicate_group"] <= twins


def test_duplicate_groups_from_texts():
    rng = np.random.default_rng(5)
    q = rng.normal(size=(2, 8)).astype(np.float32)
    c = rng.normal(size=(30, 8)).astype(np.float32)
    c[10] = q[0] * 2  # the best candidate of query 0, same text as its positive 3
    c[11] = q[0] * 1.5  # second best, same text as row 10 (not a positive)
    c[12] = q[0]  # third best, a unique text
    texts = [f"passage {i}" for i in range(30)]
    texts[10] = texts[3]
    texts[11] = texts[20]
    texts[12] = texts[20]  # same text as 11 too: 11 and 12 form one group with 20
    result = negmine.mine(
        q, c, [[3], [4]], num_negatives=3, metric="dot", corpus_texts=texts, duplicates="auto"
    )
    neg0 = result.negative_ids[0].tolist()
    assert 10 not in neg0 and 3 not in neg0
    assert neg0[0] == 11 and 12 not in neg0 and 20 not in neg0
    assert result.report.excluded_duplicates == 1
    assert result.report.removed["duplicate_group"] >= 1
    # Embeddings decide with duplicates="auto" and no texts: rows 10-12 are distinct.
    plain = negmine.mine(q, c, [[3], [4]], num_negatives=3, metric="dot")
    assert plain.negative_ids[0].tolist() == [10, 11, 12]
    expect_error(ValueError, negmine.mine, q, c, [[3], [4]], corpus_texts=texts[:5])


def test_auto_duplicates_group_identical_rows_and_negative_zero():
    q = np.array([[1.0, 0.0, 0.0]], np.float32)
    c = np.array(
        [[0.0, 1.0, 0.0], [0.5, -0.0, 0.2], [0.5, 0.0, 0.2], [0.0, 1.0, 0.0], [0.4, 0.1, 0.0]],
        np.float32,
    )
    # Row 3 duplicates the positive 0; rows 1 and 2 are the same embedding (-0.0 == 0.0).
    result = negmine.mine(q, c, [[0]], num_negatives=3, metric="dot")
    assert result.negative_ids.tolist() == [[1, 4, -1]]
    assert result.report.excluded_duplicates == 1
    assert result.report.removed["duplicate_group"] == 1
    half = negmine.mine(
        q.astype(np.float16), c.astype(np.float16), [[0]], num_negatives=3, metric="dot"
    )
    assert half.negative_ids.tolist() == [[1, 4, -1]]
    off = negmine.mine(q, c, [[0]], num_negatives=3, metric="dot", duplicates=None)
    assert off.negative_ids.tolist() == [[1, 2, 4]]


def test_linked_queries_share_positives():
    rng = np.random.default_rng(9)
    dim = 16
    c = rng.normal(size=(50, dim)).astype(np.float32)
    base = rng.normal(size=dim)
    q = np.stack([base, base + 0.01 * rng.normal(size=dim), rng.normal(size=dim)]).astype(
        np.float32
    )
    c[7] = base * 1.3  # positive of query 0
    c[8] = base * 1.2 + 0.05 * rng.normal(size=dim)  # positive of query 1
    positives = [[7], [8], [9]]
    alone = negmine.mine(q, c, positives, num_negatives=3)
    assert 8 in alone.negative_ids[0] and 7 in alone.negative_ids[1]
    linked = negmine.mine(q, c, positives, num_negatives=3, query_dup_threshold=0.99)
    assert 8 not in linked.negative_ids[0] and 7 not in linked.negative_ids[1]
    assert linked.positives_of(0).tolist() == [7, 8]
    assert linked.positives_of(1).tolist() == [7, 8]
    assert linked.positives_of(2).tolist() == [9]
    assert linked.report.linked_queries == 2
    assert linked.report.positives == 5
    assert alone.report.linked_queries == 0


# ---------------------------------------------------------------------------------------------
# Result: save / load / report text


def test_save_load_roundtrip_and_report_text(tmp_path):
    q, c, pos, *_ = planted(n_q=4, n_rand=50)
    result = negmine.mine(q, c, [[p] for p in pos], num_negatives=3, dup_threshold=0.95)
    result.save(tmp_path / "out")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    loaded = negmine.MiningResult.load(tmp_path / "out")
    assert_results_equal(result, loaded)
    text = str(loaded.report)
    assert "near_duplicate_of_positive" in text and "mined 12 of 12" in text


# ---------------------------------------------------------------------------------------------
# Bad input: ValueError / TypeError with a message, never a panic


def small():
    rng = np.random.default_rng(1)
    q, c = int_data(rng, 4, 30, 6)
    return q, c, [[0], [1], [2], [3]]


BAD_OPTIONS = [
    (dict(num_negatives=0), ValueError, "num_negatives"),
    (dict(num_negatives=-2), ValueError, "num_negatives"),
    (dict(num_negatives=2.0), TypeError, "num_negatives"),
    (dict(range_min=-1), ValueError, "range_min"),
    (dict(range_min=3, range_max=3), ValueError, "range_max"),
    (dict(range_min=3, range_max=2), ValueError, "range_max"),
    (dict(range_max=0), ValueError, "range_max"),
    (dict(num_negatives=5, range_min=2, range_max=6), ValueError, "num_negatives"),
    (dict(relative_margin=1.0), ValueError, "relative_margin"),
    (dict(relative_margin=-0.1), ValueError, "relative_margin"),
    (dict(relative_margin=float("nan")), ValueError, "relative_margin"),
    (dict(absolute_margin=float("inf")), ValueError, "absolute_margin"),
    (dict(max_score=float("nan")), ValueError, "max_score"),
    (dict(min_score=float("-inf")), ValueError, "min_score"),
    (dict(max_score=1e39), ValueError, "max_score"),
    (dict(min_score=2.0, max_score=1.0), ValueError, "min_score"),
    (dict(dup_threshold=1.01), ValueError, "dup_threshold"),
    (dict(dup_threshold=-1.5), ValueError, "dup_threshold"),
    (dict(dup_threshold=float("nan")), ValueError, "dup_threshold"),
    (dict(query_dup_threshold=1.5), ValueError, "query_dup_threshold"),
    (dict(query_dup_threshold=float("nan")), ValueError, "query_dup_threshold"),
    (dict(sampling_strategy="hardest"), ValueError, "sampling_strategy"),
    (dict(sampling_strategy="simans", simans_a=-1.0), ValueError, "simans"),
    (dict(simans_b=float("nan")), ValueError, "simans_b"),
    (dict(metric="l2"), ValueError, "metric"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(threads=0), ValueError, "threads"),
    (dict(duplicates="exact"), ValueError, "duplicates"),
    (dict(duplicates=np.zeros(29, np.int64)), (ValueError, TypeError), "duplicates"),
    (dict(duplicates=np.zeros((30, 1), np.int64)), (ValueError, TypeError), "duplicates"),
    (dict(duplicates=np.zeros(30, np.float64)), TypeError, "duplicates"),
    (dict(duplicates=np.zeros(30, bool)), TypeError, "duplicates"),
]


@pytest.mark.parametrize(("kwargs", "kind", "needle"), BAD_OPTIONS, ids=lambda x: repr(x)[:40])
def test_bad_options(kwargs, kind, needle):
    q, c, pos = small()
    expect_error(kind, negmine.mine, q, c, pos, **kwargs, match=needle)


@pytest.mark.parametrize(
    "kwargs",
    [dict(seed=2**64), dict(range_min=2**64), dict(num_negatives=2**64), dict(range_max=2**64)],
    ids=lambda x: repr(x)[:40],
)
def test_integers_too_big_for_the_core_are_value_errors(kwargs):
    # BUG: these raise OverflowError ("int too big to convert") from the binding.
    q, c, pos = small()
    expect_error(ValueError, negmine.mine, q, c, pos, **kwargs)


@pytest.mark.parametrize("num", [2**62, 2**63])
def test_huge_num_negatives_is_refused_not_wrapped(num):
    # BUG: n_queries * num_negatives wraps: 2**62 raises InternalError (index out of bounds),
    # 2**63 (with range_min = 2**63) returns arrays of shape (4, 0).
    q, c, pos = small()
    expect_error(ValueError, negmine.mine, q, c, pos, num_negatives=num, range_min=2**63)
    expect_error(ValueError, negmine.mine, q, c, pos, num_negatives=num)


def test_huge_num_negatives_does_not_abort_the_process():
    # BUG: the result buffers (n_queries x num_negatives) are allocated unchecked; a failed
    # allocation aborts the interpreter (SIGABRT) instead of raising.
    code = textwrap.dedent(
        """
        import numpy as np, negmine
        q = np.ones((4, 6), np.float32); c = np.ones((30, 6), np.float32)
        try:
            negmine.mine(q, c, [[0], [1], [2], [3]], num_negatives=2**40)
        except (ValueError, MemoryError) as e:
            print("raised", type(e).__name__, e)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-400:]}"
    assert "raised" in proc.stdout


def test_bad_positives_and_shapes():
    q, c, pos = small()
    expect_error(ValueError, negmine.mine, q, c, pos[:3], match="one id list per query")
    expect_error(ValueError, negmine.mine, q, c, [[0], [1], [2], [30]], match="out of range")
    expect_error(ValueError, negmine.mine, q, c, [[0], [1], [2], [-1]], match="out of range")
    expect_error(TypeError, negmine.mine, q, c, [[0], [1], [2], [0.5]], match="integer")
    expect_error(TypeError, negmine.mine, q, c, np.array([0.0, 1, 2, 3]), match="integer ids")
    expect_error(ValueError, negmine.mine, q, c, np.array([0, 1, 2]), match=r"shape \(4,\)")
    expect_error(ValueError, negmine.mine, q, c, np.array([0, 1, 2, -2]), match="-1 pads")
    csr = negmine.Csr
    expect_error(ValueError, negmine.mine, q, c, csr([0, 1, 2, 3, 9], [0, 1, 2, 3]))
    expect_error(ValueError, negmine.mine, q, c, csr([0, 2, 1, 3, 4], [0, 1, 2, 3]))
    expect_error(ValueError, negmine.mine, q, c, csr([0, 1, 2, 3], [0, 1, 2]), match="one entry")
    expect_error(TypeError, negmine.mine, q, c, csr([0, 1, 2, 3, 4], [0.0, 1, 2, 3]))
    # A tuple of two lists is ambiguous (CSR pair, or two queries' lists): refused.
    expect_error(TypeError, negmine.mine, q, c, ([0, 1, 2, 3, 4], [0, 1, 2, 3]), match="Csr")
    expect_error(ValueError, negmine.mine, q, c[:, :5], pos, match="dimension")
    expect_error(TypeError, negmine.mine, q.astype(np.int32), c, pos)
    expect_error(ValueError, negmine.mine, q[0], c, pos)
    bad = c.copy()
    bad[17, 2] = np.nan
    expect_error(ValueError, negmine.mine, q, bad, pos, match="17")


def test_qrels_path_with_a_query_past_the_end(tmp_path):
    q, c, _ = small()
    path = tmp_path / "qrels.tsv"
    path.write_text("0\t5\n7\t3\n")
    expect_error(ValueError, negmine.mine, q, c, str(path), match="query 7")
    path.write_text("0\t5\n2\t30\n")
    expect_error(ValueError, negmine.mine, q, c, str(path), match="30")
    path.write_text("0\t5\n3\t3\n")
    result = negmine.mine(q, c, path)
    assert result.positive_indptr.tolist() == [0, 1, 1, 1, 2]


# ---------------------------------------------------------------------------------------------
# load_qrels


def test_load_qrels_formats(tmp_path):
    cases = {
        "plain.tsv": "0\t4\n0\t2\n2\t1\n",
        "header.tsv": "query-id\tcorpus-id\tscore\n0\t4\n0\t2\t1\n2\t1\t2\n1\t3\t0\n",
        "header2.tsv": "qid\tpid\n0\t4\n0\t2\n2\t1\n",
        "trec.txt": "0 0 4 1\n0 Q0 2 1\n2 0 1 3\n1 0 3 0\n",
        "spaces.txt": "0 4\n\n0 2 1\n2 1 1\n0 2 1\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        indptr, ids = load_qrels(tmp_path / name)
        assert indptr.tolist() == [0, 2, 2, 3], name
        assert ids.tolist() == [2, 4, 1], name
    names = tmp_path / "names.tsv"
    names.write_text("qa\tdx\nqb\tdy\nqb\tdx\t0\n")
    indptr, ids = load_qrels(names, query_ids=["qa", "qb", "qc"], corpus_ids=["dx", "dy"])
    assert indptr.tolist() == [0, 1, 2, 2] and ids.tolist() == [0, 1]
    bad = tmp_path / "bad.tsv"
    for text, needle in [
        ("0\t1\n1\t2\t3\t4\t5\n", "bad.tsv:2"),
        ("0\t1\nx\t2\n", "bad.tsv:2"),
        ("0\t1\n1\t2\tyes\n", "relevance"),
        ("0\t-1\n", "negative"),
        ("0\t1\t0\n", "no positive"),
        ("", "no positive"),
    ]:
        bad.write_text(text)
        expect_error(ValueError, load_qrels, bad, match=needle)
    names.write_text("qa\tdx\nqz\tdy\n")
    expect_error(ValueError, load_qrels, names, ["qa"], ["dx", "dy"], match="qz")


def test_the_options_are_declared_by_the_core_and_mine_offers_each_with_its_default():
    # The core's table is the one declaration: `mine`'s keywords (user API, so written out
    # for type checkers) must carry each option, in its order, with the core's default.
    parameters = inspect.signature(negmine.mine).parameters
    table = negmine._core.MineOptions.OPTIONS
    assert [spec["name"] for spec in table] == list(negmine._core.MineOptions.NAMES)
    assert [name for name in parameters if name in OPTIONS] == list(OPTIONS)
    for spec in table:
        assert parameters[spec["name"]].default == spec["default"], spec
        assert type(parameters[spec["name"]].default) is type(spec["default"]), spec
        assert spec["help"] and spec["type"] in ("int", "float", "str"), spec
    defaults = MiningOptions().to_dict()
    assert defaults == {spec["name"]: spec["default"] for spec in table}
    assert OPTIONS["metric"]["choices"] == ("dot", "cosine")
    assert OPTIONS["record_removed"]["optional"] and not OPTIONS["seed"]["optional"]


def test_mining_options_are_plain_immutable_values():
    options = MiningOptions(relative_margin=0, seed=np.uint64(7), metric="ip")
    assert options.relative_margin == 0.0 and type(options.relative_margin) is float
    assert options.seed == 7 and type(options.seed) is int
    assert options.metric == "dot"
    assert options == MiningOptions(relative_margin=0.0, seed=7, metric="dot")
    assert options != MiningOptions(seed=8)
    assert json.loads(json.dumps(options.to_dict())) == options.to_dict()
    with pytest.raises(AttributeError):
        options.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="unknown mining option 'colour'"):
        MiningOptions(colour=1)
    with pytest.raises(AttributeError, match="no option 'colour'"):
        _ = options.colour
    assert copy.copy(options) is options and copy.deepcopy(options) is options
    assert options.replace(seed=9) == MiningOptions(relative_margin=0.0, seed=9, metric="ip")
    with pytest.raises(ValueError, match="relative_margin"):
        options.replace(relative_margin=2.0)


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_query_offset_lets_slices_draw_what_one_call_draws(backend: str) -> None:
    rng = np.random.default_rng(11)
    corpus = rng.standard_normal((400, 16)).astype(np.float32)
    queries = rng.standard_normal((30, 16)).astype(np.float32)
    positives = [[int(i)] for i in rng.integers(0, 400, 30)]
    options = dict(
        num_negatives=4,
        sampling_strategy="random",
        range_max=40,
        seed=3,
        duplicates=None,
        backend=backend,
    )
    whole = negmine.mine(queries, corpus, positives, **options)
    pieces = [
        negmine.mine(queries[a:b], corpus, positives[a:b], query_offset=a, **options)
        for a, b in ((0, 11), (11, 30))
    ]
    np.testing.assert_array_equal(
        np.concatenate([p.negative_ids for p in pieces]), whole.negative_ids
    )
    # Without the offset the second piece draws as if it were queries 0..18.
    unshifted = negmine.mine(queries[11:30], corpus, positives[11:30], **options)
    assert (unshifted.negative_ids != whole.negative_ids[11:30]).any()
    with pytest.raises(negmine.InvalidArgumentError, match="query_offset"):
        negmine.mine(queries, corpus, positives, query_offset=-1)


def test_one_positive_per_query_as_an_array_or_a_list_of_ints():
    """(anchor, positive) pairs: a 1-D or (n, 1) id array, or a list of ints, is one
    positive per query; an (n, m) array padded with -1 is up to m."""
    q, c, _ = small()
    want = negmine.mine(q, c, [[0], [1], [2], [3]])
    for positives in ([0, 1, 2, 3], np.array([0, 1, 2, 3]), np.array([[0], [1], [2], [3]])):
        got = negmine.mine(q, c, positives)
        np.testing.assert_array_equal(got.negative_ids, want.negative_ids)
        np.testing.assert_array_equal(got.positive_ids, want.positive_ids)
    padded = negmine.mine(q, c, np.array([[0, 5], [1, -1], [2, 7], [3, -1]], dtype=np.int32))
    np.testing.assert_array_equal(padded.positive_indptr, [0, 2, 3, 5, 6])
    np.testing.assert_array_equal(padded.positive_ids, [0, 5, 1, 2, 7, 3])


def test_the_result_keeps_the_duplicate_groups(tmp_path):
    q, c, pos = small()
    c[7] = c[3]
    result = negmine.mine(q, c, pos)
    assert result.groups is not None and result.groups[7] == result.groups[3]
    assert len(np.unique(result.groups)) == len(c) - 1
    result.save(tmp_path / "r")
    np.testing.assert_array_equal(negmine.MiningResult.load(tmp_path / "r").groups, result.groups)
    assert negmine.mine(q, c, pos, duplicates=None).groups is None


def test_negmine_torch_without_torch_names_the_extra():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import negmine\n"
        "try:\n    import negmine.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'negmine[torch]'" in out.stdout


def test_exclude_never_returns_ids_that_are_not_positives():
    q, c, pos = small()
    plain = negmine.mine(q, c, pos, num_negatives=4, relative_margin=0.1, duplicates=None)
    banned = [[int(row[0])] for row in plain.negative_ids]  # each query's best negative
    result = negmine.mine(
        q, c, pos, num_negatives=4, relative_margin=0.1, duplicates=None, exclude=banned
    )
    for row, ban in zip(result.negative_ids, banned):
        assert ban[0] not in row
    # Not positives: the positives (and so the margins' reference) are unchanged.
    np.testing.assert_array_equal(result.positive_ids, plain.positive_ids)
    np.testing.assert_array_equal(result.negative_ids[:, :3], plain.negative_ids[:, 1:])
    assert result.report.excluded_duplicates == 0
    expect_error(
        ValueError, negmine.mine, q, c, pos, exclude=[[0], [1], [2], [99]], match="exclude id 99"
    )
