"""The collector's ingest path from request body to storage (issue 15, the collector's CPU per
event), on SQLite and PostgreSQL: what is decided once per body keeps each event's guarantees.

- A usual batch is decoded on the event loop (no decode thread), a bracket-heavy one in a thread.
- create_sessions is decoded as one body: an event's error names its entry.
- The body-wide facts (an LLM event somewhere, a NUL escape somewhere) apply to every row:
  mixed batches keep their usage columns, exact JSON and arrival order.
- PostgreSQL: a connection goes back to the pool without a reset round trip.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from _servers import CollectorHandle

from agentops_async._limits import MAX_ID_LENGTH

pytestmark = pytest.mark.asyncio

_ID_RULE = f"expected 1..{MAX_ID_LENGTH} characters, without NUL (U+0000)"


def _threads(handle: CollectorHandle) -> int:
    """How many threads the collector process runs now."""
    process = handle.process.process
    assert process is not None
    return len(os.listdir(f"/proc/{process.pid}/task"))


def _action(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"{uuid.uuid4()}-{n}",
        "event_type": "actions",
        "init_timestamp": "2026-01-01T00:00:00.000000Z",
        "action_type": "step",
        "params": {"query": "benchmark", "k": 3},
        "returns": n,
        **fields,
    }


async def _stored(handle: CollectorHandle, session_id: str, columns: str) -> list[tuple[Any, ...]]:
    """``columns`` of a session's events as the database holds them, in arrival order."""
    sql = f"SELECT {columns} FROM events WHERE session_id = {{}} ORDER BY seq"
    if handle.backend == "sqlite":
        with sqlite3.connect(handle.database) as conn:
            return [tuple(row) for row in conn.execute(sql.format("?"), (session_id,))]
    import asyncpg

    conn = await asyncpg.connect(handle.database)
    try:
        return [tuple(record) for record in await conn.fetch(sql.format("$1"), session_id)]
    finally:
        await conn.close()


async def _stored_json(handle: CollectorHandle, session_id: str) -> list[tuple[str, str]]:
    """``(id, data)`` of a session's events as the database holds them, in arrival order."""
    return [(str(i), str(d)) for i, d in await _stored(handle, session_id, "id, data")]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
async def test_a_usual_batch_is_decoded_on_the_loop_and_a_bracket_heavy_one_in_a_thread(
    collector_factory: Any, collector_backend: str
) -> None:
    handle: CollectorHandle = collector_factory(collector_backend)
    session_id, jwt = await handle.v2_create_session()
    # A small batch first: whatever the backend starts on its first write is running after it.
    answer = await handle.v2_post("create_events", {"events": [_action(0)]}, jwt=jwt)
    assert answer.status == 200, answer.body
    before = _threads(handle)

    # 1,000 events, ~250 KB: what an SDK export or a raw client sends. Decoded on the loop.
    usual = {"events": [_action(n) for n in range(1, 1001)]}
    assert len(json.dumps(usual)) > 200_000
    answer = await handle.v2_post("create_events", usual, jwt=jwt)
    assert answer.body == {"status": "success", "received": 1000, "stored": 1000}
    assert _threads(handle) == before

    # What the SDK sends by default: 1,000 events of a few sessions in one create_sessions
    # request, ~400 KB. Decoded on the loop too.
    sdk_events = [_action(n, logs="l" * 190) for n in range(2001, 3001)]
    entries = [{"session_id": session_id, "events": sdk_events}]
    body = json.dumps({"sessions": entries}).encode()
    assert 380_000 < len(body) < 512 * 1024
    answer = await handle.v2_post("create_sessions", body, api_key=handle.api_key)
    assert answer.status == 200 and answer.body["stored"] == 1000, answer.body
    assert _threads(handle) == before

    # Brackets make a body slow to decode and check: this one goes to the decode thread.
    nested = {"events": [_action(n, params={"v": [[[[[[[[1]]]]]]]]}) for n in range(600)]}
    answer = await handle.v2_post("create_events", nested, jwt=jwt)
    assert answer.body == {"status": "success", "received": 600, "stored": 600}
    assert _threads(handle) == before + 1
    assert len(await _stored_json(handle, session_id)) == 2601


async def test_create_sessions_names_the_entry_and_event_of_a_bad_id(
    collector: CollectorHandle,
) -> None:
    ok = {"session": {"session_id": str(uuid.uuid4())}, "events": [_action(0)]}
    cases = [
        ("x" * (MAX_ID_LENGTH + 1), "sessions[1].events[1].id"),
        ("", "sessions[1].events[1].id"),
        ("a\u0000b", "sessions[1].events[1].id"),
    ]
    for bad_id, field in cases:
        bad_session = str(uuid.uuid4())
        events = [_action(1), dict(_action(2), id=bad_id)]
        body = {"sessions": [ok, {"session": {"session_id": bad_session}, "events": events}]}
        answer = await collector.v2_post("create_sessions", body, api_key=collector.api_key)
        assert answer.status == 400, answer.body
        assert answer.body["message"] == f"{field}: {_ID_RULE}"
        assert await collector.get_session(bad_session) is None  # all or nothing
    # The same ids through create_events name the event alone, as before.
    _, jwt = await collector.v2_create_session()
    answer = await collector.v2_post(
        "create_events", {"events": [_action(1), dict(_action(2), id="x" * 201)]}, jwt=jwt
    )
    assert answer.status == 400
    assert answer.body["message"] == f"events[1].id: {_ID_RULE}"


async def test_batches_mixing_llm_and_plain_events_keep_usage_order_and_exact_json(
    collector: CollectorHandle,
) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    llm = {
        "id": "llm-1",
        "event_type": "llms",
        "model": "gpt-4o-mini",
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "prompt": "2+2?",
    }
    # Odd but valid JSON: key order, spacing, escapes (a backslash before "u0000" is not NUL).
    odd = '{"returns": "\\\\u0000 \\u00e9\\n",  "id":"odd-1" ,"event_type":"actions"}'
    entries = (
        '{"sessions": ['
        f'{{"session": {{"session_id": "{first}"}}, "events": [{json.dumps(_action(1))}, {odd}]}},'
        f'{{"session": {{"session_id": "{second}"}}, "events": ['
        f"{json.dumps(_action(2))}, {json.dumps(llm)}, {json.dumps(_action(3))}]}}"
        "]}"
    )
    answer = await collector.v2_post("create_sessions", entries.encode(), api_key=collector.api_key)
    assert answer.status == 200, answer.body
    assert answer.body["received"] == 5 and answer.body["stored"] == 5
    costs = {s["session_id"]: s["token_cost"] for s in answer.body["sessions"]}
    assert costs[first] in ("0.00", "0")
    assert float(costs[second]) > 0  # the LLM event's usage was stored in its columns

    stored_first = await _stored_json(collector, first)
    assert [i for i, _ in stored_first][1] == "odd-1"
    assert stored_first[1][1] == odd  # byte for byte
    stored_second = await _stored_json(collector, second)
    assert [json.loads(d)["event_type"] for _, d in stored_second] == ["actions", "llms", "actions"]
    assert stored_second[1][1] == json.dumps(llm)

    # Sent again: nothing is stored twice.
    answer = await collector.v2_post("create_sessions", entries.encode(), api_key=collector.api_key)
    assert answer.status == 200 and answer.body["stored"] == 0, answer.body
    assert len(await _stored_json(collector, second)) == 3


async def test_batches_of_every_row_shape_store_the_columns_a_query_reads_and_exact_json(
    collector: CollectorHandle,
) -> None:
    # An event's row holds the columns a query reads: its timestamps only for a tool call (the
    # rollup of tool time), LLM usage only where there is some. The JSON keeps everything.
    began, ended = "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:02.500000Z"
    span = {"init_timestamp": began, "end_timestamp": ended}

    def event(event_id: str, kind: str, **fields: Any) -> dict[str, Any]:
        return {"id": event_id, "event_type": kind, **span, **fields}

    batches = {  # rows of 4 columns; of 6 (a tool call's timestamps); of 10 (LLM usage)
        "plain": [event("action-1", "actions", action_type="step"), event("custom", "my-kind")],
        "timed": [event("action-2", "actions"), event("tool", "tools", name="search")],
        "usage": [
            event("action-3", "actions"),
            event("llm", "llms", model="m", prompt_tokens=3),
            event("paid-tool", "tools", name="fetch", cost=0.5),
        ],
    }
    expected = {  # (id, init_timestamp, end_timestamp, model) as stored
        "plain": [("action-1", None, None, None), ("custom", None, None, None)],
        "timed": [("action-2", None, None, None), ("tool", began, ended, None)],
        "usage": [
            ("action-3", None, None, None),
            ("llm", None, None, "m"),
            ("paid-tool", began, ended, None),
        ],
    }
    for shape, events in batches.items():
        session_id, jwt = await collector.v2_create_session()
        body = json.dumps({"events": events}).encode()
        for _ in range(2):  # sent again: stored once (on PostgreSQL, through the staging table)
            answer = await collector.v2_post("create_events", body, jwt=jwt)
            assert answer.status == 200, (shape, answer.body)
        stored = await _stored(
            collector, session_id, "id, init_timestamp, end_timestamp, model, data"
        )
        assert [row[:4] for row in stored] == expected[shape], shape
        assert [json.loads(row[4]) for row in stored] == events, shape  # every timestamp

    overview = await collector.request(
        "GET", "/api/overview", headers={"X-Agentops-Api-Key": collector.api_key}
    )
    assert overview.status == 200, overview.raw
    tools = [(t["name"], t["calls"], t["mean_s"]) for t in overview.body["slowest_tools"]]
    assert sorted(tools) == [("fetch", 1, 2.5), ("search", 1, 2.5)]


def _otlp_span(trace_id: str, n: int, name: str, seconds: float, **attributes: Any) -> Any:
    start = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
    values = [
        {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
        for k, v in attributes.items()
    ]
    return {
        "traceId": trace_id,
        "spanId": f"{n:016x}",
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + int(seconds * 1e9)),
        "attributes": values,
    }


async def test_otlp_spans_store_the_columns_a_query_reads_as_the_v2_api_does(
    collector: CollectorHandle,
) -> None:
    trace_id = uuid.uuid4().hex
    session_id, _ = await collector.v2_create_session(trace_id=trace_id)
    spans = [
        _otlp_span(trace_id, 1, "plan", 1.0),
        _otlp_span(
            trace_id, 2, "execute_tool search", 2.5,
            **{"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
        ),
        _otlp_span(
            trace_id, 3, "chat m", 0.5,
            **{"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
               "gen_ai.usage.input_tokens": 7},
        ),
    ]  # fmt: skip
    export = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
    headers = {"X-Agentops-Api-Key": collector.api_key}
    answer = await collector.request("POST", "/v1/traces", json_body=export, headers=headers)
    assert answer.status == 200, answer.raw

    stored = await _stored(
        collector, session_id, "event_type, init_timestamp, end_timestamp, model"
    )
    by_type = {row[0]: row[1:] for row in stored}
    assert set(by_type) == {"actions", "tools", "llms"}, stored
    assert by_type["actions"] == (None, None, None)
    assert by_type["llms"][:2] == (None, None) and by_type["llms"][2] == "m"
    began, ended = by_type["tools"][:2]
    assert began is not None and ended is not None
    events = await collector.get_events(session_id)  # every event's timestamps, in its JSON
    assert all(e["init_timestamp"] and e["end_timestamp"] for e in events), events
    overview = await collector.request("GET", "/api/overview", headers=headers)
    assert overview.status == 200, overview.raw
    tools = [(t["name"], t["calls"], t["mean_s"]) for t in overview.body["slowest_tools"]]
    assert tools == [("search", 1, 2.5)]


async def test_postgres_connections_go_back_to_the_pool_without_a_reset_round_trip(
    postgres_server: Any,
) -> None:
    from agentops_async.collector import open_storage
    from agentops_async.collector._auth import new_project
    from agentops_async.collector._storage import SessionWrite

    dsn = postgres_server.create_database()
    storage = open_storage(dsn, pool_size=1)
    await storage.open()
    try:
        pool = storage.pool  # type: ignore[attr-defined]
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        project_id, _ = await new_project(storage, "p")
        session_id = str(uuid.uuid4())
        await storage.upsert_session(SessionWrite(session_id=session_id, project_id=project_id))
        row = (session_id, "e1", "actions", None, None, '{"id":"e1"}')
        assert await storage.insert_events([row]) == 1

        import asyncpg

        observer = await asyncpg.connect(dsn)
        try:
            last = await observer.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
        finally:
            await observer.close()
        # The pool's only connection last ran the batch's COPY: no RESET ALL after it.
        assert last is not None and last.startswith("COPY "), last
        # And it is still a clean connection for the next request.
        again = (session_id, "e2", "actions", None, None, '{"id":"e2"}')
        assert await storage.insert_events([row, again]) == 1
    finally:
        await storage.close()
