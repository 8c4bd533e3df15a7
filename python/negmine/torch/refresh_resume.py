"""Checkpoint and resume of :class:`~negmine.torch.refresh.NegativeRefresher`: the format of
its ``state_dict`` (:data:`STATE_FORMAT`), the fingerprint of what decides its negatives
besides the embeddings (:func:`fingerprint`: seed, options by content, a teacher by its
``teacher_identity``, positives, ``n_clusters``), and the checks of a state to resume
(:func:`read_state`). ``STATE_FORMAT`` is importable from :mod:`negmine.torch.refresh` too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from negmine import _numbers
from negmine._digest import update_value
from negmine.errors import InvalidArgumentError, InvalidTypeError

log = logging.getLogger("negmine.refresh")

STATE_FORMAT = 2
"""2: the fingerprint digests option values by content (1 used their ``repr``)."""
STATE_KEYS = ("live", "started", "epoch", "steps", "fingerprint")


@dataclass(frozen=True)
class SavedState:
    """A checked ``state_dict``: the refresh live and the last one started (``started`` is
    ``live + 1`` while one was pending), the last boundary processed and the steps counted
    since the last refresh started."""

    live: int
    started: int
    epoch: int | None
    steps: int


def read_state(
    state: Mapping[str, Any], *, fingerprint: str, unnamed_teacher: bool, fresh: bool
) -> SavedState:
    """``state`` (from ``state_dict``) checked for a refresher whose fingerprint is
    ``fingerprint``: of this format, with every key, from a refresher with the same
    fingerprint, and loaded into a ``fresh`` one (none started); refused with a teacher that
    no ``teacher_identity`` names (``unnamed_teacher``), whose sameness cannot be checked."""
    if not isinstance(state, Mapping):
        raise InvalidTypeError(f"state must be a mapping, got {type(state).__name__}")
    if state.get("format") != STATE_FORMAT:
        raise InvalidArgumentError(
            f"state has format {state.get('format')!r}; this negmine reads {STATE_FORMAT}"
        )
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise InvalidArgumentError(f"state is missing {', '.join(missing)}")
    if unnamed_teacher:
        raise InvalidArgumentError(
            "the options hold a rescore callable but no teacher_identity names it, so "
            "this refresher cannot tell whether the state was mined with the same "
            "teacher: pass teacher_identity= (any JSON value naming the teacher, e.g. "
            '{"model": ..., "revision": ...}) to the refresher that saves the state and '
            "to the one that resumes it"
        )
    if state["fingerprint"] != fingerprint:
        raise InvalidArgumentError(
            "state is from a refresher with another seed, mining options (compared by "
            "content; a rescore callable by its teacher_identity), positives or "
            "n_clusters; resuming it would serve other negatives"
        )
    if not fresh:
        raise InvalidArgumentError("load_state_dict needs a fresh refresher (none started)")
    live = _numbers.non_negative(state["live"], "live")
    started = _numbers.non_negative(state["started"], "started")
    if started not in (live, live + 1):
        raise InvalidArgumentError(f"state has refresh {started} started but {live} live")
    epoch = None if state["epoch"] is None else _numbers.seed(state["epoch"], "epoch")
    steps = _numbers.non_negative(state["steps"], "steps")
    return SavedState(live, started, epoch, steps)


def checked_teacher_identity(options: Mapping[str, Any], identity: Any) -> Any:
    """``identity`` checked: JSON (it goes into the fingerprint), and only with a ``rescore``
    callable to name."""
    if identity is None:
        if callable(options.get("rescore")):
            log.warning(
                "options hold a rescore callable but no teacher_identity: a state_dict of "
                "this refresher cannot be resumed; pass teacher_identity= naming the teacher"
            )
        return None
    if not callable(options.get("rescore")):
        raise InvalidArgumentError(
            "teacher_identity names the rescore callable of the options, but they hold none"
        )
    try:
        json.dumps(identity, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidTypeError(
            f"teacher_identity must be a JSON value (e.g. a dict of strings), got "
            f"{type(identity).__name__}: {e}"
        ) from None
    return identity


def fingerprint(
    seed: int,
    options: Mapping[str, Any],
    teacher_identity: Any,
    positives: tuple[np.ndarray, np.ndarray],
    n_clusters: int | None,
) -> str:
    """A digest of what decides the refreshes' negatives besides the embeddings: option
    values by content (:func:`negmine._digest.update_value`, never ``repr``: numpy elides
    long arrays, and a function's repr holds its address), a ``rescore`` callable by
    ``teacher_identity``."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([STATE_FORMAT, seed, n_clusters]).encode())
    for name in sorted(set(options) - {"threads"}):  # threads change no result
        value = options[name]
        update_value(h, name)
        if name == "rescore" and callable(value):
            update_value(h, json.dumps(teacher_identity, sort_keys=True))
            continue
        if isinstance(value, torch.device):
            value = str(value)
        try:
            update_value(h, value)
        except TypeError as e:
            raise InvalidTypeError(
                f"mining option {name!r}: {e}, so a resumed run could not check that it is "
                "the same; pass plain values, arrays or lists"
            ) from None
    for array in positives:
        update_value(h, np.ascontiguousarray(array, dtype="<i8"))
    return h.hexdigest()
