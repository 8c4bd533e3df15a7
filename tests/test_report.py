"""MiningReport's saved layout: format 2 nests the hnsw fields in ``report.ann``; a report of
format 1 (flat hnsw fields, written before) still loads, with the same information."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import negmine
from negmine.errors import FormatError
from negmine.report import FILTERS, REPORT_FORMAT, AnnReport, MiningReport

COMMON: dict[str, Any] = {
    "n_queries": 3,
    "num_negatives": 2,
    "options": {"num_negatives": 2, "metric": "cosine"},
    "positives": 3,
    "excluded_duplicates": 0,
    "linked_queries": 0,
    "removed": dict.fromkeys(FILTERS, 0),
    "negatives": 6,
    "starved": [],
    "histogram_edges": [-0.25, 0.25, 0.75],
    "histograms": {"positive": [3, 0], "negative": [0, 6]},
}
# The keys negmine wrote for an hnsw run before format 2 (the histograms shortened).
FORMAT_1_HNSW = {
    **COMMON,
    "backend": "hnsw",
    "recall": 1.0,
    "ef": 40,
    "target_recall": 0.9,
    "recall_depth": 40,
    "recall_sample": 3,
    "refetched": 3,
    "exact_fallback": 3,
}
FORMAT_1_EXACT = {
    **COMMON,
    "backend": "exact",
    "recall": None,
    "ef": None,
    "target_recall": None,
    "recall_depth": None,
    "recall_sample": None,
    "refetched": 0,
    "exact_fallback": 0,
}
# str() of those reports as printed before format 2.
HNSW_TEXT = """mined 6 of 6 negatives for 3 queries
  positives excluded by id:        3
  duplicates of positives excluded: 0
  backend hnsw: ef 40, recall@40 1.0000 on 3 sampled queries (target 0.9)
    re-fetched deeper: 3 queries; finished by exact search: 3
  removed by filter:
    (nothing)
  mean score of positives: 0.0000
  mean score of negatives: 0.5000"""
EXACT_TEXT = """mined 6 of 6 negatives for 3 queries
  positives excluded by id:        3
  duplicates of positives excluded: 0
  removed by filter:
    (nothing)
  mean score of positives: 0.0000
  mean score of negatives: 0.5000"""


def replace_report(result_dir: Path, text: str) -> None:
    """Writes ``text`` as the saved result's report.json, with the manifest vouching for it."""
    (result_dir / "report.json").write_text(text)
    manifest = json.loads((result_dir / "manifest.json").read_text())
    manifest["files"]["report.json"]["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (result_dir / "manifest.json").write_text(json.dumps(manifest))


def test_format_1_hnsw_report_moves_its_fields_into_ann() -> None:
    report = MiningReport.from_dict(FORMAT_1_HNSW)
    assert report.backend == "hnsw"
    assert report.ann == AnnReport(
        target_recall=0.9, recall=1.0, ef=40, recall_depth=40, recall_sample=3
    )
    assert report.ann.built is None and report.ann.path is None  # format 1 did not record them
    assert (report.refetched, report.exact_fallback) == (3, 3)
    assert str(report) == HNSW_TEXT
    # Saved again, it is format 2 and reads back the same.
    data = report.to_dict()
    assert data["format"] == REPORT_FORMAT == 2
    assert data["ann"]["ef"] == 40 and "ef" not in data and "recall" not in data
    assert MiningReport.from_dict(json.loads(json.dumps(data))) == report


def test_format_1_exact_report_has_no_ann() -> None:
    report = MiningReport.from_dict(FORMAT_1_EXACT)
    assert report.backend == "exact" and report.ann is None
    assert str(report) == EXACT_TEXT
    assert report.to_dict()["ann"] is None
    assert MiningReport.from_dict(report.to_dict()) == report


def test_saved_result_with_a_format_1_report_loads(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(40, 8)).astype(np.float32)
    queries = rng.normal(size=(3, 8)).astype(np.float32)
    result = negmine.mine(queries, corpus, [[0], [1], [2]], num_negatives=2)
    out = tmp_path / "out"
    result.save(out)
    # The report.json a negmine before format 2 saved.
    replace_report(out, json.dumps(FORMAT_1_HNSW, indent=1, sort_keys=True))

    loaded = negmine.MiningResult.load(out)
    assert loaded.report == MiningReport.from_dict(FORMAT_1_HNSW)
    assert loaded.report.ann is not None and loaded.report.ann.recall_sample == 3
    assert str(loaded.report) == HNSW_TEXT
    np.testing.assert_array_equal(loaded.negative_ids, result.negative_ids)


@pytest.mark.parametrize(
    "data",
    [
        {**COMMON, "format": 3, "ann": None},
        {**COMMON, "format": "2", "ann": None},
        {**FORMAT_1_HNSW, "format": 2},  # flat hnsw keys in the nested layout
        {**COMMON, "format": 2, "backend": "hnsw", "ann": {"ef": 40}},  # no target_recall
        [1],
    ],
    ids=["format-3", "format-str", "flat-in-2", "ann-incomplete", "not-an-object"],
)
def test_unknown_report_layouts_are_refused(data: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        MiningReport.from_dict(data)


def test_unknown_report_format_in_a_saved_result_is_a_format_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    corpus = rng.normal(size=(20, 4)).astype(np.float32)
    queries = rng.normal(size=(2, 4)).astype(np.float32)
    out = tmp_path / "out"
    negmine.mine(queries, corpus, [[0], [1]], num_negatives=1).save(out)
    data = json.loads((out / "report.json").read_text())
    data["format"] = 99
    replace_report(out, json.dumps(data))
    with pytest.raises(FormatError, match="report format 99"):
        negmine.MiningResult.load(out)


def _figure_texts(fig: Any) -> list[str]:
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        legend = ax.get_legend()
        texts += [t.get_text() for t in legend.get_texts()] if legend is not None else []
    return texts


def test_the_plot_says_which_removal_curves_hold_only_the_recorded_candidates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    saved: list[list[str]] = []
    savefig = Figure.savefig

    def recorded(fig: Any, *args: Any, **kwargs: Any) -> None:
        saved.append(_figure_texts(fig))
        savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recorded)
    rng = np.random.default_rng(5)
    corpus = rng.normal(size=(400, 8)).astype(np.float32)
    queries = corpus[:10] + 0.05
    positives = [[i] for i in range(10)]
    # Nearly every candidate scores within 90% of the positive: hundreds removed per query,
    # 7 recorded per query.
    result = negmine.mine(
        queries, corpus, positives, relative_margin=0.9, record_removed=7, num_negatives=2
    )
    removed = result.report.removed["relative_margin"]
    assert removed > 70 and sum(result.report.histograms["relative_margin"]) == 70
    result.plot(tmp_path / "capped.png")
    texts = saved.pop()
    assert f"relative_margin (recorded 70 of {removed:,} removed)" in texts, texts
    (note,) = [t for t in texts if "record_removed" in t]
    assert "relative_margin" in note and "the best-ranked 7 per query" in note
    assert (tmp_path / "capped.png").read_bytes().startswith(b"\x89PNG")

    # Every removal recorded: the curve is the whole count and says nothing more.
    whole = negmine.mine(
        queries, corpus, positives, relative_margin=0.9, record_removed=None, num_negatives=2
    )
    whole.plot(tmp_path / "whole.png")
    texts = saved.pop()
    assert "relative_margin" in texts and not any("record" in t for t in texts), texts
