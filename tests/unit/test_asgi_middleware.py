"""SessionMiddleware's options and edges, driven as a plain ASGI app (the fake API behind)."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import agentops_async as ao
from agentops_async.integrations.asgi import CLIENT_STATE_KEY, SessionMiddleware
from agentops_async.integrations.fastapi import lifespan

from .fake_api import FakeApi


async def app_recording(scope: Any, receive: Any, send: Any) -> None:
    session = ao.get_current_session()
    scope["seen_session"] = session
    await ao.record(ao.ActionEvent(action_type="handled"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, path: str = "/x", **scope: Any) -> dict[str, Any]:
    full = {"type": "http", "method": "GET", "path": path, "headers": [], **scope}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(full, receive, send)
    return full


@pytest.mark.asyncio
async def test_sampling_is_decided_once_per_session_id_and_unsampled_requests_send_nothing(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client()
    middleware = SessionMiddleware(app_recording, client=client, sample_rate=0.5)
    scopes = [await call(middleware) for _ in range(200)]
    await client.flush(timeout=10)
    sessions = [scope["seen_session"] for scope in scopes]
    sampled = [s for s in sessions if s.session_id in api.sessions]
    # Deterministic by id: exactly the sessions whose id hashes below the rate were sent.
    for session in sessions:
        expected = zlib.crc32(session.session_id.encode()) < 0.5 * 2**32
        assert (session.session_id in api.sessions) is expected
    assert 60 < len(sampled) < 140
    assert len(api.all_events) == len(sampled)  # unsampled record() calls were no-ops
    assert all(s.state is ao.SessionState.SUCCEEDED for s in sessions)
    await client.close()


@pytest.mark.asyncio
async def test_excluded_paths_and_non_http_scopes_run_without_a_session(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client()
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(ao.get_current_session())

    middleware = SessionMiddleware(app, client=client, exclude_paths=["/health", "/static/"])
    await call(middleware, "/health")
    await call(middleware, "/static/app.js")
    await call(middleware, "/ws", type="websocket")
    await call(middleware, "/healthz")  # not excluded: an exact match only
    assert seen[:3] == [None, None, None]
    assert seen[3] is not None
    await client.flush(timeout=10)
    assert list(api.sessions) == [seen[3].session_id]
    await client.close()


@pytest.mark.asyncio
async def test_a_cancelled_request_ends_indeterminate(api: FakeApi, make_client: Any) -> None:
    client = make_client()
    started = asyncio.Event()
    sessions: list[ao.AsyncSession] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = ao.get_current_session()
        assert session is not None
        sessions.append(session)
        started.set()
        await asyncio.Event().wait()  # the client went away

    task = asyncio.create_task(call(SessionMiddleware(app, client=client)))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sessions[0].state is ao.SessionState.INDETERMINATE
    await client.flush(timeout=10)
    assert api.sessions[sessions[0].session_id]["end_state"] == "Indeterminate"
    await client.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sample_rate": 1.5}, "sample_rate=1.5 is out of range"),
        ({"sample_rate": "half"}, "sample_rate must be a number"),
        ({"exclude_paths": "/health"}, "pass exclude_paths=['/health']"),
    ],
)
def test_bad_options_are_refused_with_the_field_and_the_fix(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ao.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SessionMiddleware(app_recording, **options)


class _App:
    def __init__(self) -> None:
        self.state = type("State", (), {})()


@pytest.mark.asyncio
async def test_lifespan_runs_the_apps_own_lifespan_inside_and_keeps_its_state(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client()
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: Any) -> AsyncIterator[dict[str, Any]]:
        events.append("own start")
        yield {"db": "pool"}
        events.append("own stop")

    app = _App()
    async with lifespan(own, client=client)(app) as state:
        assert state == {"db": "pool", CLIENT_STATE_KEY: client}
        assert app.state.agentops_client is client
        assert ao.default_client() is client
        # The middleware finds the client in the request's state (a copy of the lifespan's).
        scope = await call(SessionMiddleware(app_recording), state=dict(state))
        session = scope["seen_session"]
    assert events == ["own start", "own stop"]
    assert client._exporter is None  # closed at shutdown
    assert ao.default_client() is not client
    assert api.sessions[session.session_id]["end_state"] == "Success"
    assert [e["event_type"] for e in api.events[session.session_id]] == ["actions"]


@pytest.mark.asyncio
async def test_request_session_stats_are_logged_when_configured_and_correct_when_read_later(
    api: FakeApi, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The middleware ends sessions without building their stats (nobody reads them there);
    # the stats line is still logged when log_session_stats is on, and session.stats, read
    # afterwards, is built then: recorded, delivered and the final state are right.
    async def failing_app(scope: Any, receive: Any, send: Any) -> None:
        scope["seen_session"] = ao.get_current_session()
        await ao.record(ao.ActionEvent(action_type="handled"))
        await ao.record(ao.ToolEvent(name="search"))
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"busy"})

    logged = make_client(log_session_stats=True)
    with caplog.at_level("INFO", logger="agentops_async"):
        ok = (await call(SessionMiddleware(app_recording, client=logged)))["seen_session"]
        failed = (await call(SessionMiddleware(failing_app, client=logged)))["seen_session"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Session ")]
    assert lines[0].startswith(f"Session {ok.session_id} SUCCEEDED |")
    assert "| Actions: 1 | Errors: 0 |" in lines[0]
    assert lines[1].startswith(f"Session {failed.session_id} FAILED |")
    assert "| Tools: 1 | Actions: 1 | Errors: 1 |" in lines[1]  # the 503's ErrorEvent
    assert len(lines) == 2

    quiet = make_client()  # log_session_stats=False: nothing logged, stats still right
    caplog.clear()
    with caplog.at_level("INFO", logger="agentops_async"):
        session = (await call(SessionMiddleware(app_recording, client=quiet)))["seen_session"]
    assert not [r for r in caplog.records if r.getMessage().startswith("Session ")]
    await quiet.flush(timeout=10)
    await logged.flush(timeout=10)
    stats = session.stats
    assert stats.state is ao.SessionState.SUCCEEDED
    assert stats.event_counts == {"actions": 1}
    assert (stats.recorded, stats.delivered, stats.dropped) == (1, 1, 0)
    assert stats.duration > 0
    assert failed.stats.state is ao.SessionState.FAILED
    assert (failed.stats.recorded, failed.stats.delivered) == (3, 3)
    assert [e["event_type"] for e in api.events[failed.session_id]] == [
        "actions",
        "tools",
        "errors",
    ]
    assert api.sessions[failed.session_id]["end_state"] == "Fail"
    await quiet.close()
    await logged.close()
