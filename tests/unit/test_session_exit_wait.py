"""A session's exit waits only for its own events (or, with flush_on_exit=False, not at all)."""

from __future__ import annotations

from typing import Any

import pytest

import agentops_async as ao
from agentops_async.telemetry._exporter import Exporter

from .fake_api import CallbackResult, FakeApi

pytestmark = pytest.mark.asyncio


def _refuse_events_of(api: FakeApi, session_ids: set[str]) -> None:
    """create_events answers 503 (retried) for these sessions; the rest is served."""
    serve = api._serve

    def serve_or_refuse(path: str, headers: dict[str, str], body: Any) -> CallbackResult:
        if path == "/v2/create_events" and body["events"][0]["session_id"] in session_ids:
            return CallbackResult(status=503, body='{"message": "scripted outage"}')
        return serve(path, headers, body)

    api._serve = serve_or_refuse  # type: ignore[method-assign]


async def test_session_exit_waits_for_its_own_events_not_the_clients_backlog(
    api: FakeApi, make_client: Any
) -> None:
    client = make_client(shutdown_timeout=60.0, flush_interval=5.0)
    stuck = await client.start_session(tags=["long-lived"])
    _refuse_events_of(api, {stuck.session_id})
    for i in range(20):
        await stuck.record(ao.ActionEvent(action_type="stuck", params={"i": i}))

    session = client.session(tags=["request"])
    async with session:
        for i in range(5):
            await session.record(ao.ToolEvent(name="mine", params={"i": i}))
    # The old exit waited for the whole client (the stuck session's events, up to 60 s): the
    # exit returns once this session is resolved; the other session is still pending.
    exit_stats = session.stats
    assert exit_stats.delivered == 5
    assert exit_stats.dropped == 0
    assert len(api.events[session.session_id]) == 5
    assert api.sessions[session.session_id]["end_state"] == "Success"
    assert client.stats.pending > 0
    assert stuck.stats.delivered == 0

    await stuck.end(wait=False)
    await client.close(timeout=0.2)


async def test_session_exit_waits_when_its_own_events_are_pending(
    api: FakeApi, make_client: Any
) -> None:
    """The per-session wait is a real wait: bounded by the timeout while its events fail."""
    client = make_client(shutdown_timeout=0.3)
    session = await client.start_session()
    _refuse_events_of(api, {session.session_id})
    await session.record(ao.ActionEvent(action_type="pending"))
    stats = await session.end()
    assert stats.delivered == 0
    assert client.stats.pending > 0  # not resolved when the timeout passed
    await client.close(timeout=0.1)
    assert session.stats.dropped == 1


async def test_flush_on_exit_false_never_waits_and_the_final_update_is_delivered_later(
    api: FakeApi, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[str] = []
    for name in ("flush", "flush_session"):
        original = getattr(Exporter, name, None)

        def counting(self: Exporter, *args: Any, _name: str = name, _f: Any = original) -> Any:
            waits.append(_name)
            return _f(self, *args)

        monkeypatch.setattr(Exporter, name, counting, raising=False)

    client = make_client(shutdown_timeout=60.0)
    for path in ("/v2/create_session", "/v2/create_events", "/v2/update_session"):
        api.script(path, *([503] * 3))  # the API is down for a while

    ok = ao.AsyncSession(client=client, tags=["svc"], flush_on_exit=False)
    async with ok:
        await ok.record(ao.ActionEvent(action_type="handled"))
    failed = client.session(flush_on_exit=False)

    async def handler() -> None:
        async with failed:
            await failed.record(ao.ActionEvent(action_type="before-error"))
            raise RuntimeError("handler broke")

    with pytest.raises(RuntimeError):
        await handler()
    assert waits == []  # neither exit waited on the exporter
    assert ok.state is ao.SessionState.SUCCEEDED
    assert failed.state is ao.SessionState.FAILED

    assert await client.flush(timeout=30.0)  # the API is back: everything is delivered
    assert api.sessions[ok.session_id]["end_state"] == "Success"
    assert api.sessions[failed.session_id]["end_state"] == "Fail"
    assert [e["event_type"] for e in api.events[ok.session_id]] == ["actions"]
    assert sorted(e["event_type"] for e in api.events[failed.session_id]) == [
        "actions",
        "errors",
    ]
    assert ok.stats.delivered == 1
    assert failed.stats.delivered == 2
    assert client.stats.dropped == 0
    await client.close()
