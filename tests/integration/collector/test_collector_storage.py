"""The storage contract, in process, on both backends; and the embeddable Collector."""

from __future__ import annotations

import uuid
from pathlib import Path

import aiohttp
import pytest

from agentops_async.collector import Collector, Storage, open_storage
from agentops_async.collector._auth import hash_key, new_project
from agentops_async.collector._storage import EventRow, SessionFilter, SessionWrite

pytestmark = pytest.mark.asyncio


def _row(session_id: str, event_id: str, event_type: str = "actions") -> EventRow:
    data = f'{{"id": "{event_id}", "event_type": "{event_type}"}}'
    return (session_id, event_id, event_type, None, None, data)


async def test_schema_and_secret_survive_a_reopen(database: str) -> None:
    first = open_storage(database)
    await first.open()
    secret = await first.get_secret(b"\x01" * 32)
    project_id, api_key = await new_project(first, "p")
    await first.close()

    second = open_storage(database)
    await second.open()  # migrations are not applied twice
    try:
        assert await second.get_secret(b"\x02" * 32) == secret == b"\x01" * 32
        assert await second.project_for_key(hash_key(api_key)) == project_id
        assert await second.project_for_key(hash_key(str(uuid.uuid4()))) is None
    finally:
        await second.close()


async def test_insert_events_is_idempotent_and_counts_new_rows(storage: Storage) -> None:
    project_id, _ = await new_project(storage, "p")
    session_id = str(uuid.uuid4())
    await storage.upsert_session(SessionWrite(session_id=session_id, project_id=project_id))
    rows = [_row(session_id, f"e{i}") for i in range(1100)]  # more than one INSERT's worth
    assert await storage.insert_events(rows) == 1100
    assert await storage.insert_events([*rows[50:], _row(session_id, "new")]) == 1
    page = await storage.list_events(session_id, None, 2000, None)
    assert [data for _, data in page] == [row[5] for row in rows] + [_row(session_id, "new")[5]]
    assert [event_id for event_id, _ in page] == [f"e{i}" for i in range(1100)] + ["new"]
    after = await storage.list_events(session_id, "e1098", 10, None)  # pages start after an id
    assert [event_id for event_id, _ in after] == ["e1099", "new"]
    assert await storage.event_counts([session_id]) == {session_id: {"actions": 1101}}


async def test_rows_with_and_without_usage_keep_arrival_order_and_usage(
    storage: Storage,
) -> None:
    project_id, _ = await new_project(storage, "p")
    session_id = str(uuid.uuid4())
    await storage.upsert_session(SessionWrite(session_id=session_id, project_id=project_id))
    rows: list[EventRow] = []
    for i in range(12):
        if i % 3 == 2:
            data = f'{{"id": "e{i}", "event_type": "llms"}}'
            rows.append((session_id, f"e{i}", "llms", None, None, data, "gpt-4o", 10, 5, None))
        else:
            rows.append(_row(session_id, f"e{i}"))
    assert await storage.insert_events(rows) == 12
    # Re-sent with one more LLM event: only that one is new, its usage counted once.
    extra = (session_id, "e12", "llms", None, None, '{"id": "e12"}', "gpt-4o", 1, 2, None)
    assert await storage.insert_events([*rows, extra]) == 1
    rows.append(extra)
    page = await storage.list_events(session_id, None, 100, None)
    assert [data for _, data in page] == [row[5] for row in rows]
    (usage,) = await storage.llm_usage([session_id])
    assert (usage.model, usage.prompt_tokens, usage.completion_tokens) == ("gpt-4o", 41, 22)
    assert await storage.event_counts([session_id]) == {session_id: {"actions": 8, "llms": 5}}


async def test_sessions_belong_to_one_project(storage: Storage) -> None:
    project_a, _ = await new_project(storage, "a")
    project_b, _ = await new_project(storage, "b")
    session_id = str(uuid.uuid4())
    write = SessionWrite(session_id=session_id, project_id=project_a, tags=["x"])
    assert await storage.upsert_session(write) == project_a
    hijack = SessionWrite(session_id=session_id, project_id=project_b, tags=["y"])
    assert await storage.upsert_session(hijack) == project_a
    assert not await storage.update_session(hijack)
    row = await storage.get_session(session_id)
    assert row is not None
    assert (row.project_id, row.tags, row.state) == (project_a, ["x"], "RUNNING")
    assert await storage.list_sessions(SessionFilter(project_id=project_b)) == []


async def test_a_batch_of_sessions_is_stored_as_one_upsert_each_in_order(
    storage: Storage,
) -> None:
    project_a, _ = await new_project(storage, "a")
    project_b, _ = await new_project(storage, "b")
    known, fresh, twice = (str(uuid.uuid4()) for _ in range(3))
    await storage.upsert_session(SessionWrite(session_id=known, project_id=project_a, tags=["k"]))
    writes = [
        SessionWrite(session_id=fresh, project_id=project_a, tags=["f1", "f2", "f1"]),
        SessionWrite(session_id=known, project_id=project_a, state="ENDED", tags=["k2"]),
        SessionWrite(session_id=twice, project_id=project_a, tags=["first"]),
        SessionWrite(session_id=twice, project_id=project_a, end_state="Success", tags=["second"]),
    ]
    rows = [_row(fresh, "e1"), _row(twice, "e2")]
    owners, stored = await storage.upsert_sessions(writes, rows)
    assert (owners, stored) == ([project_a] * 4, 2)
    got = {sid: await storage.get_session(sid) for sid in (known, fresh, twice)}
    assert {sid: (r.state, r.end_state, r.tags) for sid, r in got.items() if r} == {
        known: ("ENDED", None, ["k2"]),
        fresh: ("RUNNING", None, ["f1", "f2", "f1"]),
        twice: ("RUNNING", "Success", ["second"]),
    }
    for tag, expected in {
        "f2": [fresh],
        "k": [],
        "k2": [known],
        "first": [],
        "second": [twice],
    }.items():
        listed = await storage.list_sessions(SessionFilter(project_id=project_a, tag=tag))
        assert [r.id for r in listed] == expected, tag
    assert await storage.event_counts([fresh, twice]) == {
        fresh: {"actions": 1},
        twice: {"actions": 1},
    }

    # Another project's session in a batch: its owner is reported and nothing is stored.
    other = str(uuid.uuid4())
    hijack = [
        SessionWrite(session_id=other, project_id=project_b),
        SessionWrite(session_id=fresh, project_id=project_b, state="ENDED"),
    ]
    assert await storage.upsert_sessions(hijack, [_row(other, "e3")]) == (
        [project_b, project_a],
        0,
    )
    assert await storage.get_session(other) is None
    row = await storage.get_session(fresh)
    assert row is not None and row.state == "RUNNING"


async def test_trace_ids_map_to_sessions_within_a_project(storage: Storage) -> None:
    project_a, _ = await new_project(storage, "a")
    project_b, _ = await new_project(storage, "b")
    session_id = str(uuid.uuid4())
    trace = "ab" * 16
    await storage.upsert_session(
        SessionWrite(session_id=session_id, project_id=project_a, trace_id=trace)
    )
    assert await storage.sessions_for_traces(project_a, [trace, "cd" * 16]) == {trace: session_id}
    assert await storage.sessions_for_traces(project_b, [trace]) == {}


async def test_embedded_collector_serves_on_a_free_port(tmp_path: Path) -> None:
    async with Collector(database=str(tmp_path / "e.db"), port=0) as collector:
        assert collector.port != 0
        api_key = await collector.create_project("embedded")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{collector.url}/api/sessions", headers={"X-Agentops-Api-Key": api_key}) as r,
        ):
            assert r.status == 200
            assert await r.json() == {"sessions": [], "next_cursor": None}
    assert "stopped" in repr(collector)


async def test_memory_database_works_embedded() -> None:
    async with Collector(database=":memory:", port=0) as collector:
        api_key = await collector.create_project("mem")
        session_id = str(uuid.uuid4())
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{collector.url}/v2/create_session",
                json={"session": {"session_id": session_id}},
                headers={"X-Agentops-Api-Key": api_key},
            ) as r:
                assert r.status == 200
            async with http.get(
                f"{collector.url}/api/sessions/{session_id}",
                headers={"X-Agentops-Api-Key": api_key},
            ) as r:
                assert (await r.json())["state"] == "RUNNING"


async def test_concurrent_batches_are_all_stored_and_a_bad_one_fails_alone(
    storage: Storage,
) -> None:
    import asyncio

    project_id, _ = await new_project(storage, "p")
    session_id = str(uuid.uuid4())
    await storage.upsert_session(SessionWrite(session_id=session_id, project_id=project_id))
    batches = [[_row(session_id, f"b{b}-e{i}") for i in range(50)] for b in range(20)]
    bad: EventRow = (session_id, "bad", None, None, None, "{}")  # type: ignore[assignment]
    batches[7] = [*batches[7][:10], bad]
    results = await asyncio.gather(
        *(storage.insert_events(b) for b in batches), return_exceptions=True
    )
    assert isinstance(results[7], Exception)  # NOT NULL event_type
    assert [r for i, r in enumerate(results) if i != 7] == [50] * 19
    counts = await storage.event_counts([session_id])
    assert counts[session_id]["actions"] == 19 * 50


async def test_keys_can_be_added_to_a_project_and_revoked(storage: Storage) -> None:
    project_id, first_key = await new_project(storage, "rotating")
    second_key = str(uuid.uuid4())
    assert await storage.add_key(project_id, hash_key(second_key)) is True
    assert await storage.add_key(str(uuid.uuid4()), hash_key("x")) is False  # no such project

    assert await storage.revoke_key(hash_key(first_key)) == project_id
    assert await storage.revoke_key(hash_key(first_key)) is None  # revoked already
    assert await storage.revoke_key(hash_key("never made")) is None
    assert await storage.project_for_key(hash_key(first_key)) is None
    assert await storage.project_for_key(hash_key(second_key)) == project_id

    projects = {p.id: p for p in await storage.list_projects()}
    assert (projects[project_id].name, projects[project_id].live_keys) == ("rotating", 1)
    assert projects[project_id].revoked_keys == 1
