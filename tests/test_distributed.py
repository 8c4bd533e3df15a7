"""Mining on Ray (issue 11, section 1): ``negmine.distributed.mine`` by query and by corpus
equals single-process ``negmine.mine`` bit for bit (every result array, the removed records,
the report), survives a killed actor, and resumes an interrupted driver into a byte-identical
output directory. One local Ray instance serves the module; the two-node cluster test (last)
replaces it."""

from __future__ import annotations

import contextlib
import filecmp
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import negmine
from negmine import distributed
from negmine import multivector as mv
from negmine.checkpoint import mine_to_directory, partial_directory
from negmine.cli import main as cli_main
from negmine.distributed.actors import Pool
from negmine.errors import InvalidArgumentError, InvalidTypeError, NegmineError
from negmine.result import MiningResult

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray cluster per module (see `make test-quick`)
mine_module = importlib.import_module("negmine.mine")

N_CORPUS, N_QUERIES, DIM = 300, 40, 16
# Three uneven shards: one smaller than any depth mining asks for, and a block of tied
# (identical) rows across the boundary of the other two.
SHARDS = [0, 3, 150, N_CORPUS]
TIED = slice(144, 156)


@pytest.fixture(scope="module")
def _ray_module() -> Any:
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def actors_cwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory of every actor of the module's Ray (its ``working_dir``), as a
    node of a real cluster has its own: it holds files named and shaped as the tests' inputs
    (:func:`write_inputs`) with other content, so that an actor opening a driver's relative
    path there mines the wrong file instead of failing."""
    directory = tmp_path_factory.mktemp("actors-cwd")
    write_inputs(directory, seed=6)
    return directory


@pytest.fixture
def local_ray(_ray_module: None, actors_cwd: Path) -> None:
    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=256 * 1024**2,
            runtime_env={"working_dir": str(actors_cwd)},
        )


def data(dtype: type = np.float32, seed: int = 5) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(N_CORPUS, DIM))
    corpus[TIED] = corpus[TIED.start]
    positives = [[int(p)] for p in rng.integers(0, N_CORPUS, N_QUERIES)]
    queries = rng.normal(size=(N_QUERIES, DIM)) + np.array([corpus[p[0]] for p in positives])
    queries[::4] += corpus[TIED.start]  # the tied rows rank high for a quarter of the queries
    return queries.astype(np.float32), corpus.astype(dtype), positives


def assert_identical(a: MiningResult, b: MiningResult) -> None:
    for name in (
        "negative_ids",
        "negative_scores",
        "positive_indptr",
        "positive_ids",
        "positive_scores",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype, name
    assert a.removed.keys() == b.removed.keys()
    for name in a.removed:
        np.testing.assert_array_equal(a.removed[name], b.removed[name], err_msg=name)
    assert a.report.to_dict() == b.report.to_dict()


def deepens(queries: np.ndarray, corpus: np.ndarray, positives: Any, **options: Any) -> bool:
    """Whether some query's window is starved by the filters at the first depth (so that the
    core fetches again, deeper): the options exercise the shards' deeper answers."""
    mining = negmine.MiningOptions(**options)
    prepared = mine_module.prepare(queries, corpus, positives)

    def exact(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        lists = []
        for r in rows:
            excluded = prepared.ex_ids[prepared.ex_indptr[r] : prepared.ex_indptr[r + 1]]
            k = min(depth, N_CORPUS - len(excluded))
            lists.append(
                negmine.search(
                    queries[r : r + 1], corpus, k, metric=mining.metric, exclude=[excluded.tolist()]
                )[1][0]
            )
        indptr = np.cumsum([0] + [len(x) for x in lists]).astype(np.int64)
        return indptr, np.concatenate(lists).astype(np.int64)

    mined = mine_module.mine_prepared(queries, corpus, prepared, mining, fetch=exact)
    return bool((mined.fetches > 1).any())


CORPUS_CASES = [
    ("cosine", np.float32, {"num_negatives": 4, "relative_margin": 0.05, "dup_threshold": 0.9}),
    (
        "dot",
        np.float16,
        {
            "num_negatives": 3,
            "range_min": 2,
            "absolute_margin": 0.5,
            "sampling_strategy": "random",
            "seed": 7,
        },
    ),
    (
        "cosine",
        np.float16,
        {
            "num_negatives": 5,
            "max_score": 0.9,
            "record_removed": None,
            "sampling_strategy": "simans",
            "seed": 3,
        },
    ),
]


@pytest.mark.parametrize(
    ("metric", "dtype", "options"),
    CORPUS_CASES,
    ids=["cosine-f32-margin-dup", "dot-f16-random", "cosine-f16-simans"],
)
def test_by_corpus_equals_one_process(
    local_ray: None, metric: str, dtype: type, options: dict[str, Any]
) -> None:
    queries, corpus, positives = data(dtype)
    expected = negmine.mine(queries, corpus, positives, metric=metric, **options)
    if "margin" in str(options):  # these data starve the margin cases' first windows
        assert deepens(queries, corpus, positives, metric=metric, **options)
    got = distributed.mine(
        queries,
        corpus,
        positives,
        shard_by="corpus",
        shards=SHARDS,
        chunk_queries=16,
        metric=metric,
        **options,
    )
    assert_identical(expected, got)


def test_by_corpus_without_duplicate_groups_keeps_tie_order(local_ray: None) -> None:
    """Tied rows are distinct candidates here: the merge must order them by id."""
    queries, corpus, positives = data()
    options = {"num_negatives": 8, "duplicates": None, "metric": "dot"}
    expected = negmine.mine(queries, corpus, positives, **options)  # type: ignore[arg-type]
    assert np.isin(expected.negative_ids, np.arange(TIED.start, TIED.stop)).sum() > 8
    got = distributed.mine(queries, corpus, positives, shard_by="corpus", shards=SHARDS, **options)
    assert_identical(expected, got)


def test_by_query_with_uneven_chunks_equals_one_process(local_ray: None) -> None:
    queries, corpus, positives = data(np.float16)
    options = {
        "num_negatives": 3,
        "sampling_strategy": "random",
        "seed": 11,
        "relative_margin": 0.1,
        "range_max": 40,
    }
    expected = negmine.mine(queries, corpus, positives, **options)  # type: ignore[arg-type]
    got = distributed.mine(queries, corpus, positives, shards=2, chunk_queries=7, **options)
    assert_identical(expected, got)


@pytest.mark.parametrize(
    ("shard_by", "metric", "dtype", "k"),
    [
        ("corpus", "cosine", np.float32, 20),
        ("corpus", "dot", np.float16, 150),
        ("query", "dot", np.float32, 7),
    ],
)
def test_search_equals_one_process(
    local_ray: None, shard_by: str, metric: str, dtype: type, k: int
) -> None:
    queries, corpus, positives = data(dtype)
    # Uneven exclusions, the tied block partly excluded for some queries.
    exclude = [
        p + ([*range(TIED.start, TIED.start + 3)] if i % 3 == 0 else [])
        for i, p in enumerate(positives)
    ]
    want = negmine.search(queries, corpus, k, metric=metric, exclude=exclude)  # type: ignore[arg-type]
    got = distributed.search(
        queries,
        corpus,
        k,
        metric=metric,
        exclude=exclude,
        shard_by=shard_by,  # type: ignore[arg-type]
        shards=SHARDS if shard_by == "corpus" else 2,
        chunk_queries=9,
    )
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0].view(np.uint32), want[0].view(np.uint32))


def test_search_refuses_a_k_past_the_rows_left(local_ray: None) -> None:
    queries, corpus, _ = data()
    with pytest.raises(InvalidArgumentError, match="exceeds the 299 corpus rows query 0"):
        distributed.search(queries, corpus, N_CORPUS, exclude=[[1]] * N_QUERIES)


def run_actors(run_prefix: str = distributed.ACTOR_PREFIX) -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(run_prefix)
    ]


def no_actors_left() -> bool:
    for _ in range(50):  # a kill is asynchronous
        if not run_actors():
            return True
        time.sleep(0.1)
    return False


def killing(kind: str, after: int = 1) -> Any:
    """A progress callback that kills every ``kind`` actor once ``after`` chunks are done
    (asking Ray to restart them)."""
    state = {"calls": 0, "killed": 0}

    def progress(done: int, total: int) -> None:
        state["calls"] += 1
        if state["calls"] == after + 1:  # the first call reports the chunks on disk
            for name in run_actors():
                if f"-{kind}-" in name:
                    ray.kill(ray.get_actor(name), no_restart=False)
                    state["killed"] += 1

    return progress, state


@pytest.mark.parametrize("shard_by", ["query", "corpus"])
def test_killed_actors_are_restarted_and_the_output_is_unchanged(
    local_ray: None, shard_by: str
) -> None:
    queries, corpus, positives = data()
    options = {"num_negatives": 4, "relative_margin": 0.05, "sampling_strategy": "random"}
    expected = negmine.mine(queries, corpus, positives, **options)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {
        "shard_by": shard_by,
        "shards": SHARDS if shard_by == "corpus" else 2,
        # More chunks than the actors hold at once: the killed ones get new tasks after the
        # kill, so without restarts the run must fail.
        "chunk_queries": 10 if shard_by == "corpus" else 5,
        **options,
    }
    progress, state = killing("shard" if shard_by == "corpus" else "query")
    got = distributed.mine(queries, corpus, positives, progress=progress, **kwargs)
    assert state["killed"] == (3 if shard_by == "corpus" else 2)
    assert_identical(expected, got)
    # The same kill without restarts fails the run: the actors were killed mid-run.
    progress, state = killing("shard" if shard_by == "corpus" else "query")
    with pytest.raises(ray.exceptions.RayActorError):
        distributed.mine(queries, corpus, positives, progress=progress, max_restarts=0, **kwargs)


def write_inputs(directory: Path, seed: int = 5) -> tuple[Path, Path, Path]:
    queries, corpus, positives = data(seed=seed)
    q, c, r = directory / "q.npy", directory / "c.npy", directory / "qrels.tsv"
    np.save(q, queries)
    np.save(c, corpus)
    r.write_text("".join(f"{i}\t{p[0]}\n" for i, p in enumerate(positives)))
    return q, c, r


def same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert (mismatch, errors) == ([], [])


OPTIONS = {
    "num_negatives": 4,
    "relative_margin": 0.05,
    "dup_threshold": 0.9,
    "sampling_strategy": "random",
    "seed": 5,
}


def test_interrupted_driver_resumes_into_byte_identical_output(
    local_ray: None, tmp_path: Path
) -> None:
    q, c, r = write_inputs(tmp_path)
    local = tmp_path / "local"
    mine_to_directory(
        q, c, r, local, negmine.MiningOptions(**OPTIONS), chunk_queries=6, progress=False
    )
    out = tmp_path / "ray"
    calls: list[int] = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:  # two chunks checkpointed
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distributed.mine(q, c, r, out=out, shards=2, chunk_queries=6, progress=interrupt, **OPTIONS)
    assert not out.exists()
    assert len(list(partial_directory(out).glob("chunk_*.npz"))) >= 2
    assert no_actors_left()  # the interrupted run's actors are gone

    resumed: list[int] = []
    # Resumed by the other kind of run: every runner writes the same chunks.
    result = distributed.mine(
        q,
        c,
        r,
        out=out,
        shard_by="corpus",
        shards=SHARDS,
        chunk_queries=6,
        progress=lambda done, total: resumed.append(done),
        **OPTIONS,
    )
    assert resumed[0] >= 12  # started from the checkpoint
    assert not partial_directory(out).exists()
    same_files(local, out)
    assert_identical(MiningResult.load(local), result)


def test_cli_mine_with_ray(local_ray: None, tmp_path: Path) -> None:
    q, c, r = write_inputs(tmp_path)
    args = [
        "mine",
        "--queries",
        str(q),
        "--corpus",
        str(c),
        "--positives",
        str(r),
        "--num-negatives",
        "4",
        "--relative-margin",
        "0.05",
        "--chunk-queries",
        "9",
    ]
    assert cli_main([*args, "--out", str(tmp_path / "local")]) == 0
    # This process's Ray is used as it is.
    assert (
        cli_main(
            [
                *args,
                "--out",
                str(tmp_path / "ray"),
                "--ray",
                "auto",
                "--shard-by",
                "corpus",
                "--shards",
                "0,3,150,300",
            ]
        )
        == 0
    )
    same_files(tmp_path / "local", tmp_path / "ray")
    assert cli_main([*args, "--out", str(tmp_path / "x"), "--shards", "2"]) == 2


def test_hnsw_by_query_equals_one_process(local_ray: None, tmp_path: Path) -> None:
    """``backend="hnsw"`` on Ray (in memory, and the CLI's checkpointed directory) mines what
    ``negmine.mine`` mines from the same graph: the driver opens it once, the actors get it."""
    pytest.importorskip("hnswlib")
    q, c, r = write_inputs(tmp_path)
    options = {"num_negatives": 4, "relative_margin": 0.05, "sampling_strategy": "random"}
    # Built once, by one thread (deterministic), beside the corpus file; then loaded.
    expected = negmine.mine(
        np.load(q), str(c), str(r), backend="hnsw", target_recall=0.9, threads=1, **options
    )
    got = distributed.mine(
        np.load(q),
        str(c),
        str(r),
        backend="hnsw",
        target_recall=0.9,
        shards=2,
        chunk_queries=7,
        **options,
    )
    for name, array in expected.arrays().items():
        assert array.tobytes() == got.arrays()[name].tobytes(), name
    assert expected.report.ann is not None and got.report.ann is not None
    assert (expected.report.ann.built, got.report.ann.built) == (True, False)
    loaded = expected.report.to_dict()
    loaded["ann"]["built"] = False
    assert loaded == got.report.to_dict()
    argv = ["mine", "--queries", str(q), "--corpus", str(c), "--positives", str(r), "--quiet"]
    argv += ["--backend", "hnsw", "--target-recall", "0.9", "--num-negatives", "4"]
    argv += ["--relative-margin", "0.05", "--sampling-strategy", "random", "--chunk-queries", "9"]
    assert cli_main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert cli_main([*argv, "--out", str(tmp_path / "ray"), "--ray", "auto"]) == 0
    same_files(tmp_path / "local", tmp_path / "ray")
    assert MiningResult.load(tmp_path / "ray").negative_ids.tobytes() == got.negative_ids.tobytes()
    with pytest.raises(InvalidArgumentError, match="needs shard_by='query'"):
        distributed.mine(q, c, r, backend="hnsw", shard_by="corpus")
    with pytest.raises(InvalidArgumentError, match="runs in one process"):
        distributed.mine(q, c, r, backend="torch")


@pytest.mark.parametrize("backend", ["bm25", "hybrid"])
def test_texts_backends_by_query_equal_one_process(
    local_ray: None, tmp_path: Path, backend: str
) -> None:
    """``bm25`` / ``hybrid`` on Ray: the driver ships the source with its texts, each actor
    builds its BM25 index again; in memory and through the CLI's checkpointed directory, the
    result (negative sources included) is one process' result."""
    from test_hybrid import write_inputs as write_text_inputs

    paths, query_texts, corpus_texts = write_text_inputs(tmp_path)
    q, c, r = paths["q.npy"], paths["c.npy"], paths["qrels.tsv"]
    options = {"num_negatives": 3, "relative_margin": 0.1, "sampling_strategy": "random"}
    texts = {"query_texts": query_texts, "corpus_texts": corpus_texts}
    expected = negmine.mine(np.load(q), np.load(c), str(r), backend=backend, **texts, **options)
    got = distributed.mine(
        np.load(q),
        np.load(c),
        str(r),
        backend=backend,
        shards=2,
        chunk_queries=7,
        **texts,
        **options,
    )
    assert got.negative_sources is not None
    for name, array in expected.arrays().items():
        assert array.tobytes() == got.arrays()[name].tobytes(), name
    assert expected.report.to_dict() == got.report.to_dict()
    argv = ["mine", "--queries", str(q), "--corpus", str(c), "--positives", str(r), "--quiet"]
    argv += ["--query-texts", str(paths["q.jsonl"]), "--corpus-texts", str(paths["c.jsonl"])]
    argv += ["--backend", backend, "--num-negatives", "3", "--chunk-queries", "9"]
    argv += ["--cache-dir", str(tmp_path / "cache")]  # where the BM25 index is kept
    assert cli_main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert cli_main([*argv, "--out", str(tmp_path / "ray"), "--ray", "auto"]) == 0
    same_files(tmp_path / "local", tmp_path / "ray")


def maxsim_inputs(directory: Path) -> tuple[Any, Any, list[list[int]]]:
    """Token embeddings of 120 texts and 30 queries around a few topics (``test_multivector``'s),
    saved as float16 multi-vector directories beside the pooled vectors' ``.npy`` files and a
    qrels TSV in ``directory``."""
    from test_multivector import topical

    qa, ca, positives = topical(3, n_corpus=120, n_queries=30)
    for name, arrays in (("q", qa), ("c", ca)):
        vectors = mv.MultiVectors.from_arrays(arrays, dtype="float16")
        mv.save_multi_vectors(directory / f"{name}-tokens", vectors)
        np.save(directory / f"{name}.npy", vectors.pooled())
    (directory / "qrels.tsv").write_text("".join(f"{i}\t{p[0]}\n" for i, p in enumerate(positives)))
    return qa, ca, positives


MAXSIM_OPTIONS = {
    "num_negatives": 3,
    "relative_margin": 0.05,
    "sampling_strategy": "random",
    "seed": 2,
    "maxsim_depth": 20,
}


def test_cli_mine_maxsim_with_ray(local_ray: None, tmp_path: Path) -> None:
    """``negmine mine --backend maxsim --ray``: the directory the local command writes, byte for
    byte (the saved token directories go to the actors by path)."""
    maxsim_inputs(tmp_path)
    argv = ["mine", "--queries", str(tmp_path / "q.npy"), "--corpus", str(tmp_path / "c.npy")]
    argv += ["--positives", str(tmp_path / "qrels.tsv"), "--quiet", "--backend", "maxsim"]
    argv += ["--query-tokens", str(tmp_path / "q-tokens")]
    argv += ["--corpus-tokens", str(tmp_path / "c-tokens"), "--maxsim-depth", "20"]
    argv += ["--num-negatives", "3", "--relative-margin", "0.05", "--chunk-queries", "7"]
    assert cli_main([*argv, "--out", str(tmp_path / "local")]) == 0
    assert cli_main([*argv, "--out", str(tmp_path / "ray"), "--ray", "auto", "--shards", "2"]) == 0
    same_files(tmp_path / "local", tmp_path / "ray")


def test_maxsim_by_query_equals_one_process(local_ray: None, tmp_path: Path) -> None:
    """``backend="maxsim"`` on Ray (issue 24): the driver scores the positives, each actor opens
    the token embeddings (mapped from the saved directories' paths, or from the object store)
    and rebuilds the source and its MaxSim teacher; for any number of actors and chunks, in
    memory and into a checkpointed directory (resumed by the local run), the result is one
    process' result, byte for byte."""
    qa, ca, positives = maxsim_inputs(tmp_path)
    in_memory = {
        "query_tokens": mv.MultiVectors.from_arrays(qa),
        "corpus_tokens": mv.MultiVectors.from_arrays(ca),
    }
    saved = {
        "query_tokens": str(tmp_path / "q-tokens"),
        "corpus_tokens": str(tmp_path / "c-tokens"),
    }
    q, c = np.load(tmp_path / "q.npy"), np.load(tmp_path / "c.npy")
    for tokens, splits in ((in_memory, [(1, 30), (2, 7), (3, 4)]), (saved, [(2, 9)])):
        expected = negmine.mine(q, c, positives, backend="maxsim", **tokens, **MAXSIM_OPTIONS)
        assert expected.report.teacher is not None and expected.report.removed["relative_margin"]
        for shards, chunk_queries in splits:
            got = distributed.mine(
                q,
                c,
                positives,
                backend="maxsim",
                shards=shards,
                chunk_queries=chunk_queries,
                **tokens,
                **MAXSIM_OPTIONS,
            )
            for name, array in expected.arrays().items():
                assert array.tobytes() == got.arrays()[name].tobytes(), (name, shards)
            assert expected.report.to_dict() == got.report.to_dict()

    files = [tmp_path / "q.npy", tmp_path / "c.npy", tmp_path / "qrels.tsv"]
    options = {k: v for k, v in MAXSIM_OPTIONS.items() if k != "maxsim_depth"}
    backend_options = {**saved, "maxsim_depth": MAXSIM_OPTIONS["maxsim_depth"]}
    local = tmp_path / "local"
    mine_to_directory(
        *files,
        local,
        negmine.MiningOptions(**options),
        chunk_queries=6,
        progress=False,
        backend="maxsim",
        backend_options=backend_options,
    )
    out = tmp_path / "ray"
    calls: list[int] = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:  # two chunks checkpointed
            raise KeyboardInterrupt

    kwargs: dict[str, Any] = {"backend": "maxsim", "chunk_queries": 6, **saved, **MAXSIM_OPTIONS}
    with pytest.raises(KeyboardInterrupt):
        distributed.mine(*files, out=out, shards=2, progress=interrupt, **kwargs)
    assert len(list(partial_directory(out).glob("chunk_*.npz"))) >= 2
    # Resumed by the local run (the same checkpoint identity, teacher included), and a whole
    # run on Ray: both write the local run's bytes.
    mine_to_directory(
        *files,
        out,
        negmine.MiningOptions(**options),
        chunk_queries=6,
        progress=False,
        backend="maxsim",
        backend_options=backend_options,
    )
    same_files(local, out)
    distributed.mine(*files, out=tmp_path / "ray-whole", shards=3, **kwargs)
    same_files(local, tmp_path / "ray-whole")


@pytest.mark.parametrize("how", ["replaced", "removed"])
def test_an_actor_refuses_token_embeddings_that_are_not_the_drivers(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A node whose token matrix at the driver's path is another one of the same shape, or none,
    stops a ``maxsim`` run with an error naming the file, the actor and the node."""
    maxsim_inputs(tmp_path)
    tokens = tmp_path / "c-tokens" / "tokens.npy"
    other = tmp_path / "other.npy"
    np.save(other, np.load(tokens)[::-1])
    _changing_corpus_first(
        monkeypatch, lambda: os.replace(other, tokens) if how == "replaced" else tokens.unlink()
    )
    corpus_tokens = mv.open_multi_vectors(tmp_path / "c-tokens")  # mapped before the change
    needle = "differs from the driver's" if how == "replaced" else "cannot open"
    with pytest.raises(InvalidArgumentError, match=needle) as info:
        distributed.mine(
            np.load(tmp_path / "q.npy"),
            np.load(tmp_path / "c.npy"),
            str(tmp_path / "qrels.tsv"),
            backend="maxsim",
            query_tokens=tmp_path / "q-tokens",
            corpus_tokens=corpus_tokens,
            shards=2,
        )
    assert type(info.value) is InvalidArgumentError  # unwrapped on the driver
    message = str(info.value)
    assert f"the corpus tokens {tokens}" in message, message
    assert distributed.ACTOR_PREFIX in message, message
    assert ray.get_runtime_context().get_node_id() in message, message


def test_relative_paths_name_the_drivers_files(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20, item 2: a relative path names the driver's file, not the one an actor finds in
    its own working directory (``actors_cwd``: same names and shapes, other content)."""
    _, c, _ = write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)

    @ray.remote
    def load(name: str) -> np.ndarray:
        return np.load(name)

    # The setup is what it claims: an actor's "c.npy" is another file of the same shape.
    theirs = ray.get(load.remote("c.npy"))
    assert theirs.shape == np.load(c).shape and not np.array_equal(theirs, np.load(c))

    queries, corpus, positives = data()
    expected = negmine.mine(queries, corpus, positives, **OPTIONS)  # type: ignore[arg-type]
    want = negmine.search(queries, corpus, 5, exclude=positives)
    for shard_by in ("query", "corpus"):
        kwargs: dict[str, Any] = {"shard_by": shard_by, "shards": 2, "chunk_queries": 16}
        got = distributed.mine("q.npy", "c.npy", positives, **kwargs, **OPTIONS)
        assert_identical(expected, got)
        found = distributed.search("q.npy", "c.npy", 5, exclude=positives, **kwargs)
        np.testing.assert_array_equal(found[1], want[1])
        np.testing.assert_array_equal(found[0], want[0])
    args = ["mine", "--queries", "q.npy", "--corpus", "c.npy", "--positives", "qrels.tsv"]
    args += ["--num-negatives", "4", "--relative-margin", "0.05", "--chunk-queries", "9"]
    assert cli_main([*args, "--quiet", "--out", "local"]) == 0
    assert cli_main([*args, "--quiet", "--out", "ray", "--ray", "auto", "--shards", "2"]) == 0
    same_files(tmp_path / "local", tmp_path / "ray")


def _changing_corpus_first(monkeypatch: pytest.MonkeyPatch, change: Callable[[], None]) -> None:
    """Runs ``change`` once the driver has mapped and checked the corpus and before the run's
    actors start: what a node opens is then not what the driver checked."""
    original = Pool.actors

    @contextlib.contextmanager
    def actors(self: Any, cls: type, args: Any) -> Iterator[list[Any]]:
        change()
        with original(self, cls, args) as started:
            yield started

    monkeypatch.setattr(Pool, "actors", actors)


@pytest.mark.parametrize("how", ["replaced", "removed"])
@pytest.mark.parametrize("call", ["mine-query", "mine-corpus", "search"])
def test_an_actor_refuses_a_corpus_that_is_not_the_drivers(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, call: str
) -> None:
    """A node whose file at the corpus path is another one of the same shape, or none, stops
    the run with a negmine error naming the file, the actor and the node (not a raw
    ``RayTaskError`` of an internal exception, nor a result mined from that file)."""
    _, c, _ = write_inputs(tmp_path)
    other = tmp_path / "other.npy"
    np.save(other, data(seed=7)[1])
    _changing_corpus_first(
        monkeypatch, lambda: os.replace(other, c) if how == "replaced" else c.unlink()
    )
    queries, _, positives = data()
    corpus = negmine.open_embeddings(c)
    needle = "differs from the driver's" if how == "replaced" else "cannot open"
    with pytest.raises(InvalidArgumentError, match=needle) as info:
        if call == "search":
            distributed.search(queries, corpus, 5, shards=2)
        else:
            shard_by = call.split("-")[1]
            distributed.mine(queries, corpus, positives, shard_by=shard_by, shards=2)  # type: ignore[arg-type]
    assert type(info.value) is InvalidArgumentError  # unwrapped on the driver
    message = str(info.value)
    assert str(c) in message, message
    assert distributed.ACTOR_PREFIX in message, message
    assert ray.get_runtime_context().get_node_id() in message, message


def test_queries_cannot_change_under_a_run(local_ray: None) -> None:
    """The chunks sent to the actors are the queries the driver checked: a write into them
    mid-run (here from the progress callback) is refused, as in ``negmine.mine``."""
    queries, corpus, positives = data()

    def write(done: int, total: int) -> None:
        if done:
            queries[-1] += 1

    with pytest.raises(ValueError, match="read-only"):
        distributed.mine(queries, corpus, positives, shards=1, chunk_queries=8, progress=write)
    queries[-1] += 1  # writable again once the run is over


def _outcome(run: Callable[[], Any]) -> Any:
    try:
        return run()
    except NegmineError as e:
        return e


@st.composite
def small_runs(draw: st.DrawFn) -> dict[str, Any]:
    """Tiny inputs (ties and duplicates likely), every degenerate size: no query, one, no
    corpus row, dimension 0, more shards than queries or chunks, shards as a count or
    boundaries in every container."""
    n_queries, n_corpus = draw(st.integers(0, 4)), draw(st.integers(0, 8))
    dim = draw(st.integers(0, 3))
    shard_by = draw(st.sampled_from(["query", "corpus"]))
    if shard_by == "query":
        shards = draw(st.one_of(st.none(), st.integers(1, 3), st.integers(1, 3).map(np.int64)))
    elif n_corpus == 0:
        shards = draw(st.sampled_from([None, 1]))
    else:
        n = draw(st.integers(1, min(3, n_corpus)))
        cuts = st.sets(st.integers(1, n_corpus - 1), min_size=n - 1, max_size=n - 1)
        inner = draw(cuts if n > 1 else st.just(set()))
        bounds = [0, *sorted(inner), n_corpus]
        steps = [s for s in range(1, n_corpus + 1) if n_corpus % s == 0 and n_corpus // s <= 3]
        shards = draw(
            st.sampled_from(
                [
                    None,
                    n,
                    bounds,
                    tuple(bounds),
                    np.array(bounds),
                    np.array(bounds, dtype=np.uint32),
                    range(0, n_corpus + 1, steps[0]),
                ]
            )
        )
    return {
        "seed": draw(st.integers(0, 2**16)),
        "shape": (n_queries, n_corpus, dim),
        "tied": draw(st.booleans()),
        "shard_by": shard_by,
        "shards": shards,
        "chunk_queries": draw(st.integers(1, 3)),
        "k": draw(st.integers(1, max(n_corpus, 1))),
        "options": {
            "num_negatives": draw(st.integers(1, 3)),
            "duplicates": draw(st.sampled_from(["auto", None])),
            "sampling_strategy": draw(st.sampled_from(["top", "random"])),
            "seed": 3,
        },
    }


DEGENERATE = [
    {"shape": (0, 5, 2), "shard_by": "query", "shards": 2},
    {"shape": (0, 5, 2), "shard_by": "corpus", "shards": np.array([0, 2, 5])},
    {"shape": (1, 5, 2), "shard_by": "query", "shards": 3},
    {"shape": (1, 5, 2), "shard_by": "corpus", "shards": range(0, 6, 5)},
    {"shape": (2, 6, 2), "shard_by": "corpus", "shards": (0, 1, 3, 6)},
    {"shape": (2, 0, 2), "shard_by": "corpus", "shards": 1},
    {"shape": (0, 0, 2), "shard_by": "query", "shards": None},
    {"shape": (1, 3, 0), "shard_by": "query", "shards": None},
]


def _with_defaults(run: dict[str, Any]) -> dict[str, Any]:
    defaults = {"seed": 1, "tied": True, "chunk_queries": 1, "k": 2}
    return {**defaults, "options": {"num_negatives": 2, "seed": 3}, **run}


@settings(max_examples=10, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(small_runs())
@example(_with_defaults(DEGENERATE[0]))
@example(_with_defaults(DEGENERATE[1]))
@example(_with_defaults(DEGENERATE[2]))
@example(_with_defaults(DEGENERATE[3]))
@example(_with_defaults(DEGENERATE[4]))
@example(_with_defaults(DEGENERATE[5]))
@example(_with_defaults(DEGENERATE[6]))
@example(_with_defaults(DEGENERATE[7]))
def test_small_runs_equal_one_process(local_ray: None, run: dict[str, Any]) -> None:
    """Issue 20, item 14: ``distributed.mine`` and ``distributed.search`` return what
    ``negmine.mine`` and ``negmine.search`` return (or raise the same error) for any size."""
    rng = np.random.default_rng(run["seed"])
    n_queries, n_corpus, dim = run["shape"]
    draw = rng.integers(-1, 2, size=(n_queries + n_corpus, dim)) if run["tied"] else None
    values = rng.normal(size=(n_queries + n_corpus, dim)) if draw is None else draw
    queries = values[:n_queries].astype(np.float32)
    corpus = values[n_queries:].astype(np.float32)
    drawn = rng.integers(0, max(n_corpus, 1), size=(n_queries, 2 if n_corpus else 0))
    positives = [sorted({int(p) for p in row}) for row in drawn]
    ray_args = {key: run[key] for key in ("shard_by", "shards", "chunk_queries")}
    options = run["options"]

    expected = _outcome(lambda: negmine.mine(queries, corpus, positives, **options))
    got = _outcome(lambda: distributed.mine(queries, corpus, positives, **ray_args, **options))
    if isinstance(expected, NegmineError):
        assert (type(got), str(got)) == (type(expected), str(expected))
    else:
        assert isinstance(got, MiningResult), got
        assert got.negative_ids.shape == (n_queries, options["num_negatives"])
        assert_identical(expected, got)

    k = run["k"]
    want = _outcome(lambda: negmine.search(queries, corpus, k, exclude=positives))
    found = _outcome(lambda: distributed.search(queries, corpus, k, exclude=positives, **ray_args))
    if isinstance(want, NegmineError):
        assert type(found) is type(want), (found, want)
    else:
        assert isinstance(found, tuple), found
        assert (found[0].dtype, found[1].dtype) == (want[0].dtype, want[1].dtype)
        assert found[0].shape == found[1].shape == (n_queries, k)
        np.testing.assert_array_equal(found[1], want[1])
        np.testing.assert_array_equal(found[0].view(np.uint32), want[0].view(np.uint32))


def test_corpus_texts_group_duplicates_on_ray_as_in_one_process(
    local_ray: None, tmp_path: Path
) -> None:
    # Issue 20, 1: distributed.mine (and `negmine mine --ray`) take the corpus texts, whose
    # identical texts are the duplicate groups, as negmine.mine does.
    q, c, r = write_inputs(tmp_path)
    queries, corpus, positives = data()
    texts = [f"passage {i}" for i in range(N_CORPUS)]
    for (p,) in positives[:10]:  # a copy of the positive's text in another row
        texts[(p + 1) % N_CORPUS] = texts[p]
    t = tmp_path / "corpus.txt"
    t.write_text("".join(f"{x}\n" for x in texts))
    options = {"num_negatives": 4, "sampling_strategy": "top"}
    want = negmine.mine(queries, corpus, positives, corpus_texts=texts, **options)
    assert not np.array_equal(
        want.negative_ids, negmine.mine(queries, corpus, positives, **options).negative_ids
    )
    got = distributed.mine(
        queries, corpus, positives, shard_by="corpus", shards=SHARDS, corpus_texts=texts, **options
    )
    assert_identical(want, got)
    args = ["mine", "--queries", str(q), "--corpus", str(c), "--positives", str(r), "-q"]
    args += ["--corpus-texts", str(t), "--num-negatives", "4", "--chunk-queries", "9"]
    assert cli_main([*args, "--out", str(tmp_path / "local")]) == 0
    assert cli_main([*args, "--out", str(tmp_path / "ray"), "--ray", "auto", "--shards", "2"]) == 0
    same_files(tmp_path / "local", tmp_path / "ray")
    assert_identical(want, MiningResult.load(tmp_path / "ray"))


def tokens_of(n_queries: int, n_corpus: int, query_dim: int = DIM) -> dict[str, Any]:
    """Token embeddings of two tokens per text, for a ``maxsim`` run's bad arguments."""
    return {
        "query_tokens": [np.ones((2, query_dim), np.float32)] * n_queries,
        "corpus_tokens": [np.ones((2, DIM), np.float32)] * n_corpus,
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        (
            {"shard_by": "corpus", "shards": [0, 100, 100, N_CORPUS]},
            InvalidArgumentError,
            "rise strictly",
        ),
        ({"shard_by": "corpus", "shards": [0, 100]}, InvalidArgumentError, "rise strictly"),
        ({"shard_by": "corpus", "shards": N_CORPUS + 1}, InvalidArgumentError, "at most"),
        ({"shards": [0, 100, N_CORPUS]}, InvalidTypeError, "number of shards"),
        ({"shards": 0}, InvalidArgumentError, "shards must be positive"),
        ({"shard_by": "rows"}, InvalidArgumentError, "shard_by"),
        ({"shards": 2, "shard_resources": [{"a": 1}]}, InvalidArgumentError, "1 entries"),
        ({"num_negative": 3}, InvalidTypeError, "unknown mining option 'num_negative'"),
        ({"shard_resources": {"a": 1}}, InvalidTypeError, "one mapping per shard"),
        ({"shard_resources": [1, 2]}, InvalidTypeError, "one mapping per shard"),
        ({"out": "somewhere"}, InvalidTypeError, "queries must be a file path"),
        ({"rescore": lambda q, c: q}, InvalidArgumentError, "runs in one process"),
        ({"backend": "maxsim"}, InvalidArgumentError, "needs query_tokens and corpus_tokens"),
        (
            {"backend": "maxsim", "shard_by": "corpus"},
            InvalidArgumentError,
            "needs shard_by='query'",
        ),
        (
            {"backend": "maxsim", **tokens_of(N_QUERIES, N_CORPUS + 1)},
            InvalidArgumentError,
            "corpus_tokens holds 301 texts but corpus has 300 rows",
        ),
        (
            {"backend": "maxsim", **tokens_of(N_QUERIES, N_CORPUS, query_dim=8)},
            InvalidArgumentError,
            "query tokens have dimension 8 but corpus tokens have 16",
        ),
        (
            {"backend": "maxsim", "query_tokens": "no-such-directory"},
            FileNotFoundError,
            "no such multi-vector directory",
        ),
    ],
)
def test_bad_arguments_are_named_before_ray_starts(
    kwargs: dict[str, Any], error: type[Exception], needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # nothing may reach Ray
    queries, corpus, positives = data()
    with pytest.raises(error, match=needle):
        distributed.mine(queries, corpus, positives, **kwargs)


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    queries, corpus, positives = data()
    with pytest.raises(ImportError, match=r"pip install 'negmine\[ray\]'"):
        distributed.mine(queries, corpus, positives)


def test_two_nodes_with_a_custom_resource_per_shard(_ray_module: None) -> None:
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"node-a": 2},
            "object_store_memory": 128 * 1024**2,
            "include_dashboard": False,
        },
    )
    try:
        cluster.add_node(num_cpus=1, resources={"node-b": 2}, object_store_memory=128 * 1024**2)
        ray.init(address=cluster.address)
        queries, corpus, positives = data()
        options = {"num_negatives": 4, "relative_margin": 0.05, "metric": "dot"}
        expected = negmine.mine(queries, corpus, positives, **options)  # type: ignore[arg-type]
        got = distributed.mine(
            queries,
            corpus,
            positives,
            shard_by="corpus",
            shards=SHARDS,
            chunk_queries=16,
            shard_resources=[{"node-a": 1}, {"node-b": 1}, {"node-b": 1}],
            **options,
        )
        assert_identical(expected, got)
    finally:
        ray.shutdown()
        cluster.shutdown()
