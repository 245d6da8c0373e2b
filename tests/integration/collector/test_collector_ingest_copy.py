"""Batch ingest keeps its guarantees on both backends (PostgreSQL: COPY straight into events, or
through a staging table when an id is stored already).

Idempotency on event ids (a retried batch, an id twice in one batch, concurrent batches sharing
ids) and exact JSON (what the client sent is what is read back, byte for byte).
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest
from _schema import downgrade

from agentops_async.collector import Storage, open_storage
from agentops_async.collector._auth import new_project
from agentops_async.collector._storage import EventRow, SessionWrite

pytestmark = pytest.mark.asyncio


async def _session(storage: Storage) -> str:
    project_id, _ = await new_project(storage, "p")
    session_id = str(uuid.uuid4())
    await storage.upsert_session(SessionWrite(session_id=session_id, project_id=project_id))
    return session_id


def _row(session_id: str, event_id: str, data: str | None = None) -> EventRow:
    return (session_id, event_id, "actions", None, None, data or f'{{"id":"{event_id}"}}')


async def test_duplicate_ids_within_and_across_batches_are_stored_once(storage: Storage) -> None:
    session_id = await _session(storage)
    first = [_row(session_id, f"e{i}") for i in range(5)]
    # e1 twice in one batch: the first copy is kept, in arrival order.
    within = [*first[:2], _row(session_id, "e1", '{"id":"e1","copy":2}'), *first[2:]]
    assert await storage.insert_events(within) == 5

    assert await storage.insert_events(within) == 0  # the same batch, retried
    assert await storage.insert_events([first[4], _row(session_id, "e5")]) == 1
    # Concurrent batches with overlapping ids: each id once in all.
    batches = [[_row(session_id, f"c{(i + k) % 7}") for i in range(4)] for k in range(6)]
    counts = await asyncio.gather(*(storage.insert_events(b) for b in batches))
    assert sum(counts) == 7

    page = await storage.list_events(session_id, None, 100, None)
    ids = [event_id for event_id, _ in page]
    assert ids[:6] == ["e0", "e1", "e2", "e3", "e4", "e5"]
    assert sorted(ids[6:]) == [f"c{i}" for i in range(7)]
    assert dict(page)["e1"] == '{"id":"e1"}'
    assert await storage.event_counts([session_id]) == {session_id: {"actions": 13}}


ODD_JSON = [
    # key order, spacing and number formats kept as sent
    '{"z":1,"a":2,  "m" : [1.0, 1e3, -0.0, 1E-7]}',
    '{"big":123456789012345678901234567890,"f":3.141592653589793238462643383279}',
    '{"int64":9223372036854775807,"neg":-9223372036854775808}',
    # unicode as characters and as escapes, surrogate pairs, escaped controls and quotes
    '{"s":"h\u00e9llo \u4e16\u754c \U0001f600","e":"\\u00e9\\u4e16\\ud83d\\ude00"}',
    '{"ctl":"tab\\t nl\\n q\\" bs\\\\ sl\\/ nul\\u0000 bel\\u0007"}',
    '{"deep":{"a":[{"b":[null,true,false,""]}]},"empty":{},"list":[]}',
]


async def test_odd_json_is_stored_byte_for_byte(storage: Storage) -> None:
    session_id = await _session(storage)
    rows = [_row(session_id, f"j{i}", text) for i, text in enumerate(ODD_JSON)]
    # Also as msgspec.Raw fragments (what the HTTP layer hands over), in the same batch.
    rows += [
        (session_id, f"r{i}", "actions", None, None, msgspec.Raw(text.encode()))
        for i, text in enumerate(ODD_JSON)
    ]
    assert await storage.insert_events(rows) == 2 * len(ODD_JSON)

    page = await storage.list_events(session_id, None, 100, None)
    assert [data for _, data in page] == ODD_JSON + ODD_JSON
    assert [event_id for event_id, _ in page] == [row[1] for row in rows]


async def test_postgres_ingest_survives_a_lost_staging_table(
    storage: Storage, collector_backend: str
) -> None:
    if collector_backend != "postgres":
        pytest.skip("PostgreSQL's staging table")
    session_id = await _session(storage)
    assert await storage.insert_events([_row(session_id, "before")]) == 1
    pool = storage.pool  # type: ignore[attr-defined]
    async with pool.acquire() as conn:  # as a pooler handing over another server session would
        await conn.execute("DISCARD TEMP")
    # "before" again: the batch takes the staging path, whose table is gone.
    again = [_row(session_id, "after"), _row(session_id, "before"), _row(session_id, "x")]
    assert await storage.insert_events(again) == 2
    page = await storage.list_events(session_id, None, 10, None)
    assert [event_id for event_id, _ in page] == ["before", "after", "x"]


async def _pg_fetch(dsn: str, sql: str) -> list[tuple[object, ...]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


_EVENT_INDEXES = (
    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' ORDER BY indexname"
)


async def test_postgres_events_are_keyed_by_session_and_event_id_with_no_index_on_seq(
    database: str, collector_backend: str
) -> None:
    """Schema 5: every index costs every COPY; (session_id, id) is the primary key that ingest's
    idempotency needs, and no read uses an index on seq alone."""
    if collector_backend != "postgres":
        pytest.skip("PostgreSQL's events indexes")
    storage = open_storage(database)
    await storage.open()
    await storage.close()
    indexes = dict(await _pg_fetch(database, _EVENT_INDEXES))
    assert indexes["events_pkey"].endswith("USING btree (session_id, id)")
    assert not [d for d in indexes.values() if d.endswith("(seq)")], indexes
    assert "events_by_session_id" not in indexes  # it became the primary key


async def test_postgres_version_4_events_migrate_and_stay_idempotent(
    database: str, collector_backend: str
) -> None:
    if collector_backend != "postgres":
        pytest.skip("PostgreSQL's schema 5")

    storage = open_storage(database)
    await storage.open()
    session_id = await _session(storage)
    batch = [_row(session_id, f"m{i}") for i in range(3)]
    assert await storage.insert_events(batch) == 3
    await storage.close()
    await downgrade(database, 4)  # a primary key on seq, a unique index on (session_id, id)
    storage = open_storage(database)
    await storage.open()
    try:  # the events stored before are still keys: re-sent, only the new one is stored
        assert await storage.insert_events([*batch, _row(session_id, "m3")]) == 1
        page = await storage.list_events(session_id, None, 10, None)
        assert [event_id for event_id, _ in page] == ["m0", "m1", "m2", "m3"]
    finally:
        await storage.close()
    indexes = dict(await _pg_fetch(database, _EVENT_INDEXES))
    assert indexes["events_pkey"].endswith("USING btree (session_id, id)")
