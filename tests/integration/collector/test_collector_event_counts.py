"""A session's events by type come from the ``session_event_counts`` rollup (schema 7), kept
exact by the writer (SQLite) or a statement trigger (PostgreSQL) from the rows each insert stored.

The sessions list and the session page read these counts (and the usage rollups), never the
events: a session of 100,000 events costs a few rows (test_collector_read_plans.py checks the
plans; benchmarks/bench_reads.py measures them).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest
from _schema import downgrade, query

from agentops_async.collector import Storage, _postgres, _sqlite, open_storage, prune
from agentops_async.collector._auth import new_project
from agentops_async.collector._storage import EventRow, SessionWrite, is_postgres_dsn

pytestmark = pytest.mark.asyncio

KINDS = ("llms", "actions", "tools", "errors", "spans", "custom-kind")


def _rows(session_id: str, start: int, count: int) -> list[EventRow]:
    rows: list[EventRow] = []
    for i in range(start, start + count):
        kind = KINDS[i % len(KINDS) if i % 7 else 0]
        data = json.dumps({"id": f"e{i}", "event_type": kind})
        if kind == "llms":
            rows.append((session_id, f"e{i}", kind, None, None, data, "gpt-4o", 10, 5, None))
        else:
            rows.append((session_id, f"e{i}", kind, None, None, data))
    return rows


async def _session(storage: Storage, project_id: str) -> str:
    session_id = str(uuid.uuid4())
    await storage.upsert_session(SessionWrite(session_id=session_id, project_id=project_id))
    return session_id


async def _stored_by_type(storage: Storage, session_id: str) -> dict[str, int]:
    """The session's events by type, counted from the events themselves."""
    events = await storage.list_events(session_id, None, 100_000, None)
    return dict(Counter(json.loads(data)["event_type"] for _, data in events))


async def test_counts_by_type_are_exact_through_batches_and_retries(storage: Storage) -> None:
    project_id, _ = await new_project(storage, "counts")
    first, second = await _session(storage, project_id), await _session(storage, project_id)
    assert await storage.insert_events(_rows(first, 0, 300)) == 300
    assert await storage.insert_events(_rows(second, 0, 40) + _rows(first, 300, 50)) == 90
    # A retried batch (ids stored before) and a batch that repeats an id: counted once.
    assert await storage.insert_events(_rows(first, 280, 40)) == 0
    repeated = _rows(second, 40, 5)
    assert await storage.insert_events(repeated + repeated) == 5

    counts = await storage.event_counts([first, second, str(uuid.uuid4())])
    assert counts == {
        first: await _stored_by_type(storage, first),
        second: await _stored_by_type(storage, second),
    }
    assert sum(counts[first].values()) == 350 and sum(counts[second].values()) == 45
    usage = await storage.llm_usage([first])
    assert sum(u.prompt_tokens for u in usage) == 10 * counts[first]["llms"]
    assert sum(u.completion_tokens for u in usage) == 5 * counts[first]["llms"]


async def test_a_version_6_database_counts_the_events_stored_before(database: str) -> None:
    storage = open_storage(database)
    await storage.open()
    project_id, _ = await new_project(storage, "counts")
    session_id = await _session(storage, project_id)
    await storage.insert_events(_rows(session_id, 0, 120))
    await storage.close()
    await downgrade(database, 6)

    storage = open_storage(database)
    await storage.open()  # migrates (through 7: the counts of the events stored before)
    try:
        latest = len((_postgres if is_postgres_dsn(database) else _sqlite)._MIGRATIONS)
        assert await query(database, "SELECT max(version) FROM schema_version") == [(latest,)]
        await storage.insert_events(_rows(session_id, 100, 50))  # 30 new, 20 stored before
        counts = await storage.event_counts([session_id])
        assert counts == {session_id: await _stored_by_type(storage, session_id)}
        assert sum(counts[session_id].values()) == 150
    finally:
        await storage.close()


async def test_a_prune_deletes_the_sessions_counts_with_them(
    storage: Storage, database: str
) -> None:
    project_id, _ = await new_project(storage, "counts")
    session_id = await _session(storage, project_id)
    await storage.insert_events(_rows(session_id, 0, 30))
    assert len(await query(database, "SELECT * FROM session_event_counts")) == len(KINDS)
    pruned = await prune(storage, 0, now=2**40)
    assert pruned.sessions == 1
    assert await query(database, "SELECT * FROM session_event_counts") == []
    assert await storage.event_counts([session_id]) == {}
