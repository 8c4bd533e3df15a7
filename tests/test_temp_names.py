"""Temporary names (issue 20, item 11): every temp file and staging directory negmine makes is
``.<destination>.<12 hex>.tmp`` (``.old`` for an old directory renamed aside) or a run's
``.<out>.partial`` checkpoint, locked while its writer lives. A writer killed at any point
(SIGKILL, in a subprocess) leaves nothing that the next write to the same destination does
not remove, and a live writer's names are never taken."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import negmine
from negmine.result import MiningResult

PACKAGE = Path(negmine.__file__).resolve().parent
# The subprocesses import the negmine this process tests, wherever the working directory is.
ENV = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}


def hidden(directory: Path) -> list[str]:
    """Every hidden name under ``directory``, relative to it."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob(".*"))


def small_result(seed: int, n_queries: int = 12) -> MiningResult:
    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(80, 8)).astype(np.float32)
    queries = corpus[:n_queries] + 0.1 * rng.normal(size=(n_queries, 8)).astype(np.float32)
    return negmine.mine(queries, corpus, [[i] for i in range(n_queries)], num_negatives=3)


# ------------------------------------------------------------------------- the name patterns


def test_every_temp_name_is_made_by_the_atomic_helpers():
    # The inventory the kill test below covers: a module that made its own temp name (with
    # tempfile, a random token, or a hidden f-string name) would escape the sweep.
    made = re.compile(r"tempfile\.|mkstemp|mkdtemp|token_hex|f\"\.\{|f'\.\{")
    found = {
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if made.search(line) and not line.lstrip().startswith("#")
    }
    sources = {entry.split(":")[0] for entry in found}
    assert sources == {"_atomic.py", "checkpoint.py", "bench/command.py"}, found
    # `negmine bench`'s one scratch directory lives in the system's temp directory, beside no
    # output, and is removed when the bench ends.
    bench_lines = [e for e in found if e.startswith("bench/command.py:")]
    assert len(bench_lines) == 1
    bench_command = (PACKAGE / "bench" / "command.py").read_text().splitlines()
    line = bench_command[int(bench_lines[0].split(":")[1]) - 1]
    assert "tempfile.TemporaryDirectory(" in line
    checkpoint = (PACKAGE / "checkpoint.py").read_text()
    assert checkpoint.count('f".{') == 1 and 'f".{dest.name}.partial"' in checkpoint


# ------------------------------------------------------------------- a killed MiningResult.save

KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from negmine.result import MiningResult
    result = MiningResult.load(sys.argv[1])
    real, calls = np.save, []
    def save(f, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(f, *a, **k)
    np.save = save
    result.save(sys.argv[2])
    """
)


def test_a_killed_save_leaves_a_staging_directory_the_next_save_removes(tmp_path):
    # BUG (issue 20, 11): each SIGKILL during MiningResult.save left a hidden copy of the
    # result (`.<name>.<hex>.tmp`) that no later save removed.
    source, out = tmp_path / "source", tmp_path / "out"
    small_result(0).save(source)
    small_result(1).save(out)
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", KILLED_SAVE, str(source), str(out)], env=ENV, timeout=120
        )
        assert proc.returncode == -signal.SIGKILL
    # The second killed save removed the first one's copy: they do not pile up.
    left = [name for name in os.listdir(tmp_path) if name.startswith(".")]
    assert len(left) == 1 and re.fullmatch(r"\.out\.[0-9a-f]{12}\.tmp", left[0]), left

    # A staging directory whose writer is alive (it holds the lock) is left alone.
    live = tmp_path / ".out.0123456789ab.tmp"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        MiningResult.load(source).save(out)
        assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == [live.name]
    finally:
        os.close(fd)
    # So is one of another destination, or a name that only looks alike.
    for name in (".outer.0123456789ab.tmp", ".out.0123456789ab.tmp.keep", ".out.xyz.tmp"):
        (tmp_path / name).mkdir()
    small_result(2).save(out)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [
        ".out.0123456789ab.tmp.keep",
        ".out.xyz.tmp",
        ".outer.0123456789ab.tmp",
    ]
    assert MiningResult.load(out).negative_ids.tobytes() == small_result(2).negative_ids.tobytes()


# ------------------------------------------------------------ a kill at any point of any writer

# Runs WRITERS[name] in a fresh process, counting the calls into the OS and its files (the
# builtins of posix, fcntl and io) and killing itself with SIGKILL at call number `kill_at`
# (0: never; then it prints how many there were).
DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    kill_at, name, D = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    SETUP, WRITE = {writers}[name]
    exec(SETUP)
    calls = 0
    def profile(frame, event, fn):
        global calls
        if event != "c_call":
            return
        module = getattr(fn, "__module__", None) or type(getattr(fn, "__self__", None)).__module__
        if module in ("posix", "fcntl", "_io", "io"):
            calls += 1
            if calls == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    sys.setprofile(profile)
    exec(WRITE)
    sys.setprofile(None)
    print(calls)
    """
)

STUB_MODEL = """
import negmine.cli
class Stub:
    def encode(self, texts, **kwargs):
        return np.array([[len(t), t.count("a") + 1.0, 1.0] for t in texts], dtype=np.float32)
negmine.cli._embedder = lambda name, quiet: (Stub(), "stub")
"""

MINE = [
    "-q", "mine", "--queries", "q.npy", "--corpus", "c.npy", "--positives", "qrels.tsv",
    "--corpus-texts", "corpus.txt", "--out", "mined", "--chunk-queries", "3",
]  # fmt: skip

WRITERS: dict[str, tuple[str, str]] = {
    # atomic_write: every single file (search, export, plots, qrels cache, texts, chunks)
    "file": (
        "from negmine._atomic import atomic_write",
        "with atomic_write(D / 'out.bin') as f:\n    f.write(b'x' * 300_000)",
    ),
    # atomic_directory: MiningResult.save over an older result, by exchange and renamed aside
    "save": (
        "from negmine.result import MiningResult\nr = MiningResult.load(D / 'new')",
        "r.save(D / 'result')",
    ),
    "save-aside": (
        "import negmine._atomic as a\na._renameat2 = lambda: None\n"
        "from negmine.result import MiningResult\nr = MiningResult.load(D / 'new')",
        "r.save(D / 'result')",
    ),
    # the checkpointed run: .<out>.partial, its chunks, manifest and staged result
    "mine": ("import os, negmine.cli\nos.chdir(D)", f"negmine.cli.main({MINE!r})"),
    # the embeddings cache and an embeddings file (written by the core)
    "embed": (
        STUB_MODEL,
        "negmine.cli.main(['-q', 'embed', str(D / 'corpus.txt'), '--cache-dir', "
        "str(D / 'cache'), '--out', str(D / 'e.npy')])",
    ),
    # an HNSW index beside the corpus, and its sidecar
    "hnsw": (
        "import negmine\nq, c = np.load(D / 'q.npy'), np.load(D / 'c.npy')",
        "negmine.mine(q, c, str(D / 'qrels.tsv'), backend='hnsw', hnsw_path=D / 'index.bin',"
        " target_recall=0.5)",
    ),
    # NegativeRefresher's embeddings, written into a temp file chunk by chunk
    "refresh": (
        "import torch\nfrom negmine.torch.refresh import NegativeRefresher\n"
        "r = NegativeRefresher.__new__(NegativeRefresher)\n"
        "r.chunk_size, r.encode_device = 5, 'cpu'",
        "r._encode(lambda idx: torch.ones(len(idx), 4) * idx[:, None], 23, D / 'rows.npy',"
        " 'corpus')",
    ),
}


def write_inputs(d: Path) -> None:
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(60, 8)).astype(np.float32)
    np.save(d / "c.npy", corpus)
    np.save(d / "q.npy", corpus[:10] + 0.1 * rng.normal(size=(10, 8)).astype(np.float32))
    (d / "qrels.tsv").write_text("".join(f"{i}\t{i}\n" for i in range(10)))
    (d / "corpus.txt").write_text("".join(f"passage {i % 50}\n" for i in range(60)))
    small_result(3).save(d / "new")
    small_result(4).save(d / "result")  # the older result a save replaces


def drive(name: str, d: Path, kill_at: int) -> subprocess.CompletedProcess[str]:
    driver = DRIVER.replace("{writers}", repr(WRITERS))
    return subprocess.run(
        [sys.executable, "-c", driver, str(kill_at), name, str(d)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def totals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """How many OS calls each writer makes when it is not killed."""
    counted = {}
    for name in WRITERS:
        if name == "refresh" and not _has_torch():
            continue
        d = tmp_path_factory.mktemp(name)
        write_inputs(d)
        proc = drive(name, d, 0)
        assert proc.returncode == 0, proc.stderr
        counted[name] = int(proc.stdout.split()[-1])
        assert counted[name] > 10, (name, counted[name])
    return counted


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


@pytest.mark.slow  # a writer SIGKILLed at many points, each in a subprocess
@pytest.mark.parametrize(
    ("name", "examples"),
    [(name, 2 if name == "refresh" else 5) for name in WRITERS],
)
def test_a_writer_killed_anywhere_leaves_nothing_the_next_write_keeps(
    name: str, examples: int, totals: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    if name not in totals:
        pytest.skip("torch is not installed")

    @settings(max_examples=examples)
    @given(point=st.floats(0, 1, exclude_max=True))
    def killed_then_rerun(point: float) -> None:
        d = tmp_path_factory.mktemp(name)
        write_inputs(d)
        kill_at = 1 + int(point * totals[name])
        killed = drive(name, d, kill_at)
        assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
        rerun = drive(name, d, 0)
        assert rerun.returncode == 0, rerun.stderr
        assert hidden(d) == [], kill_at

    killed_then_rerun()


def test_a_live_temp_file_is_not_swept_by_a_write_to_the_same_file(tmp_path):
    from negmine._atomic import atomic_write

    dest = tmp_path / "f.bin"
    with atomic_write(dest) as outer:
        outer.write(b"outer")
        (live,) = [n for n in os.listdir(tmp_path) if n.startswith(".f.bin.")]
        with atomic_write(dest) as inner:  # sweeps, but cannot take the outer one's lock
            inner.write(b"inner")
        assert (tmp_path / live).exists()
        assert dest.read_bytes() == b"inner"
    assert dest.read_bytes() == b"outer"
    assert os.listdir(tmp_path) == ["f.bin"]
    os.mkfifo(tmp_path / ".f.bin.0123456789ab.tmp")  # not opened, so no hang, and kept
    with atomic_write(dest) as f:
        f.write(b"again")
    assert sorted(os.listdir(tmp_path)) == [".f.bin.0123456789ab.tmp", "f.bin"]
