"""``serve --pg-synchronous-commit on|off`` / ``Collector(pg_synchronous_commit=...)``: with off,
every connection of the collector's pool commits asynchronously (also after the pool's RESET ALL
on release), ingest still stores every event once; on (the default) leaves the server's setting.
"""

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

from agentops_async.collector import Collector


async def _settings_of_pool(collector: Collector, connections: int) -> list[str]:
    """``synchronous_commit`` as seen by ``connections`` pool connections held at once, twice
    (the second time after every connection was released once)."""
    pool = collector.storage.pool  # type: ignore[attr-defined]
    seen: list[str] = []
    for _ in range(2):
        held = [await pool.acquire() for _ in range(connections)]
        try:
            seen += [await conn.fetchval("SHOW synchronous_commit") for conn in held]
        finally:
            for conn in held:
                await pool.release(conn)
    return seen


async def _ingest(collector: Collector, api_key: str, batches: int) -> str:
    """One session, ``batches`` create_events batches of 100 events, each sent twice; its id."""
    session_id = str(uuid.uuid4())
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{collector.url}/v2/create_session",
            json={"session": {"session_id": session_id}},
            headers={"X-Agentops-Api-Key": api_key},
        ) as response:
            jwt = (await response.json())["jwt"]

        async def send(n: int) -> None:
            events = [
                {"id": f"{n}-{i}", "event_type": "actions", "session_id": session_id}
                for i in range(100)
            ]
            for _ in range(2):  # a retried batch stores nothing twice
                async with http.post(
                    f"{collector.url}/v2/create_events",
                    json={"events": events},
                    headers={"Authorization": f"Bearer {jwt}"},
                ) as response:
                    assert response.status == 200, await response.text()

        await asyncio.gather(*(send(n) for n in range(batches)))
    return session_id


@pytest.mark.asyncio
async def test_synchronous_commit_off_holds_on_every_pool_connection(
    postgres_server: PostgresServer,
) -> None:
    import asyncpg

    dsn = postgres_server.create_database()
    # The test server runs with synchronous_commit off; this database, like a deployment's, on.
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'ALTER DATABASE "{dsn.rsplit("/", 1)[-1]}" SET synchronous_commit = on')
    finally:
        await conn.close()
    async with Collector(database=dsn, port=0, pool_size=3, pg_synchronous_commit=False) as c:
        api_key = await c.create_project("async-commit")
        session_id = await _ingest(c, api_key, batches=6)
        assert await _settings_of_pool(c, 3) == ["off"] * 6
        assert await c.storage.event_counts([session_id]) == {session_id: {"actions": 600}}
    # The default leaves the database's setting.
    async with Collector(database=dsn, port=0, pool_size=2) as c:
        assert await _settings_of_pool(c, 2) == ["on"] * 4
        assert await c.storage.event_counts([session_id]) == {session_id: {"actions": 600}}


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentops_async", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        cwd=REPO_ROOT,
    )


def test_synchronous_commit_setting_is_checked_naming_it(tmp_path: Path) -> None:
    sqlite = _serve("--database", str(tmp_path / "x.db"), "--pg-synchronous-commit", "off")
    assert sqlite.returncode == 2
    assert "--pg-synchronous-commit: only for a PostgreSQL --database" in sqlite.stderr
    bad = _serve("--database", str(tmp_path / "x.db"), "--pg-synchronous-commit", "maybe")
    assert bad.returncode == 2
    assert "argument --pg-synchronous-commit: invalid choice: 'maybe'" in bad.stderr
    with pytest.raises(ValueError, match="pg_synchronous_commit: only for a PostgreSQL"):
        Collector(database=str(tmp_path / "x.db"), pg_synchronous_commit=False)
