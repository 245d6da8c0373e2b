"""Finished OpenTelemetry spans as AgentOps events: one mapping for the SDK and the collector.

A finished span, wherever it comes from (an SDK ``ReadableSpan`` captured inside a session, or a
span of an OTLP/JSON or OTLP/protobuf export received by the collector), is first turned into a
:class:`FinishedSpan`, then into events by a chain of small mappers (in the way structlog chains
processors). Each mapper takes the span and the events made so far and returns the events::

    map_llm      GenAI inference spans (OTel GenAI semantic conventions, current and older
                 attribute names, and the OpenLLMetry indexed names)  -> LLMEvent
    map_agentops decorator spans of the agentops SDK 0.4 (agentops.span.kind): tool -> ToolEvent,
                 agent/task/operation/workflow -> ActionEvent(action_type=<kind>)
    map_tool     tool execution spans (gen_ai.operation.name = execute_tool)  -> ToolEvent
    map_plain    every other span  -> ActionEvent(action_type="span")
    map_error    spans with ERROR status: one more event  -> ErrorEvent linked to the first one

Before them, :func:`map_recorded` takes the spans this SDK's OTLP target makes of recorded events
(``agentops.event.id`` and ``agentops.event.type`` attributes, see :func:`recorded_attributes`)
back to the very event that was recorded: same id, type, fields and timestamps, so a session
exported over OTLP is stored as it would have been over the v2 API. Spans carrying
``agentops.marker`` (the session's root span and its state updates, agent registrations) hold a
session's state, not an event: :func:`is_marker` tells the collector to keep them out of events.

Every event made from a span carries the span's trace id and span id, its start and end times, and
the span itself in ``params`` (:func:`span_params`: name, kind, parent span id, attributes, status,
span events, links, resource and scope), so a waterfall can be drawn from the events alone.

Event ids are derived from the span (:func:`span_event_id`): the same span always makes the same
events, so the collector's idempotent ingest (by session and event id) stores a span once however
many times, and by whichever path, it arrives.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from .events import (
    ActionEvent,
    ApiEvent,
    ErrorEvent,
    Event,
    EventType,
    LLMEvent,
    ToolEvent,
    _to_json_safe,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

__all__ = [
    "AGENTOPS_ACTION_KINDS",
    "AGENT_ID_ATTRIBUTE",
    "AGENT_NAME_ATTRIBUTE",
    "DEFAULT_MAPPERS",
    "EVENT_ID_ATTRIBUTE",
    "EVENT_TYPE_ATTRIBUTE",
    "LLM_OPERATIONS",
    "MARKER_ATTRIBUTE",
    "OTLP_KINDS",
    "OTLP_STATUS_CODES",
    "PLAIN_SPAN_ACTION_TYPE",
    "SESSION_ID_ATTRIBUTE",
    "SPAN_EVENT_NAMESPACE",
    "FinishedSpan",
    "Mapper",
    "SpanEventData",
    "SpanLinkData",
    "is_marker",
    "map_agentops",
    "map_error",
    "map_llm",
    "map_plain",
    "map_recorded",
    "map_span",
    "map_spans",
    "map_tool",
    "recorded_attributes",
    "span_event_id",
    "span_params",
]

log = logging.getLogger("agentops_async")

PLAIN_SPAN_ACTION_TYPE = "span"
"""``action_type`` of the ``ActionEvent`` a plain captured span becomes (event type ``actions``)."""

SPAN_EVENT_NAMESPACE = uuid.UUID("6ff2829f-08ac-5130-822b-b3839ef225a2")
"""The UUID namespace of span-derived event ids: ``uuid5(NAMESPACE_URL,
"agentops_async:span-event")``. Fixed forever: changing it would store spans twice."""

LLM_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "completion", "embeddings"}
)
"""``gen_ai.operation.name`` values of a model call (mapped to an LLMEvent)."""

OTLP_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
"""OTLP ``Span.kind`` numbers (the index) to the kind names used here."""

OTLP_STATUS_CODES = ("UNSET", "OK", "ERROR")
"""OTLP ``Status.code`` numbers (the index) to the status names used here."""


# --- the finished span ---------------------------------------------------------------------------
class SpanEventData(msgspec.Struct, frozen=True, kw_only=True):
    """An event inside a span (``span.add_event``, a recorded exception)."""

    name: str
    time_ns: int
    attributes: dict[str, Any] = {}


class SpanLinkData(msgspec.Struct, frozen=True, kw_only=True):
    """A link from a span to another span (e.g. a session's root to the ambient span)."""

    trace_id: str
    span_id: str
    attributes: dict[str, Any] = {}


class FinishedSpan(msgspec.Struct, frozen=True, kw_only=True):
    """A finished span, as the mappers see it, whatever produced it.

    Build one with :meth:`from_readable_span` (the SDK's capture), or directly from a decoded OTLP
    span (the collector): ids as lowercase hex, kinds and status codes as names
    (:data:`OTLP_KINDS`, :data:`OTLP_STATUS_CODES` map the OTLP numbers), attribute values as
    plain JSON-able values (an OTLP ``AnyValue`` unwrapped).

    Attributes:
        trace_id: 32 hex digits.
        span_id: 16 hex digits.
        parent_span_id: 16 hex digits, or None for a root.
        name: The span's name.
        kind: ``INTERNAL``, ``SERVER``, ``CLIENT``, ``PRODUCER``, ``CONSUMER``...
        start_ns: Start, nanoseconds since the epoch.
        end_ns: End, nanoseconds since the epoch (None if unknown).
        status_code: ``UNSET``, ``OK`` or ``ERROR``.
        status_message: The status description, if any.
        attributes: The span's attributes.
        events: Its span events.
        links: Its links.
        resource: The attributes of the resource that produced it.
        scope: The instrumentation scope's name (e.g. ``opentelemetry.instrumentation.openai_v2``).
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    name: str
    kind: str = "INTERNAL"
    start_ns: int
    end_ns: int | None = None
    status_code: str = "UNSET"
    status_message: str | None = None
    attributes: dict[str, Any] = {}
    events: tuple[SpanEventData, ...] = ()
    links: tuple[SpanLinkData, ...] = ()
    resource: dict[str, Any] = {}
    scope: str | None = None

    @classmethod
    def from_readable_span(cls, span: ReadableSpan) -> FinishedSpan:
        """The finished span of an OpenTelemetry SDK ``ReadableSpan`` (what span processors get).

        Raises:
            ValueError: the span has no valid span context.
        """
        ctx = span.context
        if ctx is None or not ctx.is_valid:
            raise ValueError(f"span {span.name!r} has no valid span context")
        parent = span.parent
        scope = span.instrumentation_scope
        return cls(
            trace_id=f"{ctx.trace_id:032x}",
            span_id=f"{ctx.span_id:016x}",
            parent_span_id=f"{parent.span_id:016x}" if parent is not None else None,
            name=span.name,
            kind=span.kind.name,
            start_ns=span.start_time or 0,
            end_ns=span.end_time,
            status_code=span.status.status_code.name,
            status_message=span.status.description,
            attributes=_plain(span.attributes),
            events=tuple(
                SpanEventData(name=e.name, time_ns=e.timestamp, attributes=_plain(e.attributes))
                for e in span.events
            ),
            links=tuple(
                SpanLinkData(
                    trace_id=f"{link.context.trace_id:032x}",
                    span_id=f"{link.context.span_id:016x}",
                    attributes=_plain(link.attributes),
                )
                for link in span.links
            ),
            resource=_plain(span.resource.attributes) if span.resource is not None else {},
            scope=scope.name if scope is not None else None,
        )

    @classmethod
    def from_otlp(
        cls,
        *,
        trace_id: str,
        span_id: str,
        parent_span_id: str | None,
        name: str,
        kind: int,
        start_ns: int,
        end_ns: int | None,
        status_code: int,
        status_message: str | None,
        attributes: dict[str, Any],
        events: Sequence[SpanEventData] = (),
        links: Sequence[SpanLinkData] = (),
        resource: dict[str, Any] | None = None,
        scope: str | None = None,
    ) -> FinishedSpan:
        """The finished span of a span decoded from an OTLP export (JSON or protobuf).

        Takes the OTLP numbers as they are on the wire: ``kind`` and ``status_code`` are mapped
        to names through :data:`OTLP_KINDS` and :data:`OTLP_STATUS_CODES` (an unknown number
        becomes ``UNSPECIFIED``/``UNSET``); ids are hex (lowercased here), an empty parent id
        means a root; attribute values already unwrapped from ``AnyValue``; an end time of 0
        means unknown.
        """
        kinds, codes = OTLP_KINDS, OTLP_STATUS_CODES
        return cls(
            trace_id=trace_id.lower(),
            span_id=span_id.lower(),
            parent_span_id=parent_span_id.lower() if parent_span_id else None,
            name=name,
            kind=kinds[kind] if 0 <= kind < len(kinds) else kinds[0],
            start_ns=start_ns,
            end_ns=end_ns or None,
            status_code=codes[status_code] if 0 <= status_code < len(codes) else codes[0],
            status_message=status_message or None,
            attributes=attributes,
            events=tuple(events),
            links=tuple(links),
            resource=resource or {},
            scope=scope or None,
        )


def _plain(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """OTel attributes (scalars, and tuples of scalars: the SDK allows no others) as a dict of
    JSON values, sequences as lists (what an OTLP decoder gives too)."""
    if not attributes:
        return {}
    return {
        str(key): list(value) if isinstance(value, (tuple, list)) else _to_json_safe(value)
        for key, value in attributes.items()
    }


# --- ids and the shared shape -----------------------------------------------------------------
def span_event_id(trace_id: str, span_id: str, part: str = "") -> str:
    """The id of the event made from span ``span_id`` of trace ``trace_id`` (both hex).

    ``uuid5(SPAN_EVENT_NAMESPACE, f"{trace_id}:{span_id}")`` with both ids as lowercase hex
    (32 and 16 digits); a second event made from the same span (its ``ErrorEvent``) appends
    ``"/" + part`` (``"/error"``). The same span always gets the same id, on any machine, so
    capturing it twice, or receiving it both from the SDK and over OTLP, stores it once.

    Example:
        >>> span_event_id("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
        'c9a123e2-8bca-5351-9d8a-8fb3ed0ea0a3'
    """
    name = f"{trace_id.lower()}:{span_id.lower()}"
    if part:
        name = f"{name}/{part}"
    return str(uuid.uuid5(SPAN_EVENT_NAMESPACE, name))


def span_params(span: FinishedSpan) -> dict[str, Any]:
    """The span itself as an event's ``params``: what a waterfall view needs."""
    params: dict[str, Any] = {
        "name": span.name,
        "kind": span.kind,
        "parent_span_id": span.parent_span_id,
        "attributes": span.attributes,
        "status": span.status_code,
        "status_description": span.status_message,
        "events": [
            {"name": e.name, "timestamp": e.time_ns, "attributes": e.attributes}
            for e in span.events
        ],
    }
    if span.links:
        params["links"] = [
            {"trace_id": link.trace_id, "span_id": link.span_id, "attributes": link.attributes}
            for link in span.links
        ]
    if span.resource:
        params["resource"] = span.resource
    if span.scope:
        params["scope"] = span.scope
    return params


def _when(ns: int | None) -> datetime | None:
    return None if ns is None else datetime.fromtimestamp(ns / 1e9, timezone.utc)


def _stamp(event: Event, span: FinishedSpan, part: str = "") -> Event:
    """Give ``event`` the span's ids, derived event id and times."""
    event.id = span_event_id(span.trace_id, span.span_id, part)
    event.trace_id = span.trace_id
    event.span_id = span.span_id
    event.init_timestamp = _when(span.start_ns) or datetime.now(timezone.utc)
    event.end_timestamp = _when(span.end_ns) or event.init_timestamp
    return event


# --- the mappers ---------------------------------------------------------------------------------
Mapper = Callable[[FinishedSpan, list[Event]], list[Event]]
"""A mapper: the span and the events made so far (by earlier mappers) -> the events."""


def _operation(attributes: Mapping[str, Any]) -> str | None:
    value = attributes.get("gen_ai.operation.name")
    return value if isinstance(value, str) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(attributes: Mapping[str, Any], *names: str) -> int | None:
    """The first of ``names`` holding a token count (a non-negative int; a float is truncated)."""
    for name in names:
        value = attributes.get(name)
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and value >= 0:
            return value
        if isinstance(value, float) and value >= 0 and value.is_integer():
            return int(value)
    return None


def _json(value: Any) -> Any:
    """A JSON string attribute as its value (left as it is when it is not JSON)."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _message(message: Any) -> Any:
    """A GenAI semconv message (``{"role", "parts": [...]}``) as a chat message.

    A message whose parts are all text becomes ``{"role", "content": <text>}`` (plus its
    ``finish_reason``/``name``); others (tool calls, media) are kept as they are.
    """
    if not isinstance(message, dict):
        return message
    parts = message.get("parts")
    if not isinstance(parts, list):
        return message
    texts = [
        p["content"]
        for p in parts
        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("content"), str)
    ]
    if len(texts) != len(parts):
        return message
    out: dict[str, Any] = {"role": message.get("role"), "content": "\n".join(texts)}
    for key in ("name", "finish_reason"):
        if key in message:
            out[key] = message[key]
    return out


def _messages(value: Any) -> list[Any] | None:
    value = _json(value)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None
    return [_message(m) for m in value]


_INDEXED = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(.+)$")


def _indexed(attributes: Mapping[str, Any], which: str) -> list[dict[str, Any]] | None:
    """OpenLLMetry's flattened messages (``gen_ai.prompt.0.role``, ``gen_ai.prompt.0.content``,
    ``gen_ai.completion.0.tool_calls.0.name``...) as a list of messages, in index order."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in attributes.items():
        if not key.startswith("gen_ai."):
            continue
        match = _INDEXED.match(key)
        if match is None or match[1] != which:
            continue
        found.setdefault(int(match[2]), {})[match[3]] = value
    if not found:
        return None
    return [found[index] for index in sorted(found)]


def _content_event(span: FinishedSpan, event_name: str, key: str) -> Any:
    """Content older instrumentations put on a span event (``gen_ai.content.prompt`` holding a
    ``gen_ai.prompt`` attribute)."""
    for event in span.events:
        if event.name == event_name and key in event.attributes:
            return event.attributes[key]
    return None


def _prompt(span: FinishedSpan) -> Any:
    attributes = span.attributes
    messages = _messages(attributes.get("gen_ai.input.messages"))
    if messages is not None:
        system = _json(attributes.get("gen_ai.system_instructions"))
        if isinstance(system, list):  # a list of parts: one system message in front
            messages.insert(0, _message({"role": "system", "parts": system}))
        return messages
    indexed = _indexed(attributes, "prompt")
    if indexed is not None:
        return indexed
    older = attributes.get("gen_ai.prompt")
    if older is None:
        older = _content_event(span, "gen_ai.content.prompt", "gen_ai.prompt")
    return _json(older)


def _completion(span: FinishedSpan) -> Any:
    attributes = span.attributes
    messages = _messages(attributes.get("gen_ai.output.messages"))
    if messages is None:
        messages = _indexed(attributes, "completion")
    if messages is None:
        older = attributes.get("gen_ai.completion")
        if older is None:
            older = _content_event(span, "gen_ai.content.completion", "gen_ai.completion")
        return _json(older)
    return messages[0] if len(messages) == 1 else messages


def _is_llm(attributes: Mapping[str, Any]) -> bool:
    operation = _operation(attributes)
    if operation is not None:
        return operation in LLM_OPERATIONS
    # Instrumentations of the older conventions (OpenLLMetry) may set no operation name.
    has_provider = "gen_ai.provider.name" in attributes or "gen_ai.system" in attributes
    has_model = "gen_ai.request.model" in attributes or "gen_ai.response.model" in attributes
    return has_provider and has_model


def map_llm(span: FinishedSpan, events: list[Event]) -> list[Event]:
    """A GenAI model call (chat, completion, embeddings...) -> an :class:`LLMEvent`.

    model: ``gen_ai.response.model``, else ``gen_ai.request.model``; tokens:
    ``gen_ai.usage.input_tokens``/``output_tokens``, else the older ``prompt_tokens``/
    ``completion_tokens``; prompt and completion: ``gen_ai.input.messages``/``output.messages``
    (JSON; with ``gen_ai.system_instructions`` as a first system message), else OpenLLMetry's
    ``gen_ai.prompt.N.*``/``gen_ai.completion.N.*``, else the older ``gen_ai.prompt``/
    ``gen_ai.completion`` (as attributes or span events); thread: ``gen_ai.conversation.id``.
    Provider, finish reasons and request settings stay in ``params["attributes"]``.
    """
    if events or not _is_llm(span.attributes):
        return events
    attributes = span.attributes
    event = LLMEvent(
        model=_str(attributes.get("gen_ai.response.model"))
        or _str(attributes.get("gen_ai.request.model")),
        prompt=_prompt(span),
        completion=_completion(span),
        prompt_tokens=_count(attributes, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        completion_tokens=_count(
            attributes, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"
        ),
        thread_id=_str(attributes.get("gen_ai.conversation.id")),
        params=span_params(span),
    )
    return [_stamp(event, span)]


def map_tool(span: FinishedSpan, events: list[Event]) -> list[Event]:
    """A tool execution (``gen_ai.operation.name = execute_tool``) -> a :class:`ToolEvent`.

    name: ``gen_ai.tool.name`` (else the span's name); returns: ``gen_ai.tool.call.result``
    (JSON decoded when it is JSON); the arguments (``gen_ai.tool.call.arguments``) are also in
    ``params["arguments"]``.
    """
    if events or _operation(span.attributes) != "execute_tool":
        return events
    attributes = span.attributes
    params = span_params(span)
    if "gen_ai.tool.call.arguments" in attributes:
        params["arguments"] = _json(attributes["gen_ai.tool.call.arguments"])
    event = ToolEvent(
        name=_str(attributes.get("gen_ai.tool.name")) or span.name,
        params=params,
        returns=_json(attributes.get("gen_ai.tool.call.result")),
    )
    return [_stamp(event, span)]


AGENTOPS_ACTION_KINDS = frozenset({"agent", "task", "operation", "workflow"})
"""``agentops.span.kind`` values of the agentops SDK (0.4) mapped to an ActionEvent."""


def _agentops_io(attributes: Mapping[str, Any], kind: str, which: str) -> Any:
    """``agentops.<kind>.<which>``, else ``agentops.entity.<which>`` (JSON decoded)."""
    value = attributes.get(f"agentops.{kind}.{which}")
    if value is None:
        value = attributes.get(f"agentops.entity.{which}")
    return _json(value)


def map_agentops(span: FinishedSpan, events: list[Event]) -> list[Event]:
    """A decorator span of the agentops SDK (0.4: ``agentops.span.kind``) -> a typed event.

    ``tool`` -> :class:`ToolEvent` (name: ``agentops.entity.name``, ``tool.name``, else the
    span's name without its ``.tool`` suffix; its
    input in ``params["arguments"]``, its output as ``returns``; a ``gen_ai.usage.total_cost``
    stays in ``params["attributes"]``, where the collector reads it as the tool's cost for the
    session's cost); ``agent``, ``task``, ``operation``, ``workflow`` ->
    :class:`ActionEvent` with ``action_type`` = the kind, ``returns`` = the output. Inputs and
    outputs: ``agentops.<kind>.input``/``.output``, else ``agentops.entity.input``/``.output``.
    """
    if events:
        return events
    kind = _str(span.attributes.get("agentops.span.kind"))
    if kind == "tool":
        params = span_params(span)
        arguments = _agentops_io(span.attributes, kind, "input")
        if arguments is not None:
            params["arguments"] = arguments
        event: Event = ToolEvent(
            name=_str(span.attributes.get("agentops.entity.name"))
            or _str(span.attributes.get("tool.name"))
            or span.name.removesuffix(".tool")
            or span.name,
            params=params,
            returns=_agentops_io(span.attributes, kind, "output"),
        )
        return [_stamp(event, span)]
    if kind in AGENTOPS_ACTION_KINDS:
        params = span_params(span)
        arguments = _agentops_io(span.attributes, kind, "input")
        if arguments is not None:
            params["arguments"] = arguments
        event = ActionEvent(
            action_type=kind, params=params, returns=_agentops_io(span.attributes, kind, "output")
        )
        return [_stamp(event, span)]
    return events


# --- recorded events as spans (this SDK's OTLP target) and back ----------------------------------
EVENT_ID_ATTRIBUTE = "agentops.event.id"
"""The id of the recorded event a span carries (its presence marks a recorded event's span)."""
EVENT_TYPE_ATTRIBUTE = "agentops.event.type"
"""The ``event_type`` of the recorded event a span carries (``llms``, ``actions``...)."""
SESSION_ID_ATTRIBUTE = "agentops.session.id"
"""The id of the session a span belongs to (on every span of this SDK's OTLP target)."""
MARKER_ATTRIBUTE = "agentops.marker"
"""``session`` (the session's root span, or a state update of a running session) or ``agent``
(an agent registration): a span that holds state, never stored as an event."""
AGENT_ID_ATTRIBUTE = "agentops.agent.id"
AGENT_NAME_ATTRIBUTE = "agentops.agent.name"

# Per event type: (field, attribute, JSON text?) of the fields beyond the common ones. Typed
# fields (str, int, float) are attributes of their own type; free ones (any value) JSON text.
_COMMON_FIELDS = (
    ("params", "agentops.params", True),
    ("returns", "agentops.returns", True),
    ("agent_id", AGENT_ID_ATTRIBUTE, False),
)
_RECORDED_FIELDS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    EventType.LLM: (
        ("model", "gen_ai.request.model", False),
        ("prompt_tokens", "gen_ai.usage.input_tokens", False),
        ("completion_tokens", "gen_ai.usage.output_tokens", False),
        ("thread_id", "gen_ai.conversation.id", False),
        ("cost", "agentops.llm.cost", False),
    ),
    EventType.ACTION: (
        ("action_type", "agentops.action.type", False),
        ("logs", "agentops.action.logs", True),
        ("screenshot", "agentops.action.screenshot", False),
    ),
    EventType.TOOL: (("name", "gen_ai.tool.name", False), ("logs", "agentops.tool.logs", True)),
    EventType.API: (
        ("method", "http.request.method", False),
        ("url", "url.full", False),
        ("status_code", "http.response.status_code", False),
        ("logs", "agentops.api.logs", True),
    ),
    EventType.ERROR: (
        ("error_type", "error.type", False),
        ("code", "agentops.error.code", False),
        ("details", "agentops.error.details", True),
        ("logs", "agentops.error.logs", False),
        ("trigger_event_id", "agentops.error.trigger_event_id", False),
        ("trigger_event_type", "agentops.error.trigger_event_type", False),
    ),
}
_EVENT_CLASSES: dict[str, type[Event]] = {
    EventType.LLM: LLMEvent,
    EventType.ACTION: ActionEvent,
    EventType.TOOL: ToolEvent,
    EventType.API: ApiEvent,
    EventType.ERROR: ErrorEvent,
}
_MESSAGE_KEYS = frozenset({"role", "content", "name", "finish_reason"})
_json_text = msgspec.json.Encoder().encode


def _plain_message(value: Any) -> bool:
    """A chat message that the GenAI semconv form carries exactly: text content, a role."""
    return (
        type(value) is dict
        and isinstance(value.get("role"), str)
        and isinstance(value.get("content"), str)
        and value.keys() <= _MESSAGE_KEYS
    )


def _semconv_message(message: dict[str, Any]) -> dict[str, Any]:
    """``{"role", "content"}`` as a GenAI semconv message (``{"role", "parts": [...]}``)."""
    out: dict[str, Any] = {
        "role": message["role"],
        "parts": [{"type": "text", "content": message["content"]}],
    }
    for key in ("name", "finish_reason"):
        if key in message:
            out[key] = message[key]
    return out


def _llm_content(event: LLMEvent, attributes: dict[str, Any]) -> None:
    """The prompt and completion as GenAI attributes where their form says exactly what they
    are (chat messages: ``gen_ai.input/output.messages``; text: ``gen_ai.prompt/completion``),
    else as JSON text in ``agentops.llm.prompt``/``agentops.llm.completion``."""
    prompt, completion = event.prompt, event.completion
    if type(prompt) is str:
        attributes["gen_ai.prompt"] = prompt
    elif type(prompt) is list and all(_plain_message(m) for m in prompt):
        messages = [_semconv_message(m) for m in prompt]
        attributes["gen_ai.input.messages"] = _json_text(messages).decode()
    elif prompt is not None:
        attributes["agentops.llm.prompt"] = _json_text(prompt).decode()
    if type(completion) is str:
        attributes["gen_ai.completion"] = completion
    elif _plain_message(completion):
        attributes["gen_ai.output.messages"] = _json_text([_semconv_message(completion)]).decode()
    elif (
        type(completion) is list
        and len(completion) != 1  # one message reads back as that message, not a list
        and all(_plain_message(m) for m in completion)
    ):
        messages = [_semconv_message(m) for m in completion]
        attributes["gen_ai.output.messages"] = _json_text(messages).decode()
    elif completion is not None:
        attributes["agentops.llm.completion"] = _json_text(completion).decode()


def recorded_attributes(event: Event) -> dict[str, Any]:
    """The span attributes that carry ``event`` (finalized: it has its id) exactly.

    LLM events carry the OTel GenAI semantic-convention attributes (``gen_ai.operation.name =
    chat``, request/response model, usage tokens, messages, conversation id), tool events
    ``execute_tool`` with ``gen_ai.tool.name``, API events the HTTP client attributes; every
    other field is an ``agentops.*`` attribute (free-form values as JSON text).
    :func:`map_recorded` reads them back.
    """
    attributes: dict[str, Any] = {
        EVENT_ID_ATTRIBUTE: event.id,
        EVENT_TYPE_ATTRIBUTE: event.event_type,
    }
    event_type = event.event_type
    if event_type == EventType.LLM:
        attributes["gen_ai.operation.name"] = "chat"
        model = getattr(event, "model", None)
        if model is not None:
            attributes["gen_ai.response.model"] = model
    elif event_type == EventType.TOOL:
        attributes["gen_ai.operation.name"] = "execute_tool"
    for name, attribute, as_json in (*_COMMON_FIELDS, *_RECORDED_FIELDS.get(event_type, ())):
        value = getattr(event, name, None)
        if value is not None:
            attributes[attribute] = _json_text(value).decode() if as_json else value
    if isinstance(event, LLMEvent):
        _llm_content(event, attributes)
    return attributes


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_json_value = msgspec.json.Decoder().decode  # ValueError (DecodeError) on what is not JSON


def _exact_time(ns: int) -> datetime:
    """Nanoseconds since the epoch as the datetime they were made from (microseconds, exact)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _recorded_content(attributes: Mapping[str, Any], kind: str) -> Any:
    """The prompt (``kind="input"``) or completion (``"output"``) written by _llm_content."""
    text_name, json_name = (
        ("gen_ai.prompt", "agentops.llm.prompt")
        if kind == "input"
        else ("gen_ai.completion", "agentops.llm.completion")
    )
    if json_name in attributes:
        return _json_value(attributes[json_name])
    messages = _messages(attributes.get(f"gen_ai.{kind}.messages"))
    if messages is not None:
        return messages[0] if kind == "output" and len(messages) == 1 else messages
    return attributes.get(text_name)


def map_recorded(span: FinishedSpan, events: list[Event]) -> list[Event]:
    """A span of this SDK's OTLP target -> the recorded event it carries, exactly.

    A span with ``agentops.event.id`` (a UUID) and ``agentops.event.type`` becomes the event of
    that type with that id, the fields :func:`recorded_attributes` wrote, and the span's start
    and end as its timestamps. A field of the wrong type (a sender that is not this SDK) makes
    the mapper fail, so the span is kept as a plain span event.
    """
    attributes = span.attributes
    event_id = attributes.get(EVENT_ID_ATTRIBUTE)
    event_type = attributes.get(EVENT_TYPE_ATTRIBUTE)
    if events or not isinstance(event_id, str) or not isinstance(event_type, str):
        return events
    event_id = str(uuid.UUID(event_id))  # ValueError: not one of ours
    values: dict[str, Any] = {}
    for name, attribute, as_json in (*_COMMON_FIELDS, *_RECORDED_FIELDS.get(event_type, ())):
        if attribute in attributes:
            value = attributes[attribute]
            values[name] = _json_value(value) if as_json else value
    cls = _EVENT_CLASSES.get(event_type)
    if cls is LLMEvent:
        values["prompt"] = _recorded_content(attributes, "input")
        values["completion"] = _recorded_content(attributes, "output")
    event = cls(**values) if cls is not None else Event(event_type=event_type, **values)
    event.init_timestamp = _exact_time(span.start_ns)
    event.end_timestamp = _exact_time(span.end_ns if span.end_ns is not None else span.start_ns)
    event._check(0.0)  # InvalidEvent on a field of the wrong type
    event.id = event_id
    event.trace_id = span.trace_id
    event.span_id = span.span_id
    return [event]


def is_marker(span: FinishedSpan) -> bool:
    """True for a span that holds session or agent state (``agentops.marker``), not an event."""
    return MARKER_ATTRIBUTE in span.attributes


def map_plain(span: FinishedSpan, events: list[Event]) -> list[Event]:
    """Any span no earlier mapper took -> ``ActionEvent(action_type="span")`` (``actions``)."""
    if events:
        return events
    return [_stamp(ActionEvent(action_type=PLAIN_SPAN_ACTION_TYPE, params=span_params(span)), span)]


def _exception(span: FinishedSpan) -> Mapping[str, Any]:
    for event in span.events:
        if event.name == "exception":
            return event.attributes
    return {}


def map_error(span: FinishedSpan, events: list[Event]) -> list[Event]:
    """A span with ERROR status: also an :class:`ErrorEvent` whose trigger is the span's event.

    error_type: the recorded exception's ``exception.type``, else ``error.type``, else
    ``"SpanError"``; details: the status description, else ``exception.message``; logs:
    ``exception.stacktrace``. Its id is :func:`span_event_id` with ``part="error"``.
    """
    if span.status_code != "ERROR" or EVENT_TYPE_ATTRIBUTE in span.attributes:
        return events  # a recorded ErrorEvent's span is that event already
    exception = _exception(span)
    error_type = (
        _str(exception.get("exception.type"))
        or _str(span.attributes.get("error.type"))
        or "SpanError"
    )
    trigger = events[0] if events else None
    error = ErrorEvent(
        error_type=error_type,
        details=span.status_message or exception.get("exception.message"),
        logs=_str(exception.get("exception.stacktrace")),
        trigger_event_id=trigger.id if trigger is not None else None,
        trigger_event_type=trigger.event_type if trigger is not None else None,
    )
    _stamp(error, span, "error")
    error.init_timestamp = _when(span.end_ns) or error.init_timestamp  # when the span failed
    return [*events, error]


DEFAULT_MAPPERS: tuple[Mapper, ...] = (
    map_recorded,
    map_llm,
    map_agentops,
    map_tool,
    map_plain,
    map_error,
)
"""The chain :func:`map_span` runs by default, in order."""


def map_span(span: FinishedSpan, mappers: Sequence[Mapper] = DEFAULT_MAPPERS) -> list[Event]:
    """The events ``span`` becomes: each mapper of ``mappers`` in turn.

    A mapper that raises (a span shaped in a way it did not expect) is skipped and logged once;
    the span is never lost: if the chain makes nothing, it becomes a plain span event.
    """
    events: list[Event] = []
    for mapper in mappers:
        try:
            events = mapper(span, events)
        except Exception:
            _warn_once(mapper, span)
    if not events:
        events = map_plain(span, events)
    return events


_warned: set[str] = set()


def _warn_once(mapper: Mapper, span: FinishedSpan) -> None:
    name = getattr(mapper, "__name__", repr(mapper))
    if name in _warned:
        return
    _warned.add(name)
    log.warning(
        "agentops_async: span mapper %s failed on span %r (kept as a plain span event); "
        "later failures of it are not logged",
        name,
        span.name,
        exc_info=True,
    )


def map_spans(spans: Iterable[FinishedSpan]) -> list[Event]:
    """The events of many spans, in order (the collector's OTLP ingest maps whole exports)."""
    return [event for span in spans for event in map_span(span)]
