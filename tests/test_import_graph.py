"""The root modules import each other without cycles: each room sits on the ones below it, and a
face (``geo_ops``, ``catalogs``) is only imported, never imported back by its rooms."""
from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A cycle through ``TYPE_CHECKING`` imports only, in the embedded runtime (its engineer's to break).
KNOWN_TYPE_ONLY_CYCLES = [{"local_http", "local_webhooks"}]


def import_graph() -> dict[str, dict[str, bool]]:
    """Root module -> {root module it imports: True when only under ``if TYPE_CHECKING:``}."""
    modules = {path.stem for path in REPO_ROOT.glob("*.py")}
    graph: dict[str, dict[str, bool]] = {}

    def visit(node: ast.AST, edges: dict[str, bool], type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            guarded = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name.split(".")[0] for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module.split(".")[0]]
            for name in names:
                if name in modules:
                    edges[name] = edges.get(name, True) and type_only
            visit(child, edges, type_only or guarded)

    for module in modules:
        edges: dict[str, bool] = {}
        visit(ast.parse((REPO_ROOT / f"{module}.py").read_text()), edges, False)
        edges.pop(module, None)
        graph[module] = edges
    return graph


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def test_root_modules_import_each_other_without_cycles():
    graph = import_graph()
    assert cycles({m: {n for n, type_only in e.items() if not type_only} for m, e in graph.items()}) == []
    with_type_only = cycles({m: set(e) for m, e in graph.items()})
    assert all(cycle in KNOWN_TYPE_ONLY_CYCLES for cycle in with_type_only), with_type_only


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
