"""OTLP/HTTP trace ingest and the read API of the collector."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest
from _servers import CollectorHandle

from agentops_async._spans import span_event_id

pytestmark = pytest.mark.asyncio


def _pb_request(trace_id: str, spans: list[tuple[str, str | None, str]]) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    now = time.time_ns()
    pb_spans = [
        Span(
            trace_id=bytes.fromhex(trace_id),
            span_id=bytes.fromhex(span_id),
            parent_span_id=bytes.fromhex(parent) if parent else b"",
            name=name,
            kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1_000_000,
            attributes=[
                KeyValue(key="gen_ai.request.model", value=AnyValue(string_value="gpt-4o")),
                KeyValue(key="retries", value=AnyValue(int_value=2)),
            ],
        )
        for span_id, parent, name in spans
    ]
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [
                    KeyValue(key="service.name", value=AnyValue(string_value="svc"))
                ]},
                scope_spans=[ScopeSpans(scope={"name": "tests"}, spans=pb_spans)],
            )
        ]
    )  # fmt: skip
    return request.SerializeToString()


def _json_request(trace_id: str, span_id: str, name: str) -> dict[str, Any]:
    now = time.time_ns()
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "tests", "version": "1"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": name,
                                "kind": 1,
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 5_000),
                                "attributes": [
                                    {"key": "ok", "value": {"boolValue": True}},
                                    {"key": "n", "value": {"intValue": "7"}},
                                ],
                                "status": {"code": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }


async def test_otlp_protobuf_spans_are_stored_under_their_session(
    collector: CollectorHandle,
) -> None:
    trace_id = os.urandom(16).hex()
    session_id, _ = await collector.v2_create_session(trace_id=trace_id)
    body = _pb_request(
        trace_id,
        [("00000000000000a1", None, "root"), ("00000000000000a2", "00000000000000a1", "child")],
    )
    headers = {"Content-Type": "application/x-protobuf", "X-Agentops-Api-Key": collector.api_key}
    answer = await collector.request("POST", "/v1/traces", data=body, headers=headers)
    assert answer.status == 200
    # the same export again (an exporter retry) is stored once
    await collector.request("POST", "/v1/traces", data=body, headers=headers)

    spans = await collector.get_events(session_id)
    assert [s["params"]["name"] for s in spans] == ["root", "child"]
    child = spans[1]
    # a span with a model and a provider-less name is a plain span action (no gen_ai.system)
    assert child["event_type"] == "actions"
    assert child["id"] == span_event_id(trace_id, "00000000000000a2")
    assert child["trace_id"] == trace_id
    assert child["span_id"] == "00000000000000a2"
    assert child["params"]["parent_span_id"] == "00000000000000a1"
    assert child["params"]["attributes"] == {"gen_ai.request.model": "gpt-4o", "retries": 2}
    assert child["params"]["resource"] == {"service.name": "svc"}
    assert (await collector.get_session(session_id) or {})["event_counts"] == {"actions": 2}


async def test_otlp_json_spans_and_unknown_traces(collector: CollectorHandle) -> None:
    trace_id = os.urandom(16).hex()
    session_id, _ = await collector.v2_create_session(trace_id=trace_id)
    headers = {"Authorization": f"Bearer {collector.api_key}"}
    answer = await collector.request(
        "POST", "/v1/traces", json_body=_json_request(trace_id, "00000000000000b1", "j"),
        headers=headers,
    )  # fmt: skip
    assert answer.status == 200
    assert answer.body == {}
    # a trace no session names becomes a session of its own (id: the trace id as a UUID)
    stranger_trace = os.urandom(16).hex()
    stranger = _json_request(stranger_trace, "00000000000000b2", "new")
    answer = await collector.request("POST", "/v1/traces", json_body=stranger, headers=headers)
    assert answer.status == 200
    assert answer.body == {}
    made = await collector.get_session(str(uuid.UUID(hex=stranger_trace)))
    assert made is not None and made["state"] == "SUCCEEDED"  # its root's status is OK

    (span,) = await collector.get_events(session_id)
    assert span["params"]["name"] == "j"
    assert span["params"]["attributes"] == {"ok": True, "n": 7}
    assert span["params"]["status"] == "OK"
    # a v2 session keeps its own lifecycle: a root span of its trace does not end it
    assert (await collector.get_session(session_id) or {})["state"] == "RUNNING"


async def test_otlp_needs_a_key_of_the_sessions_project(collector: CollectorHandle) -> None:
    trace_id = os.urandom(16).hex()
    session_id, _ = await collector.v2_create_session(trace_id=trace_id)
    body = _json_request(trace_id, "00000000000000c1", "x")
    assert (await collector.request("POST", "/v1/traces", json_body=body)).status == 401
    other_key = collector.new_api_key()
    other = {"X-Agentops-Api-Key": other_key}
    answer = await collector.request("POST", "/v1/traces", json_body=body, headers=other)
    assert answer.status == 200
    # the other project gets a session of its own for the trace; this one's stays empty
    assert await collector.get_events(session_id) == []
    bad = await collector.request(
        "POST", "/v1/traces", data=b"\x00garbage", headers={
            "Content-Type": "application/x-protobuf", "X-Agentops-Api-Key": collector.api_key}
    )  # fmt: skip
    assert bad.status == 400


async def _make_sessions(collector: CollectorHandle) -> dict[str, str]:
    ids = {}
    for name, tags, end_state in [
        ("ok1", ["alpha"], "Success"),
        ("ok2", ["alpha", "beta"], "Success"),
        ("failed", ["beta"], "Fail"),
        ("unsure", [], "Indeterminate"),
        ("running", ["alpha"], None),
    ]:
        session_id, jwt = await collector.v2_create_session(tags=tags)
        ids[name] = session_id
        if end_state:
            end = {"end_state": end_state, "end_timestamp": "2099-01-01T00:00:00+00:00"}
            await collector.v2_post("update_session", {"session": end}, jwt=jwt)
    return ids


async def test_read_api_filters_sessions(collector: CollectorHandle) -> None:
    ids = await _make_sessions(collector)

    async def listed(**filters: Any) -> set[str]:
        return {s["id"] for s in await collector.list_sessions(**filters)}

    assert await listed() == set(ids.values())
    assert await listed(tag="alpha") == {ids["ok1"], ids["ok2"], ids["running"]}
    assert await listed(tag="beta", state="succeeded") == {ids["ok2"]}
    assert await listed(state="Fail") == {ids["failed"]}
    assert await listed(state="running") == {ids["running"]}
    assert await listed(state="indeterminate") == {ids["unsure"]}
    assert await listed(since=time.time() - 600) == set(ids.values())
    assert await listed(since="2099-01-01T00:00:00Z") == set()
    assert await listed(until=time.time() - 600) == set()
    bad = await collector.request(
        "GET", "/api/sessions?state=sleepy", headers={"X-Agentops-Api-Key": collector.api_key}
    )
    assert bad.status == 400


async def test_read_api_paginates_sessions_newest_first(collector: CollectorHandle) -> None:
    created = [(await collector.v2_create_session())[0] for _ in range(7)]
    headers = {"X-Agentops-Api-Key": collector.api_key}
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        path = "/api/sessions?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = (await collector.request("GET", path, headers=headers)).body
        seen += [s["id"] for s in page["sessions"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == created[::-1]


async def test_read_api_paginates_events(collector: CollectorHandle) -> None:
    session_id, jwt = await collector.v2_create_session()
    events = [
        {"id": f"e{i:04d}", "event_type": "actions" if i % 2 else "tools", "n": i}
        for i in range(25)
    ]
    await collector.v2_post("create_events", {"events": events}, jwt=jwt)
    headers = {"X-Agentops-Api-Key": collector.api_key}
    page = await collector.request(
        "GET", f"/api/sessions/{session_id}/events?limit=10", headers=headers
    )
    assert [e["n"] for e in page.body["events"]] == list(range(10))
    nxt = page.body["next_cursor"]
    page2 = await collector.request(
        "GET", f"/api/sessions/{session_id}/events?limit=10&cursor={nxt}", headers=headers
    )
    assert [e["n"] for e in page2.body["events"]] == list(range(10, 20))
    assert [e["n"] for e in await collector.get_events(session_id)] == list(range(25))
    tools = await collector.get_events(session_id, event_type="tools")
    assert [e["n"] for e in tools] == list(range(0, 25, 2))


@pytest.mark.parametrize(
    "path",
    [
        "/api/sessions/not-a-uuid",
        "/api/sessions/..%2F..%2Fetc%2Fpasswd",
        "/api/sessions/%00",
        "/api/sessions/not-a-uuid/events",
        "/api/sessions?limit=0",
        "/api/sessions?limit=abc",
        "/api/sessions?cursor=-1",
    ],
)
async def test_read_api_rejects_garbage(collector: CollectorHandle, path: str) -> None:
    answer = await collector.request("GET", path, headers={"X-Agentops-Api-Key": collector.api_key})
    assert answer.status == 400
    assert "message" in answer.body


async def test_read_api_needs_a_key(collector: CollectorHandle) -> None:
    session_id, _ = await collector.v2_create_session()
    for headers in ({}, {"X-Agentops-Api-Key": str(uuid.uuid4())}):
        answer = await collector.request("GET", f"/api/sessions/{session_id}", headers=headers)
        assert answer.status == 401
    assert (await collector.request("GET", "/api/sessions")).status == 401
    missing = await collector.get_session(str(uuid.uuid4()))
    assert missing is None
