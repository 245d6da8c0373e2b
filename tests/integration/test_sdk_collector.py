"""The SDK against the real collector (a subprocess on 127.0.0.1), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import collections
import time
from decimal import Decimal
from typing import Any

import pytest
from _values import depth, nested

import agentops_async as ao
from agentops_async._limits import MAX_NESTING_DEPTH, MAX_TAG_LENGTH

pytestmark = pytest.mark.asyncio

SESSIONS = 12
EVENTS_PER_SESSION = 250


def make_event(kind: int, agent: int, i: int) -> ao.Event:
    params = {"agent": agent, "i": i}
    if kind == 0:
        return ao.LLMEvent(
            params=params,
            model="gpt-4o-mini",
            prompt=[{"role": "user", "content": f"step {i}"}],
            completion="ok",
            prompt_tokens=100,
            completion_tokens=20,
        )
    if kind == 1:
        return ao.ToolEvent(params=params, name="search", returns={"hits": i})
    return ao.ActionEvent(params=params, action_type="plan")


async def test_concurrent_sessions_deliver_every_event_exactly_once_to_the_right_session(
    collector: Any, protocol: str
) -> None:
    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        log_session_stats=False,
        protocol=protocol,
    )

    async def agent(index: int) -> ao.AsyncSession:
        session = client.session(tags=["integration", f"agent-{index}"])
        try:
            async with session:
                for i in range(EVENTS_PER_SESSION):
                    await ao.record(make_event(i % 3, index, i))
                    if i % 50 == 0:
                        await asyncio.sleep(0)  # let the agents interleave
                if index % 4 == 3:
                    raise RuntimeError(f"agent {index} gave up")
        except RuntimeError:
            pass
        return session

    sessions = await asyncio.gather(*(agent(i) for i in range(SESSIONS)))
    assert await client.close()

    total_stored = 0
    for index, session in enumerate(sessions):
        events = await collector.get_events(session.session_id)
        failed = index % 4 == 3
        expected = EVENTS_PER_SESSION + (1 if failed else 0)  # + the ErrorEvent of the failure
        ids = [e["id"] for e in events]
        assert len(ids) == expected, f"session {index}: {len(ids)} stored, expected {expected}"
        assert len(set(ids)) == expected, "an event was stored twice"
        assert {e["session_id"] for e in events} == {session.session_id}
        data = [e for e in events if e["event_type"] != "errors"]
        assert {e["params"]["agent"] for e in data} == {index}
        assert sorted(e["params"]["i"] for e in data) == list(range(EVENTS_PER_SESSION))
        counts = collections.Counter(e["event_type"] for e in events)
        assert counts["llms"] == len(range(0, EVENTS_PER_SESSION, 3))
        stored = await collector.get_session(session.session_id)
        assert stored is not None
        assert stored["end_state"] == ("Fail" if failed else "Success")
        assert f"agent-{index}" in stored["tags"]
        assert session.stats.delivered == expected and session.stats.dropped == 0
        total_stored += len(ids)
    assert total_stored == SESSIONS * EVENTS_PER_SESSION + SESSIONS // 4


async def test_token_cost_comes_back_from_update_session(collector: Any) -> None:
    client = ao.AsyncClient(
        api_key=collector.api_key, endpoint=collector.url, log_session_stats=False
    )
    async with client.session() as session:
        for _ in range(4):
            await session.record(
                ao.LLMEvent(model="gpt-4o-mini", prompt_tokens=1_000, completion_tokens=500)
            )
    await client.close()
    cost = session.stats.token_cost
    assert cost is not None and cost > Decimal(0)
    stored = await collector.get_session(session.session_id)
    assert stored is not None
    assert Decimal(str(stored["token_cost"])) == cost


async def test_flush_means_the_collector_already_stores_the_events(
    collector: Any, protocol: str
) -> None:
    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        flush_interval=60,
        log_session_stats=False,
        protocol=protocol,
    )
    async with client.session() as session:
        for i in range(30):
            await session.record(ao.ActionEvent(params={"i": i}))
        assert await session.flush(10)
        stored = await collector.get_events(session.session_id)
        assert [e["params"]["i"] for e in stored] == list(range(30))
    await client.close()


async def test_a_session_outliving_its_jwt_still_delivers_every_event(
    collector_factory: Any, collector_backend: str
) -> None:
    collector = collector_factory(collector_backend, jwt_expiry=1)
    client = ao.AsyncClient(
        api_key=collector.api_key, endpoint=collector.url, log_session_stats=False
    )
    async with client.session() as session:
        await session.record(ao.ActionEvent(params={"i": 0}))
        assert await session.flush(10)
        jwt = session._exporter.target._sessions[session.session_id].auth.jwt  # type: ignore[union-attr]
        # Wait (bounded) until the collector really refuses the session's JWT as expired.
        deadline = time.monotonic() + 10
        while True:
            answer = await collector.v2_post("create_events", {"events": []}, jwt=jwt)
            if answer.status == 401:
                break
            assert time.monotonic() < deadline, "the JWT never expired"
            await asyncio.sleep(0.1)
        assert answer.body == {"message": "Expired Token"}
        for i in range(1, 20):
            await session.record(ao.ActionEvent(params={"i": i}))
    assert await client.close()
    stored = await collector.get_events(session.session_id)
    assert sorted(e["params"]["i"] for e in stored) == list(range(20))
    assert (await collector.get_session(session.session_id) or {})["end_state"] == "Success"


async def test_a_wrong_api_key_loses_the_session_visibly_not_silently(
    collector: Any, protocol: str
) -> None:
    client = ao.AsyncClient(
        api_key="00000000-0000-4000-8000-000000000000",
        endpoint=collector.url,
        log_session_stats=False,
        protocol=protocol,
    )
    async with client.session() as session:
        for _ in range(5):
            await session.record(ao.ActionEvent())
    await client.close()
    assert session.stats.dropped == 5
    reason = {
        "agentops_v2": "session could not be created",
        "otlp": "OTLP export refused (HTTP 401)",
    }[protocol]
    assert client.stats.dropped_by_reason == {reason: 5}
    assert await collector.get_session(session.session_id) is None


async def test_tags_at_the_limit_are_stored_and_longer_ones_are_refused_at_the_call(
    collector: Any, protocol: str
) -> None:
    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        log_session_stats=False,
        protocol=protocol,
    )
    widest = "\U0001f600" * MAX_TAG_LENGTH  # the most bytes a tag within the limit can have
    too_long = "x" * (MAX_TAG_LENGTH + 1)
    limit = rf"'xxxx.*{MAX_TAG_LENGTH + 1} characters long, above the limit of {MAX_TAG_LENGTH}"
    try:
        with pytest.raises(ao.InvalidEvent, match="tags: the tag " + limit):
            client.session(tags=["ok", too_long])
        async with client.session(tags=[widest]) as session:
            with pytest.raises(ao.InvalidEvent, match=limit):
                session.add_tags([too_long])
            with pytest.raises(ao.InvalidEvent, match=limit):
                session.set_tags(["ok", too_long])
            await session.record(ao.ActionEvent(action_type="kept"))
    finally:
        await client.close()
    stored = await collector.get_session(session.session_id)
    assert stored is not None and stored["tags"] == [widest]
    assert stored["end_state"] == "Success"
    events = await collector.get_events(session.session_id)
    assert [e["action_type"] for e in events] == ["kept"]


async def test_values_deeper_than_the_limit_are_cut_by_the_sdk_to_what_the_collector_stores(
    collector: Any, protocol: str
) -> None:
    # One limit on both sides: what the SDK sends after cutting, the collector accepts.
    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        log_session_stats=False,
        protocol=protocol,
    )
    depths = [MAX_NESTING_DEPTH - 2, MAX_NESTING_DEPTH - 1, MAX_NESTING_DEPTH, 500]
    try:
        async with client.session() as session:
            for levels in depths:
                await session.record(ao.ActionEvent(action_type=str(levels), params=nested(levels)))
    finally:
        assert await client.close()
    assert client.stats.dropped == 0
    events = {e["action_type"]: e for e in await collector.get_events(session.session_id)}
    assert sorted(events, key=int) == [str(d) for d in depths]
    # The event object is level 1 and its params level 2: params may hold MAX - 1 levels.
    for levels in depths:
        stored = 1 + depth(events[str(levels)]["params"])
        assert stored == min(levels + 1, MAX_NESTING_DEPTH), levels
    assert "nested deeper than" in str(events["500"]["params"])
    assert "nested deeper than" not in str(events[str(MAX_NESTING_DEPTH - 1)]["params"])
