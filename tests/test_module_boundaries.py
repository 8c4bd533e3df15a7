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


# Issue 23's limits on the package's shape: a module over this many lines holds several jobs, a
# function over this many (its docstring aside) several steps.
MOST_MODULE_LINES = 700
MOST_FUNCTION_LINES = 120


def test_no_module_or_function_is_over_its_limit():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(PACKAGE)
        if text.count("\n") > MOST_MODULE_LINES:
            found.append(f"{where}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    assert first.end_lineno is not None
                    lines -= first.end_lineno - first.lineno + 1
                if lines > MOST_FUNCTION_LINES:
                    found.append(f"{where}:{node.lineno} {node.name}: {lines} lines")
    assert not found, found


def _module_name(path: Path) -> str:
    parts = ["negmine", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_at_load(path: Path, module: str, known: set[str]) -> set[str]:
    """The package's modules that ``module`` imports when it is loaded (module-level imports;
    imports inside functions run later and cannot close a circle at import time)."""
    out = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from negmine import _core` imports the module `_core`, not the package again.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        # A module's packages are loaded before it (or are loading it): not an edge.
        out |= {
            name
            for name in names
            if name in known and name != module and not module.startswith(f"{name}.")
        }
    return out


def test_no_import_circle():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(paths)
    graph = {name: _imported_at_load(path, name, known) for name, path in paths.items()}
    circles = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not circles, circles
