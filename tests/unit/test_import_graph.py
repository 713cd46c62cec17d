"""The module graph of src/nscg: no import cycle, and specs import no runtime module.

Built from the modules' own ``import`` statements with :mod:`ast` (nothing is
imported): an edge for every import made when a module is loaded, i.e. at module
level, in a module-level ``if``/``try``, but not under ``if TYPE_CHECKING:`` and not
inside a function (an import there runs when the function is called). ``from
package import name`` is an edge to ``package.name`` when that is a module, else to
``package``. A module's parent packages are not counted: importing
``nscg.cgroups._limits`` runs ``nscg/cgroups/__init__.py``, which re-exports the whole
package, but ``_limits`` itself needs none of it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "nscg"

#: the values a sandbox is described with: pure, comparable, picklable
SPECS = (
    "nscg.container",
    "nscg.rootfs",
    "nscg.capabilities",
    "nscg.namespaces",
    "nscg.seccomp._spec",
    "nscg.seccomp._rules",
    "nscg.cgroups._limits",
    "nscg.network._spec",
)

#: the modules that run sandboxes or hold kernel resources (processes, fds,
#: sockets, threads, cgroups)
RUNTIME = (
    "nscg._spawn",
    "nscg.process",
    "nscg._rootfs_run",
    "nscg._idmap",
    "nscg._netlink",
    "nscg.cgroups._handle",
    "nscg.cgroups._stale",
    "nscg.network._hosts",
    "nscg.network._bridges",
    "nscg.network._forward",
    "nscg.network._wiring",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _load_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and not _is_type_checking(node.test):
            yield from _load_time_imports(node.body)
            yield from _load_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _load_time_imports(node.body)
            for handler in node.handlers:
                yield from _load_time_imports(handler.body)
            yield from _load_time_imports(node.orelse)
            yield from _load_time_imports(node.finalbody)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py") if "_data" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _load_time_imports(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in files)
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in files:
                    edges.add(sub)
                elif target in files:
                    edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found is not None:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found is not None:
                return found
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_is_read_correctly() -> None:
    graph = _graph()
    for name in (*SPECS, *RUNTIME):
        assert name in graph, name
    assert "nscg.container" in graph["nscg._spawn"]  # (module level)
    assert "nscg.seccomp._compiler" in graph["nscg.seccomp._spec"]
    assert "nscg._spawn" not in graph["nscg.container"]  # (inside run()/spawn() only)
    assert "nscg.process" not in graph["nscg.container"]  # (TYPE_CHECKING only)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or ())


def test_specs_import_no_runtime_module() -> None:
    graph = _graph()
    for spec in SPECS:
        runtime = _reachable(graph, spec) & set(RUNTIME)
        assert not runtime, f"{spec} imports {sorted(runtime)}"
