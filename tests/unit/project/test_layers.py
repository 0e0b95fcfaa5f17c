"""Dependencies point down: edgefleet/ at the bottom, federated/ above it, the agent and central above both,
the local-fleet launcher on top. Read from the source with ast, so function-level (lazy) imports count too.

    local_fleet                 may import everything (it starts both programs)
    edge_agent    central       never each other; of federated, only its public entry points
    federated                   only edgefleet
    edgefleet                   none of the others
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("edgefleet", "federated", "edge_agent", "central", "local_fleet")

# What each package may not import at all.
FORBIDDEN = {
    "edgefleet": {"federated", "edge_agent", "central", "local_fleet"},
    "federated": {"edge_agent", "central", "local_fleet"},
    "edge_agent": {"central", "local_fleet"},
    "central": {"edge_agent", "local_fleet"},
    "local_fleet": set(),
}
# federated's public entry points, the only federated modules the agent and central import
# (federated/__init__.py says what each is for).
FEDERATED_PUBLIC = {
    "federated",
    "federated.errors",
    "federated.local_data",
    "federated.supernode",
    "federated.supernode_runtime",
    "federated.tasks",
    "federated.control",
    "federated.fab",
    "federated.results",
    "federated.supervisor",
    # Central runs the SuperLink: the command that starts it and the client CA that alone opens its Control API.
    "federated.superlink",
    "federated.superlink_credentials",
}
# Import circles between modules still to be broken, each as the sorted tuple of its modules. Empty is the goal.
KNOWN_CIRCLES: set[tuple[str, ...]] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    # At module level: runs while the importer itself is being imported (a function-level import runs later).
    module_level: bool
    # Under `if TYPE_CHECKING:`: read by type checkers only, never run.
    type_checking: bool = False


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(module: str, path: Path, known: set[str]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False, type_checking)
                continue
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                visit(child, module_level, True)
                continue
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
                found.extend(Import(module, t, child.lineno, module_level, type_checking) for t in targets)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import submodule` imports the submodule too
                targets = [base, *(f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in known)]
                found.extend(Import(module, t, child.lineno, module_level, type_checking) for t in targets)
            visit(child, module_level, type_checking)

    visit(tree, True, False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    sources = _sources()
    known = set(sources)
    return [i for module, path in sources.items() for i in _imports(module, path, known)]


def test_the_walk_sees_module_and_function_level_imports(imports):
    """Guards the checks below against passing on an empty walk."""
    pairs = {(i.importer, i.target, i.module_level) for i in imports}
    assert ("edge_agent.control.client", "edgefleet.nodekeys", True) in pairs
    assert ("edge_agent.daemon", "federated.supernode", False) in pairs
    assert any(i.importer.startswith("local_fleet") and _top(i.target) == "edge_agent" for i in imports)
    assert any(i.importer.startswith("local_fleet") and _top(i.target) == "central" for i in imports)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(imports, package):
    wrong = [
        f"{i.importer}:{i.line} imports {i.target}"
        for i in imports
        if _top(i.importer) == package and _top(i.target) in FORBIDDEN[package]
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package", ["edge_agent", "central"])
def test_programs_use_only_federated_public_entry_points(imports, package):
    wrong = [
        f"{i.importer}:{i.line} imports {i.target}"
        for i in imports
        if _top(i.importer) == package and _top(i.target) == "federated" and i.target not in FEDERATED_PUBLIC
    ]
    assert not wrong, "\n".join(wrong) + f"\nfederated's public entry points: {sorted(FEDERATED_PUBLIC)}"


# The agent's HTTP layer (statuses, SSE framing, the app) is imported only by itself and by the daemon that
# wires the app together; the domain below it (service, gateway, policy) never reaches up into it.
HTTP_LAYER_IMPORTERS = {"edge_agent.daemon"}


def test_only_the_daemon_imports_the_agents_http_layer(imports):
    wrong = [
        f"{i.importer}:{i.line} imports {i.target}"
        for i in imports
        if (i.target == "edge_agent.api" or i.target.startswith("edge_agent.api."))
        and not (i.importer == "edge_agent.api" or i.importer.startswith("edge_agent.api."))
        and _top(i.importer) == "edge_agent"
        and i.importer not in HTTP_LAYER_IMPORTERS
        and not i.type_checking
    ]
    assert not wrong, "\n".join(wrong)


def test_federated_documents_its_public_entry_points():
    doc = ast.get_docstring(ast.parse((ROOT / "federated" / "__init__.py").read_text(encoding="utf-8"))) or ""
    missing = [m for m in sorted(FEDERATED_PUBLIC - {"federated"}) if f"`{m}`" not in doc]
    assert not missing, f"federated/__init__.py does not list {missing} among its public entry points"


def _circles(edges: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: set[tuple[str, ...]] = set()

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.add(tuple(sorted(component)))

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return circles


def test_no_import_circles(imports):
    """Function-level imports count too: a lazy import only puts a circle off until the first call that runs
    it (and hides it from whoever reads the module's head). Imports under `if TYPE_CHECKING:` never run and
    are left out. Importing a.b.c also runs a and a.b, except where they are the importer's own packages."""
    known = set(_sources())
    edges: dict[str, set[str]] = {}
    for i in imports:
        if i.type_checking or i.target not in known or i.target == i.importer:
            continue
        edges.setdefault(i.importer, set()).add(i.target)
        parts = i.target.split(".")
        for n in range(1, len(parts)):
            parent = ".".join(parts[:n])
            if parent in known and not (i.importer == parent or i.importer.startswith(parent + ".")):
                edges[i.importer].add(parent)
    circles = _circles(edges)
    assert circles - KNOWN_CIRCLES == set(), f"import circles: {sorted(circles - KNOWN_CIRCLES)}"
    assert KNOWN_CIRCLES - circles == set(), f"gone, remove from KNOWN_CIRCLES: {sorted(KNOWN_CIRCLES - circles)}"
