"""The rollups (events by type, LLM usage, tools) count every stored event exactly once: with two
collectors racing the same batches on one database, and through PostgreSQL's schema 8 (``data``
as text, one statement trigger for the three rollups) from a version 7 database with data.

The expected figures are computed here from the distinct events sent; the rollups are read back
from their tables and through the storage's reads.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
from _schema import downgrade, query

from agentops_async.collector import Storage, _postgres, open_storage
from agentops_async.collector._auth import new_project
from agentops_async.collector._storage import (
    EventRow,
    SessionWrite,
    StorageUnavailable,
)

pytestmark = pytest.mark.asyncio

TOOL_NAMES = ("search", "caf\\u00e9", "fetch")  # as written in the JSON: an escape too


def _event(session_id: str, n: int) -> EventRow:
    """Event ``n`` of a session: an LLM call, a tool call (40 ms) or an action, by ``n``."""
    event_id = f"e{n:06d}"
    start, end = "2026-11-01T10:00:00.000000+00:00", "2026-11-01T10:00:00.040000+00:00"
    if n % 3 == 0:
        model = ("gpt-4o", "custom")[n % 2]
        cost = 0.5 if model == "custom" else None
        data = json.dumps({"id": event_id, "event_type": "llms", "model": model})
        return (session_id, event_id, "llms", start, end, data, model, 10, n % 7, cost)
    if n % 3 == 1:
        name = TOOL_NAMES[n // 3 % len(TOOL_NAMES)]
        data = f'{{"id": "{event_id}", "event_type": "tools", "name": "{name}"}}'
        return (session_id, event_id, "tools", start, end, data)
    data = json.dumps({"id": event_id, "event_type": "actions", "returns": n})
    return (session_id, event_id, "actions", None, None, data)


def _expected(rows: list[EventRow]) -> dict[str, Any]:
    """What the rollups must hold for these distinct events."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    tokens: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    tools: dict[tuple[str, str], int] = Counter()
    for row in rows:
        counts[row[0]][row[2]] += 1
        if row[2] == "llms":
            tokens[row[0]][0] += int(row[7])  # type: ignore[misc, call-overload]
            tokens[row[0]][1] += int(row[8])  # type: ignore[misc, call-overload]
        elif row[2] == "tools":
            tools[(row[0], json.loads(str(row[5]))["name"])] += 1
    return {
        "counts": {sid: dict(c) for sid, c in counts.items()},
        "tokens": dict(tokens),
        "tools": dict(tools),
    }


async def _stored(storage: Storage, database: str, session_ids: list[str]) -> dict[str, Any]:
    """The rollups as stored."""
    tokens: dict[str, list[int]] = {}
    for usage in await storage.llm_usage(session_ids):
        pair = tokens.setdefault(usage.session_id, [0, 0])
        pair[0] += usage.prompt_tokens
        pair[1] += usage.completion_tokens
    tool_rows = await query(
        database,
        "SELECT session_id, name, calls, timed_calls, total_seconds FROM session_tool_usage",
    )
    for _, _, calls, timed, seconds in tool_rows:  # every tool call took 40 ms
        assert timed == calls and seconds == pytest.approx(0.04 * calls, rel=1e-3)
    return {
        "counts": await storage.event_counts(session_ids),
        "tokens": {sid: pair for sid, pair in tokens.items() if pair != [0, 0]},
        "tools": {(sid, name): calls for sid, name, calls, _, _ in tool_rows},
    }


_KEY_COLUMNS = (
    "SELECT column_name, data_type, collation_name FROM information_schema.columns"
    " WHERE table_name = 'events' AND column_name IN ('data', 'session_id', 'id') ORDER BY 1"
)


async def _rollups_of(database: str) -> list[list[tuple[object, ...]]]:
    """Every row of the three rollup tables, read directly, in key order."""
    return [
        await query(database, "SELECT * FROM session_event_counts ORDER BY 1, 2"),
        await query(database, "SELECT * FROM session_llm_usage ORDER BY 1, 2, 3"),
        await query(database, "SELECT * FROM session_tool_usage ORDER BY 1, 2"),
    ]


async def _migrated(database: str) -> Storage:
    """A storage opened on ``database``, which it migrated to the latest PostgreSQL version."""
    storage = open_storage(database)
    await storage.open()
    latest = len(_postgres._MIGRATIONS)
    assert await query(database, "SELECT max(version) FROM schema_version") == [(latest,)]
    return storage


async def _insert(storage: Storage, batch: list[EventRow]) -> int:
    """Insert a batch as a client would send it: again after a 503 (a deadlock, say)."""
    for _ in range(20):
        try:
            return await storage.insert_events(batch)
        except StorageUnavailable:
            continue
    raise AssertionError("the batch was refused 20 times")


async def test_two_collectors_racing_the_same_batches_count_each_event_once(
    database: str,
) -> None:
    first, second = open_storage(database), open_storage(database)
    await first.open()
    await second.open()
    try:
        project_id, _ = await new_project(first, "race")
        session_ids = [str(uuid.uuid4()) for _ in range(2)]
        for sid in session_ids:
            await first.upsert_session(SessionWrite(session_id=sid, project_id=project_id))
        # Batches of 60 events overlapping by half, each sent by both collectors at once (ids
        # ascending in every batch, as clients send them): every event is sent four times.
        events = {sid: [_event(sid, n) for n in range(600)] for sid in session_ids}
        batches = [
            events[sid][start : start + 60] for start in range(0, 600, 30) for sid in session_ids
        ]
        stored = await asyncio.gather(
            *(_insert(storage, batch) for batch in batches for storage in (first, second))
        )
        assert sum(stored) == 1200  # each event stored once, by one of the two
        expected = _expected([row for rows in events.values() for row in rows])
        assert await _stored(first, database, session_ids) == expected
        assert expected["tools"][(session_ids[0], "caf\u00e9")] == 67
    finally:
        await first.close()
        await second.close()


async def test_a_version_7_postgres_database_keeps_its_rollups_and_json_in_version_8(
    database: str, collector_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if collector_backend != "postgres":
        pytest.skip("PostgreSQL's schema 8")
    monkeypatch.setattr(_postgres, "_MIGRATIONS", _postgres._MIGRATIONS[:7])
    old = open_storage(database)
    await old.open()
    try:
        project_id, _ = await new_project(old, "v7")
        sid = str(uuid.uuid4())
        await old.upsert_session(SessionWrite(session_id=sid, project_id=project_id))
        before = [_event(sid, n) for n in range(90)]
        before.append((sid, "odd", "actions", None, None, '{"z":1,  "a":[1.0, 1e3, "\\u0000"]}'))
        assert await old.insert_events(before) == 91
    finally:
        await old.close()
    monkeypatch.undo()
    kept = await _rollups_of(database)

    new = await _migrated(database)  # to version 8, and on
    try:
        assert await query(database, _KEY_COLUMNS) == [
            ("data", "text", None),
            ("id", "text", "C"),
            ("session_id", "uuid", None),  # version 9
        ]
        triggers = "SELECT tgname FROM pg_trigger WHERE tgrelid = 'events'::regclass"
        assert await query(database, triggers + " AND NOT tgisinternal ORDER BY 1") == [
            ("events_fresh_seq",),  # version 9
            ("events_rollups",),
        ]
        assert await _rollups_of(database) == kept
        page = dict(await new.list_events(sid, None, 1000, None))
        assert page["odd"] == '{"z":1,  "a":[1.0, 1e3, "\\u0000"]}'
        assert [page[row[1]] for row in before] == [row[5] for row in before]

        # The trigger of version 8 counts on: a retried batch once, new events once each.
        after = [_event(sid, n) for n in range(60, 150)]
        assert await new.insert_events(after) == 60
        expected = _expected([*before, *after[30:]])
        assert await _stored(new, database, [sid]) == expected
    finally:
        await new.close()


async def test_a_version_8_postgres_database_keeps_its_events_in_version_9(
    database: str, collector_backend: str
) -> None:
    """Version 9 keeps events' session ids as a uuid: every event, its JSON, its session's
    order and the rollups are the same after it, and a re-sent batch is still stored once."""
    if collector_backend != "postgres":
        pytest.skip("PostgreSQL's schema 9")
    old = open_storage(database)
    await old.open()
    project_id, _ = await new_project(old, "v8")
    sids = [str(uuid.uuid4()) for _ in range(3)]
    for sid in sids:
        await old.upsert_session(SessionWrite(session_id=sid, project_id=project_id))
    before = [_event(sids[n % 3], n) for n in range(150)]
    before.append((sids[0], "odd", "actions", None, None, '{"z":1,  "a":[1.0, "\\u0000"]}'))
    assert await old.insert_events(before) == 151
    await old.close()
    await downgrade(database, 8)
    assert await query(database, _KEY_COLUMNS) == [
        ("data", "text", None),
        ("id", "text", "C"),
        ("session_id", "text", "C"),
    ]
    kept = await _rollups_of(database)

    new = await _migrated(database)  # to version 9, and on
    try:
        assert (await query(database, _KEY_COLUMNS))[2] == ("session_id", "uuid", None)
        assert await query(
            database, "SELECT indexdef FROM pg_indexes WHERE indexname = 'events_by_session'"
        ) == [("CREATE INDEX events_by_session ON public.events USING btree (session_id, seq)",)]
        assert await _rollups_of(database) == kept
        for sid in sids:
            page = await new.list_events(sid, None, 1000, None)
            assert page == [(row[1], row[5]) for row in before if row[0] == sid]
        tools = [(row[1], row[5]) for row in before if row[0] == sids[1] and row[2] == "tools"]
        assert tools[1][0] == "e000004"
        assert await new.list_events(sids[1], "e000004", 2, "tools") == tools[2:4]
        # A session id that is no canonical UUID has no events (and is no error).
        assert await new.list_events(sids[0].upper(), None, 10, None) == []
        assert await new.list_events("s1", None, 10, None) == []

        # A re-sent batch is stored once and counted once; new events are stored.
        after = [_event(sids[n % 3], n) for n in range(120, 200)]
        assert await new.insert_events(after) == 50
        expected = _expected([*before, *after[30:]])
        assert await _stored(new, database, sids) == expected
    finally:
        await new.close()


async def test_version_9_refuses_a_database_with_an_event_of_an_odd_session_id(
    database: str, collector_backend: str
) -> None:
    """An id that a uuid would print otherwise stops the migration, named, and changes nothing."""
    if collector_backend != "postgres":
        pytest.skip("PostgreSQL's schema 9")
    import asyncpg

    sid = str(uuid.uuid4())
    storage = open_storage(database)
    await storage.open()
    await storage.insert_events([_event(sid, 2)])
    await storage.close()
    await downgrade(database, 8)
    odd = sid.upper()
    await query(
        database,
        "INSERT INTO events (session_id, id, event_type, data)"
        f" VALUES ('{odd}', 'x', 'actions', '{{}}') RETURNING 1",
    )

    storage = open_storage(database)
    with pytest.raises(asyncpg.RaiseError, match=f"events.session_id '{odd}' is not a canon"):
        await storage.open()
    await storage.close()
    assert await query(database, "SELECT max(version) FROM schema_version") == [(8,)]
    assert await query(database, "SELECT session_id, id FROM events ORDER BY id") == [
        (sid, "e000002"),
        (odd, "x"),
    ]


async def test_a_collector_does_not_start_on_a_schema_newer_than_it_knows(database: str) -> None:
    """A database a newer collector migrated (a column's type may have changed under this one's
    statements): ``open`` refuses, naming both versions and the fix, and changes nothing."""
    storage = open_storage(database)
    await storage.open()
    await storage.close()
    known = (await query(database, "SELECT max(version) FROM schema_version"))[0][0]
    assert isinstance(known, int)
    await query(database, f"INSERT INTO schema_version VALUES ({known + 1}) RETURNING version")

    storage = open_storage(database)
    newer = f"schema is version {known + 1}, newer than this collector's \\({known}\\): run the"
    with pytest.raises(RuntimeError, match=newer):
        await storage.open()
    await storage.close()
    assert await query(database, "SELECT max(version) FROM schema_version") == [(known + 1,)]
