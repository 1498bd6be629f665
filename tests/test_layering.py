"""How the package's modules depend on each other: MLflow stays behind the tracking
interface, and the readers of the store import no cycle (issue 17).

Read from the source (every `import`, at the top or inside a function), so a lazy import
that would close a cycle or reach MLflow from outside `cifarctl.tracking` counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import cifarctl

ROOT = Path(cifarctl.__file__).parent
# the store's readers and writers: none of them may sit on an import cycle
READERS = ("cifarctl.tracking", "cifarctl.report", "cifarctl.sweep", "cifarctl.ui",
           "cifarctl.evaluation")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imports(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                out.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_only_the_tracking_package_imports_mlflow():
    importers = sorted(name for name, tree in _modules().items()
                       if any(i == "mlflow" or i.startswith("mlflow.") for i in _imports(tree)))
    assert importers and all(name.startswith("cifarctl.tracking.") for name in importers), \
        importers


def test_no_import_cycle_runs_through_the_stores_readers():
    modules = _modules()
    graph = {name: {i for i in _imports(tree) if i in modules and i != name}
             for name, tree in modules.items()}
    cycles = [sorted(c) for c in _cycles(graph)
              if any(m == r or m.startswith(r + ".") for m in c for r in READERS)]
    assert cycles == []
