"""The session's root span and the capture of spans started inside a session."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import agentops_async as ao

from .fake_api import FakeApi

pytestmark = pytest.mark.asyncio


def sdk_provider() -> TracerProvider:
    """The application's global SDK provider (OTel allows setting it once per process)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    return provider


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
