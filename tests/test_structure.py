"""The package's shape, checked from its source: no import cycle, no reaching into another object's privates,
no function too long to read in one go (the engine issue's rules)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nn_xp"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 60


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(path: Path) -> set[str]:
    """nn_xp modules imported by ``path``, at any depth of the file (a function-level import counts too)."""
    name, found = _module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            if target.startswith("nn_xp"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import backends`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nn_xp"))
    for target in list(found):  # importing a submodule runs its packages' __init__ first, except our own
        parent = target.rpartition(".")[0]
        while parent and parent != "nn_xp" and not (name == parent or name.startswith(parent + ".")):
            found.add(parent)
            parent = parent.rpartition(".")[0]
    known = {_module_name(p) for p in MODULES}
    return {m for m in found if m in known and m != name}


def test_no_import_cycle():
    graph = {_module_name(p): _imports(p) for p in MODULES}
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start and nxt != "nn_xp":
                    pytest.fail(f"import cycle: {' -> '.join(path + [nxt])}")
                if nxt not in seen and nxt != "nn_xp":
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))


def _private_reaches(path: Path) -> list[str]:
    """``obj._name`` where ``obj`` is not ``self``/``cls`` (an object's own privates are its business)."""
    hits = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            hits.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    return hits


def test_no_module_reaches_into_another_objects_private_attributes():
    hits = [h for p in MODULES for h in _private_reaches(p)]
    assert hits == []


def _docstring_lines(node: ast.AST) -> int:
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def test_no_library_function_is_longer_than_60_lines():
    long = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1 - _docstring_lines(node)  # code, not its docs
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: "
                                f"{lines} lines")
    assert long == []
