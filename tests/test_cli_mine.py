"""`negmine mine` / `negmine report` end to end in subprocesses: results equal the API's, an
interrupted run (SIGKILL) resumes from its checkpoint into byte-identical output, a checkpoint of
other options is refused, and no temp file is left behind (docs/reliability.md items 13-15)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
import negmine.cli
from negmine.embed import embed_texts
from negmine.result import MiningResult

OUTPUTS = {
    "negative_ids.npy",
    "negative_scores.npy",
    "positive_indptr.npy",
    "positive_ids.npy",
    "positive_scores.npy",
    "removed_query.npy",
    "removed_id.npy",
    "removed_score.npy",
    "removed_filter.npy",
    "groups.npy",  # the duplicate groups (the runs here keep them on)
    "negative_ranks.npy",  # each negative's rank before the filters
    "report.json",
    "manifest.json",
}

OPTIONS = [
    "--num-negatives",
    "4",
    "--relative-margin",
    "0.05",
    "--dup-threshold",
    "0.95",
    "--range-min",
    "1",
    "--sampling-strategy",
    "random",
    "--seed",
    "7",
]


def write_data(directory: Path, n_queries: int, n_corpus: int, dim: int = 16, seed: int = 0):
    """Queries, a corpus with exact duplicates and near-duplicates of positives, qrels."""
    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(n_corpus, dim)).astype(np.float32)
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    pos = 2 * rng.choice(n_corpus // 2, size=n_queries, replace=False)  # distinct, even
    queries += 2 * corpus[pos]
    for i in range(0, n_queries, 5):
        corpus[pos[i] + 1] = corpus[pos[i]]  # an exact duplicate (odd rows are never positives)
    q_path, c_path, r_path = directory / "q.npy", directory / "c.npy", directory / "qrels.tsv"
    np.save(q_path, queries)
    np.save(c_path, corpus)
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{p}\t1" for q, p in enumerate(pos)]
    lines += [f"{q}\t{(p + 3) % n_corpus}\t0" for q, p in enumerate(pos[:10])]  # not relevant
    r_path.write_text("\n".join(lines) + "\n")
    return q_path, c_path, r_path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "negmine.cli", *map(str, args)]


def mine_cmd(q, c, r, out, *extra) -> list[str]:
    return cli("mine", "--queries", q, "--corpus", c, "--positives", r, "--out", out, *extra)


def run(cmd, timeout=120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def all_files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def assert_same_bytes(a: Path, b: Path) -> None:
    assert all_files(a) == all_files(b) == OUTPUTS
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_mine_and_report_end_to_end(tmp_path):
    q, c, r = write_data(tmp_path, 40, 300)
    out = tmp_path / "out"
    proc = run(mine_cmd(q, c, r, out, *OPTIONS, "--chunk-queries", "7"))
    assert proc.returncode == 0, proc.stderr
    assert "mined" in proc.stdout
    assert all_files(out) == OUTPUTS  # no temp files
    assert not (tmp_path / ".out.partial").exists()
    result = MiningResult.load(out)
    api = negmine.mine(
        np.load(q),
        np.load(c),
        str(r),
        num_negatives=4,
        relative_margin=0.05,
        dup_threshold=0.95,
        range_min=1,
        sampling_strategy="random",
        seed=7,
    )
    for name, array in api.arrays().items():
        assert array.tobytes() == result.arrays()[name].tobytes(), name
    assert api.report.to_dict() == result.report.to_dict()
    assert result.report.excluded_duplicates == 8  # queries 0, 5, ..., 35
    # Positives never come back as negatives; relevance-0 rows are not positives.
    for qi in range(40):
        assert not set(result.negative_ids[qi]) & set(result.positives_of(qi))
    assert result.positive_indptr.tolist() == list(range(41))
    report = run(cli("report", out))
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == str(result.report).strip()


def test_every_mining_option_is_a_flag_with_the_core_s_default_and_help():
    from negmine.mine import OPTIONS as DECLARED

    parser = negmine.cli.build_parser()
    mine = parser._subparsers._group_actions[0].choices["mine"]  # type: ignore[union-attr]
    flags = {a.dest: a for a in mine._actions}
    for name, spec in DECLARED.items():
        assert flags[name].default == spec["default"], name
        assert flags[name].help.replace("%%", "%") == spec["help"], name
        assert tuple(flags[name].choices or ()) == spec["choices"], name


def test_max_depth_and_record_removed_flags_mine_what_the_api_mines(tmp_path):
    q, c, r = write_data(tmp_path, 20, 200)
    out = tmp_path / "out"
    flags = ["--max-depth", "6", "--record-removed", "2", "--relative-margin", "0.05"]
    proc = run(mine_cmd(q, c, r, out, *flags, "--chunk-queries", "7"))
    assert proc.returncode == 0, proc.stderr
    result = MiningResult.load(out)
    api = negmine.mine(
        np.load(q), np.load(c), str(r), max_depth=6, record_removed=2, relative_margin=0.05
    )
    for name, array in api.arrays().items():
        assert array.tobytes() == result.arrays()[name].tobytes(), name
    assert api.report.to_dict() == result.report.to_dict()


def test_single_chunk_equals_many_chunks(tmp_path):
    q, c, r = write_data(tmp_path, 30, 200)
    one, many = tmp_path / "one", tmp_path / "many"
    assert run(mine_cmd(q, c, r, one, *OPTIONS)).returncode == 0
    assert (
        run(mine_cmd(q, c, r, many, *OPTIONS, "--chunk-queries", "4", "--threads", "1")).returncode
        == 0
    )
    assert_same_bytes(one, many)


def test_sigkill_then_resume_is_byte_identical(tmp_path):
    q, c, r = write_data(tmp_path, 150, 20000, dim=32)
    args = [*OPTIONS, "--chunk-queries", "1"]  # 150 checkpoints, one fsync each
    reference = tmp_path / "reference"  # one chunk: the output does not depend on chunking
    assert run(mine_cmd(q, c, r, reference, *OPTIONS)).returncode == 0
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    proc = subprocess.Popen(
        mine_cmd(q, c, r, out, *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not list(partial.glob("chunk_*.npz")):
            assert proc.poll() is None, "the run ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.002)
        assert proc.poll() is None, "the run finished before it could be killed: use more data"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    chunks = list(partial.glob("chunk_*.npz"))
    assert 1 <= len(chunks) < 150
    assert not (out / "report.json").exists()

    # Other options over this checkpoint: refused, and the checkpoint is left alone.
    other = run(mine_cmd(q, c, r, out, *OPTIONS, "--chunk-queries", "3"))
    assert other.returncode == 1  # a data error: the checkpoint is of other inputs
    assert "interrupted run of other inputs or options" in other.stderr
    assert "Traceback" not in other.stderr
    assert set(partial.glob("chunk_*.npz")) >= set(chunks)

    resumed = run(mine_cmd(q, c, r, out, *args))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_bytes(reference, out)
    assert not partial.exists()


def test_checkpoint_of_other_options_is_refused(tmp_path):
    q, c, r = write_data(tmp_path, 30, 200)
    out = tmp_path / "out"
    killer = textwrap.dedent(
        """
        import os, signal, sys
        import negmine.checkpoint as ck
        calls = []
        real = ck.mine_chunk
        def mine_prepared(*a, **k):
            calls.append(1)
            # Calls 1 and 2 mine two chunks.
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **k)
        ck.mine_chunk = mine_prepared
        from negmine.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    base = ["mine", "--queries", q, "--corpus", c, "--positives", r, "--out", out]
    args = [*OPTIONS, "--chunk-queries", "5"]
    proc = run([sys.executable, "-c", killer, *map(str, base), *args])
    assert proc.returncode == -signal.SIGKILL
    assert len(list((tmp_path / ".out.partial").glob("chunk_*.npz"))) == 2
    for change in (["--seed", "8"], ["--metric", "dot"], ["--no-duplicates"]):
        refused = run(mine_cmd(q, c, r, out, *args, *change))
        assert refused.returncode == 1, change
        assert "interrupted run of other inputs or options" in refused.stderr, change
    # Changed positives are refused too.
    r2 = tmp_path / "qrels2.tsv"
    r2.write_text(r.read_text() + "0\t1\t1\n")
    assert run(mine_cmd(q, c, r2, out, *args)).returncode == 1
    reference = tmp_path / "reference"
    assert run(mine_cmd(q, c, r, reference, *args)).returncode == 0
    assert run(mine_cmd(q, c, r, out, *args)).returncode == 0
    assert_same_bytes(reference, out)


def test_killed_while_saving_leaves_no_temp_file_after_resume(tmp_path):
    # BUG: a kill during the final save leaves `.<name>.npy.XXXX.tmp` in the output directory;
    # the resumed run completes but never removes it.
    q, c, r = write_data(tmp_path, 30, 200)
    out = tmp_path / "out"
    killer = textwrap.dedent(
        """
        import os, signal, sys
        import numpy as np
        real = np.save
        calls = []
        def save(f, *a, **k):
            calls.append(1)
            if len(calls) == 3:
                f.write(b"partial")
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(f, *a, **k)
        np.save = save
        from negmine.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    base = ["mine", "--queries", q, "--corpus", c, "--positives", r, "--out", out, *OPTIONS]
    proc = run([sys.executable, "-c", killer, *map(str, base)])
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / ".out.partial").is_dir()
    resumed = run(mine_cmd(q, c, r, out, *OPTIONS))
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    assert run(mine_cmd(q, c, r, reference, *OPTIONS)).returncode == 0
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert all_files(out) == OUTPUTS, f"left behind: {all_files(out) - OUTPUTS}"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_invalid_options_do_not_block_the_corrected_run(tmp_path):
    # BUG: the checkpoint manifest is written before the options and positives are validated
    # by the core; the corrected command is then refused as "an interrupted run of other
    # inputs or options" until the user deletes .partial by hand.
    q, c, r = write_data(tmp_path, 20, 100)
    out = tmp_path / "out"
    bad = run(mine_cmd(q, c, r, out, "--relative-margin", "1.5"))
    assert bad.returncode == 2
    assert "relative_margin" in bad.stderr and "Traceback" not in bad.stderr
    good = run(mine_cmd(q, c, r, out, "--relative-margin", "0.05"))
    assert good.returncode == 0, good.stderr
    assert all_files(out) == OUTPUTS


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--range-min", "5", "--range-max", "5"], "range_max"),
        (["--dup-threshold", "2"], "dup_threshold"),
        (["--min-score", "1", "--max-score", "0"], "min_score"),
        (["--max-score", "nan"], "max_score"),
        (["--num-negatives", "0"], "num_negatives"),
    ],
)
def test_bad_cli_options_are_clear_errors(tmp_path, extra, needle):
    q, c, r = write_data(tmp_path, 10, 50)
    proc = run(mine_cmd(q, c, r, tmp_path / "out", *extra))
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_bad_cli_inputs_are_clear_errors(tmp_path):
    q, c, r = write_data(tmp_path, 10, 50)
    r_bad = tmp_path / "bad.tsv"
    r_bad.write_text("0\t1\n12\t3\n")
    proc = run(mine_cmd(q, c, r_bad, tmp_path / "o1"))
    assert proc.returncode == 1 and "query 12" in proc.stderr, proc.stderr
    r_bad.write_text("0\t50\n")
    proc = run(mine_cmd(q, c, r_bad, tmp_path / "o2"))
    assert proc.returncode == 1 and "50" in proc.stderr, proc.stderr
    proc = run(mine_cmd(q, tmp_path / "missing.npy", r, tmp_path / "o3"))
    assert proc.returncode == 1 and "missing.npy" in proc.stderr, proc.stderr
    proc = run(cli("report", tmp_path / "nowhere"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert os.path.exists(r)


# ------------------------------------------------------------- duplicates by text (issue 20)

N_COPIES = 10


def copies_data(directory: Path, n_queries: int = 20, n_corpus: int = 1033, dim: int = 16):
    """Query ``i``'s positive is corpus row ``i``; the last ``N_COPIES`` corpus lines copy
    lines ``0..N_COPIES`` with embeddings that differ in their last bits (as the same text
    embedded in another batch does) and that rank right after the positive."""
    rng = np.random.default_rng(1)
    corpus = rng.normal(size=(n_corpus, dim)).astype(np.float32)
    first_copy = n_corpus - N_COPIES
    corpus[first_copy:] = np.nextafter(corpus[:N_COPIES], np.float32(np.inf))
    queries = (corpus[:n_queries] + 0.1 * rng.normal(size=(n_queries, dim))).astype(np.float32)
    texts = [f"passage {i}" for i in range(first_copy)] + [f"passage {i}" for i in range(N_COPIES)]
    q, c = directory / "q.npy", directory / "c.npy"
    np.save(q, queries)
    np.save(c, corpus)
    t = directory / "corpus.txt"
    t.write_text("".join(f"{text}\n" for text in texts))
    r = directory / "qrels.tsv"
    r.write_text("".join(f"{i}\t{i}\n" for i in range(n_queries)))
    return q, c, t, r, texts


def test_cli_with_corpus_texts_mines_no_copy_of_a_positive(tmp_path):
    # BUG (issue 20, 1): the CLI grouped duplicates by embedding even with --corpus-texts,
    # so a copy of a positive embedded a bit differently came back as its hardest negative.
    q, c, t, r, texts = copies_data(tmp_path)
    n_corpus = len(texts)
    copy_of = {i: n_corpus - N_COPIES + i for i in range(N_COPIES)}
    # Without text groups the copies are mined (what the test guards against).
    by_rows = negmine.mine(np.load(q), np.load(c), str(r))
    assert all(copy_of[i] in by_rows.negative_ids[i] for i in range(N_COPIES))

    proc = run(mine_cmd(q, c, r, tmp_path / "m", "--corpus-texts", t))
    assert proc.returncode == 0, proc.stderr
    got = MiningResult.load(tmp_path / "m")
    for i, copy in copy_of.items():
        assert copy not in got.negative_ids[i], (i, got.negative_ids[i])
    api = negmine.mine(np.load(q), np.load(c), str(r), corpus_texts=texts)
    for name, array in api.arrays().items():
        assert array.tobytes() == got.arrays()[name].tobytes(), name
    assert got.report.to_dict() == api.report.to_dict()


def test_checkpoint_fingerprint_includes_the_duplicate_groups(tmp_path):
    # BUG (issue 20, 1): mine_to_directory took no corpus texts, and a resume with another
    # duplicates array was not refused (the manifest said "array").
    from negmine.checkpoint import mine_to_directory, partial_directory

    q, c, _, r, texts = copies_data(tmp_path, n_queries=20, n_corpus=120)
    options = negmine.MiningOptions(num_negatives=3)
    reference = tmp_path / "reference"
    mine_to_directory(q, c, r, reference, options, corpus_texts=texts, progress=False)
    calls = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        if len(calls) == 3:  # two chunks checkpointed
            raise KeyboardInterrupt

    out = tmp_path / "out"
    run_args = {"chunk_queries": 4, "corpus_texts": texts}
    with pytest.raises(KeyboardInterrupt):
        mine_to_directory(q, c, r, out, options, progress=interrupt, **run_args)
    assert len(list(partial_directory(out).glob("chunk_*.npz"))) == 2
    other_texts = [*texts[:-1], "another passage"]
    groups = np.arange(len(texts))
    for change in (
        {"corpus_texts": other_texts},
        {"corpus_texts": None},
        {"corpus_texts": None, "duplicates": groups},
    ):
        with pytest.raises(negmine.errors.InvalidArgumentError, match="interrupted run of other"):
            mine_to_directory(q, c, r, out, options, progress=False, **{**run_args, **change})
    done = []
    mine_to_directory(q, c, r, out, options, progress=lambda d, t: done.append(d), **run_args)
    assert done[0] == 8  # resumed
    assert_same_bytes(reference, out)

    # An array of groups is named by its content: another array is another run.
    arrays = tmp_path / "arrays"
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        mine_to_directory(
            q, c, r, arrays, options, duplicates=groups, chunk_queries=4, progress=interrupt
        )
    shifted = groups.copy()
    shifted[-1] = 0
    with pytest.raises(negmine.errors.InvalidArgumentError, match="interrupted run of other"):
        mine_to_directory(
            q, c, r, arrays, options, duplicates=shifted, chunk_queries=4, progress=False
        )


class LastBitsModel:
    """Embeds a text by its bytes; each ``encode`` call moves the first component by one ulp
    more than the call before, so the same text embedded in another call differs in its last
    bits (as a real model's batches do)."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        out = np.full((len(texts), 8), 0.1, dtype=np.float32)
        for i, text in enumerate(texts):
            for j, byte in enumerate(text.encode()):
                out[i, (j * 5 + byte) % 8] += 1.0 + byte % 3
        for _ in range(self.calls):
            out[:, 0] = np.nextafter(out[:, 0], np.float32(np.inf))
        self.calls += 1
        return out


WORDS = ["alpha", "beta", "gamma", "delta", "eps"]


@settings(max_examples=25)
@given(
    source=st.sampled_from(["embeddings", "embeddings+texts", "texts"]),
    no_duplicates=st.booleans(),
    num_negatives=st.integers(1, 5),
    strategy=st.sampled_from(["top", "random"]),
    metric=st.sampled_from(["cosine", "dot"]),
    chunk_queries=st.integers(1, 13),
    seed=st.integers(0, 2),
)
def test_cli_mine_passes_the_core_what_the_library_passes(
    source: str,
    no_duplicates: bool,
    num_negatives: int,
    strategy: str,
    metric: str,
    chunk_queries: int,
    seed: int,
) -> None:
    # Every `negmine mine` without the optional filters: its negatives (and every array of
    # the result, and the report) equal negmine.mine's with the same inputs, duplicate groups
    # by text hash included when texts are given (issue 20, 1).
    rng = np.random.default_rng(seed)
    n_queries, n_corpus = 12, 48
    texts = [" ".join(rng.choice(WORDS, size=2)) for _ in range(n_corpus)]  # many copies
    positives = [(q, 4 * q) for q in range(n_queries)] + [(0, 1), (5, 7)]
    query_texts = [texts[p] + " ?" for q, p in positives[:n_queries]]
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        d = Path(tmp)
        model = LastBitsModel()
        patch.setattr(negmine.cli, "_embedder", lambda name, quiet: (model, "last-bits"))
        r = d / "qrels.tsv"
        r.write_text("".join(f"{q}\t{p}\n" for q, p in positives))
        t, qt = d / "corpus.txt", d / "queries.txt"
        t.write_text("".join(f"{x}\n" for x in texts))
        qt.write_text("".join(f"{x}\n" for x in query_texts))
        argv = ["-q", "mine", "--positives", str(r), "--out", str(d / "out")]
        argv += ["--cache-dir", str(d / "cache"), "--num-negatives", str(num_negatives)]
        argv += ["--sampling-strategy", strategy, "--metric", metric, "--seed", str(seed)]
        argv += ["--chunk-queries", str(chunk_queries)]
        argv += ["--no-duplicates"] if no_duplicates else []
        if source == "texts":
            argv += ["--query-texts", str(qt), "--corpus-texts", str(t), "--batch-size", "1"]
            assert negmine.cli.main(argv) == 0
            assert model.calls > 1  # the texts went through several encode calls
            embedded = {"cache_dir": d / "cache", "model_id": "last-bits", "progress": False}
            queries = np.asarray(embed_texts(query_texts, model, **embedded))
            corpus = np.asarray(embed_texts(texts, model, **embedded))
        else:
            corpus = rng.normal(size=(n_corpus, 8)).astype(np.float32)
            first = {}
            for row, text in enumerate(texts):  # copies differ in their last bits
                copied = corpus[first.setdefault(text, row)]
                corpus[row] = np.nextafter(copied, np.float32(np.inf)) if row % 2 else copied
            corpus[n_corpus - 1] = corpus[n_corpus - 2]  # equal rows of (maybe) other texts
            queries = corpus[[p for _, p in positives[:n_queries]]] + 0.2 * rng.normal(
                size=(n_queries, 8)
            ).astype(np.float32)
            np.save(d / "q.npy", queries)
            np.save(d / "c.npy", corpus)
            argv += ["--queries", str(d / "q.npy"), "--corpus", str(d / "c.npy")]
            argv += ["--corpus-texts", str(t)] if source == "embeddings+texts" else []
            assert negmine.cli.main(argv) == 0
        got = MiningResult.load(d / "out")
        want = negmine.mine(
            queries,
            corpus,
            str(r),
            num_negatives=num_negatives,
            sampling_strategy=strategy,  # type: ignore[arg-type]
            metric=metric,  # type: ignore[arg-type]
            seed=seed,
            duplicates=None if no_duplicates else "auto",
            corpus_texts=None if source == "embeddings" else texts,
        )
    assert got.arrays().keys() == want.arrays().keys()
    for name, array in want.arrays().items():
        assert array.tobytes() == got.arrays()[name].tobytes(), name
    assert got.report.to_dict() == want.report.to_dict()


# ------------------------------------------------------ before the first checkpoint (issue 20)

KILL_AT_FIRST_CHUNK = textwrap.dedent(
    """
    import os, signal, sys
    import negmine.checkpoint as ck
    def mine_prepared(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    ck.mine_chunk = mine_prepared
    from negmine.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing(tmp_path):
    # BUG (issue 20, 10): the failure left `.out.partial` with its manifest, and the run with
    # the corrected corpus was refused as "an interrupted run of other inputs".
    q, c, r = write_data(tmp_path, 20, 100)
    corpus = np.load(c)
    overflowing = corpus.copy()
    overflowing[7] = 3e38  # the core refuses the dot scores of this row while mining
    np.save(c, overflowing)
    out = tmp_path / "out"
    bad = run(mine_cmd(q, c, r, out, "--metric", "dot"))
    assert bad.returncode == 1 and "overflow" in bad.stderr, bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npy", "q.npy", "qrels.tsv"]
    np.save(c, corpus)
    good = run(mine_cmd(q, c, r, out, "--metric", "dot"))
    assert good.returncode == 0, good.stderr
    assert all_files(out) == OUTPUTS
    assert not partial_of(out).exists()


def partial_of(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def test_a_kill_before_the_first_checkpoint_blocks_no_other_run(tmp_path):
    # BUG (issue 20, 10): a kill after the checkpoint's manifest but before its first chunk
    # left a checkpoint holding nothing, which refused every run of other options.
    q, c, r = write_data(tmp_path, 30, 200)
    out = tmp_path / "out"
    base = ["mine", "--queries", q, "--corpus", c, "--positives", r, "--out", out]
    killed = run([sys.executable, "-c", KILL_AT_FIRST_CHUNK, *map(str, base), *OPTIONS])
    assert killed.returncode == -signal.SIGKILL
    assert (partial_of(out) / "manifest.json").exists()
    assert not list(partial_of(out).glob("chunk_*"))
    other = [*OPTIONS, "--seed", "8", "--chunk-queries", "7"]
    proc = run(mine_cmd(q, c, r, out, *other))
    assert proc.returncode == 0, proc.stderr
    reference = tmp_path / "reference"
    assert run(mine_cmd(q, c, r, reference, *other)).returncode == 0
    assert_same_bytes(reference, out)
    assert not partial_of(out).exists()


@pytest.mark.parametrize(
    "options",
    [{}, {"relative_margin": 0.05}, {"max_depth": 20}],
    ids=["exact", "capped", "source"],
)
@pytest.mark.parametrize("bad", ["nan-query", "overflowing-positive"])
def test_a_chunk_names_query_rows_globally(options: dict[str, Any], bad: str) -> None:
    """A chunk of queries (a checkpointed run, a Ray actor) mined with its global
    ``query_offset``: an error names the query row in the whole input, not in the chunk."""
    from negmine.mine import MiningOptions, mine_prepared, prepare

    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(60, 8)).astype(np.float32)
    queries = corpus[:8] + 0.1 * rng.normal(size=(8, 8)).astype(np.float32)
    positives = [[i] for i in range(8)]
    if bad == "nan-query":
        queries[5, 2] = np.nan
        needle = "queries row 5 contains NaN"
    else:  # a positive whose dot product with query 5 could overflow float32
        corpus[5] *= 1e38 / np.linalg.norm(corpus[5])
        needle = "queries row 5 "
    opts = dict(options)
    max_depth = opts.pop("max_depth", None)
    fetch = None
    if max_depth is not None:  # a candidate source: ids only, rescored by the core

        def fetch(rows: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
            ids = np.tile(np.arange(min(depth, 60)), (len(rows), 1))
            return np.repeat(np.arange(len(rows)), ids.shape[1]), ids.reshape(-1)

    prepared = prepare(queries, corpus, positives, duplicates=None)
    with pytest.raises(negmine.InvalidArgumentError, match=needle):
        mine_prepared(
            queries[4:8],
            corpus,
            prepared.rows(4, 8),
            MiningOptions(num_negatives=3, metric="dot", **opts),
            query_offset=4,
            fetch=fetch,
            max_depth=max_depth,
        )
