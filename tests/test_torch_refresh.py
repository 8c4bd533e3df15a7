"""negmine.torch.NegativeRefresher: negatives mined again with the model being trained, swapped
in at epoch boundaries only; equal to a direct negmine.mine; resumable; DDP; errors."""

from __future__ import annotations

import copy
import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

import negmine  # noqa: E402
from negmine.errors import InvalidArgumentError, InvalidTypeError  # noqa: E402
from negmine.torch import (  # noqa: E402
    ClusterBatchSampler,
    HardNegativeDataset,
    NegativeRefresher,
    RefreshReport,
    SentenceTransformerEncoder,
    mining_seed,
)
from negmine.torch import refresh as refresh_module  # noqa: E402

N_Q, N_C, D, SEED, CLUSTERS = 48, 160, 12, 5, 4
# "random" sampling in a window: the seed stream matters, so a wrong seed would show.
OPTIONS: dict[str, Any] = {
    "num_negatives": 4,
    "sampling_strategy": "random",
    "range_max": 24,
    "relative_margin": 0.05,
    "threads": 1,
}
POSITIVES = [[i, (i + 1) % N_C] if i % 5 == 0 else [i] for i in range(N_Q)]


class Tower(torch.nn.Module):
    """Query and corpus embedding tables: the smallest model whose negatives move as it
    trains."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(SEED)
        self.queries = torch.nn.Parameter(torch.randn(N_Q, D, generator=g))
        self.corpus = torch.nn.Parameter(torch.randn(N_C, D, generator=g))
        self.calls = 0

    def encode_queries(self, idx: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.queries[idx]

    def encode_corpus(self, idx: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.corpus[idx]

    def train_epoch(self, epoch: int) -> None:
        """A seeded stand-in for an epoch of training: the same weights in every run."""
        g = torch.Generator().manual_seed(1000 + epoch)
        with torch.no_grad():
            self.queries.add_(0.7 * torch.randn(N_Q, D, generator=g))
            self.corpus.add_(0.7 * torch.randn(N_C, D, generator=g))


def initial_result() -> negmine.MiningResult:
    model = Tower()
    return negmine.mine(
        model.queries.detach().numpy(),
        model.corpus.detach().numpy(),
        POSITIVES,
        seed=SEED,
        **OPTIONS,
    )


def setup(
    directory: Path,
    *,
    overlap: bool = True,
    clusters: bool = True,
    num_replicas: int | None = 1,
    rank: int | None = 0,
    **kwargs: Any,
) -> tuple[Tower, HardNegativeDataset, ClusterBatchSampler, NegativeRefresher]:
    model = Tower()
    dataset = HardNegativeDataset(initial_result())
    sampler = ClusterBatchSampler(
        np.arange(N_Q) % CLUSTERS, 8, seed=SEED, num_replicas=num_replicas, rank=rank
    )
    refresher = NegativeRefresher(
        dataset,
        encode_queries=model.encode_queries,
        encode_corpus=model.encode_corpus,
        n_queries=N_Q,
        n_corpus=N_C,
        positives=POSITIVES,
        directory=directory,
        options=OPTIONS,
        sampler=sampler,
        n_clusters=CLUSTERS if clusters else None,
        seed=SEED,
        chunk_size=20,  # several chunks, the last one short
        overlap=overlap,
        **kwargs,
    )
    return model, dataset, sampler, refresher


def train(
    model: Tower,
    dataset: HardNegativeDataset,
    sampler: ClusterBatchSampler,
    refresher: NegativeRefresher,
    epochs: range,
    *,
    stop_after: int | None = None,
) -> list[dict[str, Any]]:
    """The training loop: per epoch, the live refresh, its negatives and clusters, and the
    batches' rows and negatives. ``stop_after`` batches into the last epoch: stop there (a
    crash)."""
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=list)
    log = []
    for epoch in epochs:
        refresher.set_epoch(epoch)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        record: dict[str, Any] = {
            "epoch": epoch,
            "live": refresher.live,
            "negatives": dataset.negative_ids.copy(),
            "clusters": sampler.clusters.copy(),
            "batches": [],
        }
        log.append(record)
        for items in loader:
            record["batches"].append(
                ([it["query"] for it in items], np.stack([it["negatives"] for it in items]))
            )
            if epoch == epochs[-1] and len(record["batches"]) == stop_after:
                return log
        model.train_epoch(epoch)
    return log


def expected(directory: Path, refresh: int) -> tuple[negmine.MiningResult, np.ndarray]:
    """A direct negmine.mine (and kmeans) on refresh ``refresh``'s embedding files."""
    folder = directory / f"refresh-{refresh:06d}"
    queries = negmine.open_embeddings(folder / "queries.npy")
    corpus = negmine.open_embeddings(folder / "corpus.npy")
    seed = mining_seed(SEED, refresh)
    result = negmine.mine(queries, corpus, POSITIVES, seed=seed, **OPTIONS)
    _, clusters, _ = negmine.kmeans(queries, CLUSTERS, seed=seed)
    return result, clusters


# --- the refresh itself -------------------------------------------------------------------------


def test_refresh_equals_direct_mine_on_reencoded_embeddings(tmp_path: Path) -> None:
    model, dataset, sampler, refresher = setup(tmp_path, overlap=False, keep=5)
    swaps: list[tuple[int, int]] = []
    refresher.on_swap = lambda r, e: swaps.append((r, e))
    log = train(model, dataset, sampler, refresher, range(3))
    assert [rec["live"] for rec in log] == [0, 1, 2]
    assert swaps == [(1, 1), (2, 2)]
    assert refresher.pending is None
    empty = int((log[2]["negatives"] < 0).all(axis=1).sum())
    assert refresher.report == RefreshReport(2, 0, 0, empty)
    model_now = Tower()  # replays the training: the weights refresh r was encoded with
    for refresh in (1, 2):
        model_now.train_epoch(refresh - 1)
        folder = tmp_path / f"refresh-{refresh:06d}"
        q_file = negmine.open_embeddings(folder / "queries.npy")
        assert q_file.dtype == np.float16 and q_file.mapped
        np.testing.assert_array_equal(
            np.asarray(q_file), model_now.queries.detach().numpy().astype(np.float16)
        )
        np.testing.assert_array_equal(
            np.asarray(negmine.open_embeddings(folder / "corpus.npy")),
            model_now.corpus.detach().numpy().astype(np.float16),
        )
        direct, clusters = expected(tmp_path, refresh)
        np.testing.assert_array_equal(log[refresh]["negatives"], direct.negative_ids)
        np.testing.assert_array_equal(log[refresh]["clusters"], clusters)
        saved = negmine.MiningResult.load(folder / "result")
        for name, array in direct.arrays().items():
            np.testing.assert_array_equal(saved.arrays()[name], array, err_msg=name)
        for _, negatives in log[refresh]["batches"]:
            assert negatives.shape[1] == OPTIONS["num_negatives"]
    # The negatives moved with the model, and each refresh had its own seed.
    assert not np.array_equal(log[0]["negatives"], log[1]["negatives"])
    assert not np.array_equal(log[1]["negatives"], log[2]["negatives"])
    assert len({mining_seed(SEED, r) for r in range(4)}) == 4
    assert not list(tmp_path.glob("**/.*.tmp"))  # no temp file left


def test_no_batch_mixes_generations(tmp_path: Path) -> None:
    """Mining that finishes mid-epoch (here: forced to) is served from the next boundary only;
    every batch of an epoch holds the negatives that were live when it started."""
    model, dataset, sampler, refresher = setup(tmp_path, overlap=True, every=1)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=list)
    seen_live = []
    for epoch in range(4):
        refresher.set_epoch(epoch)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        live, negatives = refresher.live, dataset.negative_ids.copy()
        seen_live.append(live)
        for b, items in enumerate(loader):
            if b == 1 and refresher.pending is not None:
                refresher.close()  # the background mining is done, mid-epoch
                assert refresher.live == live
            for it in items:
                np.testing.assert_array_equal(it["negatives"], negatives[it["query"]])
        model.train_epoch(epoch)
    # Started at the boundary of epoch e, live at e + 1 (one epoch stale, as documented).
    assert seen_live == [0, 0, 1, 2]
    assert dataset.generation == 2


def test_refresh_now_and_step_schedule(tmp_path: Path) -> None:
    model, dataset, sampler, refresher = setup(tmp_path, unit="step", every=7)
    per_epoch = len(sampler)  # 6 batches: a refresh is due after every second epoch
    assert per_epoch == 6
    lives = []
    for epoch in range(5):
        refresher.set_epoch(epoch)
        lives.append((refresher.live, refresher.pending))
        sampler.set_epoch(epoch)
        for _ in sampler:
            refresher.step()
        model.train_epoch(epoch)
    assert lives == [(0, None), (0, None), (0, 1), (1, None), (1, 2)]
    with pytest.raises(InvalidArgumentError, match="refresh 2 is still pending"):
        refresher.refresh_now()
    refresher.set_epoch(5)
    assert refresher.live == 2
    assert refresher.refresh_now() == 3  # mid-epoch, by hand: live at the next boundary
    assert refresher.live == 2
    refresher.set_epoch(6)
    assert refresher.live == 3
    direct, _ = expected(tmp_path, 3)
    np.testing.assert_array_equal(dataset.negative_ids, direct.negative_ids)
    # keep=2: the oldest refreshes are gone from disk.
    assert sorted(p.name for p in tmp_path.glob("refresh-*")) == [
        "refresh-000002",
        "refresh-000003",
    ]


def test_resume_reproduces_the_negatives(tmp_path: Path) -> None:
    whole = train(*setup(tmp_path / "a"), range(5))
    assert [rec["live"] for rec in whole] == [0, 0, 1, 2, 3]

    # The same run, killed in the middle of epoch 2 (refresh 2 being mined) and resumed.
    model, dataset, sampler, refresher = setup(tmp_path / "b")
    first = train(model, dataset, sampler, refresher, range(3), stop_after=3)
    checkpoint = copy.deepcopy(
        {
            "model": model.state_dict(),
            "refresher": refresher.state_dict(),
            "sampler": sampler.state_dict(),
        }
    )
    assert checkpoint["refresher"]["live"] == 1 and checkpoint["refresher"]["started"] == 2
    refresher.close()

    model, dataset, sampler, refresher = setup(tmp_path / "b")
    model.load_state_dict(checkpoint["model"])
    refresher.load_state_dict(checkpoint["refresher"])  # before the sampler's: clusters
    sampler.load_state_dict(checkpoint["sampler"])
    assert refresher.live == 1 and refresher.pending == 2
    rest = train(model, dataset, sampler, refresher, range(2, 5))

    joined = {**first[2], "batches": first[2]["batches"] + rest[0]["batches"]}
    resumed = [*first[:2], joined, *rest[1:]]
    for a, b in zip(whole, resumed):
        assert a["live"] == b["live"]
        np.testing.assert_array_equal(a["negatives"], b["negatives"])
        np.testing.assert_array_equal(a["clusters"], b["clusters"])
        assert len(a["batches"]) == len(b["batches"])
        for (qa, na), (qb, nb) in zip(a["batches"], b["batches"]):
            assert qa == qb
            np.testing.assert_array_equal(na, nb)

    # A state from another configuration, or whose refreshes are gone, is refused.
    _, _, _, other = setup(tmp_path / "b", clusters=False)
    with pytest.raises(InvalidArgumentError, match="another seed, mining options"):
        other.load_state_dict(checkpoint["refresher"])
    _, _, _, elsewhere = setup(tmp_path / "c")
    with pytest.raises(InvalidArgumentError, match=r"refresh 1's result .* is missing"):
        elsewhere.load_state_dict(checkpoint["refresher"])


# --- resume: the fingerprint compares options by content ------------------------------------------


def refresher_with(directory: Path, options: dict[str, Any], **kwargs: Any) -> NegativeRefresher:
    model = Tower()
    return NegativeRefresher(
        HardNegativeDataset(initial_result()),
        encode_queries=model.encode_queries,
        encode_corpus=model.encode_corpus,
        n_queries=N_Q,
        n_corpus=N_C,
        positives=POSITIVES,
        directory=directory,
        options={**OPTIONS, **options},
        seed=SEED,
        **kwargs,
    )


def test_resume_sees_a_change_inside_a_long_exclude_array(tmp_path: Path) -> None:
    """numpy's repr elides arrays of more than 1,000 elements: a change in the middle of
    one must still refuse the state (stale negatives would be served otherwise)."""
    indptr = np.arange(N_Q + 1, dtype=np.int64) * 25  # 1,200 excluded ids
    ids = (np.arange(N_Q * 25, dtype=np.int64) * 7) % N_C
    saved = refresher_with(tmp_path, {"exclude": negmine.Csr(indptr, ids)}).state_dict()
    same = refresher_with(tmp_path, {"exclude": negmine.Csr(indptr.copy(), ids.copy())})
    same.load_state_dict(saved)
    changed = ids.copy()
    changed[600] = (changed[600] + 1) % N_C
    assert repr(changed) == repr(ids)  # what the old fingerprint compared
    other = refresher_with(tmp_path, {"exclude": negmine.Csr(indptr, changed)})
    with pytest.raises(InvalidArgumentError, match="another seed, mining options"):
        other.load_state_dict(saved)


def _teacher(queries: np.ndarray, corpus: np.ndarray) -> np.ndarray:
    return np.zeros(len(queries), dtype=np.float32)


def test_resume_names_a_rescore_callable_by_teacher_identity(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    identity = {"model": "cross-encoder/ms-marco", "revision": "abc"}
    # Another function object (as in a new process, where its repr holds another address)
    # under the same identity resumes.
    saved = refresher_with(
        tmp_path, {"rescore": lambda q, c: _teacher(q, c)}, teacher_identity=identity
    ).state_dict()
    refresher_with(
        tmp_path, {"rescore": _teacher}, teacher_identity=dict(identity)
    ).load_state_dict(saved)
    other = refresher_with(
        tmp_path, {"rescore": _teacher}, teacher_identity={**identity, "revision": "def"}
    )
    with pytest.raises(InvalidArgumentError, match="rescore callable by its teacher_identity"):
        other.load_state_dict(saved)
    # Without an identity: said at construction, and the resume says what to pass.
    with caplog.at_level("WARNING", logger="negmine.refresh"):
        unnamed = refresher_with(tmp_path, {"rescore": _teacher})
    assert "pass teacher_identity=" in caplog.text
    with pytest.raises(InvalidArgumentError, match=r"pass teacher_identity= \(any JSON value"):
        unnamed.load_state_dict(unnamed.state_dict())
    with pytest.raises(InvalidArgumentError, match="but they hold none"):
        refresher_with(tmp_path, {}, teacher_identity=identity)
    with pytest.raises(InvalidTypeError, match="teacher_identity must be a JSON value"):
        refresher_with(tmp_path, {"rescore": _teacher}, teacher_identity={"model": object()})
    with pytest.raises(InvalidTypeError, match="mining option 'device': cannot digest"):
        refresher_with(tmp_path, {"device": object()})


# --- float16: refused where it would change a row; zero rows and empty queries counted -----------


def test_rows_float16_would_flush_to_zero_are_refused(tmp_path: Path) -> None:
    model, dataset, _, refresher = setup(tmp_path, clusters=False)
    for scale, change in ((1e-9, "100%"), (1e-6, r"\d+%")):
        refresher.encode_corpus = lambda idx, s=scale: model.corpus[idx] * s
        with pytest.raises(
            InvalidArgumentError,
            match=rf"encode_corpus's corpus row 0 has norm .* too small for float16: the cast "
            rf"would change it by {change}",
        ):
            refresher.refresh_now()
    assert refresher.live == 0 and refresher.pending is None and dataset.generation == 0
    assert not list(tmp_path.iterdir())  # the refresh's folder went with it
    # Normal-range rows lose nothing measurable and pass.
    refresher.encode_corpus = lambda idx: model.corpus[idx] * 1e-3
    assert refresher.refresh_now() == 1


def test_collapsed_encoder_is_counted_and_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An encoder that returns zero rows (collapsed): every corpus row is then a duplicate
    of every positive, so no query is served a negative. Said loudly, and counted."""
    model, dataset, sampler, refresher = setup(tmp_path, overlap=False, clusters=False)
    refresher.encode_queries = lambda idx: torch.zeros(len(idx), D)
    refresher.encode_corpus = lambda idx: torch.zeros(len(idx), D)
    with caplog.at_level("INFO", logger="negmine.refresh"):
        train(model, dataset, sampler, refresher, range(2))
    assert refresher.live == 1 and (dataset.negative_ids < 0).all()
    report = refresher.report
    assert report == RefreshReport(1, N_Q, N_C, N_Q)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"refresh 1 live from epoch 1, but {N_Q} of {N_Q} query embeddings and {N_C} of "
        f"{N_C} corpus embeddings have zero norm (the encoder returned all-zero rows: a "
        f"collapsed model?); {N_Q} of {N_Q} queries are served no negative"
    ]
    # The report is saved with the refresh: a resumed refresher has it too.
    _, _, _, resumed = setup(tmp_path, overlap=False, clusters=False)
    resumed.load_state_dict(refresher.state_dict())
    assert resumed.report == report


# --- out of space: the refresh is abandoned, training goes on ----------------------------------

_FULL_DISK_WORKER = """
import json, logging, os, resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import numpy as np
import torch
import negmine
from negmine.torch import HardNegativeDataset, NegativeRefresher
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
directory, limit = Path(sys.argv[2]), int(sys.argv[3])
n_q, n_c, d = 48, int(sys.argv[4]), 64
g = torch.Generator().manual_seed(0)
queries, corpus = torch.randn(n_q, d, generator=g), torch.randn(n_c, d, generator=g)
positives = [[i] for i in range(n_q)]
initial = negmine.mine(queries.numpy(), corpus.numpy(), positives, num_negatives=4, threads=1)
dataset = HardNegativeDataset(initial)
refresher = NegativeRefresher(
    dataset, encode_queries=lambda i: queries[i], encode_corpus=lambda i: corpus[i],
    n_queries=n_q, n_corpus=n_c, positives=positives, directory=directory,
    options={"num_negatives": 4, "threads": 1}, overlap=False, chunk_size=500,
)
if limit:  # a file size limit: write() past it fails with EFBIG once SIGXFSZ is ignored
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
log = []
for epoch in range(3):
    if limit and epoch == 2:  # space again: the next due refresh goes live
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    refresher.set_epoch(epoch)
    dataset.set_epoch(epoch)
    log.append({
        "live": refresher.live,
        "initial": bool(np.array_equal(dataset.negative_ids, initial.negative_ids)),
        "served": [dataset[i]["negatives"].tolist() for i in range(n_q)],
        "files": sorted(str(p.relative_to(directory)) for p in directory.rglob("*")),
    })
print(json.dumps(log))
"""


def run_full_disk_worker(directory: Path, limit: int, n_corpus: int) -> tuple[list[Any], str]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _FULL_DISK_WORKER,
            str(Path(__file__).parent),
            str(directory),
            str(limit),
            str(n_corpus),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    return json.loads(done.stdout), done.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_file_size_limit_abandons_the_refresh_and_training_goes_on(tmp_path: Path) -> None:
    # queries.npy (48 x 64 float16: 6,272 bytes) fits under the limit, corpus.npy does not.
    log, stderr = run_full_disk_worker(tmp_path / "r", 20_000, 400)
    assert [e["live"] for e in log] == [0, 0, 1]
    # The failed refresh left nothing (no temp file, no folder) and the initial negatives
    # were served on.
    assert log[1]["initial"] and log[1]["files"] == []
    assert "refresh 1 abandoned: could not be written: File too large (writing" in stderr
    assert "corpus.npy" in stderr and "training goes on with the negatives of refresh 0" in stderr
    assert "refresh-000001/result" in log[2]["files"]
    assert not any(".tmp" in f for f in log[2]["files"])


@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs")
def test_full_disk_abandons_the_refresh_instead_of_sigbus(tmp_path: Path) -> None:
    """A real full file system (a 256 KiB tmpfs; mounting needs root, else skipped): the
    corpus file (4,000 x 64 float16, 512 KB) does not fit. Through a writable map the
    process died of SIGBUS here."""
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        log, stderr = run_full_disk_worker(mount / "r", 0, 4000)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert [e["live"] for e in log] == [0, 0, 0]
    assert all(e["initial"] and e["files"] == [] for e in log)
    assert stderr.count("No space left on device") == 2  # epochs 1 and 2, each abandoned
    assert "training goes on with the negatives of refresh 0" in stderr


def test_out_of_space_while_saving_the_result_abandons_the_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model, dataset, sampler, refresher = setup(tmp_path)
    real_save = negmine.MiningResult.save

    def full(self: negmine.MiningResult, path: Any) -> None:
        raise OSError(errno.ENOSPC, f"No space left on device (writing {path})", str(path))

    monkeypatch.setattr(negmine.MiningResult, "save", full)
    with caplog.at_level("WARNING", logger="negmine.refresh"):
        log = train(model, dataset, sampler, refresher, range(3))
    # Refresh 1 (started at epoch 1) failed in the background; at epoch 2 it is abandoned
    # and started again under the same number (due), which fails again.
    assert [rec["live"] for rec in log] == [0, 0, 0]
    abandoned = "refresh 1 abandoned: could not be written: No space left on device (writing"
    assert abandoned in caplog.text
    np.testing.assert_array_equal(log[2]["negatives"], log[0]["negatives"])
    refresher.close()  # refresh 1's second try has failed too
    monkeypatch.setattr(negmine.MiningResult, "save", real_save)
    refresher.set_epoch(3)  # the pending one failed too: abandoned, and a new one starts
    assert refresher.live == 0 and refresher.pending == 1
    refresher.set_epoch(4)
    assert refresher.live == 1
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_other_os_errors_are_still_raised(tmp_path: Path) -> None:
    _, _, _, refresher = setup(tmp_path, clusters=False)

    def denied(idx: torch.Tensor) -> torch.Tensor:
        raise PermissionError(errno.EACCES, "Permission denied")

    refresher.encode_corpus = denied
    with pytest.raises(PermissionError) as info:
        refresher.set_epoch(1)
    assert str(info.value) == "[Errno 13] Permission denied"  # the encoder's, not a write's
    assert refresher.started == 0 and not list(tmp_path.iterdir())


# --- errors -------------------------------------------------------------------------------------


def test_background_error_surfaces_at_the_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, dataset, sampler, refresher = setup(tmp_path)
    real_mine = refresh_module.mine

    def failing(*args: Any, **kwargs: Any) -> negmine.MiningResult:
        if kwargs["seed"] == mining_seed(SEED, 2):
            raise MemoryError("boom")
        return real_mine(*args, **kwargs)

    monkeypatch.setattr(refresh_module, "mine", failing)
    train(model, dataset, sampler, refresher, range(3))  # refresh 2 fails in the background
    assert refresher.live == 1
    with pytest.raises(RuntimeError, match=r"refresh 2 failed .*MemoryError: boom") as info:
        refresher.set_epoch(3)
    assert isinstance(info.value.__cause__, MemoryError)
    assert refresher.live == 1 and dataset.generation == 1  # nothing half swapped
    # Retrying the boundary starts refresh 2 anew (mining works again), never a silent no-op.
    monkeypatch.setattr(refresh_module, "mine", real_mine)
    refresher.set_epoch(3)
    assert refresher.live == 1 and refresher.pending == 2
    refresher.set_epoch(4)
    assert refresher.live == 2
    direct, _ = expected(tmp_path, 2)
    np.testing.assert_array_equal(dataset.negative_ids, direct.negative_ids)


def test_encoder_errors(tmp_path: Path) -> None:
    _, dataset, _, refresher = setup(tmp_path, clusters=False)
    refresher.encode_corpus = lambda idx: torch.full((len(idx), D), float("nan"))
    with pytest.raises(InvalidArgumentError, match="encode_corpus returned NaN or Inf for corpus"):
        refresher.refresh_now()
    refresher.encode_corpus = lambda idx: np.zeros((len(idx) + 1, D), np.float32)
    with pytest.raises(InvalidArgumentError, match=r"returned shape \(21, 12\) for 20 rows"):
        refresher.refresh_now()
    refresher.encode_corpus = lambda idx: np.full((len(idx), D), 1e6, np.float32)
    with pytest.raises(InvalidArgumentError, match="does not fit float16"):
        refresher.refresh_now()
    refresher.encode_corpus = lambda idx: "embeddings"
    with pytest.raises(InvalidTypeError, match="must return a tensor or array"):
        refresher.refresh_now()
    assert refresher.live == 0 and dataset.generation == 0
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_bad_arguments(tmp_path: Path) -> None:
    model, dataset, _, _ = setup(tmp_path)
    base: dict[str, Any] = {
        "encode_queries": model.encode_queries,
        "encode_corpus": model.encode_corpus,
        "n_queries": N_Q,
        "n_corpus": N_C,
        "positives": POSITIVES,
        "directory": tmp_path,
    }
    type_errors = [
        ({"encode_queries": None}, "encode_queries must be a callable"),
        ({"options": [("num_negatives", 3)]}, "options must be a mapping"),
        ({"options": {"num_negative": 3}}, "unknown mining option 'num_negative'"),
        ({"sampler": [0, 1]}, "sampler must be a ClusterBatchSampler"),
        ({"every": 1.5}, "every must be an integer"),
        ({"seed": "1"}, "seed must be an integer"),
    ]
    for change, message in type_errors:
        with pytest.raises(InvalidTypeError, match=message):
            NegativeRefresher(dataset, **{**base, **change})
    with pytest.raises(InvalidTypeError, match="dataset must be a HardNegativeDataset"):
        NegativeRefresher(object(), **base)  # type: ignore[arg-type]
    value_errors = [
        ({"every": 0}, "every must be"),
        ({"unit": "batch"}, "unit must be"),
        ({"options": {"seed": 3}}, "options must not hold 'seed'"),
        ({"options": {"num_negatives": 0}}, "num_negatives"),
        ({"n_clusters": 3}, "n_clusters needs a sampler"),
        ({"n_queries": N_Q + 1}, "n_queries is 49 but the dataset serves 48"),
        ({"keep": 1}, "keep must be at least 2 with overlap=True"),
        ({"encode_device": "nonsense"}, "encode_device 'nonsense' is not a device"),
        ({"positives": [[N_C]] * N_Q}, "out of range"),
    ]
    for change, message in value_errors:
        with pytest.raises(InvalidArgumentError, match=message):
            NegativeRefresher(dataset, **{**base, **change})
    refresher = NegativeRefresher(dataset, **base)
    with pytest.raises(InvalidTypeError, match="state must be a mapping"):
        refresher.load_state_dict([])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="is missing live"):
        refresher.load_state_dict({"format": refresh_module.STATE_FORMAT})
    # A result for another dataset is refused by the dataset, which keeps serving its own.
    small = negmine.mine(np.eye(3, D, dtype=np.float32), np.eye(5, D, dtype=np.float32), [[0]] * 3)
    with pytest.raises(InvalidArgumentError, match="result has 3 queries; this dataset serves 48"):
        dataset.set_result(small)
    assert dataset.generation == 0


def test_sentence_transformer_encoder() -> None:
    class FakeModel:
        def __init__(self) -> None:
            self.calls: list[tuple[list[str], dict[str, Any]]] = []

        def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
            self.calls.append((texts, kwargs))
            return np.array([[len(t), 1.0] for t in texts], dtype=np.float64)

    fake = FakeModel()
    encoder = SentenceTransformerEncoder(fake, ["a", "bb", "ccc"], prompt="query: ", device="cpu")
    out = encoder(torch.tensor([2, 0]))
    assert out.dtype == np.float32 and out.tolist() == [[3.0, 1.0], [1.0, 1.0]]
    texts, kwargs = fake.calls[0]
    assert texts == ["ccc", "a"]
    assert kwargs["prompt"] == "query: " and kwargs["device"] == "cpu"
    assert kwargs["normalize_embeddings"] is True and kwargs["show_progress_bar"] is False
    with pytest.raises(InvalidTypeError, match="encode"):
        SentenceTransformerEncoder(object(), ["a"])
    with pytest.raises(InvalidTypeError, match="not a single string"):
        SentenceTransformerEncoder(fake, "abc")


# --- torch.distributed (gloo, 2 processes) ------------------------------------------------------

_DDP_WORKER = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
import numpy as np
import torch.distributed as dist
import test_torch_refresh as t
rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + store, world_size=2, rank=rank)
model, dataset, sampler, refresher = t.setup(Path(sys.argv[5]), num_replicas=None, rank=None)
log = t.train(model, dataset, sampler, refresher, range(4))
dist.barrier()
dist.destroy_process_group()
with open(out, "w") as f:
    json.dump({
        "calls": model.calls,
        "live": [r["live"] for r in log],
        "negatives": [r["negatives"].tolist() for r in log],
        "clusters": [r["clusters"].tolist() for r in log],
        "batches": [[q for q, _ in r["batches"]] for r in log],
        "len": len(sampler),
    }, f)
"""


@pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform != "linux", reason="needs gloo"
)
def test_distributed_all_ranks_encode_rank0_mines_all_ranks_swap(tmp_path: Path) -> None:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    shared = tmp_path / "shared"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _DDP_WORKER,
                str(r),
                str(tmp_path / "store"),
                str(tmp_path / f"{r}.json"),
                str(Path(__file__).parent),
                str(shared),
            ],
            env=env,
        )
        for r in range(2)
    ]
    try:
        codes = [p.wait(timeout=120) for p in procs]
    finally:  # a rank that failed leaves the other waiting on it: never leave it running
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0, 0]
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    single = train(*setup(tmp_path / "single"), range(4))
    # Every rank encodes its share of the chunks of 20 rows, chunk i on rank i % 2: of the
    # queries' 3 chunks and the corpus' 8, 2 + 4 on rank 0 and 1 + 4 on rank 1, in each of
    # the 3 refreshes. The negatives equal one process' (below): so do the files.
    assert [res["calls"] for res in ranks] == [3 * 6, 3 * 5]
    for res in ranks:
        assert res["live"] == [0, 0, 1, 2]
        for epoch, rec in enumerate(single):
            np.testing.assert_array_equal(res["negatives"][epoch], rec["negatives"])
            np.testing.assert_array_equal(res["clusters"][epoch], rec["clusters"])
    # Equal batch counts per rank in every epoch, and together the ranks cover the plan.
    for epoch in range(4):
        counts = [len(res["batches"][epoch]) for res in ranks]
        assert counts[0] == counts[1] == ranks[0]["len"]
        rows = sorted(q for res in ranks for batch in res["batches"][epoch] for q in batch)
        assert set(rows) == set(range(N_Q))
