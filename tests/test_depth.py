"""How deep the negatives ranked (``MiningResult.negative_ranks``, ``report.depth``): ranks
against a brute-force ranking, counts on a case built to send known queries deep, the "could not
find enough negatives" line exactly when a row is short within the window, ``negmine report
--window/--floor``, and the plot's mark where ``record_removed`` cut the removal curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine import cli
from negmine.errors import InvalidArgumentError
from negmine.report import MiningReport, default_window

MISSING = np.iinfo(np.uint32).max


def oracle_ranks(queries: np.ndarray, corpus: np.ndarray, positives: list[list[int]]) -> list:
    """Per query, its eligible corpus ids best first (score descending, id ascending), from
    integer-valued rows whose dot products float32 holds exactly."""
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    out = []
    for q, row in enumerate(scores):
        order = np.lexsort((np.arange(len(row)), -row))
        out.append([int(i) for i in order if i not in positives[q]])
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_negatives=st.integers(1, 4),
    sampling=st.sampled_from(["top", "random"]),
    margin=st.sampled_from([None, 0.0, 3.0]),
    range_max=st.sampled_from([None, 12, 30]),
    window=st.integers(1, 40),
)
def test_ranks_are_positions_in_the_unfiltered_ranking(
    seed: int,
    num_negatives: int,
    sampling: str,
    margin: float | None,
    range_max: int | None,
    window: int,
) -> None:
    rng = np.random.default_rng(seed)
    queries = rng.integers(-3, 4, (5, 3)).astype(np.float32)
    corpus = rng.integers(-3, 4, (40, 3)).astype(np.float32)
    positives = [[int(rng.integers(40))] for _ in range(5)]
    result = negmine.mine(
        queries,
        corpus,
        positives,
        metric="dot",
        num_negatives=num_negatives,
        absolute_margin=margin,
        range_max=range_max,
        sampling_strategy=sampling,
        duplicates=None,
        seed=seed,
    )
    ranking = oracle_ranks(queries, corpus, positives)
    ranks = result.negative_ranks
    assert ranks is not None and ranks.shape == result.negative_ids.shape
    for q, ids in enumerate(result.negative_ids):
        for j, i in enumerate(ids):
            assert ranks[q, j] == (MISSING if i < 0 else ranking[q].index(int(i)))
    # The depth at any window against the oracle: a row is short when fewer than
    # num_negatives of its negatives rank above the window.
    depth = result.depth(window=window)
    assert depth is not None
    held = [
        [ranking[q].index(int(i)) for i in ids if i >= 0]
        for q, ids in enumerate(result.negative_ids)
    ]
    short = [q for q, r in enumerate(held) if sum(x < window for x in r) < num_negatives]
    assert depth.short_queries == len(short)
    assert depth.beyond_window == sum(x >= window for r in held for x in r)
    assert depth.queries_beyond_window == sum(any(x >= window for x in r) for r in held)
    assert depth.short_rows == sum(len(r) < num_negatives for r in held)
    lines = depth.lines(5, num_negatives)
    assert any("Could not find enough negatives" in line for line in lines) == bool(short)


def deep_case() -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Two queries, along axes 0 and 1. Query 0's positive scores 1 and its 30 best candidates
    0.95 down to 0.66: a margin of 0.45 removes them, so its negatives rank 30 and deeper.
    Query 1's best candidates score 0.5 down to 0.41, clear of its positive: its negatives are
    its top-ranked."""
    rows = [[1.0, 0.0, 0.0]]  # 0: query 0's positive
    rows += [[0.95 - 0.01 * i, 0.0, 0.0] for i in range(30)]  # 1-30: query 0, near its positive
    rows += [[0.5 - 0.01 * i, 0.0, 0.0] for i in range(10)]  # 31-40: query 0, clear of it
    rows += [[0.0, 1.0, 0.0]]  # 41: query 1's positive
    rows += [[0.0, 0.5 - 0.01 * i, 0.0] for i in range(10)]  # 42-51: query 1's negatives
    corpus = np.asarray(rows, np.float32)
    queries = np.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    return queries, corpus, [[0], [41]]


def test_a_margin_that_empties_the_top_sends_one_query_deep(tmp_path: Path) -> None:
    queries, corpus, positives = deep_case()
    result = negmine.mine(
        queries,
        corpus,
        positives,
        metric="dot",
        num_negatives=3,
        absolute_margin=0.45,  # drops scores above 0.55: query 0's 30 best
        duplicates=None,
    )
    assert result.negative_ids.tolist() == [[31, 32, 33], [42, 43, 44]]
    assert result.negative_ranks is not None
    # Query 0's eligible ranking: 1..30 (removed), then 31, 32, 33; query 1's starts with
    # query 0's rows at score 0 ranked after its own (ids 42-51 score 0.5 down to 0.41).
    assert result.negative_ranks.tolist() == [[30, 31, 32], [0, 1, 2]]
    depth = result.report.depth
    assert depth is not None
    # top with a margin and no range_max: sentence-transformers' derived window, 3 x 10.
    assert (depth.window, depth.window_from) == (30, "sentence-transformers' default range_max")
    assert (depth.beyond_window, depth.queries_beyond_window) == (3, 1)
    assert (depth.short_queries, depth.short_rows) == (1, 0)
    assert depth.max_rank == 32 and depth.median_rank == 16.0
    text = str(result.report)
    assert "3 negatives of 1 query ranked at 30 or deeper" in text
    assert "Could not find enough negatives within rank 30 for 1 of 2 queries (50.00%)" in text
    # A window past query 0's negatives: nothing is short, no such line.
    deeper = result.depth(window=33, floor=0.495)
    assert deeper is not None
    assert (deeper.short_queries, deeper.beyond_window) == (0, 0)
    assert deeper.under_floor == 4  # each query's 0.49 and 0.48
    assert not any("Could not find" in line for line in deeper.lines(2, 3))
    # Saved and loaded: the ranks and the depth come back.
    result.save(tmp_path / "r")
    loaded = negmine.MiningResult.load(tmp_path / "r")
    assert loaded.negative_ranks is not None
    assert loaded.negative_ranks.tolist() == result.negative_ranks.tolist()
    assert loaded.report.depth == depth


def test_a_short_window_is_reported_like_sentence_transformers() -> None:
    """With range_max, a row the window cannot fill is short and left short."""
    queries, corpus, positives = deep_case()
    result = negmine.mine(
        queries,
        corpus,
        positives,
        metric="dot",
        num_negatives=3,
        range_max=5,
        max_score=0.55,
        duplicates=None,
    )
    # Query 0's filtered ranking starts at rank 30: its window [0, 5) holds 31-35.
    assert result.negative_ids.tolist() == [[31, 32, 33], [42, 43, 44]]
    depth = result.report.depth
    assert depth is not None and (depth.window, depth.window_from) == (5, "range_max")
    assert (depth.short_queries, depth.short_rows, depth.beyond_window) == (1, 0, 3)
    # Without filters nothing goes deep: no line.
    plain = negmine.mine(queries, corpus, positives, metric="dot", num_negatives=3, duplicates=None)
    assert plain.report.depth is not None and plain.report.depth.short_queries == 0
    assert "Could not find" not in str(plain.report)


def test_default_window() -> None:
    assert default_window({"num_negatives": 3, "range_max": 7}) == (7, "range_max")
    assert default_window({"num_negatives": 3, "sampling_strategy": "random", "range_min": 2}) == (
        32,
        "sampling window",
    )
    assert default_window({"num_negatives": 3}) == (3, "sentence-transformers' default range_max")
    assert default_window({"num_negatives": 3, "max_score": 0.9})[0] == 30


def test_report_command_recounts_at_a_window_and_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries, corpus, positives = deep_case()
    result = negmine.mine(
        queries,
        corpus,
        positives,
        metric="dot",
        num_negatives=3,
        absolute_margin=0.45,
        duplicates=None,
    )
    result.save(tmp_path / "r")
    assert cli.main(["report", str(tmp_path / "r")]) == 0
    assert "Could not find enough negatives within rank 30" in capsys.readouterr().out
    assert cli.main(["report", str(tmp_path / "r"), "--window", "40", "--floor", "0.495"]) == 0
    out = capsys.readouterr().out
    assert "0 negatives of 0 queries ranked at 40 or deeper (given)" in out
    assert "4 negatives under the floor 0.495" in out
    assert "Could not find" not in out
    # A result saved without ranks (an older negmine): the report has no depth lines and
    # --window says why it cannot count.
    old = tmp_path / "old"
    result.negative_ranks = None
    result.report.depth = None
    result.save(old)
    assert cli.main(["report", str(old)]) == 0
    assert "rank of the negatives" not in capsys.readouterr().out
    assert cli.main(["report", str(old), "--window", "5"]) != 0
    assert "records no ranks" in capsys.readouterr().err


def test_a_report_without_depth_loads() -> None:
    """report.json written before depth was recorded has no such key."""
    queries, corpus, positives = deep_case()
    data = negmine.mine(queries, corpus, positives, metric="dot", duplicates=None).report.to_dict()
    del data["depth"], data["record_cut"]
    report = MiningReport.from_dict(json.loads(json.dumps(data)))
    assert report.depth is None and report.record_cut is None


def test_the_plot_marks_where_the_recording_cap_cut() -> None:
    pytest.importorskip("matplotlib")
    from negmine.report import _histogram_figure

    queries, corpus, positives = deep_case()
    # Query 0's margin removes 30 candidates, scored 0.95 down to 0.66; 4 recorded: cut
    # below 0.92. Query 1 has no removals.
    result = negmine.mine(
        queries,
        corpus,
        positives,
        metric="dot",
        num_negatives=3,
        absolute_margin=0.45,
        duplicates=None,
        record_removed=4,
    )
    report = result.report
    assert report.record_cut == pytest.approx(0.92)
    fig = _histogram_figure(report)
    try:
        marks = [line.get_xdata()[0] for line in fig.axes[0].lines]
        assert marks == [pytest.approx(0.92)]
        assert any("dashed line" in t.get_text() for t in fig.texts)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    # Everything recorded: no cut, no mark.
    full = negmine.mine(
        queries,
        corpus,
        positives,
        metric="dot",
        num_negatives=3,
        absolute_margin=0.45,
        duplicates=None,
        record_removed=None,
    )
    assert full.report.record_cut is None
    with pytest.raises(InvalidArgumentError, match="window"):
        full.depth(window=0)
