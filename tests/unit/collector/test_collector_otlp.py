"""OTLP request decoding."""

from __future__ import annotations

import base64
import json

import pytest

from agentops_async.collector._otlp import (
    decode_json_request,
    decode_protobuf_request,
    encode_response,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


def _json_body(trace_id: str, span_id: str) -> bytes:
    return json.dumps(
        {"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": span_id, "name": "s",
            "startTimeUnixNano": 1_700_000_000_000_000_000,
            "endTimeUnixNano": "1700000000500000000",
            "attributes": [{"key": "list", "value": {"arrayValue": {"values": [
                {"intValue": "1"}, {"stringValue": "b"}]}}},
                {"key": "kv", "value": {"kvlistValue": {"values": [
                    {"key": "x", "value": {"doubleValue": 1.5}}]}}}],
        }]}]}]}
    ).encode()  # fmt: skip


def test_json_spans_with_hex_or_base64_ids() -> None:
    (span,) = decode_json_request(_json_body(TRACE, SPAN)).spans
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, SPAN, None)
    assert (span.start_ns, span.end_ns) == (1_700_000_000_000_000_000, 1_700_000_000_500_000_000)
    assert (span.kind, span.status_code) == ("UNSPECIFIED", "UNSET")
    assert span.attributes == {"list": [1, "b"], "kv": {"x": 1.5}}
    b64 = decode_json_request(_json_body(base64.b64encode(bytes.fromhex(TRACE)).decode(), SPAN))
    assert b64.spans[0].trace_id == TRACE


def test_a_bad_span_is_refused_alone_with_its_reason() -> None:
    good = json.loads(_json_body(TRACE, SPAN))
    bad_ids = json.loads(_json_body("xyz", SPAN))["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    bad_time = dict(good["resourceSpans"][0]["scopeSpans"][0]["spans"][0])
    bad_time.update(spanId="ab" * 8, startTimeUnixNano=str(10**30))
    good["resourceSpans"][0]["scopeSpans"][0]["spans"] += [bad_ids, bad_time]
    decoded = decode_json_request(json.dumps(good).encode())
    assert [span.span_id for span in decoded.spans] == [SPAN]
    assert decoded.rejected == 2
    assert decoded.reason.startswith(f"span {SPAN!r}: traceId")


@pytest.mark.parametrize(
    "body",
    [b"nope", b'{"resourceSpans": 3}'],
)
def test_bad_json_requests_raise_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"OTLP"):
        decode_json_request(body)


def test_protobuf_round_trip_and_response() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex(TRACE)
    span.span_id = bytes.fromhex(SPAN)
    span.name = "pb"
    bad = request.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id = b"short"
    bad.span_id = bytes.fromhex(SPAN)
    result = decode_protobuf_request(request.SerializeToString())
    (decoded,) = result.spans
    assert (result.rejected, result.reason) == (
        1,
        f"span {SPAN!r}: malformed trace_id or span_id (expected 16 and 8 bytes)",
    )
    assert (decoded.trace_id, decoded.name, decoded.parent_span_id) == (TRACE, "pb", None)

    response = ExportTraceServiceResponse()
    response.ParseFromString(encode_response(True, 2, "two lost"))
    assert response.partial_success.rejected_spans == 2
    assert encode_response(False, 0, "") == b"{}"
    with pytest.raises(ValueError, match="OTLP"):
        decode_protobuf_request(b"\xff\xff\xff")
