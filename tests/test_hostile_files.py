"""Hostile file system conditions (issue 8, items 3, 4, 10, 11, 12 and the path / cache
classes): two runs into one output, a full file system half way through a save, mixed or
edited result directories, FIFOs as inputs, missing inputs, corrupt results given to
`negmine report`, umask-derived file modes, and a checkpoint keyed by input content."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import negmine
import negmine._atomic as atomic
import negmine.checkpoint as ck
from negmine.errors import DirectoryLockedError, FormatError, InvalidArgumentError
from negmine.mine import MiningOptions
from negmine.result import MiningResult

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "python")}


def write_data(directory: Path, n_queries: int = 20, n_corpus: int = 200, dim: int = 8):
    rng = np.random.default_rng(n_queries * 1000 + n_corpus)
    corpus = rng.normal(size=(n_corpus, dim)).astype(np.float32)
    pos = rng.choice(n_corpus, size=n_queries, replace=False)
    queries = (corpus[pos] + 0.1 * rng.normal(size=(n_queries, dim))).astype(np.float32)
    q, c, r = directory / "q.npy", directory / "c.npy", directory / "qrels.tsv"
    np.save(q, queries)
    np.save(c, corpus)
    r.write_text("".join(f"{i}\t{p}\n" for i, p in enumerate(pos)))
    return q, c, r


def small_result(directory: Path, n_queries: int = 20) -> MiningResult:
    directory.mkdir(exist_ok=True)
    q, c, r = write_data(directory, n_queries)
    return negmine.mine(np.load(q), np.load(c), str(r), num_negatives=4)


def assert_equal_results(a: MiningResult, b: MiningResult) -> None:
    for name, array in a.arrays().items():
        assert array.dtype == b.arrays()[name].dtype, name
        assert array.tobytes() == b.arrays()[name].tobytes(), name
    assert a.report.to_dict() == b.report.to_dict()


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "negmine.cli", *map(str, args)]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)


def hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# Item 3: one run at a time per output directory


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import negmine.checkpoint as ck
    started, release = Path(sys.argv[1]), Path(sys.argv[2])
    real = ck.mine_chunk
    def mine_prepared(*a, **k):
        started.touch()
        while not release.exists():
            time.sleep(0.01)
        return real(*a, **k)
    ck.mine_chunk = mine_prepared
    from negmine.cli import main
    sys.exit(main(sys.argv[3:]))
    """
)


def test_second_mine_run_into_one_out_fails_at_once_naming_the_holder(tmp_path):
    q, c, r = write_data(tmp_path)
    out = tmp_path / "out"
    args = ["mine", "--queries", q, "--corpus", c, "--positives", r, "--out", out]
    started, release = tmp_path / "started", tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(started), str(release), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = time.monotonic()
        second = run(cli(*args))
        assert time.monotonic() - t0 < 30
        assert second.returncode == 1, second.stderr
        assert "Traceback" not in second.stderr
        assert "is being written by another negmine run" in second.stderr
        assert f"pid {holder.pid}" in second.stderr
        assert str(out) in second.stderr
        release.touch()
        _, err = holder.communicate(timeout=60)
    finally:
        release.touch()
        holder.wait(timeout=60)
    assert holder.returncode == 0, err
    MiningResult.load(out)
    assert hidden(tmp_path) == []  # lock and checkpoint removed
    # Lock released: the next run into the same directory works.
    assert run(cli(*args)).returncode == 0


def test_lock_taken_on_a_lock_file_its_holder_just_removed_is_taken_again(tmp_path, monkeypatch):
    # The classic race: we open the lock file, its holder finishes and removes it, our flock
    # then succeeds on a deleted file that the next run would not see.
    partial = tmp_path / ".out.partial"
    calls = []
    real = ck.fcntl.flock

    def flock(fd, how):
        calls.append(os.fstat(fd).st_ino)
        if len(calls) == 1:
            os.unlink(partial / ck.LOCK)
        real(fd, how)

    monkeypatch.setattr(ck.fcntl, "flock", flock)
    with ck.locked(partial, tmp_path / "out"):
        assert len(calls) == 2
        current = os.stat(partial / ck.LOCK)
        assert current.st_ino == calls[1]
        assert (partial / ck.LOCK).read_text() == f"{os.getpid()}\n"
        monkeypatch.setattr(ck.fcntl, "flock", real)
        again = ck.locked(partial, tmp_path / "out")
        with pytest.raises(DirectoryLockedError, match=f"pid {os.getpid()}"), again:
            pass


# Item 4: a result directory is one unit


FILL_UNDER_RLIMIT = textwrap.dedent(
    """
    import dataclasses, json, resource, signal, sys
    import numpy as np
    from negmine.result import MiningResult
    out = sys.argv[1]
    old = MiningResult.load(out)
    # Different from the saved result in its first file, too large in a later one.
    new = dataclasses.replace(
        old,
        negative_ids=old.negative_ids[::-1].copy(),
        removed={**old.removed, "query": np.zeros(1 << 20, dtype=np.int64)},
    )
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    try:
        new.save(out)
    except OSError as e:
        print(json.dumps({"errno": e.errno, "message": str(e)}))
    else:
        print("saved")
    """
)


def test_save_failing_half_way_leaves_the_old_result_whole(tmp_path):
    out = tmp_path / "out"
    old = small_result(tmp_path / "data")
    old.save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = run([sys.executable, "-c", FILL_UNDER_RLIMIT, str(out)])
    assert proc.returncode == 0, proc.stderr
    error = json.loads(proc.stdout)
    assert error["errno"] == errno.EFBIG
    assert "File too large" in error["message"]
    assert str(out / "removed_query.npy") in error["message"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert_equal_results(MiningResult.load(out), old)
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_save_replaces_a_previous_result_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(atomic, "_renameat2", lambda: None)
    first = small_result(tmp_path / "a", 20)
    second = small_result(tmp_path / "b", 30)
    out = tmp_path / "out"
    first.save(out)
    (out / "report.json").unlink()  # a damaged result is still a result: replaced
    second.save(out)
    assert_equal_results(MiningResult.load(out), second)
    assert hidden(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "out"]


def edit_manifest(directory: Path, change) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest["files"])
    path.write_text(json.dumps(manifest))


def mix(d: Path, other: Path) -> None:
    (d / "negative_ids.npy").write_bytes((other / "negative_ids.npy").read_bytes())


def flip_byte(d: Path) -> None:
    data = bytearray((d / "positive_scores.npy").read_bytes())
    data[-1] ^= 1
    (d / "positive_scores.npy").write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d, o: mix(d, o), r"negative_ids\.npy does not match manifest\.json"),
        (lambda d, o: flip_byte(d), r"positive_scores\.npy does not match"),
        (lambda d, o: (d / "removed_id.npy").unlink(), r"removed_id\.npy is listed .* missing"),
        (lambda d, o: (d / "manifest.json").unlink(), r"has no manifest\.json"),
        (lambda d, o: (d / "manifest.json").write_text("{"), r"manifest\.json is not valid JSON"),
        (
            lambda d, o: edit_manifest(d, lambda f: f.update({"x.npy": f["report.json"]})),
            r"lists 'x\.npy', which is not a file of a mining result",
        ),
        (
            lambda d, o: edit_manifest(d, lambda f: f.pop("report.json")),
            r"does not list report\.json",
        ),
        (
            lambda d, o: edit_manifest(
                d, lambda f: f["negative_ids.npy"].update({"shape": [3, 3]})
            ),
            r"negative_ids\.npy holds .*manifest\.json lists",
        ),
    ],
    ids=["mixed", "edited", "missing", "no-manifest", "bad-manifest", "extra", "unlisted", "shape"],
)
def test_load_refuses_a_mixed_or_damaged_result(tmp_path, damage, needle):
    d, other = tmp_path / "d", tmp_path / "other"
    small_result(tmp_path / "a", 20).save(d)
    small_result(tmp_path / "b", 21).save(other)
    damage(d, other)
    with pytest.raises(FormatError, match=needle):
        MiningResult.load(d)


def test_save_never_deletes_user_files(tmp_path):
    result = small_result(tmp_path / "data")
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match=r"not part of a negmine result \(notes\.txt\)"):
        result.save(target)
    assert sorted(os.listdir(target)) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        result.save(a_file)
    assert a_file.read_text() == "x"
    # An empty directory, and a result saved without a manifest (older negmine), are replaced.
    (tmp_path / "empty").mkdir()
    result.save(tmp_path / "empty")
    legacy = tmp_path / "legacy"
    result.save(legacy)
    (legacy / "manifest.json").unlink()
    result.save(legacy)
    assert_equal_results(MiningResult.load(legacy), result)
    assert hidden(tmp_path) == []


# Item 10 and the path class: nothing hangs on a FIFO, nothing is created before inputs are found


def test_mine_refuses_a_fifo_as_positives_at_once(tmp_path):
    q, c, _ = write_data(tmp_path)
    fifo = tmp_path / "qrels.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    proc = run(
        cli("mine", "--queries", q, "--corpus", c, "--positives", fifo, "--out", out), timeout=60
    )
    assert proc.returncode == 1
    assert "FIFO" in proc.stderr and str(fifo) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and hidden(tmp_path) == []


@pytest.mark.parametrize("missing", ["--queries", "--corpus", "--positives"])
def test_missing_input_creates_no_output_directory(tmp_path, missing):
    q, c, r = write_data(tmp_path)
    inputs = {"--queries": q, "--corpus": c, "--positives": r}
    inputs[missing] = tmp_path / "nowhere.npy"
    out = tmp_path / "new" / "out"
    args = [x for pair in inputs.items() for x in pair]
    proc = run(cli("mine", *args, "--out", out))
    assert proc.returncode == 1
    assert "nowhere.npy" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "new").exists()
    if missing != "--positives":
        searched = run(cli("search", *args[:4], "--k", 2, "--out", out))
        assert searched.returncode == 1 and "nowhere.npy" in searched.stderr
        assert not (tmp_path / "new").exists()


# Item 11, CLI: `negmine report` on a damaged result, --plot without matplotlib


def replace_report(d: Path, text: str) -> None:
    (d / "report.json").write_text(text)
    import hashlib

    digest = hashlib.sha256(text.encode()).hexdigest()
    edit_manifest(d, lambda f: f["report.json"].update({"sha256": digest}))


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: (d / "report.json").write_text("{"), "report.json does not match"),
        (lambda d: replace_report(d, '{"negatives": 1}'), "report.json is not a mining report"),
        (lambda d: replace_report(d, "[1, "), "report.json is not a mining report"),
        (lambda d: (d / "manifest.json").write_text("\x00"), "manifest.json is not valid JSON"),
        (lambda d: flip_byte(d), "positive_scores.npy does not match"),
    ],
    ids=["truncated-report", "report-keys", "report-json", "manifest", "npy"],
)
def test_report_on_a_damaged_result_is_a_clear_error(tmp_path, damage, needle):
    d = tmp_path / "out"
    small_result(tmp_path / "data").save(d)
    damage(d)
    proc = run(cli("report", d))
    assert proc.returncode == 1
    assert proc.stderr.startswith("negmine: error: ") and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_report_plot_without_matplotlib_is_a_clear_error(tmp_path):
    d = tmp_path / "out"
    small_result(tmp_path / "data").save(d)
    script = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from negmine.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    png = tmp_path / "hist.png"
    proc = run([sys.executable, "-c", script, "report", str(d), "--plot", str(png)])
    assert proc.returncode == 1
    assert "negmine: error:" in proc.stderr and "negmine[plot]" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not png.exists()


# Item 12: files get the umask's mode, not mkstemp's 0600


@pytest.fixture(params=[0o022, 0o007], ids=["umask022", "umask007"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_umask_mode(tmp_path, umask, monkeypatch):
    from negmine.cli import main

    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask

    def record(*paths: Path) -> None:
        modes = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in paths}
        assert modes == {name: oct(file_mode) for name in modes}

    q, c, r = write_data(tmp_path)
    result = negmine.mine(np.load(q), np.load(c), str(r), num_negatives=4)
    result.save(tmp_path / "saved")
    assert mode(tmp_path / "saved") == dir_mode
    record(*(tmp_path / "saved").iterdir())
    search = ["search", "--queries", q, "--corpus", c, "--k", 2, "--out", tmp_path / "s.npz"]
    assert main(list(map(str, search))) == 0
    record(tmp_path / "s.npz")

    # The checkpoint of a run interrupted after its second chunk, then the finished run.
    calls = []
    real = ck.mine_chunk

    def mine_prepared(*a, **k):
        calls.append(1)
        if len(calls) == 3:  # calls 1 and 2 mine two chunks
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(ck, "mine_chunk", mine_prepared)
    out = tmp_path / "mined"
    with pytest.raises(KeyboardInterrupt):
        ck.mine_to_directory(q, c, r, out, MiningOptions(), chunk_queries=5, progress=False)
    partial = ck.partial_directory(out)
    assert mode(partial) == dir_mode
    checkpoint = list(partial.iterdir())
    assert {p.name for p in checkpoint} >= {"lock", "manifest.json", "chunk_000000000005.npz"}
    record(*checkpoint)
    monkeypatch.setattr(ck, "mine_chunk", real)
    ck.mine_to_directory(q, c, r, out, MiningOptions(), chunk_queries=5, progress=False)
    assert mode(out) == dir_mode
    record(*out.iterdir())

    pytest.importorskip("pyarrow")
    from negmine.outputs import to_parquet

    to_parquet(result, tmp_path / "r.parquet")
    record(tmp_path / "r.parquet")


# Class "every trusted cache is keyed by content": the checkpoint's inputs


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import negmine.checkpoint as ck
    calls = []
    real = ck.mine_chunk
    def mine_prepared(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    ck.mine_chunk = mine_prepared
    from negmine.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_resume_refuses_another_corpus_of_the_same_size_and_mtime(tmp_path):
    q, c, r = write_data(tmp_path)
    out = tmp_path / "out"
    args = ["mine", "--queries", q, "--corpus", c, "--positives", r, "--out", out]
    args += ["--chunk-queries", "5"]
    killed = run([sys.executable, "-c", KILLER, *map(str, args)])
    assert killed.returncode == -signal.SIGKILL
    partial = ck.partial_directory(out)
    assert len(list(partial.glob("chunk_*.npz"))) == 2

    original = c.read_bytes()
    st = os.stat(c)
    corpus = np.load(c)
    np.save(c, corpus[::-1].copy())  # same size, other content
    os.utime(c, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(c).st_size == st.st_size and os.stat(c).st_mtime_ns == st.st_mtime_ns
    refused = run(cli(*args))
    assert refused.returncode == 1
    assert "interrupted run of other inputs or options" in refused.stderr
    assert len(list(partial.glob("chunk_*.npz"))) == 2  # the checkpoint is left alone

    c.write_bytes(original)
    resumed = run(cli(*args))
    assert resumed.returncode == 0, resumed.stderr
    reference = tmp_path / "reference"
    args[args.index(out)] = reference
    assert run(cli(*args)).returncode == 0
    for p in reference.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name
