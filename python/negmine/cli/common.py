"""What the `negmine` commands share: the usage error, argument types, output under ``-q``,
the library output ``-q`` silences, the embedding cache's place, the options several commands
take (``--text-field``, ``--backend`` and its settings) and id files."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from negmine._numbers import counted
from negmine.errors import InvalidArgumentError

Command = Callable[..., argparse.ArgumentParser]
"""The ``negmine`` command's subcommand factory, ``command(name, help, description=None)``: a
subparser with the command line's help format, exit codes and ``-q``."""


class UsageError(Exception):
    """Options that are invalid or do not go together, found before any data is read: the
    command line's exit code 2."""


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (any other text is a usage error naming it)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def say(args: argparse.Namespace, *lines: object) -> None:
    """Prints to stdout unless ``--quiet``."""
    if not args.quiet:
        for line in lines:
            print(line)


def default_cache_dir() -> Path:
    """Where the command line caches embeddings of texts: ``$XDG_CACHE_HOME/negmine/embeddings``
    (``~/.cache/negmine/embeddings`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "negmine" / "embeddings"


# ------------------------------------------------------------------------- quiet libraries


_RESTORE_BARS: list[Callable[[], object]] = []
"""How to turn back on the library progress bars :func:`hide_library_bars` turned off."""


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """``-q`` for the libraries a command runs: no log line below ERROR and no warning from
    transformers, sentence-transformers or huggingface_hub (``logging.disable`` reaches every
    logger, whenever its library is imported), and no progress bar from the libraries that
    :func:`hide_library_bars` silenced. All set back afterwards."""
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


def hide_library_bars() -> None:
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


# -------------------------------------------------------------------------- shared options


def add_text_field(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--text-field",
        default="text",
        help="the field of .jsonl objects / the column of .parquet files that holds the texts",
    )


def add_backend_options(parser: argparse.ArgumentParser, for_mine: bool) -> None:
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


def backend_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The backend settings given on the command line (the others keep their defaults)."""
    from negmine import sources

    names = [f.name for f in dataclasses.fields(sources.module(args.backend).Settings)]
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    # The BM25 index is cached beside the embeddings unless told otherwise.
    if "bm25_cache_dir" in names and "bm25_cache_dir" not in given:
        cache = getattr(args, "cache_dir", None)
        given["bm25_cache_dir"] = str(cache if cache is not None else default_cache_dir())
    return given


# -------------------------------------------------------------------------------- id files


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


def load_optional_ids(path: str | None, what: str, rows: int | None) -> list[str] | None:
    """:func:`load_ids` of an ``--query-ids`` / ``--corpus-ids`` option; None without it."""
    return None if path is None else load_ids(path, what, rows)
