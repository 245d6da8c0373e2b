"""Storage outages are answered 503 + Retry-After, and the SDK rides them out (issue 10, item 10).

A real SQLite write lock held by another connection for longer than the collector's busy timeout,
and a real PostgreSQL restart (stop, start on the same data directory), while the SDK sends: the
collector answers 503 (never 500), and the delivery ledger shows nothing missing or duplicated.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _servers import CollectorHandle, CollectorProcess, PostgresServer

import agentops_async as ao

from .ledger import Ledger
from .proxy import FaultProxy
from .test_delivery_under_faults import client_for, wait_for

BUSY_TIMEOUT = 0.3  # seconds; the default (10 s) would make the test slow, not different


def _no_server_errors(log_path: Path) -> str:
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text and "internal server error" not in text
    return text


async def _send_through_outage(
    collector: Any, proxy: FaultProxy, outage_start: Any, outage_end: Any, scenario: str
) -> None:
    """Record while the storage is down; end the outage once the SDK has met several 503s."""
    client = client_for(proxy.url, collector.api_key, request_timeout=10, max_retry_time=120)
    ledger = Ledger()
    async with client.session() as session:
        for i in range(100):
            await ledger.record(session, ao.ActionEvent(params={"i": i}))
        assert await session.flush(10)
        await outage_start()
        try:
            for i in range(100, 300):
                await ledger.record(session, ao.ActionEvent(params={"i": i}))
                if i % 20 == 0:
                    await asyncio.sleep(0)
            await wait_for(lambda: proxy.upstream_statuses[503] >= 3, "503 answers", timeout=30)
        finally:
            await outage_end()
    assert await client.close()
    result = await ledger.check(collector, client, scenario, proxy.upstream_statuses)
    assert result.recorded == 300
    assert (result.missing, result.duplicated, result.dropped_reported) == (0, 0, 0)
    assert result.stored == 300
    assert 500 not in proxy.upstream_statuses, proxy.upstream_statuses
    stored = await collector.get_session(session.session_id)
    assert stored is not None and stored["end_state"] == "Success"


@pytest.mark.asyncio
async def test_a_sqlite_write_lock_held_past_busy_timeout_is_answered_503_and_nothing_is_lost(
    collector_factory: Any,
) -> None:
    collector: CollectorHandle = collector_factory(
        "sqlite", env={"AGENTOPS_COLLECTOR_SQLITE_BUSY_TIMEOUT": str(BUSY_TIMEOUT)}
    )
    proxy = await FaultProxy(collector.url).start()
    # Another process's connection (the CLI, a backup, a migration) holding the write lock.
    locker = sqlite3.connect(collector.database, isolation_level=None, check_same_thread=False)

    async def take_lock() -> None:
        await asyncio.to_thread(locker.execute, "BEGIN IMMEDIATE")

    async def release_lock() -> None:
        await asyncio.to_thread(locker.execute, "ROLLBACK")

    try:
        await _send_through_outage(
            collector, proxy, take_lock, release_lock, "storage lock (SQLite)"
        )
        answer = await collector.request(  # and the answer itself, as a client sees it
            "GET", "/health"
        )
        assert answer.status == 200
    finally:
        locker.close()
        await proxy.stop()
    log = _no_server_errors(collector.process.log_path)
    assert "storage unavailable, answered 503" in log
    assert "the database is locked" in log


@pytest.mark.asyncio
async def test_a_locked_database_answers_503_with_retry_after_and_a_json_message(
    collector_factory: Any,
) -> None:
    collector: CollectorHandle = collector_factory(
        "sqlite", env={"AGENTOPS_COLLECTOR_SQLITE_BUSY_TIMEOUT": str(BUSY_TIMEOUT)}
    )
    session_id, jwt = await collector.v2_create_session()
    locker = sqlite3.connect(collector.database, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        headers = {"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"}
        import aiohttp

        async with (
            aiohttp.ClientSession() as http,
            http.post(
                collector.url + "/v2/create_events",
                json={"events": [{"id": "e1", "event_type": "actions"}]},
                headers=headers,
            ) as response,
        ):
            assert response.status == 503
            assert response.headers["Content-Type"].startswith("application/json")
            assert 1 <= int(response.headers["Retry-After"]) <= 10
            body = await response.json()
        assert body["message"].startswith("storage temporarily unavailable, retry later")
        assert "locked" in body["message"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert await collector.get_events(session_id) == []


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test only (the shared one must not be restarted)."""
    import os

    from _servers import find_postgres_bin

    if find_postgres_bin() is None:
        if os.environ.get("AGENTOPS_TEST_REQUIRE_PG", "") not in ("", "0", "false", "no"):
            pytest.fail("AGENTOPS_TEST_REQUIRE_PG=1 but PostgreSQL binaries are missing")
        pytest.skip("PostgreSQL server binaries not found")
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_postgresql_restart_is_answered_503_and_nothing_is_lost(
    private_postgres: PostgresServer, tmp_path: Path
) -> None:
    process = CollectorProcess(
        database=private_postgres.create_database(),
        backend="postgres",
        log_path=tmp_path / "collector.log",
    ).start()
    try:
        project_id, api_key = process.create_project("restart")
        collector = CollectorHandle(process, project_id, api_key)
        proxy = await FaultProxy(collector.url).start()
        try:
            await _send_through_outage(
                collector,
                proxy,
                lambda: asyncio.to_thread(private_postgres.halt, "fast"),
                lambda: asyncio.to_thread(private_postgres.resume),
                "PostgreSQL restart",
            )
        finally:
            await proxy.stop()
        log = _no_server_errors(process.log_path)
        assert "storage unavailable, answered 503" in log
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ("database is locked", True),
        ("database or disk is full", True),
        ("disk I/O error", True),
        ("no such table: sessions", False),
    ],
)
def test_sqlite_errors_are_classified_in_one_place(message: str, transient: bool) -> None:
    from agentops_async.collector._sqlite import unavailable as sqlite_unavailable
    from agentops_async.collector._storage import StorageUnavailable

    translated = sqlite_unavailable(sqlite3.OperationalError(message))
    assert (translated is not None) is transient
    if translated is not None:
        assert isinstance(translated, StorageUnavailable) and translated.retry_after > 0


def test_sqlite_disk_full_from_a_real_database_is_unavailable(tmp_path: Path) -> None:
    """A database whose file may not grow: the real SQLITE_FULL error is classified as transient."""
    from agentops_async.collector._sqlite import unavailable as sqlite_unavailable

    conn = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    conn.execute("CREATE TABLE t (x TEXT)")
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {page_count}")
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    conn.close()
    translated = sqlite_unavailable(caught.value)
    assert translated is not None and "disk is full" in translated.reason


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        ("CannotConnectNowError", True),  # 57P03 starting up / shutting down
        ("AdminShutdownError", True),  # 57P01
        ("DiskFullError", True),  # 53100 could not extend file
        ("ConnectionDoesNotExistError", True),  # 08003 connection lost mid-query
        ("TooManyConnectionsError", True),  # 53300
        ("UniqueViolationError", False),
        ("UndefinedTableError", False),
    ],
)
def test_postgres_errors_are_classified_in_one_place(error: str, transient: bool) -> None:
    asyncpg = pytest.importorskip("asyncpg")
    from agentops_async.collector._postgres import unavailable

    exc = getattr(asyncpg.exceptions, error)("boom")
    assert (unavailable(exc) is not None) is transient
    assert unavailable(ConnectionRefusedError(111, "Connect call failed")) is not None
    assert unavailable(ValueError("x")) is None


def test_outage_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp.test_utils import make_mocked_request

    from agentops_async.collector._app import _storage_unavailable
    from agentops_async.collector._storage import StorageUnavailable

    caplog.set_level(logging.INFO, logger="agentops_async")
    request = make_mocked_request("POST", "/v2/create_events")
    exc = StorageUnavailable(f"sqlite: locked {uuid.uuid4()}")
    answers = [_storage_unavailable(request, exc) for _ in range(50)]
    assert {a.status for a in answers} == {503}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) <= 1
    assert all(r.exc_info is None for r in caplog.records)
