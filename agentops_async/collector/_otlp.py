"""OTLP/HTTP trace ingest: protobuf and JSON bodies to finished spans.

Both encodings are turned into :class:`~agentops_async._spans.FinishedSpan` (through
``FinishedSpan.from_otlp``), the shape the span-to-event mapping shared with the SDK takes; the
route (``routes/_otlp.py``) then turns traces into sessions (``_traces.py``) and spans into typed
events (``_spans.map_span``). The JSON mapping follows the OTLP spec (lowerCamelCase keys, hex
ids, 64-bit integers possibly as strings).
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from typing import Any, NamedTuple

import msgspec

from .._limits import MAX_NESTING_DEPTH
from .._spans import FinishedSpan, SpanEventData, SpanLinkData

__all__ = [
    "decode_json_request",
    "decode_protobuf_request",
    "encode_response",
    "ns_to_iso",
]


# OTLP times are fixed64 nanoseconds since the epoch.
_MAX_NS = 2**64 - 1


def ns_to_iso(ns: int, what: str = "timeUnixNano") -> str:
    """An ISO 8601 UTC timestamp from nanoseconds since the epoch.

    Raises:
        ValueError: ``ns`` is outside 0..2**64-1 (the message names ``what``).
    """
    if not 0 <= ns <= _MAX_NS:
        raise ValueError(f"{what}: out of range (expected 0..2^64-1 nanoseconds since the epoch)")
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat()


def _check_ns(ns: int, what: str) -> int:
    """``ns`` if it is a valid OTLP time (0..2**64-1 nanoseconds), else a ValueError naming it."""
    if not 0 <= ns <= _MAX_NS:
        raise ValueError(f"{what}: out of range (expected 0..2^64-1 nanoseconds since the epoch)")
    return ns


def _too_deep(key: str) -> ValueError:
    return ValueError(f"attribute {key[:100]!r}: nested deeper than {MAX_NESTING_DEPTH} levels")


# --- JSON ------------------------------------------------------------------------------------


class _KeyValue(msgspec.Struct, rename="camel", gc=False):
    key: str
    value: _AnyValue | None = None


class _ArrayValue(msgspec.Struct, rename="camel", gc=False):
    values: list[_AnyValue] = []


class _KeyValueList(msgspec.Struct, rename="camel", gc=False):
    values: list[_KeyValue] = []


class _AnyValue(msgspec.Struct, rename="camel", gc=False):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: int | None = None
    double_value: float | None = None
    array_value: _ArrayValue | None = None
    kvlist_value: _KeyValueList | None = None
    bytes_value: str | None = None


class _Status(msgspec.Struct, rename="camel", gc=False):
    code: int = 0
    message: str = ""


class _SpanEvent(msgspec.Struct, rename="camel", gc=False):
    name: str = ""
    time_unix_nano: int = 0
    attributes: list[_KeyValue] = []


class _Link(msgspec.Struct, rename="camel", gc=False):
    trace_id: str = ""
    span_id: str = ""
    attributes: list[_KeyValue] = []


class _Span(msgspec.Struct, rename="camel", gc=False):
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    name: str = ""
    kind: int = 0
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    attributes: list[_KeyValue] = []
    status: _Status | None = None
    events: list[_SpanEvent] = []
    links: list[_Link] = []


class _Scope(msgspec.Struct, rename="camel", gc=False):
    name: str = ""
    version: str = ""


class _ScopeSpans(msgspec.Struct, rename="camel", gc=False):
    scope: _Scope | None = None
    spans: list[_Span] = []


class _Resource(msgspec.Struct, rename="camel", gc=False):
    attributes: list[_KeyValue] = []


class _ResourceSpans(msgspec.Struct, rename="camel", gc=False):
    resource: _Resource | None = None
    scope_spans: list[_ScopeSpans] = []


class _ExportRequest(msgspec.Struct, rename="camel", gc=False):
    resource_spans: list[_ResourceSpans] = []


_json_decoder = msgspec.json.Decoder(_ExportRequest, strict=False)
_json_encoder = msgspec.json.Encoder()


def _json_value(value: _AnyValue | None, key: str, depth: int = 1) -> Any:
    """The plain value of an AnyValue; ``depth`` counts the containers around it (ValueError
    beyond :data:`MAX_NESTING_DEPTH`)."""
    if value is None:
        return None
    if value.string_value is not None:
        return value.string_value
    if value.bool_value is not None:
        return value.bool_value
    if value.int_value is not None:
        return value.int_value
    if value.double_value is not None:
        return value.double_value
    if value.array_value is not None:
        if depth > MAX_NESTING_DEPTH:
            raise _too_deep(key)
        return [_json_value(v, key, depth + 1) for v in value.array_value.values]
    if value.kvlist_value is not None:
        if depth > MAX_NESTING_DEPTH:
            raise _too_deep(key)
        return _json_attributes(value.kvlist_value.values, depth + 1, key)
    return value.bytes_value


def _json_attributes(pairs: list[_KeyValue], depth: int = 1, top: str = "") -> dict[str, Any]:
    """Attributes as a dict; ``top`` is the outermost attribute's key (for error messages)."""
    return {kv.key: _json_value(kv.value, top or kv.key, depth) for kv in pairs}


_HEX_IDS = {16: re.compile("[0-9a-f]{32}"), 8: re.compile("[0-9a-f]{16}")}


def _hex_id(value: str, size: int, what: str) -> str:
    """OTLP/JSON ids are hex; some exporters send base64 (the protobuf JSON default)."""
    if _HEX_IDS[size].fullmatch(value):  # the common case: lowercase hex already
        return value
    text = value.strip().lower()
    if _HEX_IDS[size].fullmatch(text):
        return text
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{what}: not a {size}-byte hex id: {value!r}") from None
    if len(raw) != size:
        raise ValueError(f"{what}: not a {size}-byte hex id: {value!r}")
    return raw.hex()


class DecodedSpans(NamedTuple):
    """The spans of an export, and those refused one by one (how many, and the first reason)."""

    spans: list[FinishedSpan]
    rejected: int
    reason: str


class _Refusals:
    """Counts the spans an export holds that cannot be stored, keeping the first reason."""

    def __init__(self) -> None:
        self.count = 0
        self.reason = ""

    def add(self, span_id: str, exc: Exception) -> None:
        self.count += 1
        if not self.reason:
            problem = (
                f"nested deeper than {MAX_NESTING_DEPTH} levels"
                if isinstance(exc, RecursionError)
                else str(exc)
            )
            self.reason = f"span {span_id[:32]!r}: {problem}"


def decode_json_request(body: bytes) -> DecodedSpans:
    """Spans of an OTLP/JSON ExportTraceServiceRequest; a span that is not valid (a time out of
    range, an id of the wrong size, attributes nested too deep) is refused alone.

    Raises:
        ValueError: The body is not a valid request (the message names what is wrong).
    """
    try:
        request = _json_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"invalid OTLP/JSON body: {exc}") from None
    spans: list[FinishedSpan] = []
    refused = _Refusals()
    for resource_spans in request.resource_spans:
        resource = (
            _json_attributes(resource_spans.resource.attributes) if resource_spans.resource else {}
        )
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name if scope_spans.scope else None
            for span in scope_spans.spans:
                try:
                    spans.append(_json_span(span, resource, scope))
                except (ValueError, RecursionError) as exc:
                    refused.add(span.span_id, exc)
    return DecodedSpans(spans, refused.count, refused.reason)


def _json_span(span: _Span, resource: dict[str, Any], scope: str | None) -> FinishedSpan:
    _check_ns(span.start_time_unix_nano, "startTimeUnixNano")
    _check_ns(span.end_time_unix_nano, "endTimeUnixNano")
    status = span.status or _Status()
    return FinishedSpan.from_otlp(
        trace_id=_hex_id(span.trace_id, 16, "traceId"),
        span_id=_hex_id(span.span_id, 8, "spanId"),
        parent_span_id=(
            _hex_id(span.parent_span_id, 8, "parentSpanId") if span.parent_span_id else None
        ),
        name=span.name,
        kind=span.kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status_code=status.code,
        status_message=status.message,
        attributes=_json_attributes(span.attributes),
        events=[
            SpanEventData(
                name=e.name,
                time_ns=_check_ns(e.time_unix_nano, "events.timeUnixNano"),
                attributes=_json_attributes(e.attributes),
            )
            for e in span.events
        ],
        links=[
            SpanLinkData(
                trace_id=_hex_id(link.trace_id, 16, "links.traceId"),
                span_id=_hex_id(link.span_id, 8, "links.spanId"),
                attributes=_json_attributes(link.attributes),
            )
            for link in span.links
        ],
        resource=resource,
        scope=scope,
    )


# --- protobuf --------------------------------------------------------------------------------


def _pb_value(value: Any, key: str, depth: int = 1) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        if depth > MAX_NESTING_DEPTH:
            raise _too_deep(key)
        return [_pb_value(v, key, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        if depth > MAX_NESTING_DEPTH:
            raise _too_deep(key)
        return _pb_attributes(value.kvlist_value.values, depth + 1, key)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def _pb_attributes(pairs: Any, depth: int = 1, top: str = "") -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value, top or kv.key, depth) for kv in pairs}


def decode_protobuf_request(body: bytes) -> DecodedSpans:
    """Spans of an OTLP/protobuf ExportTraceServiceRequest; a span that is not valid (an id of
    the wrong size, attributes nested too deep) is refused alone.

    Raises:
        ValueError: The body is not a valid request.
    """
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except Exception as exc:  # google.protobuf.message.DecodeError (untyped package)
        raise ValueError(f"invalid OTLP/protobuf body: {exc}") from None
    spans: list[FinishedSpan] = []
    refused = _Refusals()
    for resource_spans in request.resource_spans:
        resource = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                try:
                    spans.append(_pb_span(span, resource, scope))
                except (ValueError, RecursionError) as exc:
                    refused.add(span.span_id.hex(), exc)
    return DecodedSpans(spans, refused.count, refused.reason)


def _pb_span(span: Any, resource: dict[str, Any], scope: str) -> FinishedSpan:
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        raise ValueError("malformed trace_id or span_id (expected 16 and 8 bytes)")
    return FinishedSpan.from_otlp(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex() or None,
        name=span.name,
        kind=int(span.kind),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status_code=int(span.status.code),
        status_message=span.status.message,
        attributes=_pb_attributes(span.attributes),
        events=[
            SpanEventData(
                name=e.name, time_ns=e.time_unix_nano, attributes=_pb_attributes(e.attributes)
            )
            for e in span.events
        ],
        links=[
            SpanLinkData(
                trace_id=link.trace_id.hex(),
                span_id=link.span_id.hex(),
                attributes=_pb_attributes(link.attributes),
            )
            for link in span.links
            if len(link.trace_id) == 16 and len(link.span_id) == 8
        ],
        resource=resource,
        scope=scope,
    )


def encode_response(protobuf: bool, rejected: int, message: str) -> bytes:
    """An ExportTraceServiceResponse, with partial success when spans were rejected."""
    if not protobuf:
        if not rejected:
            return b"{}"
        return _json_encoder.encode(
            {"partialSuccess": {"rejectedSpans": rejected, "errorMessage": message}}
        )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    data: bytes = response.SerializeToString()
    return data
