"""Sessions and events as OTLP/JSON spans: the wire format of the OTLP export target.

A session is one trace. Its root span (name ``agentops.session``, the session's own trace and
span ids) is sent when the session ends, with the ``agentops.session.*`` attributes (id, tags,
end state and reason, host environment, video) and the links to the ambient span(s). OTLP spans
are immutable once sent, so a running session is shown by a small **marker** span (name
``agentops.session.update``, a child of the root, ``agentops.marker = session``) sent when the
session starts and whenever its tags change: our collector shows the session RUNNING with those
tags until the root arrives. An agent of the session is a marker too (``agentops.agent``).

Every recorded event is a child span of the root carrying the event
(:func:`agentops_async._spans.recorded_attributes`: GenAI semantic-convention attributes for LLM
and tool events, ``agentops.*`` for the rest) and ``agentops.session.id``; our collector reads it
back (:func:`agentops_async._spans.map_recorded`) as the very event the v2 API would have stored.
A span captured inside the session (user code, an instrumentation) is sent as it was: its own
span id, parent, attributes, status, events, links, resource and scope, rebuilt from the event
the capture made of it; the collector's mapping makes the same events of it again.

Encoding is msgspec structs to JSON, per the OTLP/JSON mapping (lowerCamelCase keys, hex ids,
64-bit integers as decimal strings). A run of one session's events is encoded (off the network
path, by the exporter) as a JSON array of ``ResourceSpans``; :func:`request_body` joins runs and
session spans into one ``ExportTraceServiceRequest``. The root span id of a run's spans is
filled in at send time (:func:`with_root`), when the session's snapshot is known.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from .. import __version__
from .._spans import (
    AGENT_ID_ATTRIBUTE,
    AGENT_NAME_ATTRIBUTE,
    MARKER_ATTRIBUTE,
    OTLP_KINDS,
    OTLP_STATUS_CODES,
    SESSION_ID_ATTRIBUTE,
    recorded_attributes,
    span_event_id,
)
from ..events import ActionEvent, ApiEvent, ErrorEvent, Event, EventType, LLMEvent, ToolEvent

if TYPE_CHECKING:
    from ._targets import AgentSnapshot, SessionSnapshot

__all__ = [
    "SCOPE_NAME",
    "Span",
    "agent_span",
    "encode_events",
    "fallback_root",
    "join_runs",
    "request_body",
    "session_span",
    "with_root",
]

SCOPE_NAME = "agentops_async"
"""The instrumentation scope of the spans this SDK makes of sessions and events."""

_INTERNAL, _CLIENT = 1, 3
_OK, _ERROR = 1, 2
_STATE_NAMES = {"SUCCEEDED": "Success", "FAILED": "Fail", "INDETERMINATE": "Indeterminate"}
_STATE_STATUS = {"SUCCEEDED": _OK, "FAILED": _ERROR}
_ROOT_PLACEHOLDER = "agentopssessroot"  # not hex: no real span id can be it
_PARENT_HOLE = b'"parentSpanId":"' + _ROOT_PLACEHOLDER.encode() + b'"'
_INT64 = 2**63


# --- OTLP/JSON -----------------------------------------------------------------------------------
# gc=False: these structs never hold a cycle, and a batch makes tens of thousands of them (with
# GC tracking, the collections they trigger cost more than the encoding).
class _AnyValue(msgspec.Struct, omit_defaults=True, rename="camel", gc=False):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: str | None = None  # int64 as a decimal string (OTLP/JSON)
    double_value: float | None = None
    array_value: _ArrayValue | None = None
    kvlist_value: _KeyValueList | None = None


class _ArrayValue(msgspec.Struct, rename="camel", gc=False):
    values: list[_AnyValue]


class _KeyValueList(msgspec.Struct, rename="camel", gc=False):
    values: list[_KeyValue]


class _KeyValue(msgspec.Struct, rename="camel", gc=False):
    key: str
    value: _AnyValue


class _Status(msgspec.Struct, omit_defaults=True, rename="camel", gc=False):
    code: int = 0
    message: str = ""


class _SpanEvent(msgspec.Struct, omit_defaults=True, rename="camel", gc=False):
    time_unix_nano: str
    name: str
    attributes: list[_KeyValue] = []


class _Link(msgspec.Struct, omit_defaults=True, rename="camel", gc=False):
    trace_id: str
    span_id: str
    attributes: list[_KeyValue] = []


class _Span(msgspec.Struct, omit_defaults=True, rename="camel", gc=False):
    trace_id: str
    span_id: str
    name: str
    kind: int
    start_time_unix_nano: str
    end_time_unix_nano: str
    parent_span_id: str = ""
    attributes: list[_KeyValue] = []
    events: list[_SpanEvent] = []
    links: list[_Link] = []
    status: _Status | None = None


class _Scope(msgspec.Struct, omit_defaults=True, rename="camel", gc=False):
    name: str = ""
    version: str = ""


class _ScopeSpans(msgspec.Struct, rename="camel", gc=False):
    scope: _Scope
    spans: list[_Span]


class _Resource(msgspec.Struct, rename="camel", gc=False):
    attributes: list[_KeyValue]


class _ResourceSpans(msgspec.Struct, rename="camel", gc=False):
    resource: _Resource
    scope_spans: list[_ScopeSpans]


_encode = msgspec.json.Encoder().encode
_decode_raw = msgspec.json.Decoder().decode


def _any(value: Any) -> _AnyValue:
    """A plain value as an OTLP AnyValue (lists as arrays, dicts as key-value lists)."""
    kind = type(value)
    if kind is str:
        return _AnyValue(string_value=value)
    if kind is bool:
        return _AnyValue(bool_value=value)
    if kind is int:
        if -_INT64 <= value < _INT64:
            return _AnyValue(int_value=str(value))
        return _AnyValue(string_value=str(value))
    if kind is float:
        return _AnyValue(double_value=value)
    if kind is list or kind is tuple:
        return _AnyValue(array_value=_ArrayValue([_any(v) for v in value]))
    if kind is dict:
        return _AnyValue(kvlist_value=_KeyValueList(_attributes(value)))
    if value is None:
        return _AnyValue()
    return _any(msgspec.to_builtins(value, str_keys=True, enc_hook=str))


def _attributes(values: Mapping[str, Any]) -> list[_KeyValue]:
    out: list[_KeyValue] = []
    append, key_value, any_value = out.append, _KeyValue, _AnyValue
    for key, value in values.items():
        if type(value) is str:  # most attributes: inlined (this runs per attribute)
            append(key_value(key, any_value(string_value=value)))
        elif value is not None:
            append(key_value(key if type(key) is str else str(key), _any(value)))
    return out


def _resource_attributes() -> dict[str, Any]:
    return {
        "service.name": os.environ.get("OTEL_SERVICE_NAME") or "agentops_async",
        "telemetry.sdk.name": "agentops_async",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
    }


_OUR_RESOURCE = _Resource(_attributes(_resource_attributes()))
_OUR_SCOPE = _Scope(name=SCOPE_NAME, version=__version__)

# --- times and ids -------------------------------------------------------------------------------
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ns(value: datetime | str | float | None, default: int = 0) -> int:
    """Nanoseconds since the epoch of a timestamp (exact to the microsecond a datetime holds)."""
    if type(value) is str:
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return default
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value * 1_000_000_000)
    return default


def _is_hex(text: object, size: int) -> bool:
    if not isinstance(text, str) or len(text) != size:
        return False
    try:
        int(text, 16)
    except ValueError:
        return False
    return text.islower() or text.isdigit()


def _span_id_of(event: Event, event_id: str) -> str:
    """The event's span id (16 hex digits; derived from its id when it has none usable)."""
    span_id = event.span_id
    if _is_hex(span_id, 16):
        return span_id  # type: ignore[return-value]
    return hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()


def _trace_id_of(session_id: str, trace_id: str | None) -> str:
    """The session's trace id; one made from the session id when it is not known (a session
    replayed from the spool by a new process)."""
    if _is_hex(trace_id, 32):
        return trace_id  # type: ignore[return-value]
    try:
        return uuid.UUID(session_id).hex
    except ValueError:
        return hashlib.blake2b(session_id.encode(), digest_size=16).hexdigest()


def _new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


# --- events ---------------------------------------------------------------------------------
_CLASSES: dict[str, type[Event]] = {
    EventType.LLM: LLMEvent,
    EventType.ACTION: ActionEvent,
    EventType.TOOL: ToolEvent,
    EventType.API: ApiEvent,
    EventType.ERROR: ErrorEvent,
}


def _from_raw(raw: msgspec.Raw) -> Event:
    """An event encoded by the SDK (v2 JSON: from another thread, or the spool), decoded."""
    data: dict[str, Any] = _decode_raw(raw)
    cls = _CLASSES.get(data.get("event_type", ""), Event)
    fields = cls.__struct_fields__
    return cls(**{k: v for k, v in data.items() if k in fields})  # timestamps stay ISO text


def _name_and_kind(event: Event) -> tuple[str, int]:
    """The span name (GenAI semconv style where one exists) and kind of a recorded event."""
    if isinstance(event, LLMEvent):
        return (f"chat {event.model}" if event.model else "chat"), _CLIENT
    if isinstance(event, ToolEvent):
        return (f"execute_tool {event.name}" if event.name else "execute_tool"), _INTERNAL
    if isinstance(event, ActionEvent):
        return event.action_type or "action", _INTERNAL
    if isinstance(event, ApiEvent):
        return event.method or "api", _CLIENT
    if isinstance(event, ErrorEvent):
        return event.error_type or "error", _INTERNAL
    return event.event_type, _INTERNAL


def _recorded_span(event: Event, session_id: str, trace_id: str) -> _Span:
    event_id = event.ensure_id()
    start = _ns(event.init_timestamp, time.time_ns())
    attributes = recorded_attributes(event)
    attributes[SESSION_ID_ATTRIBUTE] = session_id
    name, kind = _name_and_kind(event)
    status = None
    if isinstance(event, ErrorEvent):
        details = event.details
        status = _Status(_ERROR, details if isinstance(details, str) else "")
    return _Span(
        trace_id=trace_id,
        span_id=_span_id_of(event, event_id),
        parent_span_id=_ROOT_PLACEHOLDER,
        name=name,
        kind=kind,
        start_time_unix_nano=str(start),
        end_time_unix_nano=str(_ns(event.end_timestamp, start)),
        attributes=_attributes(attributes),
        status=status,
    )


def _captured_part(event: Event) -> str | None:
    """``""`` if ``event`` is the event a captured span was made into, ``"error"`` if it is the
    ErrorEvent made beside it, None if it is a recorded event (ids derived as in _spans)."""
    trace_id, span_id = event.trace_id, event.span_id
    if trace_id is None or span_id is None:
        return None
    params = event.params
    if type(params) is dict and "kind" in params and "attributes" in params:
        return "" if event.id == span_event_id(trace_id, span_id) else None
    if type(event) is ErrorEvent and event.trigger_event_id is not None:
        return "error" if event.id == span_event_id(trace_id, span_id, "error") else None
    return None


def _index(names: Sequence[str], name: Any, default: int) -> int:
    return names.index(name) if name in names else default


def _captured_span(event: Event) -> tuple[dict[str, Any], str | None, _Span]:
    """The span a captured span's event was made from, with its resource and scope."""
    params: dict[str, Any] = event.params
    start = _ns(event.init_timestamp)
    status = _index(OTLP_STATUS_CODES, params.get("status"), 0)
    message = params.get("status_description")
    span = _Span(
        trace_id=event.trace_id or "",
        span_id=event.span_id or "",
        parent_span_id=params.get("parent_span_id") or "",
        name=str(params.get("name", "")),
        kind=_index(OTLP_KINDS, params.get("kind"), 1),
        start_time_unix_nano=str(start),
        end_time_unix_nano=str(_ns(event.end_timestamp, start)),
        attributes=_attributes(params.get("attributes") or {}),
        events=[
            _SpanEvent(
                time_unix_nano=str(e.get("timestamp", 0)),
                name=str(e.get("name", "")),
                attributes=_attributes(e.get("attributes") or {}),
            )
            for e in params.get("events") or ()
        ],
        links=[
            _Link(
                trace_id=link["trace_id"],
                span_id=link["span_id"],
                attributes=_attributes(link.get("attributes") or {}),
            )
            for link in params.get("links") or ()
        ],
        status=_Status(status, message if isinstance(message, str) else "") if status else None,
    )
    scope = params.get("scope")
    return params.get("resource") or {}, scope if isinstance(scope, str) else None, span


def encode_events(
    session_id: str, trace_id: str | None, events: Iterable[Event | msgspec.Raw]
) -> bytes:
    """A run of one session's finalized events as a JSON array of ``ResourceSpans``.

    Recorded events are spans of this SDK's resource and scope whose parent is left for
    :func:`with_root`; captured spans go with their own resource and scope, as they were. The
    ErrorEvent the capture made beside a failed span is not sent: the span's ERROR status
    carries it (a receiver's mapping makes it again).

    Raises:
        TypeError, ValueError, msgspec.EncodeError: a value that cannot be encoded (the caller
            makes each event sendable on its own and calls again).
    """
    trace = _trace_id_of(session_id, trace_id)
    ours: list[_Span] = []
    captured: dict[tuple[bytes, str | None], tuple[dict[str, Any], list[_Span]]] = {}
    for item in events:
        event = _from_raw(item) if type(item) is msgspec.Raw else item
        assert isinstance(event, Event)
        part = _captured_part(event)
        if part is None:
            ours.append(_recorded_span(event, session_id, trace))
        elif not part:
            resource, scope, span = _captured_span(event)
            key = (_encode(resource), scope)
            if key not in captured:
                captured[key] = (resource, [])
            captured[key][1].append(span)
    groups: list[_ResourceSpans] = []
    if ours:
        groups.append(_ResourceSpans(_OUR_RESOURCE, [_ScopeSpans(_OUR_SCOPE, ours)]))
    for (_, scope), (resource, spans) in captured.items():
        groups.append(
            _ResourceSpans(
                _Resource(_attributes(resource)), [_ScopeSpans(_Scope(name=scope or ""), spans)]
            )
        )
    return _encode(groups)


def join_runs(parts: Sequence[bytes]) -> bytes:
    """One JSON array of ``ResourceSpans`` from several (consecutive slices of a run)."""
    inner = [p[1:-1] for p in parts if len(p) > 2]
    return b"[" + b",".join(inner) + b"]"


def with_root(run: bytes, root_span_id: str) -> bytes:
    """``run`` (from :func:`encode_events`) with its recorded events' parent set to the root."""
    return run.replace(_PARENT_HOLE, b'"parentSpanId":"' + root_span_id.encode() + b'"')


# --- sessions and agents --------------------------------------------------------------------
def _session_attributes(snapshot: SessionSnapshot) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        MARKER_ATTRIBUTE: "session",
        SESSION_ID_ATTRIBUTE: snapshot.session_id,
        "agentops.tags": list(snapshot.tags),
    }
    if snapshot.host_env is not None:
        attributes["agentops.session.host_env"] = _encode(snapshot.host_env).decode()
    if snapshot.video is not None:
        attributes["agentops.session.video"] = snapshot.video
    return attributes


def session_span(snapshot: SessionSnapshot, final: bool) -> _Span:
    """The span of a session operation: its root span when the session ended (``final``),
    else a marker span with its current state (RUNNING, tags)."""
    trace_id = _trace_id_of(snapshot.session_id, snapshot.trace_id)
    start = _ns(snapshot.init_timestamp, time.time_ns())
    attributes = _session_attributes(snapshot)
    if not final and snapshot.end_timestamp is None:
        attributes["agentops.session.state"] = snapshot.state
        return _Span(
            trace_id=trace_id,
            span_id=_new_span_id(),
            parent_span_id=snapshot.span_id,
            name="agentops.session.update",
            kind=_INTERNAL,
            start_time_unix_nano=str(start),
            end_time_unix_nano=str(max(start, time.time_ns())),
            attributes=_attributes(attributes),
        )
    end = _ns(snapshot.end_timestamp, time.time_ns())
    attributes["agentops.session.end_state"] = _STATE_NAMES.get(snapshot.state, "Indeterminate")
    if snapshot.end_state_reason is not None:
        attributes["agentops.session.end_reason"] = snapshot.end_state_reason
    code = _STATE_STATUS.get(snapshot.state, 0)
    return _Span(
        trace_id=trace_id,
        span_id=snapshot.span_id,
        name="agentops.session",
        kind=_INTERNAL,
        start_time_unix_nano=str(start),
        end_time_unix_nano=str(max(start, end)),
        attributes=_attributes(attributes),
        links=[_Link(trace_id=t, span_id=s) for t, s in snapshot.links],
        status=_Status(code, snapshot.end_state_reason or "") if code else None,
    )


def fallback_root(session_id: str) -> str:
    """A stable root span id for a session whose snapshot is not known (replayed from the
    spool by a new process): its events stay together under one parent."""
    return hashlib.blake2b(session_id.encode(), digest_size=8).hexdigest()


def agent_span(agent: AgentSnapshot, session: SessionSnapshot | None) -> _Span:
    """The marker span that registers ``agent`` in its session (``session``: its latest
    snapshot, if known)."""
    now = str(time.time_ns())
    session_id = agent.session_id
    return _Span(
        trace_id=_trace_id_of(session_id, session.trace_id if session else None),
        span_id=_new_span_id(),
        parent_span_id=session.span_id if session else fallback_root(session_id),
        name="agentops.agent",
        kind=_INTERNAL,
        start_time_unix_nano=now,
        end_time_unix_nano=now,
        attributes=_attributes(
            {
                MARKER_ATTRIBUTE: "agent",
                SESSION_ID_ATTRIBUTE: session_id,
                AGENT_ID_ATTRIBUTE: agent.agent_id,
                AGENT_NAME_ATTRIBUTE: agent.name,
            }
        ),
    )


Span = _Span
"""An OTLP span as encoded here (session and agent spans are built one by one)."""


def request_body(session_spans: Sequence[_Span], runs: Sequence[bytes]) -> bytes:
    """One ``ExportTraceServiceRequest`` (OTLP/JSON) from session spans and encoded runs (each
    already given its root by :func:`with_root`)."""
    groups = [p[1:-1] for p in runs if len(p) > 2]
    if session_spans:
        ours = _ResourceSpans(_OUR_RESOURCE, [_ScopeSpans(_OUR_SCOPE, list(session_spans))])
        groups.insert(0, _encode(ours))
    return b'{"resourceSpans":[' + b",".join(groups) + b"]}"
