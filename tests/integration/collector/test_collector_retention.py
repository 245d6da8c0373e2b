"""Retention: ``prune`` in process, the ``agentops-async prune`` CLI and ``serve --retention-days``.

Both backends, against the real collector for the CLI and the serve job. "Old" sessions ended (or,
never ended, started) in 2020; "recent" ones now. Every per-session table is checked directly in
the database after a prune: nothing of an old session is left, nothing of a recent one is lost.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import pytest
from _servers import REPO_ROOT, CollectorHandle, CollectorProcess

from agentops_async.collector import Storage, open_storage, prune
from agentops_async.collector._auth import new_project
from agentops_async.collector._storage import SessionWrite

pytestmark = pytest.mark.asyncio

OLD = "2020-01-01T00:00:00+00:00"
OLD_TS = 1577836800.0
_TABLES = ("events", "session_tags", "agents", "developer_errors")


async def _rows_of(database: str, session_ids: list[str]) -> dict[str, int]:
    """Rows per table (and ``sessions``) that belong to these sessions, read directly."""
    counts: dict[str, int] = {}
    if database.startswith("postgresql://"):
        import asyncpg

        conn = await asyncpg.connect(database)
        try:
            for table in _TABLES:
                counts[table] = await conn.fetchval(
                    f"SELECT count(*) FROM {table} WHERE session_id::text = ANY($1::text[])",
                    session_ids,
                )
            counts["sessions"] = await conn.fetchval(
                "SELECT count(*) FROM sessions WHERE id = ANY($1::text[])", session_ids
            )
        finally:
            await conn.close()
        return counts
    conn3 = sqlite3.connect(database)
    try:
        marks = ",".join("?" * len(session_ids))
        for table in _TABLES:
            counts[table] = conn3.execute(
                f"SELECT count(*) FROM {table} WHERE session_id IN ({marks})", session_ids
            ).fetchone()[0]
        counts["sessions"] = conn3.execute(
            f"SELECT count(*) FROM sessions WHERE id IN ({marks})", session_ids
        ).fetchone()[0]
    finally:
        conn3.close()
    return counts


def _event(session_id: str, n: int) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "event_type": "actions",
        "init_timestamp": OLD,
        "end_timestamp": OLD,
        "session_id": session_id,
        "action_type": "step",
        "params": {"n": n},
    }


async def _fill_session(handle: CollectorHandle, *, old: bool, events: int) -> str:
    """A session with tags, events, an agent and a developer error; ended in 2020 if ``old``.

    It starts now and becomes old only when it ends (last), so a retention job running
    meanwhile never deletes it half-filled.
    """
    session_id, jwt = await handle.v2_create_session(tags=["keep" if not old else "old"])
    body = {"events": [_event(session_id, n) for n in range(events)]}
    assert (await handle.v2_post("create_events", body, jwt=jwt)).status == 200
    agent = {"id": str(uuid.uuid4()), "name": "planner"}
    assert (await handle.v2_post("create_agent", agent, jwt=jwt)).status == 200
    report = {"type": "ValueError", "message": "x", "session_id": session_id}
    answer = await handle.v2_post("developer_errors", report, api_key=handle.api_key)
    assert answer.status == 200, answer.body
    if old:
        end = {"session_id": session_id, "end_timestamp": OLD, "end_state": "Success"}
        answer = await handle.v2_post("update_session", {"session": end}, jwt=jwt)
        assert answer.status == 200, answer.body
    return session_id


class _Ingest:
    """Posts batches into a recent session until stopped; counts what was sent and refused."""

    def __init__(self, handle: CollectorHandle) -> None:
        self.handle = handle
        self.sent = 0
        self.failures: list[tuple[int, object]] = []
        self.session_id = ""
        self.batches = 0

    async def run(self, stop: asyncio.Event) -> None:
        self.session_id, jwt = await self.handle.v2_create_session(tags=["live"])
        while not stop.is_set() or self.batches < 3:
            body = {"events": [_event(self.session_id, n) for n in range(50)]}
            answer = await self.handle.v2_post("create_events", body, jwt=jwt)
            self.batches += 1
            if answer.status == 200:
                self.sent += 50
            else:
                self.failures.append((answer.status, answer.body))


def _process(database: str, backend: str, tmp_path: Path, *args: str) -> CollectorProcess:
    log = tmp_path / f"collector-{uuid.uuid4().hex[:6]}.log"
    return CollectorProcess(database, backend, log, extra_args=args).start()


@pytest.fixture
def database_of(
    collector_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[str, str]:
    """``(backend, database)``: an empty database of the backend under test."""
    if collector_backend == "sqlite":
        return collector_backend, str(tmp_path / "retention.db")
    server = request.getfixturevalue("postgres_server")
    return collector_backend, str(server.create_database())


# --- in process ----------------------------------------------------------------------------


async def _stored_session(storage: Storage, project_id: str, *, ended: float | None) -> str:
    session_id = str(uuid.uuid4())
    write = SessionWrite(
        session_id=session_id, project_id=project_id, init_ts=OLD_TS, end_ts=ended, tags=["t"]
    )
    await storage.upsert_session(write)
    rows = [
        (session_id, f"e{i}", "actions", None, None, f'{{"id": "e{i}", "pad": "{"x" * 200}"}}')
        for i in range(300)
    ]
    await storage.insert_events(rows)  # type: ignore[arg-type]
    await storage.create_agent(session_id, "a1", "agent")
    await storage.add_developer_error(project_id, session_id, '{"type": "E"}')
    return session_id


async def test_prune_deletes_old_sessions_in_chunks_and_keeps_recent_ones(database: str) -> None:
    storage = open_storage(database)
    await storage.open()
    try:
        project_id, _ = await new_project(storage, "p")
        now = time.time()
        ended_old = [await _stored_session(storage, project_id, ended=OLD_TS) for _ in range(5)]
        # Started in 2020 but ended yesterday: not old. Started in 2020, never ended: old.
        ended_recently = await _stored_session(storage, project_id, ended=now - 86400)
        never_ended = await _stored_session(storage, project_id, ended=None)
        await storage.add_developer_error(project_id, None, '{"type": "loose"}')  # stored now

        pruned = await prune(storage, 30 * 86400, chunk=2)

        assert (pruned.sessions, pruned.events) == (6, 6 * 300)
        assert await storage.get_session(ended_recently) is not None
        assert await storage.event_counts([ended_recently]) == {ended_recently: {"actions": 300}}
        assert await storage.get_session(never_ended) is None
    finally:
        await storage.close()
    gone = await _rows_of(database, [*ended_old, never_ended])
    assert gone == dict.fromkeys((*_TABLES, "sessions"), 0)
    kept = await _rows_of(database, [ended_recently])
    assert kept == {"events": 300, "session_tags": 1, "agents": 1, "developer_errors": 1,
                    "sessions": 1}  # fmt: skip


async def test_sqlite_file_shrinks_after_a_prune(tmp_path: Path) -> None:
    path = tmp_path / "shrink.db"
    storage = open_storage(str(path))
    await storage.open()
    project_id, _ = await new_project(storage, "p")
    for _ in range(20):
        await _stored_session(storage, project_id, ended=OLD_TS)
    await storage.close()  # checkpoints the WAL into the file
    full = path.stat().st_size

    storage = open_storage(str(path))
    await storage.open()
    try:
        assert (await prune(storage, 86400)).sessions == 20
    finally:
        await storage.close()
    assert path.stat().st_size < full / 4, (full, path.stat().st_size)


# --- the CLI, beside a running collector ---------------------------------------------------


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentops_async",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        cwd=REPO_ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_prune_deletes_old_sessions_while_the_collector_ingests(
    database_of: tuple[str, str], tmp_path: Path
) -> None:
    backend, database = database_of
    process = _process(database, backend, tmp_path)
    try:
        project_id, api_key = process.create_project("retention")
        handle = CollectorHandle(process, project_id, api_key)
        old = [await _fill_session(handle, old=True, events=400) for _ in range(12)]
        recent = [await _fill_session(handle, old=False, events=40) for _ in range(3)]

        ingest, stop = _Ingest(handle), asyncio.Event()
        ingesting = asyncio.create_task(ingest.run(stop))
        try:
            status, out, err = await _cli(
                "prune", "--older-than", "30d", "--database", database, "--chunk", "5"
            )
        finally:
            stop.set()
            await asyncio.wait_for(ingesting, timeout=60)

        assert status == 0, err
        assert out.strip() == f"deleted 12 sessions ({12 * 400} events)"
        assert ingest.failures == []
        assert ingest.batches >= 3
        assert len(await handle.get_events(ingest.session_id)) == ingest.sent
        for session_id in old:
            assert await handle.get_session(session_id) is None
        for session_id in recent:
            assert len(await handle.get_events(session_id)) == 40
    finally:
        process.stop()
    assert await _rows_of(database, old) == dict.fromkeys((*_TABLES, "sessions"), 0)
    kept = await _rows_of(database, recent)
    assert kept == {"events": 120, "session_tags": 3, "agents": 3, "developer_errors": 3,
                    "sessions": 3}  # fmt: skip


async def test_cli_prune_refuses_a_bad_age(tmp_path: Path) -> None:
    status, _, err = await _cli("prune", "--older-than", "soon", "--database", str(tmp_path))
    assert status == 2
    assert "--older-than" in err and "30d" in err


async def test_cli_prune_vacuum_switches_an_old_sqlite_file_to_incremental(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "old.db")
    storage = open_storage(path)
    await storage.open()
    await storage.close()
    conn = sqlite3.connect(path)  # as a file made before auto_vacuum was set
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()

    status, out, err = await _cli("prune", "--older-than", "1d", "--database", path, "--vacuum")

    assert status == 0, err
    assert out.strip() == "deleted 0 sessions (0 events)"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    finally:
        conn.close()


# --- serve --retention-days ----------------------------------------------------------------


async def test_serve_retention_job_prunes_on_its_interval_while_ingesting(
    database_of: tuple[str, str], tmp_path: Path
) -> None:
    backend, database = database_of
    filler = _process(database, backend, tmp_path)  # no retention: fills the database
    try:
        project_id, api_key = filler.create_project("retention")
        handle = CollectorHandle(filler, project_id, api_key)
        old = [await _fill_session(handle, old=True, events=200) for _ in range(4)]
        recent = [await _fill_session(handle, old=False, events=20) for _ in range(2)]
    finally:
        filler.stop()

    process = _process(
        database, backend, tmp_path, "--retention-days", "30", "--retention-interval", "0.2"
    )
    try:
        handle = CollectorHandle(process, project_id, api_key)
        ingest, stop = _Ingest(handle), asyncio.Event()
        ingesting = asyncio.create_task(ingest.run(stop))
        try:
            # A pass runs at start; a session made old afterwards goes on a later pass.
            later = await _fill_session(handle, old=True, events=10)
            deadline = time.monotonic() + 30
            while any([await handle.get_session(s) for s in (*old, later)]):
                assert time.monotonic() < deadline, "retention did not prune within 30 s"
        finally:
            stop.set()
            await asyncio.wait_for(ingesting, timeout=60)
        assert ingest.failures == []
        assert len(await handle.get_events(ingest.session_id)) == ingest.sent
        for session_id in recent:
            assert len(await handle.get_events(session_id)) == 20
    finally:
        process.stop()
    assert await _rows_of(database, [*old, later]) == dict.fromkeys((*_TABLES, "sessions"), 0)
    assert (await _rows_of(database, recent))["events"] == 40
