"""The overview (sessions per day by state, failure rate, cost per day and by model, slowest tools,
most expensive sessions): storage aggregates and their prices, on both backends.

The numbers come from sessions and events written through the storage, with exact expected
values; the usage rollups that ingest keeps must count an event once however often it is sent,
be filled for events stored before the schema had them, and the overview's queries must use
indexes, never a scan of the events.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from typing import Any

import pytest

from agentops_async.collector import PriceTable, Storage, _postgres, _sqlite, open_storage
from agentops_async.collector._auth import new_project
from agentops_async.collector._overview import (
    InvalidRange,
    Overview,
    build_overview,
    overview_range,
)
from agentops_async.collector._storage import EventRow, SessionWrite, is_postgres_dsn

pytestmark = pytest.mark.asyncio

DAY = 86_400
# 2026-11-01 00:00 UTC and two days later: the range below covers both and the day between.
DAY_A = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc).timestamp()
DAY_B = DAY_A + 2 * DAY


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds")


def _llm(
    sid: str,
    eid: str,
    model: str | None,
    prompt: int,
    completion: int,
    cost: float | None = None,
) -> EventRow:
    data = f'{{"id": "{eid}", "event_type": "llms", "model": "{model}"}}'
    return (sid, eid, "llms", None, None, data, model, prompt, completion, cost)


def _tool(
    sid: str,
    eid: str,
    name: str,
    start: float | None,
    seconds: float | None,
    cost: float | None = None,
) -> EventRow:
    data = f'{{"id": "{eid}", "event_type": "tools", "name": "{name}"}}'
    init = None if start is None else _iso(start)
    end = None if start is None or seconds is None else _iso(start + seconds)
    if cost is None:
        return (sid, eid, "tools", init, end, data)
    return (sid, eid, "tools", init, end, data, None, None, None, cost)


def _action(sid: str, eid: str) -> EventRow:
    return (sid, eid, "actions", None, None, f'{{"id": "{eid}", "event_type": "actions"}}')


async def _session(
    storage: Storage, project: str, start: float, state: str, tags: list[str]
) -> str:
    sid = str(uuid.uuid4())
    await storage.upsert_session(
        SessionWrite(
            session_id=sid,
            project_id=project,
            init_timestamp=_iso(start),
            init_ts=start,
            state=state,
            tags=tags,
        )
    )
    return sid


async def _record_sample(storage: Storage) -> tuple[str, dict[str, str]]:
    """The sample project: four sessions in the range, one before it, one of another project."""
    project, _ = await new_project(storage, "overview")
    other, _ = await new_project(storage, "other")
    s1 = await _session(storage, project, DAY_A + 10 * 3600, "SUCCEEDED", ["alpha"])
    s2 = await _session(storage, project, DAY_A + 12 * 3600, "FAILED", ["beta", "<b>x</b>"])
    s3 = await _session(storage, project, DAY_B + 3600, "INDETERMINATE", [])
    s4 = await _session(storage, project, DAY_B + 7200, "RUNNING", [])
    before = await _session(storage, project, DAY_A - 60, "SUCCEEDED", [])
    foreign = await _session(storage, other, DAY_A + 3600, "FAILED", [])
    t = DAY_A + 10 * 3600
    batch_1: list[EventRow] = [
        _llm(s1, "l1", "gpt-4o-mini", 1000, 500),
        _llm(s1, "l2", "gpt-4o-mini", 1000, 500),
        _llm(s1, "l3", "custom", 7, 3, cost=0.25),
        _tool(s1, "t1", "search", t, 2.0),
        _tool(s1, "t2", "search", t + 5, 1.0),
        _action(s1, "a1"),
        _llm(s2, "l4", "gpt-4o", 2000, 1000),
        _tool(s2, "t3", "fetch", t + 7200, 0.5, cost=0.1),
        _llm(s4, "l5", None, 100, 50),
        _tool(s4, "t4", "search", None, None),
        _llm(before, "l6", "gpt-4o", 10**6, 10**6),
        _llm(foreign, "l7", "gpt-4o", 10**6, 10**6),
        _tool(foreign, "t5", "slow-foreign", t, 100.0),
    ]
    assert await storage.insert_events(batch_1) == len(batch_1)
    # Sent again (a retried batch), and a batch naming one new event twice: each counts once.
    assert await storage.insert_events(batch_1[:9]) == 0
    again = _llm(s2, "l8", "gpt-4o", 2000, 1000)
    assert await storage.insert_events([again, again, *batch_1[3:5]]) == 1
    # One event stored before and one new in one statement: only the new one counts.
    assert await storage.insert_events([batch_1[8], _llm(s4, "l9", None, 1, 1)]) == 1
    return project, {"s1": s1, "s2": s2, "s3": s3, "s4": s4}


async def _overview(storage: Storage, project: str) -> Overview:
    since, until = DAY_A, DAY_B + DAY
    return await build_overview(storage, PriceTable(), project, since, until)


async def test_overview_counts_states_costs_models_and_tools_exactly(storage: Storage) -> None:
    project, ids = await _record_sample(storage)
    overview = await _overview(storage, project)

    assert (overview.since, overview.until) == ("2026-11-01T00:00:00Z", "2026-11-04T00:00:00Z")
    assert [(d.date, d.sessions, d.by_state, d.failure_rate, d.cost) for d in overview.days] == [
        (
            "2026-11-01",
            2,
            {"SUCCEEDED": 1, "FAILED": 1, "INDETERMINATE": 0, "RUNNING": 0},
            0.5,
            # s1: 2000 + 1000 gpt-4o-mini tokens (0.0009) and 0.25 carried; s2: 2 x 0.015
            # gpt-4o and its tool's 0.1
            "0.3809",
        ),
        (
            "2026-11-02",
            0,
            {"SUCCEEDED": 0, "FAILED": 0, "INDETERMINATE": 0, "RUNNING": 0},
            None,
            "0",
        ),
        (
            "2026-11-03",
            2,
            {"SUCCEEDED": 0, "FAILED": 0, "INDETERMINATE": 1, "RUNNING": 1},
            0.0,
            "0",
        ),
    ]
    assert overview.sessions == 4
    assert overview.by_state == {"SUCCEEDED": 1, "FAILED": 1, "INDETERMINATE": 1, "RUNNING": 1}
    assert overview.failure_rate == 0.3333
    assert overview.cost == "0.3809"
    assert [
        (m.model, m.calls, m.prompt_tokens, m.completion_tokens, m.cost)
        for m in overview.cost_by_model
    ] == [
        ("custom", 1, 7, 3, "0.25"),
        ("gpt-4o", 2, 4000, 2000, "0.03"),
        ("gpt-4o-mini", 2, 2000, 1000, "0.0009"),
        (None, 2, 101, 51, "0"),
    ]
    assert [
        (t.name, t.calls, t.timed_calls, t.mean_s, t.max_s) for t in overview.slowest_tools
    ] == [
        ("search", 3, 2, 1.5, 2.0),
        ("fetch", 1, 1, 0.5, 0.5),
    ]
    assert [(s.id, s.state, s.tags, s.cost) for s in overview.costliest_sessions] == [
        (ids["s1"], "SUCCEEDED", ["alpha"], "0.2509"),
        (ids["s2"], "FAILED", ["beta", "<b>x</b>"], "0.13"),
    ]
    assert overview.costliest_sessions[0].init_timestamp == _iso(DAY_A + 10 * 3600)


async def test_overview_of_another_project_or_an_empty_range_is_empty(storage: Storage) -> None:
    project, _ = await _record_sample(storage)
    nobody, _ = await new_project(storage, "nobody")
    for who, since in ((nobody, DAY_A), (project, DAY_B + 5 * DAY)):
        overview = await build_overview(storage, PriceTable(), who, since, since + DAY)
        assert overview.sessions == 0 and overview.cost == "0"
        assert overview.cost_by_model == overview.slowest_tools == []
        assert overview.costliest_sessions == []
        assert [d.sessions for d in overview.days] == [0]


async def test_overview_uses_the_collectors_prices(storage: Storage) -> None:
    from decimal import Decimal

    from agentops_async.collector import ModelPrice

    project, _ = await _record_sample(storage)
    prices = PriceTable({"gpt-4o": ModelPrice(Decimal(1), Decimal(0))})  # $1 per M prompt
    overview = await build_overview(storage, prices, project, DAY_A, DAY_B + DAY)
    assert {m.model: m.cost for m in overview.cost_by_model}["gpt-4o"] == "0.004"


async def test_overview_range_defaults_to_the_last_30_days_and_refuses_bad_ranges() -> None:
    now = DAY_B + 5 * 3600
    assert overview_range(None, None, now) == (DAY_B + DAY - 30 * DAY, DAY_B + DAY)
    assert overview_range(DAY_A, None, now) == (DAY_A, DAY_B + DAY)
    with pytest.raises(InvalidRange, match="until: must be a time after since"):
        overview_range(DAY_B, DAY_A, now)
    with pytest.raises(InvalidRange, match="at most 366 days"):
        overview_range(DAY_A - 400 * DAY, DAY_A, now)


async def test_overview_rollups_are_filled_for_events_stored_before_them(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module: Any = _postgres if is_postgres_dsn(database) else _sqlite
    monkeypatch.setattr(module, "_MIGRATIONS", module._MIGRATIONS[:5])  # schema version 5
    if module is _sqlite:  # and its ingest, which kept no rollups
        monkeypatch.setattr(_sqlite, "_add_rollups", lambda *args: None)
    else:  # and its staging table, whose JSON column was json until version 8
        staging = _postgres._CREATE_STAGING.replace("data text", "data json")
        monkeypatch.setattr(_postgres, "_CREATE_STAGING", staging)
    old = open_storage(database)
    await old.open()
    try:
        project, _ = await _record_sample(old)
    finally:
        await old.close()
    monkeypatch.undo()
    new = open_storage(database)
    await new.open()  # migrates to 6: fills the rollups from the stored events
    try:
        overview = await _overview(new, project)
        assert overview.cost == "0.3809"
        assert [(m.model, m.calls) for m in overview.cost_by_model] == [
            ("custom", 1),
            ("gpt-4o", 2),
            ("gpt-4o-mini", 2),
            (None, 2),
        ]
        assert [(t.name, t.calls, t.mean_s, t.max_s) for t in overview.slowest_tools] == [
            ("search", 3, 1.5, 2.0),
            ("fetch", 1, 0.5, 0.5),
        ]
        # and the triggers keep them from now on
        sid = overview.costliest_sessions[0].id
        await new.insert_events([_llm(sid, "later", "custom", 1, 1, cost=1.0)])
        assert (await _overview(new, project)).cost == "1.3809"
    finally:
        await new.close()


async def test_odd_tool_events_never_fail_an_ingest(storage: Storage) -> None:
    """Timestamps that are not times, an end before the start, a name that is not text or holds
    a NUL: the events are stored and counted as calls, without a duration."""
    project, _ = await new_project(storage, "odd")
    sid = await _session(storage, project, DAY_A + 60, "RUNNING", [])
    odd = '{"id": "%s", "event_type": "tools", "name": %s}'
    rows: list[EventRow] = [
        (sid, "o1", "tools", "yesterday-ish", "not a time", odd % ("o1", '"x"')),
        (sid, "o2", "tools", _iso(DAY_A + 10), _iso(DAY_A + 5), odd % ("o2", '"x"')),
        (sid, "o3", "tools", None, None, odd % ("o3", "12")),
        (sid, "o4", "tools", None, None, odd % ("o4", '"nul\\u0000name"')),
        (sid, "o5", "tools", "2026-13-45T99:00:00Z", _iso(DAY_A), odd % ("o5", '"x"')),
    ]
    assert await storage.insert_events(rows) == 5
    overview = await build_overview(storage, PriceTable(), project, DAY_A, DAY_A + DAY)
    tools = {t.name: (t.calls, t.timed_calls, t.mean_s) for t in overview.slowest_tools}
    assert tools["x"] == (3, 0, None)
    assert tools["12"] == (1, 0, None)
    assert sum(calls for calls, _, _ in tools.values()) == 5


# --- query plans ------------------------------------------------------------------------------


def _sqlite_plans(path: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        conn.execute("ANALYZE")  # the planner's statistics, as a long-lived database has them
        plans = []
        for sql in (
            _sqlite._OVERVIEW_STATES,
            _sqlite._OVERVIEW_LLM,
            _sqlite._OVERVIEW_TOOL_COSTS,
            _sqlite._OVERVIEW_TOOLS,
            _sqlite._COSTLIEST,
        ):
            args = ("p", 0.0, 1.0, '[["gpt-4o", 1e-6, 2e-6]]', 10)[: sql.count("?") and 5]
            if "?4" not in sql:
                args = args[:3]
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", args).fetchall()
            plans.append("\n".join(str(r[3]) for r in rows))
        return plans
    finally:
        conn.close()


async def _postgres_plans(dsn: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
        # A test database is tiny, where a sequential scan is always cheapest: forbid it, so the
        # plan shows which index fits (a query no index fits still scans, and fails below).
        await conn.execute("SET enable_seqscan = off")
        plans = []
        for sql in (
            _postgres._OVERVIEW_STATES,
            _postgres._OVERVIEW_LLM,
            _postgres._OVERVIEW_TOOL_COSTS,
            _postgres._OVERVIEW_TOOLS,
            _postgres._COSTLIEST,
        ):
            args: tuple[object, ...] = ("p", 0.0, 1.0)
            if "$4" in sql:
                args += (["gpt-4o"], [1e-6], [2e-6], 10)
            rows = await conn.fetch(f"EXPLAIN {sql}", *args)
            plans.append("\n".join(r[0] for r in rows))
        return plans
    finally:
        await conn.close()


async def test_overview_queries_use_indexes_not_a_scan_of_events(
    storage: Storage, database: str
) -> None:
    await _record_sample(storage)
    if is_postgres_dsn(database):
        plans = await _postgres_plans(database)
        for plan in plans:
            assert "sessions_by_project_start" in plan, plan
            assert "Seq Scan" not in plan and "events" not in plan.replace("events_", ""), plan
        for plan in plans[1:]:
            assert "session_llm_usage_pkey" in plan or "session_tool_usage_pkey" in plan, plan
    else:
        plans = _sqlite_plans(database)
        for plan in plans:
            assert "USING INDEX sessions_by_project_start" in plan, plan
            assert "SCAN events" not in plan and "SCAN sessions" not in plan, plan
        for plan in plans[1:]:
            assert "SCAN u" not in plan and "USING PRIMARY KEY" in plan, plan


async def _rollup_rows(database: str) -> int:
    sql = (
        "SELECT (SELECT count(*) FROM session_llm_usage)"
        " + (SELECT count(*) FROM session_tool_usage)"
    )
    if is_postgres_dsn(database):
        import asyncpg

        conn = await asyncpg.connect(database)
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()
    with sqlite3.connect(database) as conn:
        return int(conn.execute(sql).fetchone()[0])


async def test_a_prune_deletes_the_sessions_rollups_with_them(
    storage: Storage, database: str
) -> None:
    from agentops_async.collector import prune

    await _record_sample(storage)
    assert await _rollup_rows(database) == 10  # 6 (session, model) and 4 (session, tool) rows
    pruned = await prune(storage, 0, now=DAY_B + 10 * DAY)
    assert pruned.sessions == 6
    assert await _rollup_rows(database) == 0
