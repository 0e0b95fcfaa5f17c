"""Each package's errors.py draws its exception tree, and the drawing stays true.

A tree line is an indented class name, then the module that defines it in parentheses, then
what it means; box characters (├── └── │) give the depth:

    AgentError                 (edge_agent.errors)
    ├── AccessError            (edge_agent.access)      a bad keys file or key arguments
    │   └── AuthError          (edge_agent.access)      no valid API key -> 401

Checked here: every class drawn is defined in the module named and has its drawn parent as a
base; every exception class defined in the package is drawn; each package has one root, and the
roots hang from edgefleet's EdgefleetError, which draws them.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefleet.errors import EdgefleetError

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("edgefleet", "edge_agent", "central", "federated")
# Libraries a module may need that an install can lack (flwr needs Python 3.11+, onnxruntime is an extra):
# such a module's classes are read from its source instead.
OPTIONAL_LIBRARIES = {"flwr", "onnxruntime", "tokenizers"}
_TREE_LINE = re.compile(r"^(?P<indent> [ │├└─]*)(?P<name>[A-Za-z_]\w*) +\((?P<module>[a-z_][a-z0-9_.]*)\)")


@dataclass(frozen=True)
class Drawn:
    name: str
    module: str
    parent: Drawn | None


@dataclass(frozen=True)
class Defined:
    """A class statement at the top of a module; cls is None where the module needs an absent library."""

    name: str
    module: str
    base_names: tuple[str, ...]
    cls: type | None


def drawn_tree(package: str) -> list[Drawn]:
    """The nodes drawn in package/errors.py's docstring, in order."""
    doc = importlib.import_module(f"{package}.errors").__doc__ or ""
    nodes: list[Drawn] = []
    stack: list[tuple[int, Drawn]] = []  # (indent, node) of the open branches
    for line in doc.splitlines():
        match = _TREE_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        node = Drawn(match["name"], match["module"], stack[-1][1] if stack else None)
        stack.append((indent, node))
        nodes.append(node)
    return nodes


def _module_names(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        # edgefleet/v1 is generated protobuf code; importing __main__ would run the program.
        if parts[:2] == ("edgefleet", "v1") or parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _import(module_name: str):
    """The module, or None when it needs an optional library that is not installed."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in OPTIONAL_LIBRARIES:
            return None
        raise


def _source_path(module_name: str) -> Path:
    path = ROOT.joinpath(*module_name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def defined_classes(module_name: str) -> list[Defined]:
    module = _import(module_name)
    tree = ast.parse(_source_path(module_name).read_text())
    return [
        Defined(
            node.name,
            module_name,
            tuple(ast.unparse(base).split(".")[-1] for base in node.bases),
            getattr(module, node.name) if module else None,
        )
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    ]


def _known_errors() -> dict[str, bool]:
    """Exception class names -> whether each is an Exception (not only a BaseException), from builtins and
    every class drawn anywhere: enough to tell the exceptions among classes read from source."""
    known = {
        name: issubclass(obj, Exception)
        for name, obj in vars(builtins).items()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    }
    for package in PACKAGES:
        for node in drawn_tree(package):
            known[node.name] = True
    return known


def is_error(defined: Defined, known: dict[str, bool]) -> bool:
    """An Exception subclass. A BaseException that is not an Exception is a signal (such as a
    private stop request), deliberately out of `except Exception`'s reach, not an error."""
    if defined.cls is not None:
        return issubclass(defined.cls, Exception)
    return any(known.get(base, False) for base in defined.base_names)


def package_root(package: str) -> Drawn:
    return drawn_tree(package)[0]


@pytest.mark.parametrize("package", PACKAGES)
def test_errors_py_draws_one_tree(package):
    nodes = drawn_tree(package)
    assert nodes, f"{package}/errors.py draws no tree of lines like 'Name   (module)   meaning'"
    roots = [node.name for node in nodes if node.parent is None]
    assert len(roots) == 1, f"{package}/errors.py draws several roots: {roots}"
    names = [node.name for node in nodes]
    assert len(names) == len(set(names)), f"{package}/errors.py draws a class twice: {names}"


@pytest.mark.parametrize("package", PACKAGES)
def test_drawn_classes_are_defined_there_under_their_drawn_parents(package):
    by_module: dict[str, dict[str, Defined]] = {}
    for node in drawn_tree(package):
        if node.module not in by_module:
            by_module[node.module] = {d.name: d for d in defined_classes(node.module)}
        defined = by_module[node.module].get(node.name)
        assert defined is not None, (
            f"{package}/errors.py draws {node.name} in {node.module}, which defines no such class"
        )
        if node.parent is None:
            continue
        if defined.cls is None:  # read from source only
            assert node.parent.name in defined.base_names, f"{node.name} is drawn under {node.parent.name}"
            continue
        parent = getattr(importlib.import_module(node.parent.module), node.parent.name)
        assert parent in defined.cls.__bases__, (
            f"{package}/errors.py draws {node.name} under {node.parent.name}; its bases are "
            f"{[base.__name__ for base in defined.cls.__bases__]}"
        )


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exception_class_in_the_package_is_drawn(package):
    known = _known_errors()
    drawn = {(node.module, node.name) for node in drawn_tree(package)}
    missing = [
        f"{d.module}.{d.name}"
        for module_name in _module_names(package)
        for d in defined_classes(module_name)
        if is_error(d, known) and (d.module, d.name) not in drawn
    ]
    assert not missing, f"{package}/errors.py does not draw: {', '.join(missing)}"


def test_package_roots_hang_from_edgefleet_error_which_draws_them():
    root = package_root("edgefleet")
    assert (root.module, root.name) == ("edgefleet.errors", "EdgefleetError")
    other_roots = {package: package_root(package) for package in PACKAGES if package != "edgefleet"}
    for package, node in other_roots.items():
        cls = getattr(importlib.import_module(node.module), node.name)
        assert cls.__module__ == f"{package}.errors", f"{package}'s root {node.name} is not defined in its errors.py"
        assert EdgefleetError in cls.__bases__, f"{package}'s root {node.name} is not an EdgefleetError"
    drawn_in_edgefleet = {
        (node.module, node.name)
        for node in drawn_tree("edgefleet")
        if node.parent == root and not node.module.startswith("edgefleet.")
    }
    assert drawn_in_edgefleet == {(node.module, node.name) for node in other_roots.values()}
