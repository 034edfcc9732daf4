"""The shape of fabric-core's code: no import circles, and no module reaching into another's private names.

Read from the sources with ``ast``; nothing is imported. Imports under ``if TYPE_CHECKING:``
are left out (they never run). Imports inside functions count: a circle closed at call
time is still a circle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fabric_core

SOURCE_ROOT = Path(fabric_core.__file__).parent.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in (SOURCE_ROOT / "fabric_core").rglob("*.py")}


def runtime_imports(name: str) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` for every import in ``name`` that runs (not under TYPE_CHECKING)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.append((base, [alias.name for alias in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def dependencies(name: str) -> set[str]:
    """The fabric-core modules ``name`` imports, without its own parent packages (always imported first)."""
    parents = {name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)}
    result: set[str] = set()
    for module, names in runtime_imports(name):
        submodules = {f"{module}.{item}" for item in names if f"{module}.{item}" in MODULES}
        if submodules:
            result |= submodules
        elif module in MODULES:
            result.add(module)
    return result - parents - {name}


def import_circles() -> list[list[str]]:
    graph = {name: dependencies(name) for name in MODULES}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                walk(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    return circles


def test_no_import_circle_among_core_modules() -> None:
    circles = import_circles()

    assert circles == [], "import circles:\n" + "\n".join(" -> ".join(circle) for circle in circles)


def test_the_circle_detector_finds_a_circle() -> None:
    """The detector itself: the registry must not know the loader, and this is how it would show."""
    assert "fabric_core._discovery" in dependencies("fabric_core._registries")
    assert "fabric_core._discovery" not in dependencies("fabric_core.registry")
    assert "fabric_core.registry" in dependencies("fabric_core._discovery")


def test_no_module_imports_a_private_name_of_another() -> None:
    offences = [
        f"{name} imports {module}.{item}"
        for name in MODULES
        for module, items in runtime_imports(name)
        if module.startswith("fabric_core")
        for item in items
        if item.startswith("_") and not item.startswith("__") and f"{module}.{item}" not in MODULES
    ]

    assert offences == []
