"""The package's modules use each other through public names only: a ``_private`` name is its
module's own (private *modules*, ``negmine._core`` or ``negmine._numbers``, are the package's
shared internals and are imported whole or by their public names)."""

from __future__ import annotations

import ast
from pathlib import Path

import negmine

PACKAGE = Path(negmine.__file__).parent


def test_no_module_imports_a_private_name_of_another():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("negmine"):
                module = node.module or ""
                for alias in node.names:
                    name = alias.name
                    private = name.startswith("_") and not name.startswith("__")
                    if private and f"{module}.{name}" not in _PRIVATE_MODULES:
                        found.append(f"{path.relative_to(PACKAGE)}: {module}.{name}")
    assert not found, found


# Modules imported by name with `from negmine import _core`: modules, not private names.
_PRIVATE_MODULES = {f"negmine.{p.stem}" for p in PACKAGE.glob("_*.py")} | {"negmine._core"}
