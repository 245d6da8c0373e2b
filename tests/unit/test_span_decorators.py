"""The AgentOps 0.4 decorators (agentops_async.decorators): spans of the session's trace that
nest through parent span ids, inputs and outputs (bounded), errors; against the fake API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from _tracing import sdk_provider
from opentelemetry import trace

import agentops_async as ao

from .fake_api import FakeApi

pytestmark = pytest.mark.asyncio


def decorators() -> Any:
    from agentops_async import decorators

    return decorators


def root_span_id() -> str:
    session = ao.get_current_session()
    assert session is not None and session.span is not None
    return trace.format_span_id(session.span.get_span_context().span_id)


def by_name(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["params"]["name"]: e for e in events if isinstance(e.get("params"), dict)}


async def test_tool_in_operation_in_agent_nest_by_parent_span_id(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    d = decorators()

    @d.tool(cost=0.25)
    def search(query: str, limit: int = 2) -> list[str]:
        return [f"{query}-{i}" for i in range(limit)]

    @d.operation
    def plan(goal: str) -> list[str]:
        return search(goal)

    class Researcher:
        @d.agent(name="researcher")
        async def run(self, goal: str) -> list[str]:
            await asyncio.sleep(0)
            return plan(goal)

    roots: list[str] = []

    @d.session(client=client, tags=["decorated"])
    async def main(goal: str) -> list[str]:
        roots.append(root_span_id())
        return await Researcher().run(goal)

    assert await main("weather") == ["weather-0", "weather-1"]
    await client.flush(5)
    ((session_id, events),) = api.events.items()
    assert api.sessions[session_id]["tags"] == ["decorated"]
    assert api.sessions[session_id]["end_state"] == "Success"
    spans = by_name(events)
    agent = spans["researcher"]
    op = next(s for n, s in spans.items() if n.endswith(".plan"))
    tool = next(s for n, s in spans.items() if n.endswith(".search"))
    assert (agent["event_type"], op["event_type"], tool["event_type"]) == (
        "actions",
        "actions",
        "tools",
    )
    assert agent["params"]["span_kind"] == "agent" and op["params"]["span_kind"] == "operation"
    assert agent["params"]["parent_span_id"] == roots[0]
    assert op["params"]["parent_span_id"] == agent["span_id"]
    assert tool["params"]["parent_span_id"] == op["span_id"]
    assert len({agent["trace_id"], op["trace_id"], tool["trace_id"]}) == 1
    assert tool["name"].endswith("search")
    assert tool["params"]["cost"] == 0.25
    assert tool["params"]["input"] == {"query": "weather", "limit": 2}
    assert tool["returns"] == ["weather-0", "weather-1"]
    assert agent["params"]["input"] == {"goal": "weather"}  # self left out


async def test_generators_are_spans_over_their_iteration_and_parent_calls_made_inside(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    d = decorators()

    @d.tool
    def lookup(word: str) -> str:
        return word.upper()

    @d.task
    def words(n: int) -> Iterator[str]:
        for i in range(n):
            yield lookup(f"w{i}")

    @d.workflow(name="flow")
    async def stream(n: int) -> AsyncIterator[str]:
        for word in words(n):
            await asyncio.sleep(0)
            yield word

    async with client.session() as session:
        assert [w async for w in stream(2)] == ["W0", "W1"]
        between = ao.ToolEvent(name="outside")  # recorded between two steps: no parent span
        await session.record(between)
    await client.flush(5)
    events = api.events[session.session_id]
    spans = by_name(events)
    flow = spans["flow"]
    task = next(s for n, s in spans.items() if n.endswith("words"))
    tools = [e for e in events if e.get("name", "").endswith("lookup")]
    assert flow["params"]["span_kind"] == "workflow" and flow["returns"] == "W0W1"
    assert task["params"]["parent_span_id"] == flow["span_id"]
    assert task["params"]["span_kind"] == "task" and task["returns"] == "W0W1"
    assert [t["params"]["parent_span_id"] for t in tools] == [task["span_id"]] * 2


async def test_an_exception_marks_the_span_records_a_linked_error_and_propagates(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    d = decorators()

    @d.tool
    async def fetch(url: str) -> str:
        raise ConnectionError(f"cannot reach {url}")

    @d.session(client=client)
    async def main() -> None:
        await fetch("http://x")

    with pytest.raises(ConnectionError, match="cannot reach"):
        await main()
    await client.flush(5)
    ((session_id, events),) = api.events.items()
    tool = next(e for e in events if e["event_type"] == "tools")
    errors = [e for e in events if e["event_type"] == "errors"]
    assert tool["params"]["status"] == "ERROR"
    assert tool["params"]["status_description"] == "ConnectionError: cannot reach http://x"
    assert tool["returns"] is None
    assert errors[0]["trigger_event_id"] == tool["id"]
    assert errors[0]["error_type"] == "ConnectionError"
    assert api.sessions[session_id]["end_state"] == "Fail"  # the session failed with it


async def test_inputs_and_outputs_are_cut_to_the_documented_size(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    d = decorators()
    cap = d.MAX_IO_BYTES

    @d.operation
    def echo(blob: str, items: list[int]) -> dict[str, Any]:
        return {"blob": blob, "items": items}

    async with client.session() as session:
        echo("x" * (cap * 2), list(range(5)))
    await client.flush(5)
    (event,) = api.events[session.session_id]
    recorded_input, output = event["params"]["input"], event["returns"]
    assert isinstance(recorded_input, str) and isinstance(output, str)
    assert recorded_input.startswith('{"blob":"xxx') and "...<truncated: " in recorded_input
    assert len(recorded_input.encode()) < cap + 40
    assert len(output.encode()) < cap + 40


async def test_otel_spans_started_inside_a_decorated_call_are_its_children(
    api: FakeApi, client: ao.AsyncClient
) -> None:
    d = decorators()
    tracer = sdk_provider().get_tracer("llm-instrumentation")

    @d.agent(name="writer")
    def write() -> str:
        with tracer.start_as_current_span("chat gpt-4o"):
            return "text"

    async with client.session() as session:
        write()
    await client.flush(5)
    events = api.events[session.session_id]
    writer = by_name(events)["writer"]
    captured = next(e for e in events if e["params"].get("name") == "chat gpt-4o")
    assert captured["params"]["parent_span_id"] == writer["span_id"]
    assert captured["trace_id"] == writer["trace_id"] == session.trace_id


async def test_with_no_session_the_decorated_function_runs_unrecorded(api: FakeApi) -> None:
    d = decorators()

    @d.tool(cost=1)
    async def add(a: int, b: int) -> int:
        return a + b

    assert await add(1, 2) == 3
    assert not api.events


async def test_decorating_a_class_or_a_bad_cost_is_refused_clearly() -> None:
    d = decorators()
    with pytest.raises(TypeError, match="not classes"):

        @d.agent
        class Agent:
            pass

    with pytest.raises(TypeError, match=r"cost=\.\.\.\) must be a number"):
        d.tool(cost="cheap")


async def test_the_package_exposes_trace_and_keeps_the_session_subpackage() -> None:
    import agentops_async.session as session_package

    d = decorators()
    assert ao.trace is d.session and d.trace is d.session
    assert ao.session is session_package  # not shadowed by the decorator
    assert {"decorators", "trace"} <= set(ao.__all__)
