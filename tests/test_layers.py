"""The package's layers, checked: lower layers never import higher ones, and no cycles.

Every ``import`` in every module counts, including the ones inside functions (a lazy
import is still a dependency). The layers, bottom to top, are in :data:`LAYERS`; a
module may import modules of its own package and of lower layers only. The picture
and the reasons are in ``docs/architecture.md``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "closedloop"

#: bottom to top; packages in one entry are the same layer but may not import each other
LAYERS: list[tuple[str, ...]] = [
    ("closedloop.errors",),
    ("closedloop.device", "closedloop.registry", "closedloop.units", "closedloop.identity",
     "closedloop.children", "closedloop.discovery"),
    ("closedloop.config",),
    ("closedloop.core", "closedloop.sim"),
    ("closedloop.stim",),
    ("closedloop.io",),
    ("closedloop.sources",),
    ("closedloop.runtime",),
    ("closedloop.analysis",),
    ("closedloop.view",),
    ("closedloop.commands",),
    ("closedloop.cli",),
    ("closedloop.__main__",),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """closedloop modules imported anywhere in the file (resolved to modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names]
            # ``from pkg import submodule`` depends on the submodule; any other name on
            # the package (or module) itself
            targets = subs + ([mod] if not all(s in MODULES for s in subs) else [])
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            # a module's own packages run before it anyway: not a dependency
            if t.startswith("closedloop.") and not (name == t or name.startswith(t + ".")):
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> tuple[int, str]:
    for i, group in enumerate(LAYERS):
        for pkg in group:
            if module == pkg or module.startswith(pkg + "."):
                return i, pkg
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def test_every_module_has_a_layer() -> None:
    for m in MODULES:
        if m != "closedloop":
            _layer(m)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "closedloop"))
def test_no_import_upwards_or_sideways(module: str) -> None:
    level, pkg = _layer(module)
    bad = []
    for dep in sorted(GRAPH[module]):
        dep_level, dep_pkg = _layer(dep)
        if dep_level > level or (dep_level == level and dep_pkg != pkg):
            bad.append(f"{dep} ({dep_pkg}, layer {dep_level})")
    assert not bad, f"{module} ({pkg}, layer {level}) imports higher or sideways: {bad}"


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The parser finds lazy imports inside functions (the kind that hid a cycle)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from closedloop.view import app\n    import closedloop.cli\n")
    assert {"closedloop.view.app", "closedloop.cli"} <= _imports("closedloop.core.m", f)
