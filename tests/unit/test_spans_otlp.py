"""FinishedSpan.from_otlp and the agentops 0.4 span kinds: the collector's side of the mapping."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from agentops_async._spans import FinishedSpan, map_span, span_event_id
from agentops_async.collector._otlp import decode_json_request


@pytest.fixture
def ended() -> Iterator[list[ReadableSpan]]:
    """Spans of an agentops-0.4-shaped trace, ended by a private OTel SDK provider."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agentops", "0.4")
    with tracer.start_as_current_span("s.session", attributes={"agentops.span.kind": "session"}):
        with tracer.start_as_current_span(
            "search.tool",
            attributes={"agentops.span.kind": "tool", "agentops.entity.input": '{"q": 1}',
                        "agentops.entity.output": "3 hits", "gen_ai.usage.total_cost": 0.5},
        ):  # fmt: skip
            pass
        with tracer.start_as_current_span(
            "plan.task", attributes={"agentops.span.kind": "task"}
        ) as task:
            task.set_status(Status(StatusCode.ERROR, "no plan"))
    yield list(exporter.get_finished_spans())
    provider.shutdown()


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value}


def _otlp_json(spans: list[ReadableSpan]) -> bytes:
    """The OTLP/JSON export of ``spans`` (as an OTel exporter would send it)."""
    out = []
    for span in spans:
        ctx = span.get_span_context()
        out.append(
            {
                "traceId": f"{ctx.trace_id:032x}",
                "spanId": f"{ctx.span_id:016x}",
                "parentSpanId": f"{span.parent.span_id:016x}" if span.parent else "",
                "name": span.name,
                "kind": span.kind.value + 1,  # SDK INTERNAL=0 is OTLP SPAN_KIND_INTERNAL=1
                "startTimeUnixNano": str(span.start_time),
                "endTimeUnixNano": str(span.end_time),
                "attributes": [{"key": k, "value": _value(v)} for k, v in span.attributes.items()],
                "status": {"code": span.status.status_code.value,
                           "message": span.status.description or ""},
            }
        )  # fmt: skip
    resource = [{"key": k, "value": _value(v)} for k, v in spans[0].resource.attributes.items()]
    body = {
        "resourceSpans": [
            {"resource": {"attributes": resource},
             "scopeSpans": [{"scope": {"name": "agentops"}, "spans": out}]}
        ]
    }  # fmt: skip
    return json.dumps(body).encode()


def test_a_span_captured_by_the_sdk_and_exported_over_otlp_makes_the_same_events(
    ended: list[ReadableSpan],
) -> None:
    captured = [map_span(FinishedSpan.from_readable_span(s)) for s in ended]
    received = [map_span(span) for span in decode_json_request(_otlp_json(ended)).spans]
    assert [[e.id for e in events] for events in received] == [
        [e.id for e in events] for events in captured
    ]
    assert msgspec.json.encode(received) == msgspec.json.encode(captured)


def test_agentops_span_kinds_become_tools_and_actions(ended: list[ReadableSpan]) -> None:
    by_name = {s.name: s for s in decode_json_request(_otlp_json(ended)).spans}
    (tool,) = map_span(by_name["search.tool"])
    assert (tool.event_type, tool.name, tool.returns) == ("tools", "search", "3 hits")  # type: ignore[attr-defined]
    assert tool.params["arguments"] == {"q": 1}
    assert tool.params["attributes"]["gen_ai.usage.total_cost"] == 0.5
    task, error = map_span(by_name["plan.task"])
    assert (task.event_type, task.action_type) == ("actions", "task")  # type: ignore[attr-defined]
    assert (error.event_type, error.details) == ("errors", "no plan")  # type: ignore[attr-defined]
    span = by_name["plan.task"]
    assert error.id == span_event_id(span.trace_id, span.span_id, "error")


def test_from_otlp_maps_numbers_to_names_and_empty_values_to_none() -> None:
    span = FinishedSpan.from_otlp(
        trace_id="0AF7651916CD43DD8448EB211C80319C", span_id="B7AD6B7169203331",
        parent_span_id="", name="x", kind=3, start_ns=5, end_ns=0, status_code=2,
        status_message="", attributes={}, scope="",
    )  # fmt: skip
    assert (span.trace_id, span.span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert (span.parent_span_id, span.kind, span.status_code) == (None, "CLIENT", "ERROR")
    assert (span.end_ns, span.status_message, span.scope, span.resource) == (None, None, None, {})
    odd = FinishedSpan.from_otlp(
        trace_id="0" * 31 + "1", span_id="0" * 15 + "1", parent_span_id=None, name="y",
        kind=99, start_ns=1, end_ns=2, status_code=7, status_message=None, attributes={},
    )  # fmt: skip
    assert (odd.kind, odd.status_code) == ("UNSPECIFIED", "UNSET")
