"""The OTLP/JSON encoding of sessions and events (telemetry/_otlp_encode.py).

Each request is decoded with ``opentelemetry-proto`` (``google.protobuf.json_format.Parse``), as
any OTLP receiver would, and read back through our collector's decoder and the shared span
mapping, which must give the very events the v2 API sends.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import msgspec
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentops_async._spans import FinishedSpan, is_marker, map_span, span_event_id
from agentops_async.collector._otlp import decode_json_request
from agentops_async.events import (
    ActionEvent,
    ApiEvent,
    ErrorEvent,
    Event,
    LLMEvent,
    ToolEvent,
    _encode_event,
    _wire_events,
)
from agentops_async.telemetry import _otlp_encode as otlp
from agentops_async.telemetry._targets import AgentSnapshot, SessionSnapshot

S1 = "3f0c0b8e-1d2a-4c5e-9f00-0000000000a1"
S2 = "3f0c0b8e-1d2a-4c5e-9f00-0000000000a2"
T1, R1 = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
T2, R2 = "1af7651916cd43dd8448eb211c80319c", "c7ad6b7169203331"
START = "2026-11-30T16:00:00.123456+00:00"
END = "2026-11-30T16:00:05.654321+00:00"


def _snapshot(session_id: str, trace_id: str, root: str, **kw: Any) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id, trace_id=trace_id, span_id=root, init_timestamp=START, **kw
    )


def _events() -> list[Event]:
    """One event of each type, with the shapes of prompt and completion the encoding treats
    differently (chat messages, text, other values)."""
    events: list[Event] = [
        LLMEvent(
            model="gpt-4o-mini",
            prompt=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            completion={"role": "assistant", "content": "hello", "finish_reason": "stop"},
            prompt_tokens=12,
            completion_tokens=3,
            thread_id="conv-1",
            params={"temperature": 0.2},
            agent_id="agent-7",
        ),
        LLMEvent(model="m", prompt="plain text", completion="[not json"),
        LLMEvent(prompt={"odd": [1, 2]}, completion=[{"role": "assistant", "content": "one"}]),
        LLMEvent(cost=0.5, completion=[{"role": "assistant", "tool_calls": [{"id": "c1"}]}]),
        ActionEvent(action_type="search", params={"q": "weather"}, returns=[1, "two", None]),
        ActionEvent(logs={"lines": ["a", "b"]}, screenshot="data:image/png;base64,AAAA"),
        ToolEvent(name="calculator", params={"x": 2}, returns={"result": 4}, logs="ok"),
        ApiEvent(method="GET", url="https://example.com/a?b=1", status_code=200),
        ErrorEvent(error_type="ValueError", code="E1", details="bad input", logs="Traceback..."),
        ErrorEvent(details={"nested": {"deep": True}}),
    ]
    for index, event in enumerate(events):
        event.init_timestamp = 1_790_000_000.0 + index * 0.001001
        event._check(1_790_000_000.25)
    events[-1].trigger_event_id = events[4].ensure_id()
    events[-1].trigger_event_type = "actions"
    return events


def _v2_json(events: list[Event], session_id: str, trace_id: str) -> list[dict[str, Any]]:
    wired = _wire_events(events, session_id, trace_id)
    return [json.loads(_encode_event(e)) for e in wired if isinstance(e, Event)]


_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids_to_base64(node: Any) -> Any:
    """OTLP/JSON ids are hex (a deviation from the protobuf JSON mapping, which has base64)."""
    if isinstance(node, list):
        return [_hex_ids_to_base64(n) for n in node]
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in _ID_KEYS and isinstance(v, str)
            else _hex_ids_to_base64(v)
            for k, v in node.items()
        }
    return node


def parse_otlp_json(body: bytes) -> ExportTraceServiceRequest:
    """An OTLP/JSON body as the protobuf message, as an OTLP receiver decodes it."""
    request = ExportTraceServiceRequest()
    json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), request)
    return request


def _spans(request: ExportTraceServiceRequest) -> list[Any]:
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def _attrs(span: Any) -> dict[str, Any]:
    return {
        kv.key: json_format.MessageToDict(kv.value)
        for kv in span.attributes  # {"stringValue": ...} and so on
    }


def _stored_events(body: bytes, session_id: str) -> dict[str, dict[str, Any]]:
    """What the collector's OTLP ingest stores of ``body`` for ``session_id``: each non-marker
    span mapped to events, stamped and encoded the way the route does."""
    decoded = decode_json_request(body)
    assert decoded.rejected == 0, decoded.reason
    out: dict[str, dict[str, Any]] = {}
    for span in decoded.spans:
        if is_marker(span):
            continue
        for event in _wire_events(map_span(span), session_id, span.trace_id):
            assert isinstance(event, Event)
            out[event.id or ""] = json.loads(_encode_event(event))
    return out


def test_a_batch_mixing_two_sessions_decodes_as_otlp_with_one_tree_per_session() -> None:
    first, second = _events(), [ActionEvent(action_type="step")]
    second[0]._check(1_790_000_001.0)
    run1 = otlp.with_root(otlp.encode_events(S1, T1, _wire_events(first, S1, T1)), R1)
    run2 = otlp.with_root(otlp.encode_events(S2, T2, _wire_events(second, S2, T2)), R2)
    links = [("2af7651916cd43dd8448eb211c80319c", "d7ad6b7169203331")]
    ended = _snapshot(S2, T2, R2, end_timestamp=END, state="SUCCEEDED", tags=["b"], links=links)
    body = otlp.request_body(
        [otlp.session_span(_snapshot(S1, T1, R1, tags=["a"]), final=False),
         otlp.session_span(ended, final=True)],
        [run1, run2],
    )  # fmt: skip

    request = parse_otlp_json(body)
    spans = _spans(request)
    assert len(spans) == 2 + len(first) + 1
    by_trace: dict[str, list[Any]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id.hex(), []).append(span)
    assert set(by_trace) == {T1, T2}
    # Session 1 runs: a marker under its (not yet sent) root, every event a child of the root.
    assert all(s.parent_span_id.hex() == R1 for s in by_trace[T1])
    marker = next(s for s in by_trace[T1] if s.name == "agentops.session.update")
    assert _attrs(marker)["agentops.tags"] == {"arrayValue": {"values": [{"stringValue": "a"}]}}
    # Session 2 ended: its root has no parent, its own span id, the end state and the link.
    root = next(s for s in by_trace[T2] if s.name == "agentops.session")
    assert root.span_id.hex() == R2 and not root.parent_span_id
    assert root.status.code == 1  # OK
    assert _attrs(root)["agentops.session.end_state"] == {"stringValue": "Success"}
    assert _attrs(root)["agentops.session.id"] == {"stringValue": S2}
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in root.links] == links
    start = int(datetime.fromisoformat(START).timestamp()) * 10**9 + 123_456_000
    assert root.start_time_unix_nano == start  # exact to the microsecond
    assert root.end_time_unix_nano == start + 5 * 10**9 + 530_865_000
    step = next(s for s in by_trace[T2] if s.name == "step")
    assert step.parent_span_id.hex() == R2


def test_llm_and_tool_events_carry_the_genai_semantic_conventions() -> None:
    events = _events()
    body = otlp.request_body([], [otlp.with_root(otlp.encode_events(S1, T1, events), R1)])
    spans = {s.name: s for s in _spans(parse_otlp_json(body))}

    llm = _attrs(spans["chat gpt-4o-mini"])
    assert spans["chat gpt-4o-mini"].kind == 3  # CLIENT
    assert llm["gen_ai.operation.name"] == {"stringValue": "chat"}
    assert (
        llm["gen_ai.request.model"]
        == llm["gen_ai.response.model"]
        == {"stringValue": "gpt-4o-mini"}
    )
    assert llm["gen_ai.usage.input_tokens"] == {"intValue": "12"}
    assert llm["gen_ai.usage.output_tokens"] == {"intValue": "3"}
    assert llm["gen_ai.conversation.id"] == {"stringValue": "conv-1"}
    assert json.loads(llm["gen_ai.input.messages"]["stringValue"])[1] == {
        "role": "user", "parts": [{"type": "text", "content": "hi"}]
    }  # fmt: skip
    assert json.loads(llm["gen_ai.output.messages"]["stringValue"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hello"}],
         "finish_reason": "stop"}
    ]  # fmt: skip
    assert llm["agentops.event.type"] == {"stringValue": "llms"}
    assert llm["agentops.agent.id"] == {"stringValue": "agent-7"}
    assert json.loads(llm["agentops.params"]["stringValue"]) == {"temperature": 0.2}

    tool = _attrs(spans["execute_tool calculator"])
    assert tool["gen_ai.operation.name"] == {"stringValue": "execute_tool"}
    assert tool["gen_ai.tool.name"] == {"stringValue": "calculator"}
    assert json.loads(tool["agentops.returns"]["stringValue"]) == {"result": 4}

    error = spans["ValueError"]
    assert error.status.code == 2 and error.status.message == "bad input"
    assert _attrs(error)["error.type"] == {"stringValue": "ValueError"}
    assert _attrs(spans["GET"])["http.response.status_code"] == {"intValue": "200"}


def test_the_collector_stores_the_same_events_from_otlp_as_from_v2() -> None:
    v2 = _v2_json(_events(), S1, T1)
    events = _events()
    for mine, theirs in zip(events, v2, strict=True):
        mine.id = theirs["id"]  # the same recorded events
    if events[-1].trigger_event_id is not None:
        events[-1].trigger_event_id = v2[4]["id"]
    run = otlp.encode_events(S1, T1, _wire_events(events, S1, T1))
    body = otlp.request_body([], [otlp.with_root(run, R1)])

    stored = _stored_events(body, S1)
    assert list(stored) == [e["id"] for e in v2]
    for expected in v2:
        assert stored[expected["id"]] == expected


def test_events_encoded_by_another_thread_are_sent_as_the_same_spans() -> None:
    events = _events()
    wired = _wire_events(events, S1, T1)
    raw = [msgspec.Raw(_encode_event(e)) for e in wired if isinstance(e, Event)]
    runs = [otlp.with_root(otlp.encode_events(S1, T1, each), R1) for each in (wired, raw)]
    as_objects, as_raw = (_stored_events(otlp.request_body([], [run]), S1) for run in runs)
    assert len(as_raw) == len(events)
    assert as_raw == as_objects


def test_a_captured_span_is_exported_as_it_was_and_maps_to_the_same_events() -> None:
    span = FinishedSpan(
        trace_id=T1, span_id="00000000000000c1", parent_span_id=R1, name="chat gpt-4o",
        kind="CLIENT", start_ns=1_790_000_000_123_456_000, end_ns=1_790_000_001_000_001_000,
        status_code="ERROR", status_message="rate limited",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 2,
                    "gen_ai.request.stop_sequences": ["a", "b"]},
        resource={"service.name": "my-app"}, scope="opentelemetry.instrumentation.openai_v2",
    )  # fmt: skip
    captured = map_span(span)  # what the SDK's capture records: an LLMEvent and an ErrorEvent
    assert [e.event_type for e in captured] == ["llms", "errors"]
    v2 = _v2_json(map_span(span), S1, T1)

    body = otlp.request_body([], [otlp.with_root(otlp.encode_events(S1, T1, captured), R1)])
    request = parse_otlp_json(body)
    (sent,) = _spans(request)  # one span: the ErrorEvent rides on its ERROR status
    assert sent.span_id.hex() == span.span_id and sent.parent_span_id.hex() == R1
    assert request.resource_spans[0].scope_spans[0].scope.name == span.scope
    stored = _stored_events(body, S1)
    assert stored == {e["id"]: e for e in v2}
    ids = {span_event_id(T1, span.span_id), span_event_id(T1, span.span_id, "error")}
    assert set(stored) == ids


def test_an_agent_is_a_marker_span_naming_its_id_and_name() -> None:
    session = _snapshot(S1, T1, R1)
    span = otlp.agent_span(AgentSnapshot(session_id=S1, agent_id="a-1", name="planner"), session)
    body = otlp.request_body([span], [])
    (decoded,) = decode_json_request(body).spans
    assert is_marker(decoded) and decoded.parent_span_id == R1
    assert decoded.attributes["agentops.agent.name"] == "planner"


@pytest.mark.parametrize("trace_id", [None, ""])
def test_a_session_whose_trace_is_unknown_gets_one_from_its_id(trace_id: str | None) -> None:
    event = ActionEvent(action_type="x")
    event._check(1.0)
    run = otlp.encode_events(S1, trace_id, _wire_events([event], S1, None))
    body = otlp.request_body([], [otlp.with_root(run, otlp.fallback_root(S1))])
    (span,) = decode_json_request(body).spans
    assert span.trace_id == S1.replace("-", "")
    assert span.parent_span_id == otlp.fallback_root(S1)
