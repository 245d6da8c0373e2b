"""SessionMiddleware and the lifespan helper: real FastAPI under uvicorn, the real collector."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest
from _asgi_service import (
    EXPECTED_STATE,
    EXPECTED_STATUS,
    drive,
    ids_for,
    make_app,
    outcome_of,
    serving,
)

import agentops_async as ao

pytestmark = pytest.mark.asyncio

REQUESTS = 50
CONCURRENCY = 16


async def test_each_request_is_one_session_with_exactly_its_events(collector: Any) -> None:
    client = ao.AsyncClient(
        api_key=collector.api_key, endpoint=collector.url, log_session_stats=False
    )
    app, seen = make_app(client, exclude_paths=["/health"], tags=["svc"])
    async with serving(app) as url:
        statuses = await drive(url, REQUESTS, CONCURRENCY)
    # The server has shut down: the lifespan closed the client with a bounded flush.
    assert client.stats.pending == 0
    assert client.stats.dropped == 0

    assert statuses == {n: EXPECTED_STATUS[outcome_of(n)] for n in range(REQUESTS)}
    assert len(set(seen.values())) == REQUESTS  # one session per request
    stored = await collector.list_sessions()
    assert sorted(s["id"] for s in stored) == sorted(seen.values())  # /health: none
    for n, session_id in seen.items():
        outcome = outcome_of(n)
        session = await collector.get_session(session_id)
        assert session is not None
        assert session["end_state"] == EXPECTED_STATE[outcome], (n, session)
        assert {"svc", "http.method:GET", "http.route:/items/{n}"} <= set(session["tags"])
        # An exception leaves the app before any answer (the server's error handler answers).
        status_tags = [t for t in session["tags"] if t.startswith("http.status:")]
        expected = [] if outcome == "raise" else [f"http.status:{EXPECTED_STATUS[outcome]}"]
        assert status_tags == expected
        events = await collector.get_events(session_id)
        # Spans the framework itself makes (FastAPI's ``fastapi.dependencies``...) are captured
        # into the session when the process has an SDK TracerProvider (another test may have set
        # the global one): they belong to the request too; the recorded events are checked here.
        mine = sorted(
            e["id"]
            for e in events
            if e["event_type"] != "errors" and e.get("action_type") != "span"
        )
        assert mine == sorted(ids_for(n)), (n, events)
        spans = {e["id"] for e in events if e.get("action_type") == "span"}
        errors = [  # the middleware's, not those of the framework's failed spans
            e
            for e in events
            if e["event_type"] == "errors" and e.get("trigger_event_id") not in spans
        ]
        if outcome == "raise":
            assert [e["error_type"] for e in errors] == ["RuntimeError"]
        elif outcome == "http500":
            assert [(e["error_type"], e["code"]) for e in errors] == [("HTTPError", "500")]
        else:
            assert errors == []


async def test_request_sessions_have_time_ordered_uuid7_ids(collector: Any) -> None:
    # Time-ordered ids: the collector appends each request's session, tags, events and
    # rollups at the end of its indexes (whatever the database's size) instead of anywhere.
    client = ao.AsyncClient(
        api_key=collector.api_key, endpoint=collector.url, log_session_stats=False
    )
    app, seen = make_app(client, exclude_paths=["/health"])
    async with serving(app) as url:
        await drive(url, 12, 1)  # one at a time: request n starts after request n-1 ended
    ids = [seen[n] for n in range(12)]
    assert [uuid.UUID(i).version for i in ids] == [7] * 12
    stamps = [uuid.UUID(i).int >> 80 for i in ids]  # Unix milliseconds of each start
    assert stamps == sorted(stamps)
    stored = await collector.list_sessions()
    assert sorted(s["id"] for s in stored) == sorted(ids)
    for session_id, stamp in zip(ids, stamps, strict=True):
        session = await collector.get_session(session_id)
        started = datetime.fromisoformat(session["init_timestamp"].replace("Z", "+00:00"))
        assert abs(started.timestamp() * 1000 - stamp) < 1000, session
