"""Fails (exit 1) when the modules of a Python package import each other in a circle.

Every import counts: at module level, inside functions (deferred) and under `if
TYPE_CHECKING:` (type-only). A deferred or type-only import that closes a circle does not fail
at import time, but it is the same tangle, only hidden: what both sides need belongs in a
module that imports neither. Importing `a.b.c` also runs the package `a.b`, unless the importer
lies inside that package already (Python has started it). Each circle is printed as the imports
that close it.

    python scripts/import_cycles.py [SOURCE_ROOT] [PACKAGE]     (default: python kstrade)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `root`, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the package that importing it imports directly."""
    mods = modules(root, package)
    edges: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        home = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: list[str] = []
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
                continue
            base = node.module or ""
            if node.level:
                anchor = home.split(".")[: len(home.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from p import m` imports the module p.m when there is one, else a name of p.
            targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                inside = (name + ".").startswith(step + ".")  # a package the importer is part of
                if step in mods and step != name and (i == len(parts) or not inside):
                    edges[name].add(step)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("python")
    package = argv[1] if len(argv) > 1 else "kstrade"
    edges = graph(root, package)
    found = cycles(edges)
    for component in found:
        members = set(component)
        links = ", ".join(f"{m} -> {t}" for m in component for t in sorted(edges[m] & members))
        print(f"import cycle among {len(component)} modules: {links}")
    if found:
        print("break it: move what both sides need into a module that imports neither", file=sys.stderr)
        return 1
    print(f"no import cycle among the {len(edges)} modules of {package}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
