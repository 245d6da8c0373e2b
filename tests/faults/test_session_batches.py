"""Many sessions per request: the SDK sends what its sessions did between two exports in
``POST /v2/create_sessions`` requests when the collector offers it (in create_session's answer),
and falls back to the standard v2 calls when that request is refused or not offered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import agentops_async as ao

from .proxy import Fault, FaultProxy

pytestmark = pytest.mark.asyncio

STANDARD = ("/v2/create_session", "/v2/create_events", "/v2/update_session")
BATCH = "/v2/create_sessions"


def _client(url: str, api_key: str, **settings: Any) -> ao.AsyncClient:
    return ao.AsyncClient(api_key=api_key, endpoint=url, log_session_stats=False, **settings)


async def _request_session(client: ao.AsyncClient, n: int) -> tuple[str, list[str]]:
    """What a service's request does: a session, three events, an end that does not wait."""
    ids = [f"req-{n}-{kind}" for kind in ("llm", "tool", "action")]
    async with client.session(tags=[f"request-{n}"], flush_on_exit=False) as session:
        await session.record(
            ao.LLMEvent(id=ids[0], model="gpt-4o-mini", prompt="q", completion="a")
        )
        await session.record(ao.ToolEvent(id=ids[1], name="search"))
        await asyncio.sleep(0)
        await session.record(ao.ActionEvent(id=ids[2], action_type="answer"))
    return session.session_id, ids


async def _first_session(client: ao.AsyncClient) -> None:
    """One session through the standard calls: its create_session answer names the batch path."""
    async with client.session(tags=["first"]):
        pass


async def _assert_stored(
    collector: Any, sessions: list[tuple[str, list[str]]], n0: int = 0
) -> None:
    for n, (session_id, ids) in enumerate(sessions, start=n0):
        stored = await collector.get_session(session_id)
        assert stored is not None, n
        assert stored["end_state"] == "Success"
        assert stored["tags"] == [f"request-{n}"]
        events = await collector.get_events(session_id)
        assert sorted(e["id"] for e in events) == sorted(ids)


async def test_short_sessions_travel_many_per_request(collector: Any, proxy: FaultProxy) -> None:
    client = _client(proxy.url, collector.api_key, max_concurrent_exports=1)  # one lane
    await _first_session(client)
    before = {path: proxy.paths[path] for path in STANDARD}
    assert before == {"/v2/create_session": 1, "/v2/create_events": 0, "/v2/update_session": 1}

    sessions = await asyncio.gather(*(_request_session(client, n) for n in range(40)))
    assert await client.flush(30)
    await client.close()

    # 40 sessions, 120 events: no standard call, a request or two (one per export).
    assert {path: proxy.paths[path] for path in STANDARD} == before
    assert 1 <= proxy.paths[BATCH] <= 2
    assert client.stats.delivered == 120 and client.stats.dropped == 0
    await _assert_stored(collector, list(sessions))


async def test_a_session_spanning_exports_sends_each_part_in_the_batch(
    collector: Any, proxy: FaultProxy
) -> None:
    client = _client(proxy.url, collector.api_key)
    await _first_session(client)
    session = client.session(tags=["long"])
    await session.start()
    await session.record(ao.ActionEvent(id="long-1", action_type="plan"))
    assert await client.flush(30)  # created, with its first event
    session.add_tags(["more"])
    await session.record(ao.ToolEvent(id="long-2", name="search"))
    assert await client.flush(30)  # only events and a tag update: an events-only part
    await session.record(ao.ActionEvent(id="long-3", action_type="answer"))
    stats = await session.end("Fail", "gave up")
    await client.close()

    assert stats.delivered == 3 and stats.dropped == 0
    assert proxy.paths["/v2/create_events"] == 0 and proxy.paths["/v2/update_session"] == 1
    assert proxy.paths[BATCH] == 3
    stored = await collector.get_session(session.session_id)
    assert stored is not None
    assert (stored["end_state"], stored["end_state_reason"]) == ("Fail", "gave up")
    assert stored["tags"] == ["long", "more"]
    events = await collector.get_events(session.session_id)
    assert [e["id"] for e in events] == ["long-1", "long-2", "long-3"]


async def test_a_refused_batch_is_sent_again_with_the_standard_calls(
    collector: Any, proxy: FaultProxy
) -> None:
    client = _client(proxy.url, collector.api_key, max_concurrent_exports=1)  # one batch of 10
    await _first_session(client)
    refusal = proxy.add(Fault(kind="status", path=BATCH, status=400, times=1))

    sessions = await asyncio.gather(*(_request_session(client, n) for n in range(10)))
    assert await client.flush(30)
    await client.close()

    assert refusal.applied == 1
    assert proxy.paths["/v2/create_session"] == 11  # the first one, then the 10 again
    assert client.stats.delivered == 30 and client.stats.dropped == 0
    await _assert_stored(collector, list(sessions))


async def test_a_batch_that_gives_up_is_counted_like_the_standard_calls(
    collector: Any, proxy: FaultProxy
) -> None:
    client = _client(proxy.url, collector.api_key, max_retry_time=0.3)
    await _first_session(client)
    proxy.add(Fault(kind="status", path=BATCH, status=503))

    await asyncio.gather(*(_request_session(client, n) for n in range(5)))
    assert await client.flush(30)
    await client.close()

    stats = client.stats
    assert stats.delivered == 0
    assert stats.dropped_by_reason == {"session could not be created": 15}
    assert stats.pending == 0


async def test_session_batches_off_keeps_the_standard_calls(
    collector: Any, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTOPS_SESSION_BATCHES", "0")
    client = _client(proxy.url, collector.api_key)
    await _first_session(client)
    sessions = await asyncio.gather(*(_request_session(client, n) for n in range(10)))
    assert await client.flush(30)
    await client.close()

    assert proxy.paths[BATCH] == 0
    assert [proxy.paths[path] for path in STANDARD] == [11, 10, 11]
    await _assert_stored(collector, list(sessions))
