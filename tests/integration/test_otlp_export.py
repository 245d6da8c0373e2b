"""The OTLP target against the real collector: a session exported over OTLP is stored as the v2
API stores it (the same session fields, the same events), and it shows RUNNING with its tags
before its root span arrives."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import msgspec
import pytest

import agentops_async as ao

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=timezone.utc).timestamp()


def _events(tag: str) -> list[ao.Event]:
    """The same events (ids and times fixed) for each protocol's session."""
    events: list[ao.Event] = [
        ao.LLMEvent(
            model="gpt-4o-mini",
            prompt=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            completion={"role": "assistant", "content": "hello"},
            prompt_tokens=1_000,
            completion_tokens=500,
            thread_id="conv-1",
            params={"temperature": 0.2},
        ),
        ao.LLMEvent(model="gpt-4o", prompt="plain", completion=["a", {"b": 1}], cost=0.25),
        ao.ToolEvent(name="search", params={"q": "flights"}, returns={"hits": 3}, logs=["l1"]),
        ao.ActionEvent(action_type="plan", params={"step": 1}, returns=None, logs="ok"),
        ao.ApiEvent(method="POST", url="https://example.com/x", status_code=201),
        ao.ErrorEvent(error_type="ValueError", code="E1", details={"why": "bad"}, logs="tb"),
    ]
    for index, event in enumerate(events):
        event.id = f"00000000-0000-4000-8000-{index:012d}"
        event.init_timestamp = T0 + index
        event.end_timestamp = T0 + index + 0.5
        event.params = event.params if event.params is not None else {"tag": tag}
    events[-1].trigger_event_id = events[3].id
    events[-1].trigger_event_type = "actions"
    return events


async def _session_over(collector: Any, protocol: str) -> tuple[str, ao.AsyncClient]:
    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        log_session_stats=False,
        redact_secrets=False,
        protocol=protocol,
    )
    session = client.session(tags=["compare", "first"])
    async with session:
        agent = session.create_agent("planner")
        for event in _events("same"):
            event.agent_id = agent if event.event_type == "tools" else None
            await session.record(event)
        session.add_tags(["later"])
        assert client._exporter.target.name == protocol  # type: ignore[union-attr]
        await session.end("Fail", end_state_reason="the plan failed")
    assert await client.close()
    assert client.stats.dropped == 0 and client.stats.delivered == 6
    return session.session_id, client


def _comparable_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events without what names the session (its id and trace), which differ by design."""
    return sorted(
        ({k: v for k, v in e.items() if k not in ("session_id", "trace_id", "agent_id")}
         for e in events),
        key=lambda e: e["id"],
    )  # fmt: skip


SESSION_FIELDS = ("tags", "state", "end_state", "end_state_reason", "token_cost", "host_env")


async def test_a_session_is_stored_the_same_over_otlp_as_over_the_v2_api(collector: Any) -> None:
    stored: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for protocol in ("agentops_v2", "otlp"):
        session_id, _ = await _session_over(collector, protocol)
        session = await collector.get_session(session_id)
        assert session is not None, protocol
        assert session["id"] == session_id  # the id the user saw, not one made from the trace
        stored[protocol] = (session, await collector.get_events(session_id))

    (v2_session, v2_events), (otlp_session, otlp_events) = stored["agentops_v2"], stored["otlp"]
    assert len(v2_events) == 6
    assert _comparable_events(otlp_events) == _comparable_events(v2_events)
    for field in SESSION_FIELDS:
        assert otlp_session.get(field) == v2_session.get(field), field
    assert otlp_session["tags"] == ["compare", "first", "later"]
    assert (otlp_session["end_state"], otlp_session["end_state_reason"]) == (
        "Fail",
        "the plan failed",
    )
    assert float(otlp_session["token_cost"]) > 0.25  # the LLM calls priced, plus the given cost


async def test_a_running_session_shows_with_its_tags_before_its_root_arrives(
    collector: Any,
) -> None:
    client = ao.AsyncClient(
        api_key=collector.api_key,
        endpoint=collector.url,
        log_session_stats=False,
        protocol="otlp",
    )
    try:
        async with client.session(tags=["running"]) as session:
            assert client._exporter.target.name == "otlp"  # type: ignore[union-attr]
            await session.record(ao.ActionEvent(action_type="step"))
            assert await session.flush(10)
            running = await collector.get_session(session.session_id)
            assert running is not None
            assert (running["state"], running["tags"]) == ("RUNNING", ["running"])
            assert running["end_timestamp"] is None
            session.add_tags(["more"])
            await session.record(ao.ActionEvent(action_type="step 2"))
            assert await session.flush(10)
            running = await collector.get_session(session.session_id)
            assert running is not None and running["tags"] == ["running", "more"]
            assert [e["action_type"] for e in await collector.get_events(session.session_id)] == [
                "step",
                "step 2",
            ]
    finally:
        assert await client.close()
    ended = await collector.get_session(session.session_id)
    assert ended is not None and (ended["state"], ended["end_state"]) == ("SUCCEEDED", "Success")


async def test_the_collector_keeps_markers_out_of_events_and_completes_the_session_by_its_root(
    collector: Any,
) -> None:
    """The OTLP route on this SDK's encoding alone (no exporter): the session is named by
    ``agentops.session.id``, RUNNING with the marker's tags, an agent marker and the root are
    session state, not events; events keep their ids."""
    from agentops_async.events import _wire_events
    from agentops_async.telemetry import _otlp_encode as otlp
    from agentops_async.telemetry._targets import AgentSnapshot, SessionSnapshot

    session_id, trace_id, root = str(uuid.uuid4()), uuid.uuid4().hex, uuid.uuid4().hex[:16]
    start = SessionSnapshot(
        session_id=session_id,
        trace_id=trace_id,
        span_id=root,
        init_timestamp="2026-11-30T12:00:00+00:00",
        tags=["a", "b"],
    )
    event = ao.ActionEvent(action_type="step", params={"i": 1})
    event._check(T0 + 1)
    run = otlp.encode_events(session_id, trace_id, _wire_events([event], session_id, trace_id))
    agent = otlp.agent_span(AgentSnapshot(session_id=session_id, agent_id="a1", name="p"), start)
    headers = {"X-Agentops-Api-Key": collector.api_key, "Content-Type": "application/json"}

    body = otlp.request_body([otlp.session_span(start, False), agent], [otlp.with_root(run, root)])
    answer = await collector.request("POST", "/v1/traces", data=body, headers=headers)
    assert answer.status == 200 and answer.body == {}
    running = await collector.get_session(session_id)
    assert running is not None
    assert (running["state"], running["tags"], running["trace_id"]) == (
        "RUNNING", ["a", "b"], trace_id,
    )  # fmt: skip
    assert [e["id"] for e in await collector.get_events(session_id)] == [event.id]

    ended = msgspec.structs.replace(
        start, end_timestamp="2026-11-30T12:00:09+00:00", state="FAILED", end_state_reason="x"
    )
    body = otlp.request_body([otlp.session_span(ended, True)], [])
    answer = await collector.request("POST", "/v1/traces", data=body, headers=headers)
    assert answer.status == 200
    done = await collector.get_session(session_id)
    assert done is not None
    assert (done["state"], done["end_state"], done["end_state_reason"]) == ("FAILED", "Fail", "x")
    assert done["end_timestamp"].startswith("2026-11-30T12:00:09")
    assert [e["id"] for e in await collector.get_events(session_id)] == [event.id]


async def test_two_sessions_with_the_same_trace_id_stay_apart(collector: Any) -> None:
    """OpenTelemetry's ids come from `random`: an application that seeds it (``random.seed(42)``
    in every run) repeats trace ids. Spans naming their session still go to it."""
    from agentops_async.events import _wire_events
    from agentops_async.telemetry import _otlp_encode as otlp
    from agentops_async.telemetry._targets import SessionSnapshot

    trace_id, root = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    headers = {"X-Agentops-Api-Key": collector.api_key, "Content-Type": "application/json"}
    ids = []
    for run in range(2):
        session_id = str(uuid.uuid4())
        ids.append(session_id)
        snapshot = SessionSnapshot(session_id=session_id, trace_id=trace_id, span_id=root,
                                   init_timestamp="2026-11-30T12:00:00+00:00",
                                   end_timestamp="2026-11-30T12:00:01+00:00",
                                   state="SUCCEEDED", tags=[f"run-{run}"])  # fmt: skip
        event = ao.ActionEvent(action_type=f"run-{run}")
        event._check(T0)
        wired = _wire_events([event], session_id, trace_id)
        run_body = otlp.with_root(otlp.encode_events(session_id, trace_id, wired), root)
        body = otlp.request_body([otlp.session_span(snapshot, True)], [run_body])
        answer = await collector.request("POST", "/v1/traces", data=body, headers=headers)
        assert answer.status == 200 and answer.body == {}
    for run, session_id in enumerate(ids):
        stored = await collector.get_session(session_id)
        assert stored is not None and stored["tags"] == [f"run-{run}"]
        events = await collector.get_events(session_id)
        assert [e["action_type"] for e in events] == [f"run-{run}"]
