"""The package layout: no import cycles, an explicit public API, every README name resolvable."""

from __future__ import annotations

import ast
from pathlib import Path

import agentic_toolkit as at

PKG_DIR = Path(at.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG_DIR.rglob("*.py"):
        parts = list(path.relative_to(PKG_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _import_edges(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module ``name`` imports, at any depth of its code (lazy imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                edges.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            edges.update(a.name for a in node.names)
    return {e for e in edges if e in modules and e != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _import_edges(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 30
    assert any(graph.values())  # the parser found the package's own imports
    assert _cycles(graph) == []


def test_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_public_api_is_explicit():
    """Every exported name is a real attribute (no lazy ``__getattr__``) and documented."""
    assert not hasattr(at, "__getattr__")
    for name in at.__all__:
        obj = getattr(at, name)
        if callable(obj):
            assert obj.__doc__, f"at.{name} has no docstring"


def test_readme_tour_names_resolve():
    """Every ``at.<name>`` the README uses exists."""
    import re

    readme = (PKG_DIR.parent / "README.md").read_text()
    used = set(re.findall(r"\bat\.([A-Za-z_]\w*)", readme))
    assert used, "the README tour uses at.<name>"
    missing = sorted(n for n in used if not hasattr(at, n))
    assert missing == []


def test_library_never_imports_the_reproduction_drivers():
    """``reproduce/`` (this repository's study drivers) may import the library, never the reverse."""
    offenders = []
    for path in PKG_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(PKG_DIR.parent)}: {n}" for n in names
                          if n == "reproduce" or n.startswith("reproduce.")]
    assert offenders == []
    assert not (PKG_DIR / "studies").exists()
