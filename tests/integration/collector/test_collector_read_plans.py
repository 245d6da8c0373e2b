"""The read queries use indexes that fit them, on both backends (checked with EXPLAIN).

Every statement the storage runs for a read (sessions list with each filter and a cursor, a
session, its counts and usage, its events pages) is captured as it runs and explained: none may
read a whole table, and a session's counts by type and LLM usage must come from the rollups
(``session_event_counts``, ``session_llm_usage``, ``session_tool_usage``) by their keys, never
from the events, so they cost a few rows however many events the session holds. PostgreSQL
plans are asked with sequential scans, bitmap scans and sorts disabled, so that on this small
test database the planner shows which index fits (and gives the order) rather than what is
cheapest here (benchmarks/bench_reads.py measures them on 10M events).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agentops_async.collector import Storage
from agentops_async.collector._auth import new_project
from agentops_async.collector._storage import EventRow, SessionFilter, SessionWrite

pytestmark = pytest.mark.asyncio


async def _filled(storage: Storage) -> tuple[str, list[str]]:
    project_id, _ = await new_project(storage, "plans")
    sessions = []
    for n in range(40):
        session_id = str(uuid.uuid4())
        await storage.upsert_session(
            SessionWrite(
                session_id=session_id,
                project_id=project_id,
                init_ts=1_700_000_000.0 + n * 60,
                state="SUCCEEDED" if n % 3 else "FAILED",
                tags=[f"t{n % 4}"],
            )
        )
        rows: list[EventRow] = []
        for i in range(50):
            kind = ("llms", "actions", "tools")[i % 3]
            data = json.dumps({"id": f"e{i}", "event_type": kind})
            if kind == "llms":
                rows.append((session_id, f"e{i}", kind, None, None, data, "gpt-4o", 10, 5, None))
            else:
                rows.append((session_id, f"e{i}", kind, None, None, data))
        await storage.insert_events(rows)
        sessions.append(session_id)
    return project_id, sessions


async def _reads(storage: Storage, project_id: str, sessions: list[str]) -> None:
    """Every read the read API makes."""
    for flt in (
        SessionFilter(project_id),
        SessionFilter(project_id, state="FAILED"),
        SessionFilter(project_id, tag="t1"),
        SessionFilter(project_id, since=1_700_000_000.0, until=1_700_000_600.0),
        SessionFilter(project_id, before_id=sessions[20]),
    ):
        await storage.list_sessions(flt)
    await storage.get_session(sessions[3])
    await storage.get_sessions(sessions[10:30])
    await storage.event_counts(sessions[:10])
    await storage.llm_usage(sessions[:10])
    await storage.list_events(sessions[5], None, 100, None)
    await storage.list_events(sessions[5], "e10", 100, None)
    await storage.list_events(sessions[5], None, 100, "llms")


async def _sqlite_plans(storage: Any, reads: Callable[[], Awaitable[None]]) -> dict[str, str]:
    """``{statement: its EXPLAIN QUERY PLAN, one line per step}`` of the reads."""
    statements: list[str] = []
    reader = storage._reader  # the read connection: capture what it runs
    await storage._read(lambda conn: conn.set_trace_callback(statements.append))
    try:
        await reads()
    finally:
        await storage._read(lambda conn: conn.set_trace_callback(None))
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert selects, statements
    return {
        sql: "\n".join(str(row[3]) for row in reader.execute(f"EXPLAIN QUERY PLAN {sql}"))
        for sql in selects
    }


async def _postgres_plans(storage: Any, reads: Callable[[], Awaitable[None]]) -> dict[str, str]:
    """``{statement: its EXPLAIN, one line per node}`` of the reads (full scans, bitmap scans and
    sorts disabled: what remains of them, no index could do)."""
    statements: list[tuple[str, tuple[object, ...]]] = []
    pool = storage.pool

    class Recording:  # the pool, noting the statements the storage sends through it
        def __getattr__(self, name: str) -> Any:
            method = getattr(pool, name)
            if name not in ("fetch", "fetchrow", "fetchval"):
                return method

            async def call(sql: str, *args: object) -> Any:
                statements.append((sql, args))
                return await method(sql, *args)

            return call

    storage._pool = Recording()
    try:
        await reads()
    finally:
        storage._pool = pool
    plans = {}
    async with pool.acquire() as conn:
        await conn.execute("VACUUM ANALYZE")  # what autovacuum does: all-visible pages
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            await conn.execute(f"SET {setting} = off")
        for sql, args in statements:
            if sql.lstrip().upper().startswith("SELECT"):
                rows = await conn.fetch(f"EXPLAIN {sql}", *args)
                plans[sql] = "\n".join(str(row[0]) for row in rows)
        await conn.execute("RESET ALL")
    assert plans, statements
    return plans


async def test_read_queries_use_indexes_that_fit(storage: Storage, collector_backend: str) -> None:
    project_id, sessions = await _filled(storage)

    async def reads() -> None:
        await _reads(storage, project_id, sessions)

    if collector_backend == "sqlite":
        plans = await _sqlite_plans(storage, reads)
        for sql, plan in plans.items():
            for line in plan.splitlines():
                # "SCAN t" reads all of t (also "SCAN t USING INDEX": the whole index)
                assert not line.startswith(("SCAN events", "SCAN sessions", "SCAN session_tags")), (
                    f"{sql}\n{plan}"
                )
        some = _one(plans, "FROM sessions WHERE id IN")
        assert some.startswith("SEARCH sessions USING INDEX") and "(id=?)" in some, some
        counts = _one(plans, "FROM session_event_counts")
        assert "SEARCH session_event_counts USING PRIMARY KEY (session_id=?)" in counts, counts
        usage = _one(plans, "FROM session_llm_usage")
        assert "SEARCH session_llm_usage USING PRIMARY KEY (session_id=?)" in usage, usage
        assert "SEARCH session_tool_usage USING PRIMARY KEY (session_id=?)" in usage, usage
        for sql, plan in plans.items():  # only the events pages read the events
            assert "events " not in plan.replace("session_event_counts", "") or (
                "SELECT id, data FROM events" in sql
            ), f"{sql}\n{plan}"
        pages = _all(plans, "SELECT id, data FROM events", 3)
        for page in pages:  # read in seq order, not sorted
            assert "USE TEMP B-TREE FOR ORDER BY" not in page, page
            assert "USING INDEX events_by_session (session_id=?" in page, page
    else:
        plans = await _postgres_plans(storage, reads)
        for sql, plan in plans.items():
            assert "Seq Scan" not in plan, f"{sql}\n{plan}"
            assert "Bitmap Heap Scan" not in plan, f"{sql}\n{plan}"
        some = _one(plans, "FROM sessions WHERE id = ANY")
        assert "Index Scan using sessions_id_key on sessions" in some, some
        counts = _one(plans, "FROM session_event_counts")
        assert "using session_event_counts_pkey on session_event_counts" in counts, counts
        usage = _one(plans, "FROM session_llm_usage")
        assert "using session_llm_usage_pkey on session_llm_usage" in usage, usage
        assert "using session_tool_usage_pkey on session_tool_usage" in usage, usage
        for sql, plan in plans.items():  # only the events pages read the events
            assert " on events" not in plan or "SELECT id, data::text FROM events" in sql, (
                f"{sql}\n{plan}"
            )
        pages = _all(plans, "SELECT id, data::text FROM events", 3)
        for page in pages:  # read in seq order, not sorted
            assert "Index Scan using events_by_session on events" in page, page
            assert "Sort" not in page, page


def _all(plans: dict[str, str], part: str, count: int) -> list[str]:
    """The plans of the ``count`` statements that contain ``part``."""
    found = [plan for sql, plan in plans.items() if part in sql]
    assert len(found) == count, (part, list(plans))
    return found


def _one(plans: dict[str, str], part: str) -> str:
    """The plan of the one statement that contains ``part``."""
    return _all(plans, part, 1)[0]
