"""The session's root span and the capture of spans started inside a session."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from _tracing import sdk_provider
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

import agentops_async as ao
from agentops_async.telemetry._otel import router

from .fake_api import FakeApi

pytestmark = pytest.mark.asyncio


async def test_user_spans_inside_a_session_are_its_children_and_are_captured(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    tracer = sdk_provider().get_tracer("user-code")
    async with client.session() as session:
        root = trace.get_current_span()
        assert trace.format_trace_id(root.get_span_context().trace_id) == session.trace_id
        with tracer.start_as_current_span("retrieve", attributes={"k": 3}) as span:
            span.add_event("cache miss")
            child_id = trace.format_span_id(span.get_span_context().span_id)

        async def in_a_child_task() -> None:
            with tracer.start_as_current_span("in-task"):
                pass

        await asyncio.create_task(in_a_child_task())
    with tracer.start_as_current_span("outside"):  # after the session: not captured
        pass
    await client.flush(5)
    spans = [e for e in api.events[session.session_id] if e.get("action_type") == "span"]
    assert sorted(e["params"]["name"] for e in spans) == ["in-task", "retrieve"]
    retrieve = next(e for e in spans if e["params"]["name"] == "retrieve")
    assert retrieve["trace_id"] == session.trace_id
    assert retrieve["span_id"] == child_id
    root_id = trace.format_span_id(root.get_span_context().span_id)
    assert retrieve["params"]["parent_span_id"] == root_id
    assert retrieve["params"]["attributes"] == {"k": 3}
    assert retrieve["params"]["events"][0]["name"] == "cache miss"


async def test_spans_from_a_thread_inside_the_session_context_are_captured(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    tracer = sdk_provider().get_tracer("user-code")
    async with client.session() as session:

        def work() -> None:  # to_thread copies the context: the span's parent is the session
            with tracer.start_as_current_span("threaded"):
                pass

        await asyncio.to_thread(work)
    names = [e["params"]["name"] for e in api.events[session.session_id]]
    assert names == ["threaded"]


async def test_two_concurrent_sessions_have_separate_traces(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    tracer = sdk_provider().get_tracer("user-code")

    async def agent(name: str) -> ao.AsyncSession:
        async with client.session() as session:
            await asyncio.sleep(0)
            with tracer.start_as_current_span(name):
                await asyncio.sleep(0)
        return session

    first, second = await asyncio.gather(agent("first"), agent("second"))
    assert first.trace_id != second.trace_id
    assert [e["params"]["name"] for e in api.events[first.session_id]] == ["first"]
    assert [e["params"]["name"] for e in api.events[second.session_id]] == ["second"]


async def test_sessions_opened_under_one_ambient_span_are_traces_of_their_own_linked_to_it(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    tracer = sdk_provider().get_tracer("web-framework")
    both_started = asyncio.Event()
    started: list[ao.AsyncSession] = []

    async def agent(name: str) -> tuple[ao.AsyncSession, ReadableSpan]:
        async with client.session() as session:
            root = session.span
            assert isinstance(root, ReadableSpan)
            started.append(session)
            if len(started) == 2:
                both_started.set()
            await asyncio.wait_for(both_started.wait(), 5)  # both sessions run at once
            with tracer.start_as_current_span(f"{name}-llm-call"):
                await asyncio.sleep(0)
            with tracer.start_as_current_span(f"{name}-tool"):
                await asyncio.sleep(0)
        return session, root

    with tracer.start_as_current_span("POST /chat") as outer:
        outer_ctx = outer.get_span_context()
        (first, first_root), (second, second_root) = await asyncio.gather(
            agent("first"), agent("second")
        )

    outer_trace = trace.format_trace_id(outer_ctx.trace_id)
    assert len({first.trace_id, second.trace_id, outer_trace}) == 3
    for session, root, name in ((first, first_root, "first"), (second, second_root, "second")):
        assert root.parent is None, "a session's root span must start a new trace"
        assert [(link.context.trace_id, link.context.span_id) for link in root.links] == [
            (outer_ctx.trace_id, outer_ctx.span_id)
        ]
        captured = api.events[session.session_id]
        assert sorted(e["params"]["name"] for e in captured) == [f"{name}-llm-call", f"{name}-tool"]
        assert {e["trace_id"] for e in captured} == {session.trace_id}


async def test_captured_spans_are_counted_under_the_event_type_they_map_to(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    tracer = sdk_provider().get_tracer("user-code")
    async with client.session() as session:
        with tracer.start_as_current_span("plan"):
            pass
        llm_attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
        }
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes=llm_attributes):
            pass
        counts = session.event_counts
    assert counts == {"actions": 1, "llms": 1}
    sent = sorted((e["event_type"], e.get("action_type")) for e in api.events[session.session_id])
    assert sent == [("actions", "span"), ("llms", None)]
    assert session.stats.summary().count("LLMs: 1") == 1


async def test_a_span_that_cannot_be_captured_never_raises_into_span_end(
    api: FakeApi, client: ao.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    tracer = sdk_provider().get_tracer("user-code")
    async with client.session() as session:
        with tracer.start_as_current_span("fine"):
            pass
        route = router()._routes[session._span_trace_id]
        route.sink, saved = _refuse, route.sink  # a session that refuses the event
        with (
            caplog.at_level(logging.WARNING, logger="agentops_async"),
            tracer.start_as_current_span("refused"),
        ):
            pass  # the span ends here: the sink raises inside span.end()
        route.sink = saved
    assert [e["params"]["name"] for e in api.events[session.session_id]] == ["fine"]
    assert any("could not capture span 'refused'" in r.getMessage() for r in caplog.records)


def _refuse(event: ao.Event) -> None:
    raise ao.InvalidEvent("refused")


async def test_without_capture_the_root_span_is_a_new_sampled_trace_that_records_nothing(
    api: FakeApi, make_client: Any
) -> None:
    # Nothing can see a root span that no application provider makes: the session keeps only
    # its context (a new trace, current inside the session, parent of the spans started in it).
    client = make_client(instrument_otel=False)
    child_tracer = sdk_provider().get_tracer("app")
    async with client.session() as first:
        root = first.span
        assert root is not None and not root.is_recording()
        root_ctx = root.get_span_context()
        assert root_ctx.is_valid and root_ctx.trace_flags.sampled
        assert trace.get_current_span() is root
        assert first.trace_id == trace.format_trace_id(root_ctx.trace_id)
        with child_tracer.start_as_current_span("step") as child:
            assert isinstance(child, ReadableSpan) and child.parent is not None
            assert child.parent.span_id == root_ctx.span_id
            assert child.context.trace_id == root_ctx.trace_id
        await first.record(ao.ActionEvent(action_type="plan"))
    async with client.session() as second:
        assert second.trace_id != first.trace_id
    assert await client.flush(5)
    await client.close()
    assert [e["trace_id"] for e in api.events[first.session_id]] == [first.trace_id]
