"""The PostgreSQL pool size of a collector: ``--pool-size``, ``AGENTOPS_COLLECTOR_PG_POOL_SIZE``,
``Collector(pool_size=...)``; checked with an error that names the setting."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
from _servers import REPO_ROOT, PostgresServer

from agentops_async.collector import Collector, open_storage

_ENV = "AGENTOPS_COLLECTOR_PG_POOL_SIZE"


async def _connections(dsn: str) -> int:
    """The other backends connected to the database of ``dsn`` now."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def _busy_requests(collector: Collector, api_key: str, requests: int) -> list[int]:
    """``requests`` create_session + create_events calls at once; their last statuses."""

    async def one(http: aiohttp.ClientSession) -> int:
        session_id = str(uuid.uuid4())
        async with http.post(
            f"{collector.url}/v2/create_session",
            json={"session": {"session_id": session_id}},
            headers={"X-Agentops-Api-Key": api_key},
        ) as response:
            jwt = (await response.json())["jwt"]
        events = [
            {"id": str(uuid.uuid4()), "event_type": "actions", "session_id": session_id}
            for _ in range(50)
        ]
        async with http.post(
            f"{collector.url}/v2/create_events",
            json={"events": events},
            headers={"Authorization": f"Bearer {jwt}"},
        ) as response:
            return response.status

    async with aiohttp.ClientSession() as http:
        return list(await asyncio.gather(*(one(http) for _ in range(requests))))


@pytest.mark.asyncio
async def test_pool_size_bounds_the_connections_a_collector_opens(
    postgres_server: PostgresServer,
) -> None:
    dsn = postgres_server.create_database()
    async with Collector(database=dsn, port=0, pool_size=2) as collector:
        api_key = await collector.create_project("pool")
        statuses = await _busy_requests(collector, api_key, 24)
        assert statuses == [200] * 24
        # Released connections stay open in the pool for a while: all it ever opened.
        assert 1 <= await _connections(dsn) <= 2
        assert collector.storage.pool.get_max_size() == 2  # type: ignore[attr-defined]
    assert await _connections(dsn) == 0


@pytest.mark.asyncio
async def test_pool_size_comes_from_the_environment_unless_given(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = postgres_server.create_database()
    monkeypatch.setenv(_ENV, "3")
    async with Collector(database=dsn, port=0) as collector:
        assert collector.storage.pool.get_max_size() == 3  # type: ignore[attr-defined]
    async with Collector(database=dsn, port=0, pool_size=4) as collector:
        assert collector.storage.pool.get_max_size() == 4  # type: ignore[attr-defined]
    monkeypatch.setenv(_ENV, "0")
    with pytest.raises(ValueError, match=f"{_ENV}: expected a number of connections from 1 to"):
        open_storage(dsn)


def test_pool_size_out_of_range_or_for_sqlite_is_refused(tmp_path: Path) -> None:
    dsn = "postgresql://agentops@127.0.0.1:1/agentops"  # never connected to
    for bad in (0, -1, 1001, "ten"):
        with pytest.raises(ValueError, match="pool_size: expected a number of connections"):
            Collector(database=dsn, pool_size=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only a PostgreSQL database has a connection pool"):
        Collector(database=str(tmp_path / "x.db"), pool_size=5)
    with pytest.raises(ValueError, match="only a PostgreSQL database has a connection pool"):
        open_storage(":memory:", pool_size=5)


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentops_async", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env or {})),
        cwd=REPO_ROOT,
    )


def test_serve_refuses_a_bad_pool_size_naming_the_setting(tmp_path: Path) -> None:
    dsn = "postgresql://agentops@127.0.0.1:1/agentops"
    zero = _serve("--database", dsn, "--pool-size", "0")
    assert zero.returncode == 2
    assert "argument --pool-size: expected a number of connections from 1 to 1000" in zero.stderr
    sqlite = _serve("--database", str(tmp_path / "x.db"), "--pool-size", "4")
    assert sqlite.returncode == 2
    assert "--pool-size: only for a PostgreSQL --database" in sqlite.stderr
    from_env = _serve("--database", dsn, env={_ENV: "many"})
    assert from_env.returncode == 2
    assert f"{_ENV}: expected a number of connections from 1 to 1000, got 'many'" in (
        from_env.stderr
    )
