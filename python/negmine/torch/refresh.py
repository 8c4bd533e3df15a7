"""``NegativeRefresher``: hard negatives mined again with the model being trained, swapped into a
live :class:`HardNegativeDataset` (and :class:`ClusterBatchSampler`) at epoch boundaries.

Negatives mined once with the starting model go stale as the model learns (ANCE, STAR). A
refresh encodes queries and corpus with the current model (chunk by chunk, into memory-mapped
float16 files), mines them again with the same options, and serves the new negatives from the
next epoch boundary on; the mining runs in a background thread (the core releases the GIL),
overlapping training.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import inspect
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
import torch.distributed as dist

from negmine import _numbers, _ranks
from negmine._atomic import HashingWriter, atomic_write
from negmine._core import Embeddings, open_embeddings
from negmine._digest import update_value
from negmine.cluster import kmeans
from negmine.embed import run_job
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.mine import OPTIONS, MiningOptions, mine, positives_csr
from negmine.result import MiningResult
from negmine.store import cast_rows
from negmine.torch.dataset import HardNegativeDataset
from negmine.torch.sampler import ClusterBatchSampler

if TYPE_CHECKING:
    from negmine._inputs import IdsLike

log = logging.getLogger("negmine.refresh")

Encoder = Callable[[torch.Tensor], Any]
"""``indices (int64 tensor on encode_device) -> embeddings`` (tensor or array, one row each)."""

STATE_FORMAT = 2
"""2: the fingerprint digests option values by content (1 used their ``repr``)."""
_STATE_KEYS = ("live", "started", "epoch", "steps", "fingerprint")
# A write that fails for want of space (disk full, quota, file size limit) abandons the refresh
# and training goes on with the live negatives; any other error is raised.
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_REPORT_FILE = "refresh.json"
# `mine`'s keyword arguments that a refresh passes on; `seed` is the refresher's own (each
# refresh mines with its own seed from the stream), the rest are the refresher's.
_NOT_PASSED = ("queries", "corpus", "positives", "seed", "progress")


def mining_seed(seed: int, refresh: int) -> int:
    """The ``seed`` that refresh number ``refresh`` mines (and clusters) with: the first 8
    bytes, little-endian, of ``blake2b("negmine-refresh" + seed + refresh)`` (each as 8
    little-endian bytes). Every refresh gets its own seed, the same in every run."""
    seed = _numbers.seed(seed, "seed")
    refresh = _numbers.seed(refresh, "refresh")
    h = hashlib.blake2b(b"negmine-refresh", digest_size=8)
    h.update(seed.to_bytes(8, "little") + refresh.to_bytes(8, "little"))
    return int.from_bytes(h.digest(), "little")


class SentenceTransformerEncoder:
    """``encode(indices)`` for a sentence-transformers model over a list of texts:
    ``model.encode([texts[i] for i in indices], ...)`` as float32 rows (normalised when
    ``normalize``), for :class:`NegativeRefresher`'s ``encode_queries`` / ``encode_corpus``.

    ``device`` is passed to ``model.encode`` (default: the model's own device); ``prompt``
    too when given (e.g. ``"query: "``)."""

    def __init__(
        self,
        model: Any,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        normalize: bool = True,
        prompt: str | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not callable(getattr(model, "encode", None)):
            raise InvalidTypeError(
                f"model must have an encode() method (a SentenceTransformer), got "
                f"{type(model).__name__}"
            )
        if isinstance(texts, (str, bytes)):
            raise InvalidTypeError("texts must be a sequence of strings, not a single string")
        self.texts = list(texts)
        for i, text in enumerate(self.texts):
            if not isinstance(text, str):
                raise InvalidTypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
        self.model = model
        self.batch_size = _numbers.count(batch_size, "batch_size")
        self.normalize = bool(normalize)
        self.prompt = prompt
        self.device = None if device is None else str(device)

    def __len__(self) -> int:
        return len(self.texts)

    def __call__(self, indices: torch.Tensor) -> np.ndarray:
        chunk = [self.texts[i] for i in indices.tolist()]
        kwargs: dict[str, Any] = {
            "batch_size": self.batch_size,
            "show_progress_bar": False,
            "convert_to_numpy": True,
            "normalize_embeddings": self.normalize,
        }
        if self.prompt is not None:
            kwargs["prompt"] = self.prompt
        if self.device is not None:
            kwargs["device"] = self.device
        return np.asarray(self.model.encode(chunk, **kwargs), dtype=np.float32)


@dataclass(frozen=True)
class RefreshReport:
    """What a refresh serves that training should not miss (:attr:`NegativeRefresher.report`;
    saved as ``refresh.json`` in the refresh's folder). Any count above zero is logged as a
    warning when the refresh goes live."""

    refresh: int
    zero_query_rows: int
    """Query embeddings of zero norm: the encoder returned all-zero rows (a collapsed model
    returns nothing else). Under cosine they score 0 against everything."""
    zero_corpus_rows: int
    """Corpus embeddings of zero norm, likewise."""
    empty_queries: int
    """Queries served no negative at all (every id ``-1``): they train on in-batch negatives
    only."""


_Mined = tuple[MiningResult, "np.ndarray | None", RefreshReport]


class _Job:
    """One refresh being mined in the background: its thread, and its result or error."""

    def __init__(self, refresh: int, work: Callable[[], _Mined]):
        self.refresh = refresh
        self.result: _Mined | None = None
        self.error: BaseException | None = None
        self._work = work
        self.thread = threading.Thread(
            target=self._run, name=f"negmine-refresh-{refresh}", daemon=True
        )

    def _run(self) -> None:
        try:
            self.result = self._work()
        except BaseException as e:  # re-raised in the training thread at the swap
            self.error = e

    def start(self, background: bool) -> None:
        if background:
            self.thread.start()
        else:
            self._run()

    def wait(self) -> _Mined:
        if self.thread.ident is not None:
            self.thread.join()
        if self.error is not None:
            raise RuntimeError(
                f"refresh {self.refresh} failed while mining: "
                f"{type(self.error).__name__}: {self.error}"
            ) from self.error
        assert self.result is not None
        return self.result


class NegativeRefresher:
    """Re-mines the hard negatives of ``dataset`` with the model being trained, every ``every``
    epochs (or steps), and swaps them in at epoch boundaries.

    **A refresh** (number ``r = 1, 2, ...``; ``0`` is the result ``dataset`` was built with):

    1. *encode* (in the calling thread, under ``torch.no_grad()``): ``encode_queries(idx)``
       and ``encode_corpus(idx)`` are called on chunks of ``chunk_size`` row indices (an int64
       tensor on ``encode_device``) and must return one embedding row per index (tensor or
       array). The rows go, cast to float16, into ``directory/refresh-<r>/queries.npy`` and
       ``corpus.npy``, each written as :func:`negmine.embed_texts` writes its file (made at
       full size in a hidden partial directory, each chunk written at its rows with
       ``pwrite``, never through a writable memory map, where a full disk kills the process
       with SIGBUS, synced, and renamed into place when complete); memory holds one chunk at
       a time. Put dropout off (``model.eval()``) in the encoder if the model has any, and
       back on after.
       *float16 is refused where it would change a row*: a value past its largest (65504),
       and a row whose norm it would change by more than 1% (values below 6.1e-05 lose
       precision, below 6e-08 they become 0: at scale 1e-9 every row would become zero and
       every query would be served nothing) raise ``InvalidArgumentError`` naming the row;
       normalise the embeddings or scale them. Refused rather than warned because the loss
       is the refresh's own doing (its storage type), silent, and fixed by the caller in one
       line. Rows the encoder itself returns all-zero (a collapsed model) are stored as they
       are: a few can be legitimate (cosine scores them 0), so they are counted instead, with
       the queries served no negative, in :attr:`report` and a warning at the swap;
    2. *mine* (in a background thread unless ``overlap=False``): :func:`negmine.mine` on the
       two mapped files with ``positives`` and ``options`` (any keyword argument of
       :func:`negmine.mine` but ``seed`` and ``progress``), and ``seed=mining_seed(seed, r)``;
       the result is saved in ``directory/refresh-<r>/result`` (:meth:`MiningResult.save`).
       With ``sampler`` and ``n_clusters``, the new query embeddings are clustered too
       (:func:`negmine.kmeans`, ``cosine``, the same seed) for topic batches;
    3. *swap* (at the next boundary): ``dataset.set_result(result)`` and
       ``sampler.set_clusters(clusters)``; :attr:`live` becomes ``r``, :attr:`report` its
       :class:`RefreshReport`, ``on_swap(r, epoch)`` is called and a line is logged (logger
       ``negmine.refresh``; a warning when the report counts zero-norm rows or queries served
       no negative).

    **When.** Call :meth:`set_epoch` at the start of every epoch, before the sampler's and
    the dataset's and before iterating the ``DataLoader``. It first swaps in a finished
    refresh (waiting for its mining if it is still running), then starts a refresh if one is
    due: every ``every`` epochs (``unit="epoch"``, the default; epoch 0 is the boundary where
    training starts and refreshes nothing), or once ``every`` steps have been counted by
    :meth:`step` since the last refresh started (``unit="step"``: call :meth:`step` after
    each optimiser step; the refresh starts at the next boundary). :meth:`refresh_now` starts
    one at any time (e.g. mid-epoch); it too goes live at the next boundary. Swaps happen only
    in :meth:`set_epoch`, so a batch never mixes the negatives of two refreshes.

    **Staleness.** With ``overlap=True`` (default) the refresh started at the start of epoch
    ``e`` (encoded by the model as trained through epoch ``e - 1``) goes live at the start of
    epoch ``e + 1``: the negatives trained on are one epoch behind the model, and mining
    costs no training time unless it takes longer than an epoch (the boundary then waits for
    it). ``overlap=False`` mines at once and swaps at the same boundary: epoch ``e`` trains
    on negatives of the model as of its start, and training waits for the mining.

    **Errors.** An error while mining is re-raised at the swap, in the training thread, as a
    ``RuntimeError`` naming the refresh (its cause attached); the old negatives are never
    silently served on. The failed refresh is abandoned (the next one takes its number), and
    calling :meth:`set_epoch` again with the same epoch retries that boundary: a refresh due
    there is encoded and started anew. An error while encoding is raised by the call that
    encodes. *Out of space* is the exception: when writing a refresh's files fails with
    ``ENOSPC``, ``EDQUOT`` or ``EFBIG`` (disk full, quota, file size limit), while encoding
    or while saving the mined result, :meth:`set_epoch` abandons that refresh, removes its
    files (nothing temporary is left), logs a warning naming the error, and training goes on
    with the live negatives; the next due refresh tries again. :meth:`refresh_now`, called by
    hand, raises the ``OSError`` instead (after the same clean-up).

    **Resuming.** :meth:`state_dict` records the live refresh, a pending one and the schedule;
    :meth:`load_state_dict` on a fresh refresher (with the same ``seed``, ``positives``,
    ``options`` and ``directory``, its dataset built from the same initial result; options
    are compared by content, arrays byte by byte) serves the
    live refresh's saved result again, re-mines a pending one from its saved embeddings, and
    continues the schedule, so the resumed run trains on the same negatives as an unbroken
    one. Load it before the sampler's state (the sampler's state records the clusters) and
    then call :meth:`set_epoch` with the saved epoch as usual (that boundary is not processed
    twice). Only the last ``keep`` refreshes stay on disk (default 2: the live one and the
    one being mined); a state whose refreshes were removed is refused. A callable in the
    options (``rescore=``) has no content to compare: name it with ``teacher_identity``
    (any JSON value, e.g. ``{"model": "BAAI/bge-reranker-base", "revision": "..."}``, as
    ``negmine mine`` does for its teacher), the same when saving and when resuming; without
    one the state cannot be resumed, and :meth:`load_state_dict` says so.

    **Distributed.** With ``torch.distributed`` initialised, every rank encodes its share of
    a refresh's chunks (chunk ``i`` on rank ``i % world_size``, into the one file in
    ``directory``, which must be shared by all ranks; rank 0 renames it into place once all
    are done) and rank 0 mines; the other ranks, at the swap, wait at a broadcast for rank
    0's outcome and map the saved result (and clusters) from ``directory``. Every rank calls
    :meth:`set_epoch` (and :meth:`step`, :meth:`refresh_now`) at the same points; call the
    wrapped module, ``ddp.module``, in the encoders, not the ``DistributedDataParallel``
    wrapper. Every rank swaps at the same boundary, so the samplers, built on the same
    clusters, keep yielding equal batch counts per rank. An error while mining on rank 0 is
    raised on every rank at the swap, one while encoding on any rank on every rank by the
    call that started the refresh (once the others have encoded their chunks), and an
    abandoned refresh (out of space on any rank) is abandoned on every rank.
    """

    def __init__(
        self,
        dataset: HardNegativeDataset,
        *,
        encode_queries: Encoder,
        encode_corpus: Encoder,
        n_queries: int,
        n_corpus: int,
        positives: IdsLike | str | os.PathLike[str],
        directory: str | os.PathLike[str],
        options: Mapping[str, Any] | None = None,
        sampler: ClusterBatchSampler | None = None,
        n_clusters: int | None = None,
        every: int = 1,
        unit: Literal["epoch", "step"] = "epoch",
        seed: int = 0,
        chunk_size: int = 4096,
        encode_device: str | torch.device = "cpu",
        overlap: bool = True,
        keep: int = 2,
        on_swap: Callable[[int, int], object] | None = None,
        teacher_identity: Any = None,
    ) -> None:
        if not isinstance(dataset, HardNegativeDataset):
            raise InvalidTypeError(
                f"dataset must be a HardNegativeDataset, got {type(dataset).__name__}"
            )
        for name, fn in (("encode_queries", encode_queries), ("encode_corpus", encode_corpus)):
            if not callable(fn):
                raise InvalidTypeError(
                    f"{name} must be a callable (indices -> embeddings), got {type(fn).__name__}"
                )
        if sampler is not None and not isinstance(sampler, ClusterBatchSampler):
            raise InvalidTypeError(
                f"sampler must be a ClusterBatchSampler, got {type(sampler).__name__}"
            )
        if on_swap is not None and not callable(on_swap):
            raise InvalidTypeError(f"on_swap must be a callable, got {type(on_swap).__name__}")
        self.n_queries = _numbers.non_negative(n_queries, "n_queries")
        self.n_corpus = _numbers.count(n_corpus, "n_corpus")
        if self.n_queries != len(dataset):
            raise InvalidArgumentError(
                f"n_queries is {self.n_queries} but the dataset serves {len(dataset)} queries"
            )
        self.options = _mining_options(options)
        self.teacher_identity = _teacher_identity(self.options, teacher_identity)
        self.n_clusters = None if n_clusters is None else _numbers.count(n_clusters, "n_clusters")
        if self.n_clusters is not None and sampler is None:
            raise InvalidArgumentError("n_clusters needs a sampler to give the clusters to")
        self.every = _numbers.count(every, "every")
        self.unit = _numbers.choice(unit, "unit", ("epoch", "step"))
        self.seed = _numbers.seed(seed, "seed")
        self.chunk_size = _numbers.count(chunk_size, "chunk_size")
        try:
            self.encode_device = torch.device(encode_device)
        except (RuntimeError, TypeError) as e:
            raise InvalidArgumentError(
                f"encode_device {encode_device!r} is not a device: {e}"
            ) from None
        self.overlap = bool(overlap)
        self.keep = _numbers.count(keep, "keep")
        if self.overlap and self.keep < 2:
            raise InvalidArgumentError(
                "keep must be at least 2 with overlap=True (the live refresh and the one "
                f"being mined), got {self.keep}"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dataset = dataset
        self.sampler = sampler
        # Checked and converted once (a qrels path is read now): every refresh mines these.
        self.positives = positives_csr(positives, self.n_queries, self.n_corpus)
        self.encode_queries = encode_queries
        self.encode_corpus = encode_corpus
        self.on_swap = on_swap
        self.live = 0
        """The refresh whose negatives the dataset serves (0: the result it was built with)."""
        self.report: RefreshReport | None = None
        """The live refresh's :class:`RefreshReport` (``None`` while refresh 0 is live)."""
        self.started = 0  # the last refresh started (encoded); > live while one is pending
        self.epoch: int | None = None  # the last boundary processed
        self.steps = 0  # steps counted since the last refresh started
        self._job: _Job | None = None
        self._fingerprint = _fingerprint(
            self.seed, self.options, self.teacher_identity, self.positives, self.n_clusters
        )

    # ---------------------------------------------------------------------------------------

    @property
    def pending(self) -> int | None:
        """The refresh started but not yet live, if any."""
        return self.started if self.started > self.live else None

    def refresh_dir(self, refresh: int) -> Path:
        """Where refresh ``refresh`` keeps its embeddings, result and clusters."""
        return self.directory / f"refresh-{refresh:06d}"

    def set_epoch(self, epoch: int) -> None:
        """The boundary before ``epoch``: swap in a finished refresh, then start a due one
        (see the class docstring). Calling it again with the same epoch does nothing."""
        epoch = _numbers.seed(epoch, "epoch")
        if epoch == self.epoch:
            return
        first = self.epoch is None
        if self.pending is not None:
            self._swap(epoch)
        due = self.steps >= self.every if self.unit == "step" else epoch % self.every == 0
        if due and not (first and epoch == 0):
            try:
                self._start()
            except OSError as e:
                if e.errno not in _OUT_OF_SPACE:
                    raise
                self._abandon(self.started + 1, f"could not be written: {_describe(e)}")
            else:
                if not self.overlap:
                    self._swap(epoch)
        # Only once it all succeeded: after an error, calling it again retries the boundary.
        self.epoch = epoch

    def step(self) -> None:
        """Count one training step (for ``unit="step"``)."""
        self.steps += 1

    def refresh_now(self) -> int:
        """Encode now and start mining; the refresh goes live at the next boundary. Returns
        its number. Refused while another refresh is pending. Out of space while encoding,
        it raises the ``OSError`` (its files removed, the live negatives still served)."""
        if self.pending is not None:
            raise InvalidArgumentError(
                f"refresh {self.pending} is still pending: it goes live at the next set_epoch; "
                "start the next one after that"
            )
        return self._start()

    def close(self) -> None:
        """Wait for a background mining to end (its error, if any, is dropped: the run is
        over). Call it before exiting if a refresh may be pending."""
        if self._job is not None and self._job.thread.ident is not None:
            self._job.thread.join()

    # ---------------------------------------------------------------------------------------

    def _start(self) -> int:
        refresh = self.started + 1
        folder = self.refresh_dir(refresh)
        ranks = _ranks.current()

        def clear() -> None:
            if ranks.rank == 0 and folder.exists():  # left by a crashed or resumed run
                shutil.rmtree(folder)

        try:
            # Rank 0 clears the folder before any rank writes into it.
            _ranks.together(ranks, clear)
            folder.mkdir(parents=True, exist_ok=True)
            self._encode(self.encode_queries, self.n_queries, folder / "queries.npy", "queries")
            self._encode(self.encode_corpus, self.n_corpus, folder / "corpus.npy", "corpus")
        except BaseException:
            # A refresh that never starts leaves no files behind: on a full disk, its
            # queries.npy would hold space the next try needs. Every rank has raised (the
            # job relays an error on one rank to all), so none writes into it any more.
            if ranks.rank == 0:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if ranks.rank == 0:
            self._launch(refresh)
        self.started = refresh
        self.steps = 0
        return refresh

    def _launch(self, refresh: int) -> None:
        """Mine refresh ``refresh`` from its saved embeddings (rank 0 only)."""
        folder = self.refresh_dir(refresh)
        for name in ("queries.npy", "corpus.npy"):
            if not (folder / name).is_file():
                raise InvalidArgumentError(
                    f"refresh {refresh}'s embeddings {folder / name} are missing: they were "
                    "removed (keep) or the directory is not the one the state was saved with"
                )
        seed = mining_seed(self.seed, refresh)

        def work() -> _Mined:
            queries = open_embeddings(folder / "queries.npy")
            corpus = open_embeddings(folder / "corpus.npy")
            result = mine(queries, corpus, self.positives, seed=seed, **self.options)
            clusters = None
            if self.n_clusters is not None:
                _, clusters, _ = kmeans(queries, self.n_clusters, seed=seed)
                with atomic_write(folder / "clusters.npy") as f:
                    # through write(): numpy's own path for a real file loses the errno
                    np.save(HashingWriter(f), clusters)
            report = RefreshReport(
                refresh=refresh,
                zero_query_rows=_zero_rows(queries, self.chunk_size),
                zero_corpus_rows=_zero_rows(corpus, self.chunk_size),
                empty_queries=int(np.count_nonzero((result.negative_ids < 0).all(axis=1))),
            )
            with atomic_write(folder / _REPORT_FILE) as f:
                f.write(json.dumps(dataclasses.asdict(report)).encode())
            result.save(folder / "result")
            return result, clusters, report

        self._job = _Job(refresh, work)
        self._job.start(background=self.overlap)

    def _swap(self, epoch: int) -> None:
        refresh = self.started
        outcome: list[object] = [None]
        mined: _Mined | None = None
        failed: RuntimeError | None = None
        if _rank() == 0:
            job, self._job = self._job, None
            assert job is not None and job.refresh == refresh
            try:
                mined = job.wait()
            except RuntimeError as e:
                failed = e
                code = getattr(e.__cause__, "errno", None)
                if code in _OUT_OF_SPACE:
                    outcome[0] = (code, f"could not be written: {_describe(e.__cause__)}")
                else:
                    outcome[0] = (code, str(e))
        _broadcast(outcome)
        if outcome[0] is not None:
            self.started = self.live  # abandoned: the next refresh takes its number
            code, message = _failure(outcome[0])
            if code in _OUT_OF_SPACE:
                self._abandon(refresh, message)
                return
            if failed is not None:
                raise failed
            raise RuntimeError(f"{message} (on rank 0)")
        if mined is None:
            mined = self._load(refresh)
        self._apply(refresh, *mined)
        problems = _problems(mined[2], self.n_queries, self.n_corpus)
        if problems:
            log.warning("refresh %d live from epoch %d, but %s", refresh, epoch, problems)
        else:
            log.info("refresh %d live from epoch %d", refresh, epoch)
        if self.on_swap is not None:
            self.on_swap(refresh, epoch)
        if _rank() == 0:
            self._prune()

    def _abandon(self, refresh: int, why: str) -> None:
        """Refresh ``refresh`` ran out of space: its files go, training goes on with the live
        negatives (the caller has already made sure it is not pending)."""
        if _rank() == 0:
            shutil.rmtree(self.refresh_dir(refresh), ignore_errors=True)
        log.warning(
            "refresh %d abandoned: %s; its files are removed and training goes on with the "
            "negatives of refresh %d (the next due refresh tries again)",
            refresh,
            why,
            self.live,
        )

    def _load(self, refresh: int) -> _Mined:
        folder = self.refresh_dir(refresh)
        result = MiningResult.load(folder / "result")
        clusters = np.load(folder / "clusters.npy") if self.n_clusters is not None else None
        saved = json.loads((folder / _REPORT_FILE).read_text())
        return result, clusters, RefreshReport(**saved)

    def _apply(
        self,
        refresh: int,
        result: MiningResult,
        clusters: np.ndarray | None,
        report: RefreshReport,
    ) -> None:
        self.dataset.set_result(result)
        if clusters is not None:
            assert self.sampler is not None
            self.sampler.set_clusters(clusters)
        self.live = refresh
        self.report = report

    def _prune(self) -> None:
        """Remove the refreshes older than the last ``keep`` started."""
        oldest = self.started - self.keep + 1
        for folder in self.directory.glob("refresh-*"):
            number = folder.name[len("refresh-") :]
            if number.isdigit() and int(number) < oldest:
                shutil.rmtree(folder, ignore_errors=True)

    def _encode(self, encoder: Encoder, n_rows: int, path: Path, what: str) -> None:
        """``encoder`` over ``0..n_rows`` in chunks, into a float16 ``.npy`` at ``path``, as
        the job of :func:`negmine.embed_texts` writes (on every rank of a process group, chunk
        ``i`` on rank ``i % world``; rank 0 renames the file into place once all are done):
        the file made at full size in a hidden partial directory once the first chunk gives
        the width, each chunk written at its rows with ``pwrite`` and synced. Never through a
        writable map: a page the file system cannot back (disk full) would arrive as SIGBUS
        and kill the process instead of raising ``OSError``."""
        if n_rows == 0:
            raise InvalidArgumentError(f"no {what} to encode")

        def produce(pending: Sequence[tuple[int, int]]) -> Iterator[tuple[int, np.ndarray]]:
            with torch.no_grad():
                for start, stop in pending:
                    idx = torch.arange(start, stop, dtype=torch.int64, device=self.encode_device)
                    rows = _rows(encoder(idx), stop - start, what, start)
                    yield start, cast_rows(rows, _FLOAT16, f"encode_{what}'s {what} row", start)

        manifest = {"format": 1, "rows": n_rows, "chunk_size": self.chunk_size, "what": what}
        run_job(
            path,
            manifest,
            rows=n_rows,
            chunk_size=self.chunk_size,
            dtype=_FLOAT16,
            ranks=_ranks.current(),
            produce=produce,
            progress=False,
            description=f"encode {what}",
            unit="row",
        )

    # ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Which refresh is live, which is pending, and the schedule (plus a fingerprint of
        seed, options (by content; a ``rescore`` callable by ``teacher_identity``), positives
        and ``n_clusters``, so that it loads only into the same refresher)."""
        return {
            "format": STATE_FORMAT,
            "live": self.live,
            "started": self.started,
            "epoch": self.epoch,
            "steps": self.steps,
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` (see the class docstring): on a fresh refresher
        only, before the training loop."""
        if not isinstance(state, Mapping):
            raise InvalidTypeError(f"state must be a mapping, got {type(state).__name__}")
        if state.get("format") != STATE_FORMAT:
            raise InvalidArgumentError(
                f"state has format {state.get('format')!r}; this negmine reads {STATE_FORMAT}"
            )
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise InvalidArgumentError(f"state is missing {', '.join(missing)}")
        if callable(self.options.get("rescore")) and self.teacher_identity is None:
            raise InvalidArgumentError(
                "the options hold a rescore callable but no teacher_identity names it, so "
                "this refresher cannot tell whether the state was mined with the same "
                "teacher: pass teacher_identity= (any JSON value naming the teacher, e.g. "
                '{"model": ..., "revision": ...}) to the refresher that saves the state and '
                "to the one that resumes it"
            )
        if state["fingerprint"] != self._fingerprint:
            raise InvalidArgumentError(
                "state is from a refresher with another seed, mining options (compared by "
                "content; a rescore callable by its teacher_identity), positives or "
                "n_clusters; resuming it would serve other negatives"
            )
        if self.started or self._job is not None:
            raise InvalidArgumentError("load_state_dict needs a fresh refresher (none started)")
        live = _numbers.non_negative(state["live"], "live")
        started = _numbers.non_negative(state["started"], "started")
        if started not in (live, live + 1):
            raise InvalidArgumentError(f"state has refresh {started} started but {live} live")
        epoch = None if state["epoch"] is None else _numbers.seed(state["epoch"], "epoch")
        steps = _numbers.non_negative(state["steps"], "steps")
        if live > 0:
            folder = self.refresh_dir(live) / "result"
            if not folder.is_dir():
                raise InvalidArgumentError(
                    f"refresh {live}'s result {folder} is missing: it was removed (keep) or "
                    "the directory is not the one the state was saved with"
                )
            self._apply(live, *self._load(live))
        self.started, self.epoch, self.steps = started, epoch, steps
        if started > live and _rank() == 0:
            self._launch(started)  # the same embeddings, the same seed: the same negatives


def _mining_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` checked to be keyword arguments of :func:`negmine.mine` (the core checks
    the values of those it declares now, the rest are checked at the first mining)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidTypeError(
            f"options must be a mapping of negmine.mine keyword arguments, got "
            f"{type(options).__name__}"
        )
    allowed = [p for p in inspect.signature(mine).parameters if p not in _NOT_PASSED]
    for name in options:
        if name == "seed":
            raise InvalidArgumentError(
                "options must not hold 'seed': pass seed= to the refresher (each refresh mines "
                "with its own seed from it, see mining_seed)"
            )
        if name not in allowed:
            raise InvalidTypeError(
                f"unknown mining option {name!r}; the options are {', '.join(allowed)}"
            )
    MiningOptions(**{k: v for k, v in options.items() if k in OPTIONS})
    return dict(options)


def _teacher_identity(options: Mapping[str, Any], identity: Any) -> Any:
    """``identity`` checked: JSON (it goes into the fingerprint), and only with a ``rescore``
    callable to name."""
    if identity is None:
        if callable(options.get("rescore")):
            log.warning(
                "options hold a rescore callable but no teacher_identity: a state_dict of "
                "this refresher cannot be resumed; pass teacher_identity= naming the teacher"
            )
        return None
    if not callable(options.get("rescore")):
        raise InvalidArgumentError(
            "teacher_identity names the rescore callable of the options, but they hold none"
        )
    try:
        json.dumps(identity, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidTypeError(
            f"teacher_identity must be a JSON value (e.g. a dict of strings), got "
            f"{type(identity).__name__}: {e}"
        ) from None
    return identity


def _fingerprint(
    seed: int,
    options: Mapping[str, Any],
    teacher_identity: Any,
    positives: tuple[np.ndarray, np.ndarray],
    n_clusters: int | None,
) -> str:
    """A digest of what decides the refreshes' negatives besides the embeddings: option
    values by content (:func:`negmine._digest.update_value`, never ``repr``: numpy elides
    long arrays, and a function's repr holds its address), a ``rescore`` callable by
    ``teacher_identity``."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([STATE_FORMAT, seed, n_clusters]).encode())
    for name in sorted(set(options) - {"threads"}):  # threads change no result
        value = options[name]
        update_value(h, name)
        if name == "rescore" and callable(value):
            update_value(h, json.dumps(teacher_identity, sort_keys=True))
            continue
        if isinstance(value, torch.device):
            value = str(value)
        try:
            update_value(h, value)
        except TypeError as e:
            raise InvalidTypeError(
                f"mining option {name!r}: {e}, so a resumed run could not check that it is "
                "the same; pass plain values, arrays or lists"
            ) from None
    for array in positives:
        update_value(h, np.ascontiguousarray(array, dtype="<i8"))
    return h.hexdigest()


_FLOAT16 = np.dtype("<f2")


def _zero_rows(matrix: Embeddings, chunk: int) -> int:
    """How many rows of ``matrix`` are all zero (read ``chunk`` rows at a time)."""
    rows = np.asarray(matrix)
    return sum(
        int(np.count_nonzero(~rows[a : a + chunk].any(axis=1))) for a in range(0, len(rows), chunk)
    )


def _rows(value: Any, expected: int, what: str, start: int) -> np.ndarray:
    """An encoder's output as a float32 ``[expected, d]`` array of finite values."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float32).numpy()
    try:
        rows = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidTypeError(
            f"encode_{what} must return a tensor or array of embeddings, got "
            f"{type(value).__name__}: {e}"
        ) from None
    if rows.ndim != 2 or rows.shape[0] != expected:
        raise InvalidArgumentError(
            f"encode_{what} returned shape {rows.shape} for {expected} rows (expected one "
            "embedding row per index)"
        )
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = start + int(np.flatnonzero(~finite)[0])
        raise InvalidArgumentError(f"encode_{what} returned NaN or Inf for {what} row {bad}")
    return rows


def _problems(report: RefreshReport, n_queries: int, n_corpus: int) -> str:
    """What ``report`` counts that training should not miss, in words ("" if nothing)."""
    parts = []
    zero = [
        f"{count:,} of {total:,} {side} embeddings"
        for count, total, side in (
            (report.zero_query_rows, n_queries, "query"),
            (report.zero_corpus_rows, n_corpus, "corpus"),
        )
        if count
    ]
    if zero:
        parts.append(
            f"{' and '.join(zero)} have zero norm (the encoder returned all-zero rows: a "
            "collapsed model?)"
        )
    if report.empty_queries:
        parts.append(f"{report.empty_queries:,} of {n_queries:,} queries are served no negative")
    return "; ".join(parts)


def _describe(error: BaseException | None) -> str:
    """An error in a line: an ``OSError``'s text (negmine's writers name the file in it),
    else its type and message."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"


def _failure(value: object) -> tuple[int | None, str]:
    """A failure as rank 0 broadcasts it: its errno (``None`` if not an ``OSError``) and
    message."""
    code, message = cast("tuple[int | None, str]", value)
    return code, message


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _broadcast(values: list[object]) -> None:
    """Rank 0's ``values`` on every rank (a barrier too); nothing without a process group."""
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(values, src=0)


__all__ = [
    "Encoder",
    "NegativeRefresher",
    "RefreshReport",
    "SentenceTransformerEncoder",
    "mining_seed",
]
