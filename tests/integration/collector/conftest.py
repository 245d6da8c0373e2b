"""Fixtures of the in-process storage tests: an empty database of each backend, opened."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from _servers import PostgresServer

from agentops_async.collector import Storage, open_storage


@pytest.fixture
def database(collector_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if collector_backend == "sqlite":
        return str(tmp_path / "storage.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest_asyncio.fixture
async def storage(database: str) -> AsyncIterator[Storage]:
    store = open_storage(database)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
