"""``NegativeRefresher``: hard negatives mined again with the model being trained, swapped into a
live :class:`HardNegativeDataset` (and :class:`ClusterBatchSampler`) at epoch boundaries.

Negatives mined once with the starting model go stale as the model learns (ANCE, STAR). A
refresh encodes queries and corpus with the current model (chunk by chunk, into memory-mapped
float16 files), mines them again with the same options, and serves the new negatives from the
next epoch boundary on; the mining runs in a background thread (the core releases the GIL),
overlapping training.

This module is the refresher's schedule and state (when a refresh starts, when it goes live,
what is abandoned or pruned); one refresh's work (encode, mine, save) is
:mod:`negmine.torch.refresh_step`, and checkpoint and resume :mod:`negmine.torch.refresh_resume`.
Their public names are importable from here too.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
import torch.distributed as dist

from negmine import _numbers, _ranks
from negmine._core import open_embeddings
from negmine.errors import InvalidArgumentError, InvalidTypeError
from negmine.idlists import positives_csr
from negmine.mine import mine
from negmine.result import MiningResult
from negmine.torch.dataset import HardNegativeDataset
from negmine.torch.refresh_resume import (
    STATE_FORMAT,
    checked_teacher_identity,
    fingerprint,
    read_state,
)
from negmine.torch.refresh_step import (
    Encoder,
    Mined,
    MiningJob,
    RefreshReport,
    SentenceTransformerEncoder,
    encode_rows,
    load_mined,
    mining_options,
    mining_seed,
    problems,
    save_mined,
)
from negmine.torch.sampler import ClusterBatchSampler

if TYPE_CHECKING:
    from negmine._inputs import IdsLike

log = logging.getLogger("negmine.refresh")

# A write that fails for want of space (disk full, quota, file size limit) abandons the refresh
# and training goes on with the live negatives; any other error is raised.
_OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


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
        self.options = mining_options(options)
        self.teacher_identity = checked_teacher_identity(self.options, teacher_identity)
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
        self._job: MiningJob | None = None
        self._fingerprint = fingerprint(
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

        def work() -> Mined:
            queries = open_embeddings(folder / "queries.npy")
            corpus = open_embeddings(folder / "corpus.npy")
            result = mine(queries, corpus, self.positives, seed=seed, **self.options)
            return save_mined(
                folder,
                refresh,
                queries,
                corpus,
                result,
                n_clusters=self.n_clusters,
                seed=seed,
                chunk_size=self.chunk_size,
            )

        self._job = MiningJob(refresh, work)
        self._job.start(background=self.overlap)

    def _swap(self, epoch: int) -> None:
        refresh = self.started
        outcome: list[object] = [None]
        mined: Mined | None = None
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
        found = problems(mined[2], self.n_queries, self.n_corpus)
        if found:
            log.warning("refresh %d live from epoch %d, but %s", refresh, epoch, found)
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

    def _load(self, refresh: int) -> Mined:
        return load_mined(self.refresh_dir(refresh), self.n_clusters is not None)

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
        """``encoder`` over ``0..n_rows`` into a float16 ``.npy`` at ``path`` (see
        :func:`~negmine.torch.refresh_step.encode_rows`)."""
        encode_rows(
            encoder, n_rows, path, what, chunk_size=self.chunk_size, device=self.encode_device
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
        saved = read_state(
            state,
            fingerprint=self._fingerprint,
            unnamed_teacher=callable(self.options.get("rescore")) and self.teacher_identity is None,
            fresh=not self.started and self._job is None,
        )
        live, started = saved.live, saved.started
        if live > 0:
            folder = self.refresh_dir(live) / "result"
            if not folder.is_dir():
                raise InvalidArgumentError(
                    f"refresh {live}'s result {folder} is missing: it was removed (keep) or "
                    "the directory is not the one the state was saved with"
                )
            self._apply(live, *self._load(live))
        self.started, self.epoch, self.steps = started, saved.epoch, saved.steps
        if started > live and _rank() == 0:
            self._launch(started)  # the same embeddings, the same seed: the same negatives


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
