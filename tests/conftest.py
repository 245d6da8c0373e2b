"""Shared fixtures: a throwaway PostgreSQL server and collector subprocesses.

Fixtures (see each docstring):

- ``postgres_server`` (session): a private PostgreSQL cluster (initdb/pg_ctl, free port).
- ``collector_backend``: ``"sqlite"`` and ``"postgres"`` (the test runs once per backend).
- ``collector``: a :class:`CollectorHandle` on a shared collector of that backend, with a fresh
  project key for this test.
- ``collector_factory``: start dedicated collectors with options (e.g. ``jwt_expiry=1``).

PostgreSQL tests are skipped when the server binaries are missing, unless
``AGENTOPS_TEST_REQUIRE_PG=1`` (then they fail). ``AGENTOPS_TEST_PG_BIN`` points at the binaries.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, _ROOT)

from _servers import (  # noqa: E402
    CollectorHandle,
    CollectorProcess,
    PostgresServer,
    find_postgres_bin,
)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _require_pg() -> bool:
    return os.environ.get("AGENTOPS_TEST_REQUIRE_PG", "") not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the whole test session (stopped and deleted at the end).

    Use ``postgres_server.create_database()`` for an empty database (returns its DSN).
    Skips when initdb is missing or asyncpg is not installed, unless AGENTOPS_TEST_REQUIRE_PG=1.
    """
    problem = None
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        problem = "asyncpg is not installed (pip install agentops-async[postgres])"
    if problem is None and find_postgres_bin() is None:
        problem = "PostgreSQL server binaries (initdb) not found; set AGENTOPS_TEST_PG_BIN"
    if problem is not None:
        if _require_pg():
            pytest.fail(f"AGENTOPS_TEST_REQUIRE_PG=1 but {problem}")
        pytest.skip(problem)
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


def _database_for(backend: str, request: pytest.FixtureRequest, tmp_dir: Path) -> str:
    if backend == "sqlite":
        return str(tmp_dir / f"collector-{uuid.uuid4().hex[:8]}.db")
    if backend == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database()
    raise ValueError(f"unknown backend {backend!r}")


def _start_process(
    backend: str, request: pytest.FixtureRequest, tmp_dir: Path, **options: Any
) -> CollectorProcess:
    database = _database_for(backend, request, tmp_dir)
    log_path = tmp_dir / f"collector-{backend}-{uuid.uuid4().hex[:8]}.log"
    return CollectorProcess(
        database=database, backend=backend, log_path=log_path, **options
    ).start()


@pytest.fixture(scope="session")
def sqlite_collector_process(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CollectorProcess]:
    """One SQLite collector subprocess shared by the session (tests use their own projects)."""
    process = _start_process("sqlite", request, tmp_path_factory.mktemp("collector-sqlite"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def postgres_collector_process(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CollectorProcess]:
    """One PostgreSQL collector subprocess shared by the session."""
    process = _start_process("postgres", request, tmp_path_factory.mktemp("collector-postgres"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(params=BACKENDS)
def collector_backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test: ``"sqlite"`` or ``"postgres"`` (parametrizes the test)."""
    return str(request.param)


PROTOCOLS = ("agentops_v2", "otlp")


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    """The SDK's export protocol under test: ``"agentops_v2"`` or ``"otlp"`` (parametrizes the
    test): pass it as ``AsyncClient(protocol=protocol)``."""
    return str(request.param)


@pytest.fixture
def collector(collector_backend: str, request: pytest.FixtureRequest) -> CollectorHandle:
    """A collector (subprocess, loopback) with a fresh project for this test.

    The test runs once per backend. The collector process is shared across tests; a new project
    key per test keeps their data apart. The handle offers ``.url``, ``.api_key``,
    ``.project_id``, ``.backend``, ``.new_api_key()``, async read helpers (``await
    h.get_session(id)``, ``await h.get_events(id)``, ``await h.list_sessions(**filters)``,
    ``await h.request(method, path, ...)``) and their ``*_sync`` twins.

    Example::

        async def test_roundtrip(collector):
            client = agentops_async.AsyncClient(api_key=collector.api_key, endpoint=collector.url)
            ...
            assert len(await collector.get_events(session_id)) == 3
    """
    process: CollectorProcess = request.getfixturevalue(f"{collector_backend}_collector_process")
    project_id, api_key = process.create_project(request.node.name[:100])
    return CollectorHandle(process, project_id, api_key)


@pytest.fixture
def collector_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., CollectorHandle]]:
    """Start dedicated collectors with options; all are stopped when the test ends.

    ``collector_factory(backend="sqlite", *, jwt_expiry=None, prices=None, max_body_size=None,
    extra_args=())`` returns a :class:`CollectorHandle` with a fresh project on a new database.
    Combine with the ``collector_backend`` fixture to run on both backends::

        def test_short_tokens(collector_factory, collector_backend):
            handle = collector_factory(collector_backend, jwt_expiry=1)
    """
    started: list[CollectorProcess] = []

    def make(backend: str = "sqlite", **options: Any) -> CollectorHandle:
        process = _start_process(backend, request, tmp_path, **options)
        started.append(process)
        project_id, api_key = process.create_project(request.node.name[:100])
        return CollectorHandle(process, project_id, api_key)

    try:
        yield make
    finally:
        for process in started:
            process.stop()
