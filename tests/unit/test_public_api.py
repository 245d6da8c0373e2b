"""The public surface: ``agentops_async.__all__`` is exactly what is public, and nothing leaks.

Like httpx's ``test_exported_members``: a name that is public is listed deliberately, everything
else is private (starts with ``_``) and may change in any release. When a test here fails, either
add the name to the ``__all__`` of its module on purpose (and document it: the API reference in
docs/reference/ is generated from ``__all__``), or make it private (a leading ``_``).
"""

from __future__ import annotations
import __future__

import ast
import importlib
import inspect
import pkgutil
import types
from collections.abc import Iterable

import pytest

import agentops_async

# Modules a user may import, each with an ``__all__``: what the docs and the API reference name.
PUBLIC_MODULES = frozenset(
    {
        "agentops_async",
        "agentops_async.sync",  # the sync facade (its own record/add_tags/set_tags)
        "agentops_async.decorators",  # the AgentOps 0.4 decorator names (session would shadow)
        "agentops_async.integrations.asgi",  # SessionMiddleware for any ASGI app
        "agentops_async.integrations.fastapi",  # the lifespan helper on top of it
        "agentops_async.collector",  # the embeddable collector, its storage and prices
        "agentops_async.cli",  # the ``agentops-async`` entry point (main)
        "agentops_async.testing",  # capture_events(): the in-memory export target for tests
        # The homes of the event and error classes (STYLE.md's layout): everything they make
        # public is also exported by ``agentops_async`` itself.
        "agentops_async.events",
        "agentops_async.errors",
    }
)

# Folders of the data path (STYLE.md: session/, telemetry/, api/, ...): their names are not
# underscored, but they are not API. Their modules start with ``_``, and what their
# ``__init__`` holds is at most a re-export of names ``agentops_async`` exports itself.
LAYOUT_PACKAGES = frozenset(
    {
        "agentops_async.api",
        "agentops_async.collector.routes",
        "agentops_async.integrations",
        "agentops_async.session",
        "agentops_async.telemetry",
    }
)


def _walk_modules() -> list[str]:
    names = ["agentops_async"]
    for info in pkgutil.walk_packages(agentops_async.__path__, "agentops_async."):
        names.append(info.name)
    return names


def _public_attributes(module: types.ModuleType) -> set[str]:
    return {name for name in vars(module) if not name.startswith("_")}


def _is_top_level_public(name: str, value: object) -> bool:
    """``value`` is exported by ``agentops_async`` under ``name`` (the very same object)."""
    return name in agentops_async.__all__ and getattr(agentops_async, name, None) is value


def _module_leaks(module: types.ModuleType, source: str | None = None) -> list[str]:
    """Public-looking names a module binds that are not public anywhere.

    A name counts when the module defines it (``def``, ``class``, an assignment) or imports it
    from agentops_async itself; names imported from other libraries (``Any``, ``datetime``) are
    not ours to list. Such a name must be in the module's ``__all__``, or be a name that
    ``agentops_async`` exports (a re-import for the module's own use), or start with ``_``.
    A module bound under a public name must be a public module.
    """
    exported = set(getattr(module, "__all__", ()))
    leaks: set[str] = set()
    for name in _bound_names(inspect.getsource(module) if source is None else source):
        if name.startswith("_") or name in exported or name not in vars(module):
            continue
        value = vars(module)[name]
        if isinstance(value, types.ModuleType):
            if value.__name__ not in PUBLIC_MODULES:
                leaks.add(name)
        elif not _is_top_level_public(name, value):
            leaks.add(name)
    return sorted(leaks)


def _bound_names(source: str) -> Iterable[str]:
    """The names a module's top-level statements bind, except imports from other libraries."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        yield sub.id
        elif isinstance(node, ast.ImportFrom) and (
            node.level > 0 or (node.module or "").startswith("agentops_async")
        ):
            for alias in node.names:
                yield alias.asname or alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("agentops_async"):
                    yield alias.asname or alias.name.split(".")[0]


def _unlisted_public_modules(names: Iterable[str]) -> list[str]:
    """Modules whose own name does not start with ``_`` and that are in neither allow-list."""
    unlisted = []
    for name in names:
        parts = name.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            continue  # private itself, or inside a private module
        if name not in PUBLIC_MODULES and name not in LAYOUT_PACKAGES:
            unlisted.append(name)
    return unlisted


def _top_level_unlisted(package: types.ModuleType) -> list[str]:
    """Public attributes of the package that are neither submodules nor in ``__all__``."""
    unlisted = []
    for name in _public_attributes(package):
        value = vars(package)[name]
        if isinstance(value, types.ModuleType) and value.__name__.startswith(
            package.__name__ + "."
        ):
            continue  # a submodule: judged by the module allow-lists
        if name not in package.__all__:
            unlisted.append(name)
    return sorted(unlisted)


# -- the package as it is ------------------------------------------------------------------------


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES))
def test_every_name_in_all_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} is public and must define __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ lists names the module does not have: {missing}"
    assert len(set(module.__all__)) == len(module.__all__), f"{module_name}.__all__ repeats names"


def test_top_level_exports_exactly_its_public_names() -> None:
    unlisted = _top_level_unlisted(agentops_async)
    assert not unlisted, (
        f"agentops_async has public attributes that are not in __all__: {unlisted}; add them "
        "to __all__ on purpose, or import them under a private name (`as _name`)"
    )


def test_top_level_submodules_in_all_are_public() -> None:
    modules = [
        name
        for name in agentops_async.__all__
        if isinstance(getattr(agentops_async, name), types.ModuleType)
    ]
    assert modules == ["decorators", "sync"]
    assert {f"agentops_async.{name}" for name in modules} <= PUBLIC_MODULES


def test_every_public_name_has_a_docstring() -> None:
    undocumented = [
        name
        for name in agentops_async.__all__
        if (inspect.isclass(obj := getattr(agentops_async, name)) or inspect.isroutine(obj))
        and not inspect.getdoc(obj)
    ]
    assert not undocumented, f"public names without a docstring (API reference): {undocumented}"


def test_implementation_modules_are_private() -> None:
    unlisted = _unlisted_public_modules(_walk_modules())
    assert not unlisted, (
        f"modules without a leading underscore that are not declared public: {unlisted}; name "
        "implementation modules `_name.py`, or add the module to PUBLIC_MODULES in this test "
        "(and to the API reference) on purpose"
    )


def test_allow_lists_name_modules_that_exist() -> None:
    existing = set(_walk_modules())
    assert existing >= PUBLIC_MODULES
    assert existing >= LAYOUT_PACKAGES
    for name in LAYOUT_PACKAGES:
        assert importlib.import_module(name).__path__, f"{name} is not a package"


@pytest.mark.parametrize("module_name", sorted(PUBLIC_MODULES | LAYOUT_PACKAGES))
def test_nothing_public_leaks_from_a_module(module_name: str) -> None:
    module = importlib.import_module(module_name)
    leaks = _module_leaks(module)
    assert not leaks, (
        f"{module_name} binds public-looking names that are not public: {leaks}; list them in "
        f"{module_name}.__all__ on purpose, or give them a leading underscore"
    )


def test_layout_packages_export_only_top_level_names() -> None:
    for name in LAYOUT_PACKAGES:
        package = importlib.import_module(name)
        for exported in getattr(package, "__all__", ()):
            assert _is_top_level_public(exported, getattr(package, exported)), (
                f"{name}.__all__ exports {exported}, which agentops_async does not: a layout "
                "package is not API"
            )


def test_no_future_import_leaks_from_the_package() -> None:
    # ``from __future__ import annotations`` binds ``annotations`` in the package namespace.
    assert not any(
        isinstance(value, __future__._Feature) for value in vars(agentops_async).values()
    )


# -- the guard catches what it is meant to catch -------------------------------------------------


def test_guard_catches_a_leaked_top_level_name(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _top_level_unlisted(agentops_async)
    monkeypatch.setattr(agentops_async, "leaked_helper", lambda: None, raising=False)
    monkeypatch.setattr(agentops_async, "_private_helper", lambda: None, raising=False)
    assert sorted(set(_top_level_unlisted(agentops_async)) - set(before)) == ["leaked_helper"]


def test_guard_accepts_a_name_added_to_all(monkeypatch: pytest.MonkeyPatch) -> None:
    def before_send(event: object) -> object:
        """A hook (stands for any name added deliberately, with its ``__all__`` entry)."""
        return event

    before = _top_level_unlisted(agentops_async)
    monkeypatch.setattr(agentops_async, "before_send", before_send, raising=False)
    assert "before_send" in _top_level_unlisted(agentops_async)
    monkeypatch.setattr(agentops_async, "__all__", [*agentops_async.__all__, "before_send"])
    assert _top_level_unlisted(agentops_async) == before


def test_guard_catches_a_leaked_module_name() -> None:
    module = types.ModuleType("agentops_async.fake")
    module.__all__ = ["Exported"]  # type: ignore[attr-defined]
    source = (
        "from ._limits import MAX_TAG_LENGTH\n"
        "from .errors import AgentOpsError\n"
        "from . import _limits as limits\n"
        "from typing import Any\n"
        "class Exported: ...\n"
        "def helper(): ...\n"
        "CONSTANT = 1\n"
        "_private = 2\n"
    )
    module.__package__ = "agentops_async"
    exec(compile(source, "<fake>", "exec"), vars(module))
    leaks = _module_leaks(module, source)
    # AgentOpsError is public at the top level (a re-import); Any is another library's name.
    assert leaks == ["CONSTANT", "MAX_TAG_LENGTH", "helper", "limits"]


def test_guard_catches_an_unlisted_public_module() -> None:
    names = [
        "agentops_async",
        "agentops_async._client",
        "agentops_async.session._state",
        "agentops_async.sync",
        "agentops_async.helpers",
        "agentops_async.collector.storage",
    ]
    assert _unlisted_public_modules(names) == [
        "agentops_async.helpers",
        "agentops_async.collector.storage",
    ]
