"""Numbers at the boundary: one converter per kind, each raising negmine's exceptions.

Every public function turns its numeric arguments into plain Python values here, before
anything reaches the core, so that no value surfaces as a bare ``OverflowError`` (a count past
``usize``, a seed past ``u64``) or ``TypeError`` from the binding. ``bool`` is refused wherever
an integer is expected (``True`` is an ``int`` to Python, never a count to a user); numpy
integer and floating scalars are accepted like their Python counterparts.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import SupportsIndex, cast

import numpy as np
import numpy.typing as npt

from negmine.errors import InvalidArgumentError, InvalidTypeError

MAX_COUNT = 2**62
"""Largest count (k, rows, threads, batch size...) accepted: far past any real input, and
below every native integer type the core converts counts to."""
MAX_ID = 2**63 - 1
"""Largest row id: ids travel as int64."""
MAX_SEED = 2**64 - 1
"""Seeds and epochs are u64 streams."""


def _is_integer(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(
    value: object,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = MAX_COUNT,
) -> int:
    """An integer (Python or numpy, not bool) in ``[minimum, maximum]``."""
    if not _is_integer(value):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    number = operator.index(cast(SupportsIndex, value))
    if minimum not in (None, 0, 1) and maximum is not None and not minimum <= number <= maximum:
        raise InvalidArgumentError(
            f"{name} must be in [{minimum}, {_bound(maximum)}], got {number}"
        )
    if minimum is not None and number < minimum:
        if minimum == 1:
            raise InvalidArgumentError(f"{name} must be positive, got {number}")
        if minimum == 0:
            raise InvalidArgumentError(f"{name} must be non-negative, got {number}")
        raise InvalidArgumentError(f"{name} must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise InvalidArgumentError(f"{name} must be at most {_bound(maximum)}, got {number}")
    return number


def _bound(limit: int) -> str:
    """``2**62`` rather than 4611686018427387904."""
    if limit > 2**32 and limit & (limit - 1) == 0:
        return f"2**{limit.bit_length() - 1}"
    if limit > 2**32 and (limit + 1) & limit == 0:
        return f"2**{limit.bit_length()} - 1"
    return str(limit)


def count(value: object, name: str, *, maximum: int = MAX_COUNT) -> int:
    """A positive count (``k``, ``threads``, ``batch_size``...)."""
    return integer(value, name, minimum=1, maximum=maximum)


def optional_count(value: object, name: str, *, maximum: int = MAX_COUNT) -> int | None:
    return None if value is None else count(value, name, maximum=maximum)


def non_negative(value: object, name: str, *, maximum: int = MAX_COUNT) -> int:
    """An integer ``>= 0`` (``range_min``, ``iterations``...)."""
    return integer(value, name, minimum=0, maximum=maximum)


def seed(value: object, name: str = "seed") -> int:
    """A seed or epoch: an integer in ``[0, 2**64)``."""
    if not _is_integer(value):
        raise InvalidTypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    number = operator.index(cast(SupportsIndex, value))
    if not 0 <= number <= MAX_SEED:
        raise InvalidArgumentError(f"{name} must be in [0, 2**64), got {number}")
    return number


def number(value: object, name: str) -> float:
    """A real number (int, float or numpy scalar, not bool) as a float: its type only; an int
    past the float range becomes an infinity, for the range check to refuse by name."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise InvalidTypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int past the float range
        return math.inf if value > 0 else -math.inf


def optional_number(value: object, name: str) -> float | None:
    return None if value is None else number(value, name)


def real(
    value: object,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """A finite real number (int, float or numpy scalar, not bool) in ``[low, high]``
    (``(low, high]`` with ``low_open``)."""
    number_ = number(value, name)
    if not math.isfinite(number_):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    below = low is not None and (number_ <= low if low_open else number_ < low)
    if below or (high is not None and number_ > high):
        lo = "(" if low_open else "["
        raise InvalidArgumentError(
            f"{name} must be in {lo}{'-inf' if low is None else f'{low:g}'}, "
            f"{'inf' if high is None else f'{high:g}'}], got {value!r}"
        )
    return number_


def optional_real(value: object, name: str, **bounds: float | bool | None) -> float | None:
    return None if value is None else real(value, name, **bounds)  # type: ignore[arg-type]


def choice(
    value: object,
    name: str,
    options: Sequence[str],
    aliases: Mapping[str, str] | None = None,
) -> str:
    """One of ``options`` (or a documented alias of one), as its canonical name."""
    if not isinstance(value, str):
        raise InvalidTypeError(
            f"{name} must be a string, {_listing(options)}; got {type(value).__name__} {value!r}"
        )
    if value in options:
        return value
    if aliases and value in aliases:
        return aliases[value]
    raise InvalidArgumentError(f"{name} must be {_listing(options)}, got {value!r}")


def _listing(options: Sequence[str]) -> str:
    quoted = [repr(o) for o in options]
    if len(quoted) <= 2:
        return " or ".join(quoted)
    return "one of " + ", ".join(quoted[:-1]) + " or " + quoted[-1]


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``"1 text"``, ``"3 texts"``, ``"1,000 queries"``: a count and its noun in agreement
    (messages once said "1 texts" and, cutting an "s", "querie row")."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_KINDS = {"b": "bools", "c": "complex numbers", "U": "strings", "S": "bytes", "O": "objects"}


def float32_scores(
    answer: object, n: int, what: str, pair: Callable[[int], str]
) -> npt.NDArray[np.float32]:
    """``answer``, ``what``'s scores of ``n`` pairs, as float32: one finite real number per
    pair. Strings, bools and complex numbers are refused (numpy would read "0.5" as 0.5, True
    as 1 and drop an imaginary part), and so is a value past float32's range (it would be
    reported as the inf it became); ``pair(i)`` names the pair of a bad value."""
    try:
        array = np.asarray(answer)
    except (TypeError, ValueError) as e:
        raise InvalidTypeError(
            f"{what} must return one float score per pair, got {type(answer).__name__}: {e}"
        ) from None
    if array.dtype.kind not in "iuf":
        kind = _KINDS.get(array.dtype.kind, f"dtype {array.dtype}")
        raise InvalidTypeError(
            f"{what} must return one float score per pair (real numbers), got "
            f"{type(answer).__name__} of {kind}"
        )
    if array.shape != (n,):
        raise InvalidArgumentError(f"{what} returned scores of shape {array.shape} for {n} pairs")
    wide = array.astype(np.float64)
    bad = ~(np.abs(wide) <= _FLOAT32_MAX)  # NaN, infinities and what float32 cannot hold
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = array[i].item()
        beyond = " (beyond float32's range, +-3.4e38)" if math.isfinite(value) else ""
        raise InvalidArgumentError(f"{what} scored {pair(i)} as {value!r}{beyond}")
    return wide.astype(np.float32)
