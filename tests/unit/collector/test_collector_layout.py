"""The collector's layout: one routes module per API over a shared context and auth module.

Read from the source (imports and attribute uses), so a change that ties two APIs together, or
lets the read API write, fails here with the file and the name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agentops_async.collector as collector_package

COLLECTOR = Path(collector_package.__file__).parent
ROUTES = COLLECTOR / "routes"


def _imported_modules(path: Path) -> set[str]:
    """Dotted names of the collector modules that ``path`` imports (relative to the collector)."""
    package = ["collector"] if path.parent == COLLECTOR else ["collector", path.parent.name]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            if node.level and not base:
                continue  # above the collector (agentops_async._limits and such)
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _route_modules() -> list[Path]:
    return sorted(p for p in ROUTES.glob("_*.py") if p.name != "__init__.py")


def test_each_api_has_its_routes_module() -> None:
    assert [p.stem for p in _route_modules()] == [
        "_admin",
        "_dashboard",
        "_otlp",
        "_overview",
        "_reads",
        "_v2",
        "_v3",
    ]
    for path in _route_modules():
        tree = ast.parse(path.read_text())
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "add_routes" in functions, f"{path.name}: no add_routes(app, ctx)"


def test_route_modules_import_no_other_route_module() -> None:
    assert _route_modules()
    for path in _route_modules():
        others = {f"collector.routes.{p.stem}" for p in _route_modules() if p != path}
        assert not _imported_modules(path) & others, path.name


def test_only_build_app_imports_the_routes() -> None:
    importers = sorted(
        path.name
        for path in COLLECTOR.glob("*.py")
        if any(name.startswith("collector.routes") for name in _imported_modules(path))
    )
    assert importers == ["_app.py"]


def test_shared_modules_know_no_api_and_the_context_no_caller() -> None:
    for name in ("_context.py", "_auth.py", "_http.py", "_ingest.py", "_reads.py", "_overview.py"):
        imported = _imported_modules(COLLECTOR / name)
        assert not {m for m in imported if m.startswith("collector.routes")}, name
    assert "collector._auth" not in _imported_modules(COLLECTOR / "_context.py")


READ_ONLY_MODULES = [
    ROUTES / "_reads.py",
    ROUTES / "_dashboard.py",
    ROUTES / "_overview.py",
    COLLECTOR / "_overview.py",
    *sorted((COLLECTOR / "_dashboard").glob("*.py")),
]


@pytest.mark.parametrize("path", READ_ONLY_MODULES, ids=lambda p: str(p.relative_to(COLLECTOR)))
def test_read_routes_reach_storage_only_through_the_reader(path: Path) -> None:
    """The read API and the dashboard can only look: no ``.storage``, no write structs."""
    tree = ast.parse(path.read_text())
    storage_uses = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "storage"
    ]
    assert storage_uses == [], f"{path.name} uses ctx.storage at lines {storage_uses}"
    imported = _imported_modules(path)
    assert "collector._ingest" not in imported
    assert not {"collector._storage.SessionWrite", "collector._storage.EventRow"} & imported


def test_dashboard_shared_parts_import_no_route_module() -> None:
    for path in (COLLECTOR / "_dashboard").glob("*.py"):
        imported = _imported_modules(path)
        assert not {m for m in imported if m.startswith("collector.routes")}, path.name
