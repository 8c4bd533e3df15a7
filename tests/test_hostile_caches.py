"""Issue 8, hostile caches: a trusted file or state is checked by content before it is used.

HNSW indexes (item 7), float16 embeddings and their cache (item 6), the sampler's resume
state (item 8), and argument checks in front of hnswlib and CUDA (item 11).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import negmine
from negmine._digest import update_value
from negmine.embed import embed_texts
from negmine.errors import FormatError, InvalidArgumentError

# --- HNSW index (item 7) ------------------------------------------------------------------------

N_CORPUS, N_QUERIES, DIM = 1500, 60, 16
# hnswlib 0.8 saveIndex header: offsetLevel0, max_elements, cur_element_count,
# size_data_per_element, label_offset, offsetData (size_t), maxlevel (int), enterpoint_node
# (uint), maxM, maxM0, M (size_t), mult (double), ef_construction (size_t).
HEADER = struct.Struct("=QQQQQQiIQQQdQ")


def hnswlib_needed() -> None:
    pytest.importorskip("hnswlib")


def clustered(seed: int) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(25, DIM))
    corpus = centers[rng.integers(0, 25, N_CORPUS)] + 0.3 * rng.normal(size=(N_CORPUS, DIM))
    queries = centers[rng.integers(0, 25, N_QUERIES)] + 0.3 * rng.normal(size=(N_QUERIES, DIM))
    positives = [[int(i)] for i in rng.integers(0, N_CORPUS, N_QUERIES)]
    return queries.astype(np.float32), corpus.astype(np.float32), positives


def mine_hnsw(queries: np.ndarray, corpus: Any, positives: Any, **kw: Any) -> Any:
    return negmine.mine(
        queries, corpus, positives, backend="hnsw", target_recall=1.0, threads=1, **kw
    )


def assert_same(a: negmine.MiningResult, b: negmine.MiningResult) -> None:
    np.testing.assert_array_equal(a.negative_ids, b.negative_ids)
    np.testing.assert_array_equal(a.negative_scores, b.negative_scores)


def saved_corpus(tmp_path: Path, seed: int) -> tuple[Path, np.ndarray, list[list[int]], Path]:
    """A corpus file and the index mined from it (with its reference result saved)."""
    queries, corpus, positives = clustered(seed)
    path = tmp_path / "corpus.npy"
    negmine.save_embeddings(path, corpus)
    reference = mine_hnsw(queries, path, positives)
    np.save(tmp_path / "reference.npy", reference.negative_ids)
    (index,) = tmp_path.glob("corpus.npy.hnsw-*.bin")
    return path, queries, positives, index


def header(index: Path) -> dict[str, Any]:
    names = [
        "offset_level0",
        "max_elements",
        "cur",
        "size_data",
        "label_offset",
        "offset_data",
        "maxlevel",
        "enterpoint",
        "max_m",
        "max_m0",
        "m",
        "mult",
        "ef_construction",
    ]
    return dict(zip(names, HEADER.unpack_from(index.read_bytes())))


def level0_view(data: bytearray, head: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(counts, ids) of every element's level-0 list, as writable views into ``data``."""
    records = np.frombuffer(
        data, dtype=np.uint8, offset=HEADER.size, count=head["cur"] * head["size_data"]
    )
    records = records.reshape(head["cur"], head["size_data"])
    counts = records[:, :4].view(np.uint32)[:, 0]
    ids = records[:, 4 : 4 + 4 * head["max_m0"]].view(np.uint32)
    return counts, ids


def vouch(index: Path) -> None:
    """Rewrites the sidecar so that it vouches for the index file as it is now."""
    from negmine import ann

    sidecar = Path(f"{index}.json")
    meta = json.loads(sidecar.read_text())
    meta["index"] = ann._index_digest(index)
    sidecar.write_text(json.dumps(meta))


MINE_IN_CHILD = """
import json, sys, warnings
import numpy as np
import negmine

tmp = sys.argv[1]
queries = np.load(tmp + "/queries.npy")
positives = json.load(open(tmp + "/positives.json"))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = negmine.mine(queries, tmp + "/corpus.npy", positives, backend="hnsw",
                          target_recall=1.0, threads=1)
np.save(tmp + "/again.npy", result.negative_ids)
print(json.dumps({"built": result.report.ann.built, "warnings": [str(w.message) for w in caught]}))
"""


def mine_in_child(tmp_path: Path, queries: np.ndarray, positives: Any) -> dict[str, Any]:
    """``mine(backend='hnsw')`` of tmp_path/corpus.npy in a subprocess: a crash in native code
    fails the test instead of killing pytest."""
    np.save(tmp_path / "queries.npy", queries)
    (tmp_path / "positives.json").write_text(json.dumps(positives))
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(MINE_IN_CHILD))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, f"rc {done.returncode}: {done.stderr[-2000:]}"
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("sidecar", ["as saved", "vouching for the damage"])
def test_hnsw_overwritten_neighbour_ids_rebuild_instead_of_crashing(
    tmp_path: Path, sidecar: str
) -> None:
    hnswlib_needed()
    _, queries, positives, index = saved_corpus(tmp_path, 1)
    data = bytearray(index.read_bytes())
    counts, ids = level0_view(data, header(index))
    listed = np.arange(ids.shape[1]) < counts[:, None]
    ids[listed] = 0xFFFFFFF0  # huge ids, where hnswlib would read them
    index.write_bytes(bytes(data))
    if sidecar == "vouching for the damage":
        vouch(index)  # only the graph check stands between this file and hnswlib
    reason = "digest" if sidecar == "as saved" else "neighbour id 4294967280"

    child = mine_in_child(tmp_path, queries, positives)

    assert child["built"] is True
    (warning,) = child["warnings"]
    assert str(index) in warning and reason in warning
    np.testing.assert_array_equal(
        np.load(tmp_path / "again.npy"), np.load(tmp_path / "reference.npy")
    )
    negmine.ann.check_index_file(index, N_CORPUS, DIM, negmine.ann.HnswParams("cosine"))


def test_hnsw_other_corpus_with_same_size_and_mtime_is_rebuilt(tmp_path: Path) -> None:
    hnswlib_needed()
    path, queries, positives, index = saved_corpus(tmp_path, 2)
    stamp = path.stat()
    other = clustered(3)[1]
    negmine.save_embeddings(path, other)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stamp.st_size, stamp.st_mtime_ns)

    approx = mine_hnsw(queries, path, positives)
    assert approx.report.ann.built
    assert_same(approx, negmine.mine(queries, other, positives))
    assert sorted(tmp_path.glob("corpus.npy.hnsw-*.bin")) == [index]  # replaced in place


def test_hnsw_truncated_index_is_rebuilt(tmp_path: Path) -> None:
    hnswlib_needed()
    path, queries, positives, index = saved_corpus(tmp_path, 4)
    size = index.stat().st_size
    with open(index, "r+b") as f:
        f.truncate(size // 2)
    with pytest.warns(RuntimeWarning, match="rebuilding the HNSW index") as caught:
        again = mine_hnsw(queries, path, positives)
    message = str(caught[0].message)
    assert str(index) in message and f"{size // 2} bytes" in message
    assert again.report.ann.built
    np.testing.assert_array_equal(again.negative_ids, np.load(tmp_path / "reference.npy"))
    assert index.stat().st_size == size


def test_hnsw_sidecar_vouching_for_a_foreign_index_is_not_trusted(tmp_path: Path) -> None:
    hnswlib_needed()
    queries, corpus, positives = clustered(5)
    other = clustered(6)[1]
    mine_hnsw(queries, corpus, positives, hnsw_path=tmp_path / "a.bin")
    mine_hnsw(queries, other, positives, hnsw_path=tmp_path / "b.bin")
    # Same shape and parameters: only the content tells the graphs apart.
    os.replace(tmp_path / "b.bin", tmp_path / "a.bin")
    with pytest.warns(RuntimeWarning, match=r"a\.bin: the file's content digest differs"):
        approx = mine_hnsw(queries, corpus, positives, hnsw_path=tmp_path / "a.bin")
    assert approx.report.ann.built
    assert_same(approx, negmine.mine(queries, corpus, positives))
    # The rebuilt file is vouched for again, and reused.
    reused = mine_hnsw(queries, corpus, positives, hnsw_path=tmp_path / "a.bin")
    assert not reused.report.ann.built


def test_large_corpus_file_digest_samples_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from negmine import _digest

    path = tmp_path / "corpus.npy"
    negmine.save_embeddings(path, np.zeros((64, 16), dtype=np.float32))
    whole = _digest.file_digest(path, "corpus")
    assert set(whole) == {"size", "blake2b"}
    monkeypatch.setattr(_digest, "FULL_DIGEST_LIMIT", 1024)
    monkeypatch.setattr(_digest, "SAMPLE_BLOCK_BYTES", 128)
    monkeypatch.setattr(_digest, "SAMPLED_BLOCKS", 4)
    sampled = _digest.file_digest(path, "corpus")
    assert set(sampled) == {"size", "mtime_ns", "sampled_blake2b"}
    stamp = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # inside the last sampled block
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert _digest.file_digest(path, "corpus")["sampled_blake2b"] != sampled["sampled_blake2b"]


def _damage(kind: str, data: bytearray, head: dict[str, Any]) -> None:
    """One corruption of a saved index, in place."""
    counts, ids = level0_view(data, head)
    n, sde = head["cur"], head["size_data"]
    tail = HEADER.size + n * sde
    words = np.frombuffer(data, dtype=np.uint32, offset=tail)
    # The first element with upper-level lists and the position of its first list.
    p, i, first = 0, 0, None
    while i < n:
        if words[p]:
            first = (i, p + 1)
            break
        p, i = p + 1, i + 1
    assert first is not None
    if kind == "element count":
        struct.pack_into("=Q", data, 16, n + 1)
    elif kind == "level-0 count":
        counts[7] = head["max_m0"] + 1
    elif kind == "level-0 id":
        ids[3, 0] = n
    elif kind == "upper-level count":
        words[first[1]] = head["max_m"] + 1
    elif kind == "upper-level id":
        words[first[1] + 1] = n + 5
        words[first[1]] = max(int(words[first[1]]), 1)
    elif kind == "upper-level link to a lower element":
        low = int(np.flatnonzero(_levels(words, n, head) == 0)[0])
        words[first[1]] = max(int(words[first[1]]), 1)
        words[first[1] + 1] = low
    elif kind == "entry point":
        low = int(np.flatnonzero(_levels(words, n, head) == 0)[0])
        struct.pack_into("=I", data, 52, low)
    elif kind == "duplicate label":
        label_at = HEADER.size + head["label_offset"]
        struct.pack_into("=Q", data, label_at + sde, struct.unpack_from("=Q", data, label_at)[0])


def _levels(words: np.ndarray, n: int, head: dict[str, Any]) -> np.ndarray:
    levels, p = np.zeros(n, dtype=np.int64), 0
    for i in range(n):
        levels[i] = int(words[p]) // (4 + 4 * head["max_m"])
        p += 1 + int(words[p]) // 4
    return levels


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("element count", "cur_element_count"),
        ("level-0 count", "element 7's level-0 list holds"),
        ("level-0 id", "element 3's level-0 list has neighbour id 1500"),
        ("upper-level count", "upper-level list holds"),
        ("upper-level id", "upper-level list has neighbour id 1505"),
        ("upper-level link to a lower element", "above that element's level 0"),
        ("entry point", "entry point"),
        ("duplicate label", "same label"),
        ("trailing byte", "after the last list|misaligned"),
        ("truncated", "missing|ends before"),
    ],
)
def test_check_index_file_refuses_each_damage(tmp_path: Path, kind: str, reason: str) -> None:
    hnswlib_needed()
    from negmine import ann

    params = ann.HnswParams("cosine", m=8)
    corpus = clustered(7)[1]
    path = tmp_path / "graph.bin"
    ann.build_index(corpus, params).save_index(str(path))  # threaded: labels permuted
    ann.check_index_file(path, N_CORPUS, DIM, params)
    data = bytearray(path.read_bytes())
    if kind == "trailing byte":
        data += b"\0\0\0\0"
    elif kind == "truncated":
        del data[-8:]
    else:
        _damage(kind, data, header(path))
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=reason):
        ann.check_index_file(path, N_CORPUS, DIM, params)


def test_hnsw_m_and_ef_construction_refused_before_hnswlib() -> None:
    hnswlib_needed()
    from negmine import ann

    queries, corpus, positives = clustered(8)
    with pytest.raises(InvalidArgumentError, match=r"hnsw_m must be in \[2, 32767\].*got 1"):
        negmine.mine(queries, corpus, positives, backend="hnsw", hnsw_m=1)
    with pytest.raises(InvalidArgumentError, match=r"hnsw_m .* got 32768"):
        ann.HnswParams("cosine", m=32768)
    with pytest.raises(InvalidArgumentError, match=r"hnsw_ef_construction .* got 0"):
        ann.HnswParams("cosine", ef_construction=0)
    assert ann.HnswParams("cosine", m=np.int64(2)).key() == ann.HnswParams("cosine", m=2).key()


# --- float16 embeddings (item 6) --------------------------------------------------------------


def test_save_embeddings_refuses_values_float16_cannot_hold(tmp_path: Path) -> None:
    x = np.zeros((4, 3), dtype=np.float32)
    x[0, 0] = 65504.0  # the largest float16: fits
    x[1, 2] = 65519.0  # rounds down to 65504: fits
    negmine.save_embeddings(tmp_path / "ok.npy", x, dtype="float16")
    assert np.isfinite(np.load(tmp_path / "ok.npy")).all()

    x[2, 1] = 1e5
    with pytest.raises(InvalidArgumentError, match=r"row 2 holds 100000\.0 .*float16"):
        negmine.save_embeddings(tmp_path / "e.npy", x, dtype="float16")
    with pytest.raises(InvalidArgumentError, match="row 0 holds 70000"):
        negmine.save_embeddings(tmp_path / "e.npy", np.full((1, 2), 70000), dtype="float16")
    wide = np.zeros((2, 2))
    wide[1, 1] = 1e39
    with pytest.raises(InvalidArgumentError, match=r"row 1 holds 1e\+39 .*float32"):
        negmine.save_embeddings(tmp_path / "e.npy", wide, dtype="float32")
    negmine.save_embeddings(tmp_path / "big.npy", x)
    with pytest.raises(InvalidArgumentError, match="row 2"):
        negmine.save_embeddings(
            tmp_path / "e.npy", negmine.open_embeddings(tmp_path / "big.npy"), dtype="float16"
        )
    assert not (tmp_path / "e.npy").exists()

    # NaN and infinity already in the input are stored as they are (the existing policy).
    odd = np.array([[np.nan, np.inf, -np.inf]], dtype=np.float32)
    negmine.save_embeddings(tmp_path / "odd.npy", odd, dtype="float16")
    np.testing.assert_array_equal(np.load(tmp_path / "odd.npy"), odd.astype(np.float16))


class LoudModel:
    """Unnormalised outputs too large for float16 for one text."""

    name_or_path = "fake/loud"

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        self.encoded += len(texts)
        out = np.ones((len(texts), 4), dtype=np.float32)
        for i, text in enumerate(texts):
            if text == "loud":
                out[i, 3] = 1e5
        return out


def test_embed_texts_float16_overflow_refused_before_caching(tmp_path: Path) -> None:
    texts = ["a", "b", "loud", "c"]
    with pytest.raises(InvalidArgumentError, match=r"text 2 holds 100000\.0 .*float16"):
        embed_texts(
            texts, LoudModel(), cache_dir=tmp_path, dtype="float16", normalize=False, progress=False
        )
    assert not list(tmp_path.iterdir())
    # Normalised, the same texts fit.
    emb = embed_texts(texts, LoudModel(), cache_dir=tmp_path, dtype="float16", progress=False)
    assert np.isfinite(np.asarray(emb)).all()


def test_embed_cache_holding_non_finite_values_is_encoded_again(tmp_path: Path) -> None:
    texts = ["a", "b", "c"]
    model = LoudModel()
    emb = embed_texts(texts, model, cache_dir=tmp_path, dtype="float16", progress=False)
    path, expected = Path(emb.path), np.asarray(emb).copy()
    del emb
    # What an older version cached for unnormalised float16 overflow: infinities.
    np.save(path, np.full((3, 4), np.inf, dtype=np.float16))
    again = embed_texts(texts, model, cache_dir=tmp_path, dtype="float16", progress=False)
    assert model.encoded == 6
    np.testing.assert_array_equal(np.asarray(again), expected)
    # A file of another dtype under the key is foreign too.
    del again
    np.save(path, expected.astype(np.float32))
    embed_texts(texts, model, cache_dir=tmp_path, dtype="float16", progress=False)
    assert model.encoded == 9


# --- sampler state (item 8) -------------------------------------------------------------------

N_ROWS = 400


def sampler(**kw: Any) -> Any:
    torch = pytest.importorskip("torch")  # noqa: F841
    from negmine.torch import ClusterBatchSampler

    args: dict[str, Any] = {
        "clusters": np.random.default_rng(0).integers(0, 16, N_ROWS),
        "batch_size": 8,
        "seed": 3,
        "num_replicas": 2,
        "rank": 0,
    }
    args.update(kw)
    return ClusterBatchSampler(args.pop("clusters"), args.pop("batch_size"), **args)


PAIRS = [[i // 2] for i in range(N_ROWS)]  # rows 2k and 2k + 1 conflict


def test_state_without_conflicts_refused_by_a_sampler_with_them() -> None:
    plain = sampler()
    it = iter(plain)
    next(it)
    state = plain.state_dict()
    with pytest.raises(InvalidArgumentError, match="other conflicts"):
        sampler(conflicts=PAIRS).load_state_dict(state)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"seed": 4}, "seed"),
        ({"num_replicas": 4}, "num_replicas"),
        ({"clusters": np.random.default_rng(0).integers(0, 16, N_ROWS + 1)}, "dataset length"),
        ({"batch_size": 10}, "batch_size"),
        ({"plan": "ngame"}, "plan"),
        ({"drop_last": True}, "drop_last"),
        ({"clusters_per_batch": 2}, "clusters_per_batch"),
        ({"weighting": "size"}, "weighting"),
        ({"clusters": np.random.default_rng(1).integers(0, 16, N_ROWS)}, "other clusters"),
        ({"conflicts": PAIRS}, "other conflicts"),
        ({"conflicts": [[i // 4] for i in range(N_ROWS)]}, "other conflicts"),
    ],
    ids=lambda v: "" if isinstance(v, str) else next(iter(v)),
)
@pytest.mark.parametrize("saved_with_conflicts", [False, True])
def test_state_refused_when_any_plan_argument_differs(
    change: dict[str, Any], named: str, saved_with_conflicts: bool
) -> None:
    base: dict[str, Any] = {"conflicts": PAIRS} if saved_with_conflicts else {}
    if saved_with_conflicts and change.get("conflicts") is PAIRS:
        change = {"conflicts": None}
    if saved_with_conflicts and "clusters" in change:
        change["conflicts"] = [[i // 2] for i in range(len(change["clusters"]))]
    saved = sampler(**base)
    it = iter(saved)
    next(it)
    state = saved.state_dict()
    with pytest.raises(InvalidArgumentError, match=named) as caught:
        sampler(**{**base, **change}).load_state_dict(state)
    assert "repeat some rows and skip others" in str(caught.value)


def test_state_with_conflicts_resumes_the_exact_remainder() -> None:
    ref = sampler(conflicts=PAIRS, drop_last=True)
    ref.set_epoch(5)
    whole = list(ref)
    assert len(whole) > 4
    s = sampler(conflicts=PAIRS, drop_last=True)
    s.set_epoch(5)
    it = iter(s)
    head = [next(it) for _ in range(3)]
    state = s.state_dict()
    # The same conflicts given as CSR arrays are the same conflicts.
    indptr = np.arange(N_ROWS + 1, dtype=np.int64)
    keys = np.arange(N_ROWS, dtype=np.int64) // 2
    fresh = sampler(conflicts=(indptr, keys), drop_last=True)
    fresh.load_state_dict(state)
    assert head + list(fresh) == whole
    # A caller's lists changed after construction do not change the plan.
    keys_list = [list(k) for k in PAIRS]
    late = sampler(conflicts=keys_list, drop_last=True)
    late.set_epoch(5)
    keys_list[0][0] = keys_list[2][0]
    assert list(late) == whole


def test_state_from_before_conflicts_were_recorded_is_refused() -> None:
    s = sampler()
    state = s.state_dict()
    del state["conflicts_digest"], state["format"]
    with pytest.raises(InvalidArgumentError, match=r"did not record conflicts.*set_epoch\(0\)"):
        sampler().load_state_dict(state)
    with pytest.raises(InvalidArgumentError, match="format 3; this negmine reads format 2"):
        sampler().load_state_dict({**s.state_dict(), "format": 3})


# --- GpuPrefetcher without CUDA (item 11) -------------------------------------------------------


def test_gpu_prefetcher_on_cuda_without_cuda_says_so() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    from negmine.torch import GpuPrefetcher

    for device in ("cuda", "cuda:0", torch.device("cuda", 1)):
        with pytest.raises(InvalidArgumentError, match="CUDA is not available"):
            GpuPrefetcher([], device)
    assert list(GpuPrefetcher([1, 2], "cpu")) == [1, 2]


# --- digests of values (what a refresher's resume compares its options by) -----------------------


def _value_digest(value: Any) -> str:
    h = hashlib.blake2b(digest_size=16)
    update_value(h, value)
    return h.hexdigest()


_ids = st.lists(st.integers(-(2**40), 2**40), max_size=40)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    _ids,
    st.lists(_ids, max_size=4),  # ragged id lists
    _ids.map(lambda x: np.asarray(x, dtype=np.int64)),
    st.tuples(_ids, _ids).map(lambda t: negmine.Csr(np.asarray(t[0]), np.asarray(t[1]))),
)


def _canonical(value: Any) -> Any:
    """What the digest promises to tell apart: a list (or tuple) of numbers is the array it
    makes, a Csr the list of its two arrays; types and shapes count."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        if value and not isinstance(value[0], (list, tuple, str)):
            try:
                return _canonical(np.asarray(value))
            except ValueError:  # ragged
                pass
        return ("list", tuple(_canonical(v) for v in value))
    return (type(value).__name__, value)


@given(_values, _values)
def test_value_digest_is_equal_exactly_for_equal_values(a: Any, b: Any) -> None:
    assert _value_digest(a) == _value_digest(copy.deepcopy(a))
    if _canonical(a) != _canonical(b):
        assert _value_digest(a) != _value_digest(b)


def test_value_digest_sees_every_element_of_a_long_array() -> None:
    """numpy's repr shows 6 of a long array's elements; the digest reads all of them."""
    ids = np.arange(5000, dtype=np.int64)
    changed = ids.copy()
    changed[2500] += 1
    assert repr(ids) == repr(changed)
    assert _value_digest(ids) != _value_digest(changed)
    assert _value_digest([ids, ids]) != _value_digest([ids, changed])
    with pytest.raises(TypeError, match=r"cannot digest a builtins\.function"):
        _value_digest(lambda q, c: q)
