"""No import cycle between the package's modules, and no import hidden in a function
without a reason.

Every ``import`` of a ``morphsearch`` module counts, at module level and inside
functions alike (a function-level import only postpones a cycle to the first call);
``if TYPE_CHECKING:`` blocks never run and do not count. ``from pkg import name``
is an edge to the submodule ``pkg.name`` when there is one, else to the module the
package re-exports ``name`` from. An edge to one's own ancestor package is not a
cycle (a submodule's import runs the package ``__init__`` first anyway).

A function-level import of a package module must say why it waits, with a
``# deferred: REASON`` comment on one of its lines or the line above (``CLI start-up``
for the CLI's handlers, ``torch``/``ray``/``sqlalchemy``/``matplotlib`` for an import
that keeps a heavy dependency out of a light entry point).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import networkx as nx

import morphsearch

ROOT = Path(morphsearch.__file__).parent
PACKAGE = "morphsearch"
MARKER = "# deferred:"


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    in_function: bool
    text: str

    def where(self) -> str:
        return f"{MODULES[self.importer].relative_to(ROOT.parent)}:{self.line}"


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(encoding="utf-8"))


@cache
def _reexports(package: str) -> dict[str, tuple[str, str]]:
    """``name -> (module, original name)`` for the ``from M import x`` of a package
    ``__init__`` (module level, outside TYPE_CHECKING); the lazy table of the top
    package maps a public name to its module."""
    found: dict[str, tuple[str, str]] = {}
    for node in _tree(package).body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                found[alias.asname or alias.name] = (node.module, alias.name)
    if package == PACKAGE:
        for name, module in morphsearch._LAZY.items():
            found[name] = (module, name)
    return found


def _resolve_from(module: str, name: str, depth: int = 0) -> str:
    """The module that ``from module import name`` really reads ``name`` from."""
    if f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    if depth < 10 and _is_package(module) and name in _reexports(module):
        source, original = _reexports(module)[name]
        if source.startswith(PACKAGE) and source != module:
            return _resolve_from(source, original, depth + 1)
    return module


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if _is_package(importer) else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(importer: str) -> list[Import]:
    lines = MODULES[importer].read_text(encoding="utf-8").splitlines()
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit_one(other, in_function)
                continue
            visit_one(child, in_function)

    def visit_one(child: ast.AST, in_function: bool) -> None:
        targets: list[str] = []
        if isinstance(child, ast.Import):
            targets = [a.name for a in child.names]
        elif isinstance(child, ast.ImportFrom):
            module = _absolute(importer, child)
            targets = [_resolve_from(module, a.name) for a in child.names]
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                line, end = child.lineno, child.end_lineno or child.lineno
                # the statement's lines, then the line above it
                text = "\n".join(lines[line - 1 : end] + lines[max(0, line - 2) : line - 1])
                found.append(Import(importer, target, line, in_function, text))
        nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        visit(child, in_function or nested)

    visit(_tree(importer), False)
    return found


def _is_ancestor(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(imp for name in MODULES for imp in _imports(name))


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(MODULES)
    for imp in all_imports():
        if imp.target in MODULES and not _is_ancestor(imp.target, imp.importer):
            graph.add_edge(imp.importer, imp.target)
            graph.edges[imp.importer, imp.target].setdefault("at", []).append(imp)
    return graph


def test_the_scanner_sees_function_level_and_reexported_imports() -> None:
    graph = import_graph()
    # export.py's function-level import and arch/__init__'s re-export are both seen
    assert len(graph) == len(MODULES) > 50
    # growth/events.py imports Architecture from the morphsearch.arch package, which
    # re-exports it from arch/ir.py: the edge goes to the defining module
    assert graph.has_edge("morphsearch.growth.events", "morphsearch.arch.ir")
    assert not graph.has_edge("morphsearch.growth.events", "morphsearch.arch")
    assert not graph.has_edge("morphsearch.lineage.store", "morphsearch.lineage")
    in_function = {(i.importer, i.target) for i in all_imports() if i.in_function}
    assert ("morphsearch.export", "morphsearch.lineage.objective") in in_function


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    cycles = [c for c in nx.strongly_connected_components(graph) if len(c) > 1]
    report = []
    for component in cycles:
        report.append("cycle between " + ", ".join(sorted(component)) + ":")
        for a, b in sorted(graph.subgraph(component).edges):
            for imp in graph.edges[a, b]["at"]:
                kind = "in a function" if imp.in_function else "module level"
                line = f"  {imp.where()}: {a} -> {b} ({kind})"
                report += [] if line in report else [line]
    assert not cycles, "\n".join(report)


def test_function_level_imports_say_why_they_wait() -> None:
    unmarked = [
        f"{imp.where()}: {imp.text.splitlines()[0].strip()}"
        for imp in all_imports()
        if imp.in_function and MARKER not in imp.text
    ]
    assert not unmarked, (
        "import these at the top of the module, or mark why they must wait with "
        f"'{MARKER} REASON' on the line:\n" + "\n".join(sorted(set(unmarked)))
    )
