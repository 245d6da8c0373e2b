"""The span-to-event mapping (agentops_async._spans), on spans made by the OTel SDK's tracer."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentops_async as ao
from agentops_async import _spans
from agentops_async._spans import (
    FinishedSpan,
    Mapper,
    map_span,
    span_event_id,
)


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    """A private provider (not the global one) and what it ended."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test.instrumentation", "1.0"), exporter
    provider.shutdown()


def make(
    spans: tuple[trace.Tracer, InMemorySpanExporter],
    name: str,
    attributes: dict[str, Any],
    events: list[tuple[str, dict[str, Any]]] = (),  # type: ignore[assignment]
    error: BaseException | None = None,
) -> FinishedSpan:
    tracer, exporter = spans
    exporter.clear()
    # The SDK records the exception and sets ERROR status; the exception stops here.
    with (
        tracer.start_as_current_span("parent"),
        contextlib.suppress(Exception),
        tracer.start_as_current_span(name, attributes=attributes) as span,
    ):
        for event_name, event_attributes in events:
            span.add_event(event_name, event_attributes)
        if error is not None:
            raise error
    ended: ReadableSpan = next(s for s in exporter.get_finished_spans() if s.name == name)
    return FinishedSpan.from_readable_span(ended)


def test_the_event_id_is_derived_from_the_trace_and_span_ids() -> None:
    trace_hex, span_hex = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    assert span_event_id(trace_hex, span_hex) == "c9a123e2-8bca-5351-9d8a-8fb3ed0ea0a3"
    assert span_event_id(trace_hex.upper(), span_hex.upper()) == span_event_id(trace_hex, span_hex)
    assert span_event_id(trace_hex, span_hex, "error") != span_event_id(trace_hex, span_hex)
    assert span_event_id(trace_hex, "b7ad6b7169203332") != span_event_id(trace_hex, span_hex)


def test_mapping_the_same_span_twice_gives_the_same_events(spans: Any) -> None:
    span = make(spans, "step", {"k": 1}, error=ValueError("bad"))
    first, second = map_span(span), map_span(span)
    assert [e.id for e in first] == [e.id for e in second]
    assert first[0].id == span_event_id(span.trace_id, span.span_id)
    assert first[1].id == span_event_id(span.trace_id, span.span_id, "error")


def test_a_plain_span_is_an_action_event_holding_the_whole_span(spans: Any) -> None:
    span = make(spans, "retrieve", {"k": 3, "tags": ("a", "b")}, events=[("cache miss", {"n": 1})])
    [event] = map_span(span)
    assert isinstance(event, ao.ActionEvent)
    assert (event.event_type, event.action_type) == ("actions", "span")
    assert (event.trace_id, event.span_id) == (span.trace_id, span.span_id)
    params = event.params
    assert params["name"] == "retrieve"
    assert params["kind"] == "INTERNAL"
    assert params["parent_span_id"] == span.parent_span_id is not None
    assert params["attributes"] == {"k": 3, "tags": ["a", "b"]}
    assert params["status"] == "UNSET"
    assert params["events"][0]["name"] == "cache miss"
    assert params["events"][0]["attributes"] == {"n": 1}
    assert params["scope"] == "test.instrumentation"
    assert event.init_timestamp < event.end_timestamp  # type: ignore[operator]


def test_a_genai_chat_span_of_the_current_conventions_is_an_llm_event(spans: Any) -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 21,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.conversation.id": "conv-1",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
        "gen_ai.input.messages": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]
        ),
        "gen_ai.output.messages": json.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": "Rainy, 14 C."}],
                    "finish_reason": "stop",
                }
            ]
        ),
    }
    span = make(spans, "chat gpt-4o", attributes)
    [event] = map_span(span)
    assert isinstance(event, ao.LLMEvent)
    assert event.event_type == "llms"
    assert event.model == "gpt-4o-2024-08-06"
    assert (event.prompt_tokens, event.completion_tokens) == (21, 7)
    assert event.thread_id == "conv-1"
    assert event.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert event.completion == {
        "role": "assistant",
        "content": "Rainy, 14 C.",
        "finish_reason": "stop",
    }
    assert event.params["attributes"]["gen_ai.provider.name"] == "openai"
    assert event.params["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]


def test_a_genai_span_of_the_older_conventions_is_an_llm_event(spans: Any) -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.prompt_tokens": 12,
        "gen_ai.usage.completion_tokens": 3,
    }
    prompt = [{"role": "user", "content": "hi"}]
    events = [
        ("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps(prompt)}),
        ("gen_ai.content.completion", {"gen_ai.completion": "hello"}),
    ]
    [event] = map_span(make(spans, "chat gpt-4o-mini", attributes, events))
    assert isinstance(event, ao.LLMEvent)
    assert event.model == "gpt-4o-mini"
    assert (event.prompt_tokens, event.completion_tokens) == (12, 3)
    assert event.prompt == prompt
    assert event.completion == "hello"


def test_an_openllmetry_span_with_indexed_messages_is_an_llm_event(spans: Any) -> None:
    attributes = {  # no gen_ai.operation.name: OpenLLMetry sets llm.request.type
        "llm.request.type": "chat",
        "gen_ai.system": "Anthropic",
        "gen_ai.request.model": "claude-3-5-haiku",
        "gen_ai.usage.prompt_tokens": 30,
        "gen_ai.usage.completion_tokens": 9,
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "Be brief.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "Hi",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Hello!",
        "gen_ai.completion.0.finish_reason": "end_turn",
    }
    [event] = map_span(make(spans, "anthropic.chat", attributes))
    assert isinstance(event, ao.LLMEvent)
    assert event.model == "claude-3-5-haiku"
    assert (event.prompt_tokens, event.completion_tokens) == (30, 9)
    assert event.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert event.completion == {
        "role": "assistant",
        "content": "Hello!",
        "finish_reason": "end_turn",
    }


def test_an_agent_span_is_not_an_llm_call(spans: Any) -> None:
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.agent.name": "planner",
    }
    [event] = map_span(make(spans, "invoke_agent planner", attributes))
    assert isinstance(event, ao.ActionEvent)
    assert event.action_type == "span"


def test_a_tool_execution_span_is_a_tool_event(spans: Any) -> None:
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.call.arguments": json.dumps({"city": "Paris"}),
        "gen_ai.tool.call.result": json.dumps({"temp": 14}),
    }
    [event] = map_span(make(spans, "execute_tool get_weather", attributes))
    assert isinstance(event, ao.ToolEvent)
    assert event.event_type == "tools"
    assert event.name == "get_weather"
    assert event.params["arguments"] == {"city": "Paris"}
    assert event.returns == {"temp": 14}


def test_an_error_span_also_gives_an_error_event_linked_to_it(spans: Any) -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
    }
    span = make(spans, "chat gpt-4o-mini", attributes, error=TimeoutError("model timed out"))
    assert span.status_code == "ERROR"
    llm, error = map_span(span)
    assert isinstance(llm, ao.LLMEvent)
    assert isinstance(error, ao.ErrorEvent)
    assert error.error_type == "TimeoutError"
    assert error.details == "TimeoutError: model timed out"
    assert error.logs is not None and "TimeoutError" in error.logs
    assert (error.trigger_event_id, error.trigger_event_type) == (llm.id, "llms")
    assert error.id == span_event_id(span.trace_id, span.span_id, "error")
    assert error.span_id == span.span_id


def test_a_failing_mapper_leaves_a_plain_span_event_and_warns_once(
    spans: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(span: FinishedSpan, events: list[ao.Event]) -> list[ao.Event]:
        raise KeyError("surprise")

    chain: tuple[Mapper, ...] = (broken, _spans.map_error)
    span = make(spans, "odd", {})
    with caplog.at_level(logging.WARNING, logger="agentops_async"):
        [first] = map_span(span, chain)
        [second] = map_span(span, chain)
    assert isinstance(first, ao.ActionEvent) and first.action_type == "span"
    assert second.id == first.id
    warnings = [r for r in caplog.records if "span mapper broken failed" in r.getMessage()]
    assert len(warnings) == 1


def test_a_finished_span_travels_as_json_and_maps_the_same(spans: Any) -> None:
    """What the collector does with an OTLP span: build a FinishedSpan from plain values."""
    span = make(spans, "retrieve", {"k": 1}, events=[("e", {"x": "y"})])
    again = msgspec.json.decode(msgspec.json.encode(span), type=FinishedSpan)
    assert again == span
    encoded = [e.prepare("session-1", "0" * 32) for e in map_span(span)]
    assert encoded == [e.prepare("session-1", "0" * 32) for e in map_span(again)]
    sent = json.loads(encoded[0])
    assert (sent["trace_id"], sent["span_id"], sent["session_id"]) == (
        span.trace_id,
        span.span_id,
        "session-1",
    )
    assert _spans.OTLP_KINDS[3] == "CLIENT" and _spans.OTLP_STATUS_CODES[2] == "ERROR"
