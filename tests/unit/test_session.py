"""AsyncSession behaviour against the scripted fake API."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

import agentops_async as ao
from agentops_async._ids import new_session_id as ao_id

from .fake_api import FakeApi

pytestmark = pytest.mark.asyncio

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def test_normal_exit_succeeds_and_sends_create_events_update_in_order(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session(tags=["planner"]) as session:
        for i in range(3):
            await session.record(ao.ActionEvent(action_type="step", params={"i": i}))
    assert session.state is ao.SessionState.SUCCEEDED
    paths = [p for p, _, body in api.requests]
    assert paths == ["/v2/create_session", "/v2/create_events", "/v2/update_session"]
    stored = api.sessions[session.session_id]
    assert stored["end_state"] == "Success"
    assert stored["tags"] == ["planner"]
    assert stored["trace_id"] == session.trace_id
    assert [e["params"]["i"] for e in api.events[session.session_id]] == [0, 1, 2]
    stats = session.stats
    assert (stats.recorded, stats.delivered, stats.dropped) == (3, 3, 0)
    assert str(stats.token_cost) == "0.25"
    assert stats.event_counts == {"actions": 3}


async def test_exception_fails_the_session_and_records_an_error_event(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    with pytest.raises(ValueError, match="boom"):
        async with client.session() as session:
            raise ValueError("boom")
    assert session.state is ao.SessionState.FAILED
    assert session.end_state_reason == "ValueError: boom"
    stored = api.sessions[session.session_id]
    assert stored["end_state"] == "Fail"
    assert stored["end_state_reason"] == "ValueError: boom"
    (error,) = api.events[session.session_id]
    assert error["event_type"] == "errors"
    assert error["error_type"] == "ValueError"
    assert "Traceback" in error["logs"]


async def test_cancelled_session_ends_indeterminate(api: FakeApi, client: ao.AsyncClient) -> None:
    started = asyncio.Event()
    holder: list[ao.AsyncSession] = []

    async def agent() -> None:
        async with client.session() as session:
            holder.append(session)
            await session.record(ao.ToolEvent(name="search"))
            started.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(agent())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    session = holder[0]
    assert session.state is ao.SessionState.INDETERMINATE
    assert await client.flush(5)
    stored = api.sessions[session.session_id]
    assert stored["end_state"] == "Indeterminate"
    assert stored["end_state_reason"] == "cancelled"
    assert len(api.events[session.session_id]) == 1


async def test_record_before_start_after_end_and_end_twice_are_clear_errors(
    client: ao.AsyncClient,
) -> None:
    session = client.session()
    with pytest.raises(ao.SessionNotRunning, match="start it first"):
        await session.record(ao.ActionEvent())
    await session.start()
    await session.end("Success")
    with pytest.raises(ao.SessionNotRunning, match="has ended"):
        await session.record(ao.ActionEvent())
    with pytest.raises(ao.InvalidStateTransition, match="ends once"):
        await session.end("Fail")
    with pytest.raises(ao.SessionNotRunning):
        session.add_tags(["late"])


async def test_explicit_start_and_end_with_agentops_strings(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    session = await client.start_session(tags="one")
    await session.record(ao.LLMEvent(model="gpt-4o-mini", prompt_tokens=10, completion_tokens=2))
    stats = await session.end("Fail", end_state_reason="judge said no", video="http://v/1")
    assert stats.state is ao.SessionState.FAILED
    stored = api.sessions[session.session_id]
    assert (stored["end_state"], stored["end_state_reason"], stored["video"]) == (
        "Fail",
        "judge said no",
        "http://v/1",
    )
    assert stored["tags"] == ["one"]


async def test_a_wrong_end_state_names_the_field_and_the_session_keeps_running(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    session = await client.start_session()
    with pytest.raises(ao.InvalidStateTransition, match="end_state=5 is not a session state"):
        await session.end(5)  # type: ignore[arg-type]
    with pytest.raises(ao.InvalidStateTransition, match="end_state='Done'"):
        await session.end("Done")
    await session.record(ao.ActionEvent())  # nothing else was lost: still running
    await session.end("Success")
    assert api.sessions[session.session_id]["end_state"] == "Success"
    assert len(api.events[session.session_id]) == 1


async def test_record_rejects_non_events_naming_the_fix(client: ao.AsyncClient) -> None:
    async with client.session() as session:
        with pytest.raises(ao.InvalidEvent, match="wrap the data in an event"):
            await session.record({"event_type": "actions"})  # type: ignore[arg-type]


async def test_tags_add_and_set_are_sent_and_validated(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session(tags=["a"]) as session:
        session.add_tags(["b", "a"])
        session.set_tags(["x", "y"])
        with pytest.raises(ao.InvalidEvent, match="tags must be a list of strings"):
            session.add_tags([1, 2])  # type: ignore[list-item]
        with pytest.raises(ao.InvalidEvent, match="tags must be a list of strings"):
            session.set_tags(42)  # type: ignore[arg-type]
    updates = [b["session"]["tags"] for p, _, b in api.requests if p == "/v2/update_session"]
    assert updates == [["a", "b"], ["x", "y"], ["x", "y"]]


async def test_create_agent_registers_the_agent(api: FakeApi, client: ao.AsyncClient) -> None:
    async with client.session() as session:
        agent_id = session.create_agent("planner")
        await session.record(ao.ActionEvent(agent_id=agent_id))
    (agent_call,) = api.calls("/v2/create_agent")
    assert agent_call[2] == {"id": agent_id, "name": "planner"}
    assert api.events[session.session_id][0]["agent_id"] == agent_id


async def test_module_record_uses_the_current_session_of_each_task(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async def agent(name: str) -> ao.AsyncSession:
        async with client.session(tags=[name]) as session:
            for i in range(50):
                await ao.record(ao.ActionEvent(action_type=name, params={"i": i}))
                await asyncio.sleep(0)  # interleave the two tasks
        return session

    first, second = await asyncio.gather(agent("first"), agent("second"))
    assert {e["action_type"] for e in api.events[first.session_id]} == {"first"}
    assert {e["action_type"] for e in api.events[second.session_id]} == {"second"}
    assert len(api.events[first.session_id]) == len(api.events[second.session_id]) == 50


async def test_module_record_without_a_session_is_a_clear_error(client: ao.AsyncClient) -> None:
    with pytest.raises(ao.NoActiveSession, match="no session is current in this task"):
        await ao.record(ao.ActionEvent())


async def test_current_session_is_visible_inside_and_gone_after(client: ao.AsyncClient) -> None:
    assert ao.get_current_session() is None
    async with client.session() as session:
        assert ao.get_current_session() is session
        assert session in ao.get_active_sessions()
    assert ao.get_current_session() is None
    assert session not in ao.get_active_sessions()


async def test_stats_line_is_logged_at_end(
    api: FakeApi, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(log_session_stats=True)
    caplog.set_level(logging.INFO, logger="agentops_async")
    async with client.session() as session:
        await session.record(ao.LLMEvent())
        await session.record(ao.ToolEvent())
    await client.close()
    line = next(r.getMessage() for r in caplog.records if "Duration" in r.getMessage())
    assert session.session_id in line
    assert "SUCCEEDED" in line and "LLMs: 1" in line and "Tools: 1" in line
    assert "Cost: $0.250000" in line


async def test_disabled_client_is_a_cheap_no_op(api: FakeApi) -> None:
    client = ao.AsyncClient(api_key=None, enabled=False)
    async with client.session() as session:
        await session.record(ao.ActionEvent())
        assert session.is_running
    assert session.state is ao.SessionState.SUCCEEDED
    assert api.requests == []
    await client.close()


async def test_no_api_key_disables_and_warns_once(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("AGENTOPS_API_KEY", raising=False)
    monkeypatch.setattr("agentops_async._client._disabled_warned", False)
    caplog.set_level(logging.WARNING, logger="agentops_async")
    ao.AsyncClient()
    ao.AsyncClient()
    warnings = [r for r in caplog.records if "no API key" in r.getMessage()]
    assert len(warnings) == 1
    assert "AGENTOPS_API_KEY" in warnings[0].getMessage()


async def test_client_is_bound_to_one_running_loop(client: ao.AsyncClient) -> None:
    async with client.session():
        pass

    def other_loop() -> None:
        async def use() -> None:
            await client.start_session()

        asyncio.run(use())

    with pytest.raises(ao.ConfigError, match="another event loop"):
        await asyncio.to_thread(other_loop)


async def test_ids_and_timestamps_are_filled_in_when_the_event_is_sent(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    before = time.time()
    async with client.session() as session:
        event = ao.ToolEvent(name="search")
        assert event.id is None and isinstance(event.init_timestamp, float)
        await session.record(event)
        assert isinstance(event.end_timestamp, float) and event.end_timestamp >= before
        given = ao.ToolEvent(
            name="given",
            id="11111111-2222-4333-8444-555555555555",
            init_timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            end_timestamp=1_767_323_106,  # an int epoch is accepted too
        )
        await session.record(given)
    sent = {e["name"]: e for e in api.events[session.session_id]}
    assert sent["search"]["id"] == event.id and UUID_RE.match(sent["search"]["id"])
    for key in ("init_timestamp", "end_timestamp"):
        moment = datetime.fromisoformat(sent["search"][key].replace("Z", "+00:00"))
        assert before - 1 <= moment.timestamp() <= time.time() + 1
    assert sent["search"]["session_id"] == session.session_id
    assert sent["search"]["trace_id"] == session.trace_id
    assert re.fullmatch(r"[0-9a-f]{16}", sent["search"]["span_id"])
    assert sent["search"]["span_id"].endswith(sent["search"]["id"][-12:])
    assert sent["given"]["id"] == "11111111-2222-4333-8444-555555555555"
    assert sent["given"]["init_timestamp"] == "2026-01-02T03:04:05Z"
    assert sent["given"]["end_timestamp"] == "2026-01-02T03:05:06Z"


async def test_a_timestamp_of_the_wrong_type_names_the_field_and_loses_nothing_else(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session() as session:
        with pytest.raises(ao.InvalidEvent, match=r"ActionEvent\.end_timestamp must be a datetime"):
            await session.record(ao.ActionEvent(end_timestamp={"when": "now"}))  # type: ignore[arg-type]
        with pytest.raises(ao.InvalidEvent, match=r"ActionEvent\.init_timestamp must be"):
            session.record_threadsafe(ao.ActionEvent(init_timestamp=True))
        await session.record(ao.ActionEvent(action_type="kept"))
    assert [e["action_type"] for e in api.events[session.session_id]] == ["kept"]
    assert session.stats.recorded == 1


async def test_values_json_cannot_hold_are_sent_as_repr_and_the_rest_of_the_batch_is_intact(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    async with client.session() as session:
        for i in range(5):
            params: dict[str, Any] = {"i": i}
            if i == 2:
                params["thing"] = Opaque()
            await session.record(ao.ActionEvent(params=params))
    sent = api.events[session.session_id]
    assert [e["params"]["i"] for e in sent] == [0, 1, 2, 3, 4]
    assert sent[2]["params"]["thing"] == "<opaque>"
    assert session.stats.delivered == 5 and session.stats.dropped == 0


async def test_the_sync_path_sends_the_event_as_it_was_when_recorded(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session() as session:
        params = {"q": "weather"}
        await asyncio.to_thread(session.record_threadsafe, ao.ActionEvent(params=params))
        params["q"] = "changed after recording"
    assert api.events[session.session_id][0]["params"] == {"q": "weather"}


async def test_an_error_event_links_its_trigger_by_id(api: FakeApi, client: ao.AsyncClient) -> None:
    async with client.session() as session:
        trigger = ao.ToolEvent(name="flaky")
        await session.record(trigger)
        error = ao.ErrorEvent.from_exception(ValueError("boom"), trigger_event=trigger)
        await session.record(error)
    sent = {e["event_type"]: e for e in api.events[session.session_id]}
    assert sent["errors"]["trigger_event_id"] == sent["tools"]["id"] == trigger.id


async def test_an_epoch_no_datetime_can_hold_is_sent_as_text_and_the_batch_arrives(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session() as session:
        await session.record(ao.ToolEvent(name="before"))
        await session.record(ao.ToolEvent(name="odd", init_timestamp=1e20))
        await session.record(ao.ToolEvent(name="after", end_timestamp=1_767_323_106.25))
    sent = {e["name"]: e for e in api.events[session.session_id]}
    assert set(sent) == {"before", "odd", "after"}
    assert sent["odd"]["init_timestamp"] == "1e+20"
    assert sent["odd"]["end_timestamp"].endswith("Z")
    assert sent["after"]["end_timestamp"] == "2026-01-02T03:05:06.250000Z"
    assert session.stats.delivered == 3


async def test_an_odd_epoch_in_a_large_batch_loses_nothing_else(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    async with client.session() as session:
        for i in range(20):  # one slice converted in one msgspec call, which refuses 1e20
            start = 1e20 if i == 7 else 1_767_323_106.0 + i
            await session.record(ao.ToolEvent(name=f"t{i}", init_timestamp=start))
    sent = {e["name"]: e for e in api.events[session.session_id]}
    assert len(sent) == 20
    assert sent["t7"]["init_timestamp"] == "1e+20"
    assert sent["t8"]["init_timestamp"] == "2026-01-02T03:05:14Z"
    assert all(e["end_timestamp"].endswith("Z") for e in sent.values())


async def test_caller_chosen_ids_outside_the_id_limit_are_refused_at_the_call(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    with pytest.raises(
        ao.InvalidEvent, match=r"session_id='s+'\.\.\. has 201 characters.*1 to 200"
    ):
        client.session(session_id="s" * 201)
    with pytest.raises(ao.InvalidEvent, match=r"session_id='' has 0 characters"):
        client.session(session_id="")
    async with client.session(session_id="s" * 200) as session:
        with pytest.raises(ao.InvalidEvent, match=r"agent_id='a+'\.\.\. has 201 characters"):
            session.create_agent("planner", agent_id="a" * 201)
        session.create_agent("planner", agent_id="a" * 200)
    assert list(api.sessions) == ["s" * 200]
    assert [body["id"] for _, _, body in api.calls("/v2/create_agent")] == ["a" * 200]


async def test_new_session_ids_are_uuid7_ordered_by_their_start(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    # Time-ordered ids keep a collector's session-keyed indexes append-only (see _ids.py).
    sessions = []
    for _ in range(5):
        before = time.time_ns() // 1_000_000
        async with client.session() as session:
            pass
        after = time.time_ns() // 1_000_000
        sessions.append(session)
        made = uuid.UUID(session.session_id)
        assert (made.version, made.variant, str(made)) == (7, uuid.RFC_4122, session.session_id)
        assert before <= made.int >> 80 <= after  # its first 48 bits: Unix milliseconds
    ids = [s.session_id for s in sessions]
    stamps = [uuid.UUID(i).int >> 80 for i in ids]
    assert stamps == sorted(stamps) and len(set(ids)) == 5  # later sessions sort after
    assert set(api.sessions) == set(ids)  # and those are the ids the API got
    assert len({ao_id() for _ in range(10_000)}) == 10_000  # unique within a millisecond too


async def test_queued_sessions_with_the_same_tags_allocate_little_for_the_garbage_collector(
    api: FakeApi, make_client: Any
) -> None:
    # What drives the garbage collector's young collections is the net count of objects of GC
    # types allocated (tracked or not): a service's queued request sessions keep theirs until
    # they are exported. Sessions with the same tags and counts (a route's requests) share
    # their snapshots' tags tuples and event-count dicts instead of a new pair each.
    import gc

    client = make_client(
        flush_interval=60.0, max_batch_size=10_000, instrument_otel=False, shutdown_timeout=30.0
    )

    async def one() -> None:
        async with ao.AsyncSession(client=client, tags=["t"], flush_on_exit=False) as session:
            await session.record(ao.ActionEvent(action_type="a"))

    await one()
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for _ in range(100):
            await one()
        allocated = (gc.get_count()[0] - before) / 100
    finally:
        gc.enable()
    assert allocated <= 2.0, allocated  # 6.7 at 3b5ad58
    await client.close()
    assert sum(len(events) for events in api.events.values()) == 101


async def test_a_queued_session_keeps_few_objects_for_the_garbage_collector(
    api: FakeApi, make_client: Any
) -> None:
    # A service queues each request's session (its creation, events and end) for up to a flush
    # interval; every GC-tracked object queued that long is carried into the older generations,
    # whose full collections cost a busy service milliseconds each. What stays queued per
    # session (its two operations and their snapshots, its channel) is not tracked: the
    # snapshots' tags are tuples of strings, which the first young collection stops tracking.
    import gc

    client = make_client(
        flush_interval=60.0, max_batch_size=10_000, instrument_otel=False, shutdown_timeout=30.0
    )

    async def one() -> None:
        async with ao.AsyncSession(client=client, tags=["t"], flush_on_exit=False) as session:
            await session.record(ao.ActionEvent(action_type="a", params={"q": "x"}))
            await session.record(ao.ToolEvent(name="t", params={"n": 1}, returns="r"))

    await one()  # caches and the exporter task, made once
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(100):
            await one()
        gc.collect(0)  # what a young collection in a running service would leave
        kept = (len(gc.get_objects()) - before) / 100
    finally:
        gc.enable()
    assert kept <= 0.1, kept
    await client.close()
    assert sum(len(events) for events in api.events.values()) == 2 * 101
