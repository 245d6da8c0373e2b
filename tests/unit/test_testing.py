"""agentops_async.testing: capture_events() gives a test what its code recorded, no server."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import agentops_async as ao
from agentops_async.telemetry import _memory
from agentops_async.testing import Capture, SessionSnapshot, capture_events

from .fake_api import FakeApi


@pytest.mark.asyncio
async def test_sessions_on_the_default_client_are_captured_with_no_api_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("AGENTOPS_API_KEY", raising=False)
    caplog.set_level(logging.WARNING, logger="agentops_async")
    async with capture_events() as captured:
        async with ao.AsyncSession(tags=["planner"]) as session:
            await ao.record(ao.ActionEvent(action_type="search", params={"q": "cats"}))
            await session.record(ao.ToolEvent(name="calc", returns=42))
            session.add_tags(["retrieval"])
            agent = session.create_agent("researcher")
        await ao.default_client().close()
    got = captured.session()
    assert got.session_id == session.session_id
    assert got.ended and got.state == "SUCCEEDED"
    assert got.tags == ["planner", "retrieval"]
    assert [s.state for s in got.snapshots] == ["RUNNING", "RUNNING", "SUCCEEDED"]
    first = got.snapshots[0]
    assert isinstance(first, SessionSnapshot)
    assert first.trace_id == session.trace_id and len(first.span_id) == 16
    assert first.init_timestamp.endswith("Z") and got.snapshots[-1].end_timestamp is not None
    assert [(a.agent_id, a.name) for a in got.agents] == [(agent, "researcher")]
    assert [e["event_type"] for e in got.events] == ["actions", "tools"]
    assert got.events[0]["params"] == {"q": "cats"} and got.events[1]["returns"] == 42
    assert all(e["session_id"] == session.session_id for e in got.events)
    assert captured.events == got.events
    assert not [r for r in caplog.records if "no API key" in r.getMessage()]


@pytest.mark.asyncio
async def test_events_of_several_sessions_are_kept_in_order_per_session_and_overall() -> None:
    async with capture_events() as captured:
        client = ao.AsyncClient(flush_interval=0.01, log_session_stats=False)

        async def work(name: str) -> str:
            async with client.session(tags=[name]) as session:
                for i in range(300):
                    await session.record(ao.ActionEvent(action_type=name, params={"i": i}))
                    if i % 50 == 0:
                        await asyncio.sleep(0)
            return session.session_id

        ids = await asyncio.gather(work("a"), work("b"))
        await client.close()
    assert list(captured.sessions) == ids
    for session_id, name in zip(ids, "ab", strict=True):
        got = captured.session(session_id)
        assert got.tags == [name] and got.state == "SUCCEEDED"
        assert [e["params"]["i"] for e in got.events] == list(range(300))
    assert len(captured.events) == 600
    assert len(captured.events_of_type("actions")) == 600
    assert client.stats.delivered == 600 and client.stats.pending == 0
    with pytest.raises(LookupError, match="2 sessions were captured"):
        captured.session()


@pytest.mark.asyncio
async def test_before_send_and_redaction_apply_to_what_is_captured() -> None:
    def drop_debug(event: Any) -> Any:
        return None if event.params.get("debug") else event

    async with capture_events() as captured:
        client = ao.AsyncClient(before_send=drop_debug, log_session_stats=False)
        async with client.session() as session:
            await session.record(ao.ActionEvent(params={"debug": True}))
            await session.record(ao.ActionEvent(params={"api_key": "sk-abcdefghijklmnop1234"}))
        await client.close()
    events = captured.session().events
    assert [e["params"] for e in events] == [{"api_key": "[REDACTED]"}]
    assert session.stats.filtered == 1 and session.stats.delivered == 1


def test_the_sync_facade_is_captured_and_failures_are_seen() -> None:
    with capture_events() as captured:
        client = ao.Client(log_session_stats=False)
        session = client.start_session(tags=["script"])
        session.record(ao.ActionEvent(action_type="step"))
        session.end_session("Fail", end_state_reason="boom")
        assert client.close()
    got = captured.session(session.session_id)
    assert got.state == "FAILED" and got.end_state_reason == "boom"
    assert [e["action_type"] for e in got.events] == ["step"]


@pytest.mark.asyncio
async def test_clients_made_outside_keep_their_target_and_the_default_client_comes_back(
    api: FakeApi, make_client: Any
) -> None:
    outside = make_client()
    before = ao.default_client()
    async with capture_events() as captured:
        assert ao.default_client() is not before  # a fresh default, captured
        async with outside.session() as session:
            await session.record(ao.ActionEvent())
    assert ao.default_client() is before
    await outside.close()
    assert captured.sessions == {}
    assert len(api.events[session.session_id]) == 1


def test_captures_nest_and_the_innermost_captures() -> None:
    with capture_events() as outer:
        with capture_events() as inner:
            client = ao.AsyncClient()
        other = ao.AsyncClient()
    assert client._capture is inner and other._capture is outer
    assert isinstance(inner, Capture) and _memory.active_capture() is None
