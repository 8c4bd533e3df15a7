"""The mining options: :data:`OPTIONS`, as the core declares them, and :class:`MiningOptions`,
one checked set of them (``negmine.mine``'s keyword arguments of those names).

Both are importable from :mod:`negmine.mine` too, where they have always been.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from negmine import _core
from negmine.errors import InvalidTypeError


class MiningOptions:
    """Everything that decides which negatives are mined: the options of
    :func:`negmine.mine`, with the same names, defaults and meaning (see its docstring), as
    keyword arguments.

    The options are declared once, in the core (``MineOptions``: name, type, default and help
    of each, see :data:`OPTIONS`), which checks them as they are built, raising
    ``InvalidArgumentError`` / ``InvalidTypeError`` naming the option. ``to_dict()`` holds
    plain Python values (a numpy scalar becomes an ``int`` or ``float``, an alias its
    canonical name), so that the options serialise to JSON and compare equal however they
    were spelled.
    """

    __slots__ = ("_values", "core")

    _values: dict[str, Any]
    core: _core.MineOptions
    """The options as the core takes them, built (and checked by the core) once."""

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InvalidTypeError(
                f"unknown mining option {', '.join(map(repr, unknown))}; the options are "
                f"{', '.join(OPTIONS)}"
            )
        given = {name: options.get(name, spec["default"]) for name, spec in OPTIONS.items()}
        core = _core.MineOptions(**given)
        # Checked by the core first, so the conversion to the plain type cannot fail.
        values = {
            name: None if given[name] is None else _PLAIN[spec["type"]](given[name])
            for name, spec in OPTIONS.items()
        }
        values["metric"] = core.metric  # an alias resolved
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "core", core)

    def __getattr__(self, name: str) -> Any:
        # Only options are looked up here; the slots themselves (unset on an instance made
        # without `__init__`, e.g. by `copy`) must not recurse.
        values = None if name.startswith("_") else object.__getattribute__(self, "_values")
        if values is None or name not in values:
            raise AttributeError(f"MiningOptions has no option {name!r}")
        return values[name]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("MiningOptions is immutable: build new options instead")

    def __copy__(self) -> MiningOptions:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> MiningOptions:
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MiningOptions) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"MiningOptions({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def replace(self, **changes: Any) -> MiningOptions:
        """These options with ``changes``, checked as new ones are."""
        return MiningOptions(**{**self._values, **changes})


OPTIONS: dict[str, dict[str, Any]] = {spec["name"]: spec for spec in _core.MineOptions.OPTIONS}
"""The mining options as the core declares them, by name: each one's ``type`` (``"int"``,
``"float"``, ``"str"``), ``optional``, ``choices``, ``default`` and ``help``.
:func:`negmine.mine`'s keyword arguments, :class:`MiningOptions`, the command line's flags and
the refresher read them from here (a test checks that :func:`negmine.mine`'s signature has
each with its default)."""

_PLAIN: dict[str, Callable[[Any], Any]] = {"int": operator.index, "float": float, "str": str}
