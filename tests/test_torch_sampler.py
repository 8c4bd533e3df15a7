"""negmine.torch.ClusterBatchSampler: DDP sharding, determinism, resume, DataLoader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, Dataset  # noqa: E402

from negmine import batches  # noqa: E402
from negmine.torch import ClusterBatchSampler  # noqa: E402

PLANS = ("topic", "ngame")


def clusters_for(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, max(1, n // 25), size=n).astype(np.int64)


def plan_of(
    clusters: np.ndarray, batch_size: int, plan: str, seed: int, epoch: int, drop_last: bool
) -> batches.BatchPlan:
    if plan == "topic":
        return batches.topic(clusters, batch_size, seed=seed, epoch=epoch, drop_last=drop_last)
    return batches.ngame(clusters, batch_size, seed=seed, epoch=epoch, drop_last=drop_last)


def rank_batches(
    clusters: np.ndarray,
    batch_size: int,
    ws: int,
    *,
    plan: str = "topic",
    drop_last: bool = False,
    seed: int = 0,
    epoch: int = 0,
) -> list[list[list[int]]]:
    out = []
    for rank in range(ws):
        s = ClusterBatchSampler(
            clusters,
            batch_size,
            plan=plan,  # type: ignore[arg-type]
            seed=seed,
            drop_last=drop_last,
            num_replicas=ws,
            rank=rank,
        )
        s.set_epoch(epoch)
        got = list(s)
        assert len(s) == len(got)
        out.append(got)
    return out


# --- sharding (reliability 16) ----------------------------------------------------------------


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("ws", range(1, 9))
def test_ranks_cover_and_have_equal_lengths(plan: str, drop_last: bool, ws: int) -> None:
    batch_size = 4
    for n in sorted({0, 1, max(ws - 1, 0), ws, ws + 1, 10_000}):
        clusters = clusters_for(n, seed=n)
        per_rank = rank_batches(clusters, batch_size, ws, plan=plan, drop_last=drop_last, epoch=3)
        lengths = {len(r) for r in per_rank}
        assert len(lengths) == 1, (n, lengths)
        full = plan_of(clusters, batch_size, plan, 0, 3, drop_last)
        n_plan = len(full)
        count = lengths.pop()
        assert count == (n_plan // ws if drop_last else -(-n_plan // ws))
        # Batch k of rank r is plan batch (r + k * ws) mod len(plan).
        for r, got in enumerate(per_rank):
            for k, batch in enumerate(got):
                assert batch == full[(r + k * ws) % n_plan].tolist()
                assert 0 < len(batch) <= batch_size
                if drop_last:
                    assert len(batch) == batch_size
        seen = Counter(i for got in per_rank for batch in got for i in batch)
        if drop_last:
            kept = [i for b in full[: (n_plan // ws) * ws] for i in b.tolist()]
            assert seen == Counter(kept)  # exactly the plan minus its dropped tail, once each
            assert len(kept) == len(set(kept))
        else:
            assert set(seen) == set(range(n))
            # Only padding batches (from the plan's start) repeat.
            assert sum(seen.values()) - n == sum(
                len(full[p % n_plan]) for p in range(n_plan, count * ws)
            )


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 300),
    ws=st.integers(1, 8),
    batch_size=st.integers(1, 17),
    drop_last=st.booleans(),
    plan=st.sampled_from(PLANS),
    seed=st.integers(0, 2**64 - 1),
)
def test_sharding_property(
    n: int, ws: int, batch_size: int, drop_last: bool, plan: str, seed: int
) -> None:
    clusters = clusters_for(n, seed=n)
    per_rank = rank_batches(clusters, batch_size, ws, plan=plan, drop_last=drop_last, seed=seed)
    assert len({len(r) for r in per_rank}) == 1
    full = plan_of(clusters, batch_size, plan, seed, 0, drop_last)
    seen = [i for got in per_rank for b in got for i in b]
    if drop_last:
        kept = [i for b in full[: (len(full) // ws) * ws] for i in b.tolist()]
        assert sorted(seen) == sorted(kept)
    else:
        assert set(seen) == set(range(n))


def test_len_without_building_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("plan built by __len__")

    s = ClusterBatchSampler(clusters_for(1000), 7, num_replicas=3, rank=2)
    monkeypatch.setattr(batches, "topic", boom)
    assert len(s) == -(-batches.topic_count(clusters_for(1000), 7) // 3)


def test_clusters_per_batch_and_conflicts() -> None:
    clusters = clusters_for(500)
    keys = [[i // 2] for i in range(500)]  # rows 2k, 2k+1 conflict
    s = ClusterBatchSampler(clusters, 8, clusters_per_batch=2, conflicts=keys, drop_last=True)
    got = list(s)
    assert len(got) == len(s) > 0
    for b in got:
        assert len(b) == 8
        assert len({i // 2 for i in b}) == len(b)


# --- determinism (reliability 17) ------------------------------------------------------------


def test_same_seed_epoch_same_batches_new_epoch_new_order() -> None:
    clusters = clusters_for(2000)
    a = ClusterBatchSampler(clusters, 16, seed=5, num_replicas=2, rank=1)
    b = ClusterBatchSampler(clusters, 16, seed=5, num_replicas=2, rank=1)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again without set_epoch repeats the epoch
    epoch4 = list(a)
    a.set_epoch(5)
    assert list(a) != epoch4
    other = ClusterBatchSampler(clusters, 16, seed=6, num_replicas=2, rank=1)
    other.set_epoch(4)
    assert list(other) != epoch4
    # seed and epoch are hashed, not added
    x = ClusterBatchSampler(clusters, 16, seed=1)
    y = ClusterBatchSampler(clusters, 16, seed=0)
    y.set_epoch(1)
    assert list(x) != list(y)


def test_no_set_epoch_repeats() -> None:
    s = ClusterBatchSampler(clusters_for(300), 8, plan="ngame", seed=3)
    assert list(s) == list(s)


@pytest.mark.parametrize("plan", PLANS)
def test_same_batches_in_subprocess(plan: str) -> None:
    clusters = clusters_for(800)
    s = ClusterBatchSampler(clusters, 9, plan=plan, seed=11, num_replicas=3, rank=2)  # type: ignore[arg-type]
    s.set_epoch(2)
    code = (
        "import json, sys, numpy as np\n"
        "from negmine.torch import ClusterBatchSampler\n"
        "c = np.array(json.loads(sys.stdin.read()), dtype=np.int64)\n"
        f"s = ClusterBatchSampler(c, 9, plan={plan!r}, seed=11, num_replicas=3, rank=2)\n"
        "s.set_epoch(2)\n"
        "print(json.dumps(list(s)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(clusters.tolist()),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout) == list(s)


# --- resume (reliability 18) ------------------------------------------------------------------


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_exact_remainder(plan: str, drop_last: bool) -> None:
    clusters = clusters_for(1000)
    kw: dict[str, Any] = dict(plan=plan, seed=7, drop_last=drop_last, num_replicas=3, rank=1)
    ref = ClusterBatchSampler(clusters, 10, **kw)
    ref.set_epoch(2)
    whole = list(ref)
    ref.set_epoch(3)
    next_epoch = list(ref)
    for t in sorted({0, 1, 2, len(whole) // 2, len(whole) - 1, len(whole)}):
        s = ClusterBatchSampler(clusters, 10, **kw)
        s.set_epoch(2)
        it = iter(s)
        head = [next(it) for _ in range(t)]
        state = s.state_dict()
        assert state["yielded"] == t and state["epoch"] == 2
        fresh = ClusterBatchSampler(clusters, 10, **kw)
        fresh.load_state_dict(state)
        assert len(fresh) == len(whole) - t
        fresh.set_epoch(2)  # setting the same epoch keeps the resume point
        rest = list(fresh)
        assert head + rest == whole
        assert fresh.state_dict()["yielded"] == len(whole)
        fresh.set_epoch(3)
        assert len(fresh) == len(whole)
        assert list(fresh) == next_epoch


def test_an_earlier_epoch_replays_it_with_a_warning() -> None:
    # set_epoch(3), (2), (0) went by silently; DistributedSampler takes any epoch, and a
    # rollback to an earlier checkpoint replays one, so it is a warning, not an error.
    clusters = clusters_for(300)
    s = ClusterBatchSampler(clusters, 10, seed=3)
    orders = {}
    for epoch in (0, 2, 3):
        s.set_epoch(epoch)
        orders[epoch] = list(s)
    for epoch in (2, 0):
        with pytest.warns(
            UserWarning, match=rf"set_epoch\({epoch}\) after epoch \d: epoch {epoch}'s"
        ):
            s.set_epoch(epoch)
        assert list(s) == orders[epoch]
    s.set_epoch(0)  # the same epoch again: no warning (pytest turns warnings into errors)
    s.set_epoch(3)

    # Going back from a loaded resume point says that the resume point is dropped.
    it = iter(s)
    head = [next(it) for _ in range(4)]
    fresh = ClusterBatchSampler(clusters, 10, seed=3)
    fresh.load_state_dict(s.state_dict())
    with pytest.warns(UserWarning, match=r"resume point loaded for epoch 3 \(4 batches"):
        fresh.set_epoch(0)
    assert list(fresh) == orders[0] and head == orders[3][:4]


def test_state_dict_contents_and_other_rank() -> None:
    clusters = clusters_for(400)
    s = ClusterBatchSampler(clusters, 8, num_replicas=2, rank=0, seed=9)
    it = iter(s)
    next(it)
    state = s.state_dict()
    for key in ("seed", "epoch", "num_replicas", "dataset_len", "batch_size", "plan"):
        assert key in state
    assert state["dataset_len"] == 400 and state["drop_last"] is False
    # A rank-0 state resumes rank 1 at the same step.
    r1 = ClusterBatchSampler(clusters, 8, num_replicas=2, rank=1, seed=9)
    r1_whole = list(r1)
    r1.load_state_dict(state)
    assert list(r1) == r1_whole[1:]


@pytest.mark.parametrize(
    ("change", "word"),
    [
        (dict(seed=1), "seed"),
        (dict(num_replicas=3), "num_replicas"),
        (dict(n=401), "dataset_len"),
        (dict(batch_size=9), "batch_size"),
        (dict(plan="ngame"), "plan"),
        (dict(drop_last=True), "drop_last"),
    ],
)
def test_mismatched_state_refused(change: dict[str, Any], word: str) -> None:
    args: dict[str, Any] = dict(n=400, batch_size=8, seed=0, num_replicas=2, plan="topic")
    s = ClusterBatchSampler(clusters_for(400), 8, num_replicas=2, rank=0)
    next(iter(s))
    state = s.state_dict()
    args.update(change)
    n = args.pop("n")
    bs = args.pop("batch_size")
    other = ClusterBatchSampler(clusters_for(n), bs, rank=0, **args)
    with pytest.raises(ValueError, match=word):
        other.load_state_dict(state)


def test_set_clusters_grows_clusters_and_guards_the_state() -> None:
    import negmine

    rng = np.random.default_rng(3)
    x = rng.standard_normal((600, 8)).astype(np.float32)
    centroids, fine, _ = negmine.kmeans(x, 60, seed=0)
    coarse = negmine.coarsen_clusters(centroids, fine, 6, seed=0)
    s = ClusterBatchSampler(fine, 16, plan="topic", seed=2, num_replicas=2, rank=1)
    s2 = ClusterBatchSampler(coarse, 16, plan="topic", seed=2, num_replicas=2, rank=1)
    s.set_epoch(1)
    s2.set_epoch(1)
    # Resume point of the fine plan; new clusters drop it, the same clusters keep it.
    it = iter(s)
    next(it)
    state = s.state_dict()
    s.load_state_dict(state)
    s.set_clusters(fine.copy())
    assert len(s) == len(list(ClusterBatchSampler(fine, 16, seed=2, num_replicas=2, rank=1))) - 1
    s.set_clusters(coarse)
    assert len(s) == len(s2)  # a topic plan's count follows the cluster sizes
    assert list(s) == list(s2)
    # A state saved under other clusters is refused.
    with pytest.raises(ValueError, match="clusters_digest"):
        s.load_state_dict(state)
    with pytest.raises(ValueError, match="one id per dataset row"):
        s.set_clusters(coarse[:-1])
    with pytest.raises(ValueError):
        s.set_clusters(np.full(600, -1))
    assert list(s) == list(s2)  # a refused change leaves the sampler as it was


def test_bad_state_refused() -> None:
    s = ClusterBatchSampler(clusters_for(100), 8)
    state = s.state_dict()
    with pytest.raises(ValueError, match="missing"):
        s.load_state_dict({k: v for k, v in state.items() if k != "yielded"})
    with pytest.raises(ValueError, match="yielded"):
        s.load_state_dict({**state, "yielded": len(s) + 1})


# --- DataLoader -------------------------------------------------------------------------------


class Indices(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("plan", PLANS)
def test_dataloader(num_workers: int, plan: str) -> None:
    clusters = clusters_for(600)
    s = ClusterBatchSampler(clusters, 16, plan=plan, seed=2, num_replicas=2, rank=1)  # type: ignore[arg-type]
    s.set_epoch(1)
    expected = list(s)
    loader = DataLoader(Indices(600), batch_sampler=s, num_workers=num_workers)
    assert len(loader) == len(expected)
    got = [batch.tolist() for batch in loader]
    assert got == expected


# --- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(batch_size=0),
        dict(batch_size=-3),
        dict(rank=2, num_replicas=2),
        dict(rank=-1, num_replicas=2),
        dict(num_replicas=0, rank=0),
        dict(plan="random"),
        dict(clusters_per_batch=3),  # 8 is not a multiple of 3
    ],
)
def test_bad_inputs(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = dict(batch_size=8)
    args.update(kwargs)
    bs = args.pop("batch_size")
    with pytest.raises(ValueError):
        ClusterBatchSampler(clusters_for(50), bs, **args)


def test_empty_dataset() -> None:
    for plan in PLANS:
        s = ClusterBatchSampler(np.array([], dtype=np.int64), 4, plan=plan, num_replicas=4, rank=3)  # type: ignore[arg-type]
        assert len(s) == 0
        assert list(s) == []
        assert s.state_dict()["yielded"] == 0


# --- torch.distributed (gloo, 2 processes) ----------------------------------------------------

_DDP_WORKER = """
import json, sys
import numpy as np
import torch.distributed as dist
from negmine.torch import ClusterBatchSampler
rank, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + path, world_size=2, rank=rank)
c = np.random.default_rng(0).integers(0, 40, size=1001).astype(np.int64)
s = ClusterBatchSampler(c, 8, seed=4)
s.set_epoch(1)
got = list(s)
dist.barrier()
dist.destroy_process_group()
with open(out, "w") as f:
    json.dump({"rank": s.rank, "num_replicas": s.num_replicas, "len": len(s), "batches": got}, f)
"""


@pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform != "linux", reason="needs gloo"
)
def test_torch_distributed_defaults(tmp_path: Any) -> None:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DDP_WORKER, str(r), str(store), str(tmp_path / f"{r}.json")],
            env=env,
        )
        for r in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    c = np.random.default_rng(0).integers(0, 40, size=1001).astype(np.int64)
    for r, res in enumerate(results):
        assert res["rank"] == r and res["num_replicas"] == 2
        assert res["len"] == len(res["batches"])
        local = ClusterBatchSampler(c, 8, seed=4, num_replicas=2, rank=r)
        local.set_epoch(1)
        assert res["batches"] == list(local)
