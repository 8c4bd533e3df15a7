"""Peak memory of the encoding job on N streamed texts: flat in N.

A deterministic stand-in encoder (384 dimensions from each text's length, microseconds per
batch) keeps the run about the job itself: reading the texts a chunk at a time, writing rows
into the pre-sized file, checkpointing. Each size runs in a fresh process; its peak RSS is
that process's ``ru_maxrss``. The texts file and the cache are written under ``--dir``.

    python benches/embed_memory.py                       # 100k and 1M texts
    python benches/embed_memory.py --sizes 100000,1000000,10000000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class StandIn:
    """Deterministic 384-d embeddings from each text's length (not a model)."""

    def encode(self, texts: list[str], batch_size: int = 64, **_: object) -> np.ndarray:
        n = np.array([len(t) for t in texts], dtype=np.float32)[:, None]
        return np.sin(n * np.arange(1, 385, dtype=np.float32)[None, :] * 1e-3) + 1e-3

    def get_sentence_embedding_dimension(self) -> int:
        return 384


def child(n: int, directory: Path) -> None:
    import negmine
    from negmine.texts import open_texts

    path = directory / f"texts-{n}.txt"
    if not path.exists():
        with open(path, "w") as f:
            for i in range(n):
                f.write(f"passage {i} about topic {i % 97} and more words to make it longer\n")
    started = time.perf_counter()
    out = negmine.embed_texts(
        open_texts(path),
        StandIn(),
        cache_dir=directory / f"cache-{n}",
        progress=False,
        dtype="float16",
        model_id="stand-in",
    )
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n:>11,} texts -> {out.shape}: {seconds:7.1f} s, peak RSS {peak_mib:,.0f} MiB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--dir", type=Path)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="embed-memory-"))
    directory.mkdir(parents=True, exist_ok=True)
    if args.child:
        child(args.child, directory)
        return
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--dir", str(directory)]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
