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
    (span,) = decode_json_request(_json_body(TRACE, SPAN))
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, SPAN, None)
    assert (span.start_ns, span.end_ns) == (1_700_000_000_000_000_000, 1_700_000_000_500_000_000)
    assert (span.kind, span.status_code) == ("UNSPECIFIED", "UNSET")
    assert span.attributes == {"list": [1, "b"], "kv": {"x": 1.5}}
    b64 = decode_json_request(_json_body(base64.b64encode(bytes.fromhex(TRACE)).decode(), SPAN))
    assert b64[0].trace_id == TRACE


@pytest.mark.parametrize(
    "body",
    [b"nope", b'{"resourceSpans": 3}', _json_body("xyz", SPAN), _json_body(TRACE, "00")],
)
def test_bad_json_requests_raise_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"OTLP|Id"):
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
    (decoded,) = decode_protobuf_request(request.SerializeToString())
    assert (decoded.trace_id, decoded.name, decoded.parent_span_id) == (TRACE, "pb", None)

    response = ExportTraceServiceResponse()
    response.ParseFromString(encode_response(True, 2, "two lost"))
    assert response.partial_success.rejected_spans == 2
    assert encode_response(False, 0, "") == b"{}"
    with pytest.raises(ValueError, match="OTLP"):
        decode_protobuf_request(b"\xff\xff\xff")
