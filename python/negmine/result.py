"""A mining run's output: :class:`MiningResult`, saved and loaded as one verified directory
(one ``.npy`` per array, ``report.json`` and a ``manifest.json`` of sha256 digests)."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from negmine import _numbers as numbers
from negmine._atomic import HashingWriter, atomic_directory, new_file
from negmine._paths import regular_file
from negmine.errors import FormatError, InvalidArgumentError
from negmine.report import (
    DepthReport,
    MiningReport,
    default_window,
    depth_report,
    plot_histograms,
)


@dataclass
class MiningResult:
    """Mined negatives, aligned with the queries.

    ``negative_ids[q]`` holds query ``q``'s negatives ranked by score (-1 where missing),
    ``negative_scores[q]`` their scores (NaN where missing); ``positive_ids`` (CSR) and
    ``positive_scores`` the positives used; ``removed`` the candidates each filter dropped.
    """

    negative_ids: np.ndarray
    negative_scores: np.ndarray
    positive_indptr: np.ndarray
    positive_ids: np.ndarray
    positive_scores: np.ndarray
    removed: dict[str, np.ndarray] = field(repr=False)
    report: MiningReport
    teacher_scores: np.ndarray | None = None
    """With a teacher (``mine(rescore=...)``): its scores of the negatives, shaped like
    ``negative_scores`` (NaN where missing): the distillation targets (e.g. MarginMSE)."""
    positive_teacher_scores: np.ndarray | None = None
    """With a teacher: its score of each of ``positive_ids``."""
    groups: np.ndarray | None = None
    """The corpus' duplicate groups mining used (a group id per corpus row; ``None`` with
    ``duplicates=None``): what :class:`~negmine.torch.HardNegativeDataset`, the collator's
    false-negative mask and batch plans take as ``groups``."""
    negative_ranks: np.ndarray | None = None
    """Each negative's rank in its query's ranking before any filter (0: the best candidate
    other than its positives and exclusions; uint32, ``2**32 - 1`` where ``negative_ids`` is
    -1), shaped like ``negative_ids``: what ``report.depth`` summarises, and
    :meth:`depth` recounts. ``None`` in a result of a negmine that did not record ranks."""
    negative_sources: np.ndarray | None = None
    """With ``backend="bm25"`` or ``"hybrid"``: which rankings found each negative, a uint8
    bitmask shaped like ``negative_ids`` (1: the BM25 ranking, 2: the dense one, 3: both; 0
    where ``negative_ids`` is -1); :func:`negmine.sources.source_labels` names them, and
    ``report.sources`` counts them. ``None`` for the backends with one ranking."""

    def positives_of(self, query: int) -> np.ndarray:
        return self.positive_ids[self.positive_indptr[query] : self.positive_indptr[query + 1]]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the result, by file name stem."""
        return {
            "negative_ids": self.negative_ids,
            "negative_scores": self.negative_scores,
            "positive_indptr": self.positive_indptr,
            "positive_ids": self.positive_ids,
            "positive_scores": self.positive_scores,
            **{f"removed_{k}": v for k, v in self.removed.items()},
            **{
                name: getattr(self, name)
                for name in _OPTIONAL_ARRAYS
                if getattr(self, name) is not None
            },
        }

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Writes one ``.npy`` per array, ``report.json`` and ``manifest.json`` (every file's
        name, dtype, shape and sha256) into ``directory``, as one unit: the files go into a
        hidden sibling directory, are fsynced, and that directory replaces ``directory``
        whole (see ``negmine._atomic.atomic_directory``). After a crash or an error
        (``OSError`` naming the file and errno, e.g. a full disk) ``directory`` is the old
        result or the complete new one, never a mix, and nothing temporary is left. The bytes
        depend only on the result (no timestamps).

        ``directory`` (and its parents) is created if missing. An existing ``directory`` is
        replaced only when it is empty or holds nothing but a result's files (of this or an
        older negmine); one holding any other file is refused with ``InvalidArgumentError``
        naming them, so that no user file is ever deleted. A symlink is followed: the
        directory it points to is replaced."""
        save_result(self, Path(os.path.realpath(directory)))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> MiningResult:
        """Reads a result written by :meth:`save`, verified against its ``manifest.json``:
        the manifest must list exactly a result's files, and each must exist with the listed
        sha256, dtype and shape. A directory mixing files of two saves, a truncated or edited
        file, a missing or unlisted one, or no manifest (not a result, or written by a negmine
        older than the manifest) raises ``FormatError`` naming the file and what differs.
        Files the manifest does not list are ignored. The report may be of an older layout
        (see :meth:`MiningReport.from_dict`)."""
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(
                errno.ENOENT, "no mining result directory (written by MiningResult.save)", str(d)
            )
        files = _read_result(d)
        arrays = {name[: -len(".npy")]: v for name, v in files.items() if name.endswith(".npy")}
        report_path = d / "report.json"
        try:
            report = MiningReport.from_dict(json.loads(files["report.json"]))
        except (ValueError, TypeError) as e:
            raise FormatError(f"{report_path} is not a mining report: {e}") from None
        return cls(
            negative_ids=arrays["negative_ids"],
            negative_scores=arrays["negative_scores"],
            positive_indptr=arrays["positive_indptr"],
            positive_ids=arrays["positive_ids"],
            positive_scores=arrays["positive_scores"],
            removed={k: arrays[f"removed_{k}"] for k in _REMOVED},
            report=report,
            **{name: arrays.get(name) for name in _OPTIONAL_ARRAYS},
        )

    def depth(self, window: int | None = None, floor: float | None = None) -> DepthReport | None:
        """How deep the negatives ranked (:class:`~negmine.report.DepthReport`), counted at
        ``window`` (default: the report's, :func:`~negmine.report.default_window`) and with a
        score ``floor``; ``None`` without recorded ranks."""
        if self.negative_ranks is None:
            return None
        if window is None:
            at, source = default_window(self.report.options)
        else:
            at, source = numbers.count(window, "window"), "given"
        return depth_report(
            self.negative_ranks,
            self.negative_scores,
            self.report.num_negatives,
            at,
            window_from=source,
            floor=numbers.optional_real(floor, "floor"),
        )

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Writes a PNG histogram of positive, kept and removed scores (needs matplotlib),
        atomically."""
        plot_histograms(self.report, path)


_REMOVED = ("query", "id", "score", "filter")
_RESULT_ARRAYS = (
    "negative_ids",
    "negative_scores",
    "positive_indptr",
    "positive_ids",
    "positive_scores",
    *(f"removed_{k}" for k in _REMOVED),
)
_OPTIONAL_ARRAYS = (
    "teacher_scores",
    "positive_teacher_scores",
    "groups",
    "negative_ranks",
    "negative_sources",
)
"""Arrays a result holds only when they exist: a teacher's scores, the duplicate groups, the
negatives' ranks (not recorded before negmine recorded them), their sources (bm25, hybrid)."""
_REQUIRED_FILES = frozenset({*(f"{name}.npy" for name in _RESULT_ARRAYS), "report.json"})
MANIFEST = "manifest.json"
_MANIFEST_FORMAT = "negmine mining result"
TEXTS_SIDECAR = "texts.json"
"""Which text files a result was mined from (``negmine mine``'s record, for ``negmine
export``): saved with the result and listed in its manifest, so that one copied from another
result is refused (:func:`recorded_texts`); loading checks it and otherwise ignores it."""
_RESULT_FILES = _REQUIRED_FILES | {f"{name}.npy" for name in _OPTIONAL_ARRAYS} | {TEXTS_SIDECAR}


def check_replaceable(directory: Path) -> None:
    """Refuses a ``directory`` that exists and is not empty or a result (save replaces it)."""
    if not os.path.lexists(directory):
        return
    if not directory.is_dir():
        raise InvalidArgumentError(
            f"{directory} exists and is not a directory; a mining result is a directory"
        )
    foreign = sorted(set(os.listdir(directory)) - _RESULT_FILES - {MANIFEST})
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise InvalidArgumentError(
            f"{directory} holds files that are not part of a negmine result ({shown}); saving "
            "would delete them: pass an empty or new directory, or a previous result"
        )


def save_result(
    result: MiningResult,
    directory: Path,
    staging: Path | None = None,
    texts: Mapping[str, Any] | None = None,
) -> None:
    """:meth:`MiningResult.save` into ``directory`` (an absolute path), staged in ``staging``
    (default: a hidden sibling) if given, with ``texts`` (the record of the text files it was
    mined from) as :data:`TEXTS_SIDECAR` if given."""
    check_replaceable(directory)
    files: dict[str, dict[str, Any]] = {}
    with atomic_directory(directory, staging=staging) as new:
        for name, array in result.arrays().items():
            with new_file(new / f"{name}.npy") as f:
                writer = HashingWriter(f)
                np.save(writer, array, allow_pickle=False)
            files[f"{name}.npy"] = {
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "sha256": writer.hexdigest(),
            }
        with new_file(new / "report.json") as f:
            writer = HashingWriter(f)
            writer.write(json.dumps(result.report.to_dict(), indent=1, sort_keys=True).encode())
        files["report.json"] = {"sha256": writer.hexdigest()}
        if texts is not None:
            with new_file(new / TEXTS_SIDECAR) as f:
                writer = HashingWriter(f)
                writer.write(json.dumps(texts, indent=1, sort_keys=True).encode())
            files[TEXTS_SIDECAR] = {"sha256": writer.hexdigest()}
        manifest = {"format": _MANIFEST_FORMAT, "version": 1, "files": files}
        with new_file(new / MANIFEST) as f:
            f.write(json.dumps(manifest, indent=1, sort_keys=True).encode())


def _read_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """The ``files`` of ``directory``'s manifest, checked to list exactly a result's files."""
    path = directory / MANIFEST
    if not os.path.lexists(path):
        raise FormatError(
            f"{directory} has no {MANIFEST}: it is not a mining result written by "
            "MiningResult.save (or was written by a negmine older than the manifest; mine it "
            "again)"
        )
    try:
        manifest = json.loads(regular_file(path, "result manifest").read_bytes())
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{path} is not valid JSON: {e}") from None
    if not (
        isinstance(manifest, dict)
        and manifest.get("format") == _MANIFEST_FORMAT
        and isinstance(manifest.get("files"), dict)
    ):
        raise FormatError(f"{path} is not a negmine result manifest")
    if manifest.get("version") != 1:
        raise FormatError(
            f"{path} has version {manifest.get('version')!r}; this negmine reads version 1"
        )
    files: dict[str, dict[str, Any]] = manifest["files"]
    unlisted = sorted(_REQUIRED_FILES - set(files))
    if unlisted:
        raise FormatError(f"{path} does not list {unlisted[0]}, which every result has")
    unknown = sorted(set(files) - _RESULT_FILES)
    if unknown:
        raise FormatError(f"{path} lists {unknown[0]!r}, which is not a file of a mining result")
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
            raise FormatError(f"{path}: the entry of {name} has no sha256")
        if name.endswith(".npy") and not (
            isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in entry["shape"])
        ):
            raise FormatError(f"{path}: the entry of {name} needs a dtype and a shape")
    return files


def recorded_texts(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The :data:`TEXTS_SIDECAR` record of the result in ``directory`` (None without one),
    checked against its manifest: one the manifest does not list, or with other bytes than
    it lists, was not saved with this result and raises ``FormatError``."""
    d = Path(directory)
    path = d / TEXTS_SIDECAR
    files = _read_manifest(d)
    if TEXTS_SIDECAR not in files:
        if not os.path.lexists(path):
            return None
        raise FormatError(
            f"{path} is not listed in {d / MANIFEST}: it was not saved with this result "
            "(copied from another one, or written by a negmine before texts.json was part of "
            "the result); pass the text files (export --query-texts, --corpus-texts)"
        )
    try:
        data = regular_file(path, "texts record").read_bytes()
    except FileNotFoundError:
        raise FormatError(f"{path} is listed in {MANIFEST} but missing") from None
    if hashlib.sha256(data).hexdigest() != files[TEXTS_SIDECAR]["sha256"]:
        raise FormatError(
            f"{path} does not match {d / MANIFEST}: it was changed after the save, or comes "
            "from another result; pass the text files (export --query-texts, --corpus-texts)"
        )
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict):
        raise FormatError(f"{path} is not a negmine texts record")
    return record


def _read_result(directory: Path) -> dict[str, Any]:
    """Every file of the result in ``directory``, verified: ``.npy`` files as arrays, the
    report as bytes. Each file is read once and its bytes are both digested and parsed, so
    a save swapping the directory in meanwhile is caught, never mixed in."""
    files = _read_manifest(directory)
    out: dict[str, Any] = {}
    for name in sorted(files):
        entry = files[name]
        path = directory / name
        try:
            data = regular_file(path, "result file").read_bytes()
        except FileNotFoundError:
            raise FormatError(f"{path} is listed in {MANIFEST} but missing") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise FormatError(
                f"{path} does not match {MANIFEST} (sha256 {digest[:16]}... instead of "
                f"{entry['sha256'][:16]}...): it was changed after the save, or comes from "
                "another save"
            )
        if not name.endswith(".npy"):
            out[name] = data
            continue
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            raise FormatError(f"{path} is not a valid .npy file: {e}") from None
        if array.dtype.str != entry["dtype"] or list(array.shape) != entry["shape"]:
            raise FormatError(
                f"{path} holds {array.dtype.str} {list(array.shape)}, {MANIFEST} lists "
                f"{entry['dtype']} {entry['shape']}"
            )
        out[name] = array
    return out
