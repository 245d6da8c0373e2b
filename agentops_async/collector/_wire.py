"""Wire shapes the collector reads and writes, with one msgspec decoder/encoder each.

Request bodies are decoded leniently where the AgentOps clients are loose (unknown fields are
skipped, numbers may arrive as strings) and strictly where a wrong type would corrupt what we
store. Events are kept as the raw JSON fragments the client sent (``msgspec.Raw``): the handler only
pulls out the few indexed columns (:class:`EventHeadsIn`), so the per-event work stays tiny.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from .._limits import MAX_ID_LENGTH, MAX_INT

__all__ = [
    "END_STATES",
    "ID_RULE",
    "MAX_COST",
    "AgentIn",
    "DeveloperErrorIn",
    "EventHead",
    "EventHeadsIn",
    "EventsIn",
    "FieldRuleError",
    "ProjectIn",
    "ReauthIn",
    "SessionEnvelope",
    "SessionEventHeads",
    "SessionHeadsIn",
    "SessionIn",
    "SessionWithEventsIn",
    "SessionsIn",
    "decode_agent",
    "decode_developer_error",
    "decode_event_heads",
    "decode_events",
    "decode_project",
    "decode_reauth",
    "decode_session",
    "decode_session_envelope",
    "decode_session_heads",
    "decode_sessions",
    "encode",
    "encoder",
]

END_STATES = {
    "success": "SUCCEEDED",
    "succeeded": "SUCCEEDED",
    "fail": "FAILED",
    "failed": "FAILED",
    "indeterminate": "INDETERMINATE",
}
"""The stored state of a session's ``end_state`` (lowercased: AgentOps sends ``"Success"``)."""

MAX_COST = 1e12
"""Largest ``cost`` (US dollars) of one LLM event the collector accepts."""

# Ids are keys: PostgreSQL text cannot hold NUL, and replacing it would make "a\0b" and "a\ufffdb"
# one id (the second event silently not stored). Refused alike on both backends.
ID_RULE = f"expected 1..{MAX_ID_LENGTH} characters, without NUL (U+0000)"

# Numbers that are stored in columns and summed by the read side: refused at ingest (400 naming the
# field) when they could break a read: non-finite or absurd costs, token counts that are negative
# or do not fit in the databases' signed 64-bit integers. The bounds are checked inside msgspec's
# decode (in C), so they cost nothing measurable per event.
Cost = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_COST)]
TokenCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
# An event's id: its length is checked inside the decode too (NUL is looked for once per body, see
# collector._ingest).
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class SessionEnvelope(msgspec.Struct):
    """``{"session": {...}}`` of create_session and update_session."""

    session: msgspec.Raw


class SessionWithEventsIn(msgspec.Struct):
    """One entry of ``/v2/create_sessions``: a session object (created or updated) and events
    (each a raw JSON fragment); or only events of an existing session, named by ``session_id``."""

    session: msgspec.Raw = msgspec.Raw(b"null")
    session_id: str | None = None
    events: list[msgspec.Raw] = []


class SessionsIn(msgspec.Struct):
    """``{"sessions": [{"session": {...}, "events": [...]}, ...]}`` of ``/v2/create_sessions``."""

    sessions: list[SessionWithEventsIn]


class SessionIn(msgspec.Struct, kw_only=True):
    """The fields of a session object the collector stores (everything else is ignored)."""

    session_id: str | None = None
    init_timestamp: str | None = None
    end_timestamp: str | None = None
    end_state: str | None = None
    end_state_reason: str | None = None
    tags: list[str] | None = None
    video: str | None = None
    trace_id: str | None = None
    host_env: msgspec.Raw = msgspec.Raw(b"null")


class EventsIn(msgspec.Struct, gc=False):
    """``{"events": [...]}`` of create_events; each event stays a raw JSON fragment."""

    events: list[msgspec.Raw]


class EventHead(msgspec.Struct, kw_only=True, gc=False):
    """The indexed columns of one event (the rest of its JSON is stored as sent).

    Not tracked by the garbage collector (``gc=False``: scalars only, no cycles possible): a batch
    makes a thousand of these, which otherwise trigger collections on the ingest path.
    """

    id: EventId
    event_type: str
    init_timestamp: str | None = None
    end_timestamp: str | None = None
    session_id: str | None = None
    model: str | None = None
    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None
    cost: Cost | None = None


class EventHeadsIn(msgspec.Struct, gc=False):
    """``{"events": [...]}`` of create_events read for the indexed columns only.

    The handler decodes a body twice, as :class:`EventsIn` and as this: two passes in C cost less
    than decoding each raw fragment again from Python.
    """

    events: list[EventHead]


class SessionEventHeads(msgspec.Struct, gc=False):
    """The indexed columns of the events of one ``/v2/create_sessions`` entry."""

    events: list[EventHead] = []


class SessionHeadsIn(msgspec.Struct, gc=False):
    """A ``/v2/create_sessions`` body read for its events' indexed columns only (a second pass
    over the body, beside :class:`SessionsIn`, as for :class:`EventHeadsIn`)."""

    sessions: list[SessionEventHeads]


class FieldRuleError(msgspec.ValidationError):
    """A field broke one of the collector's documented rules; the message is
    ``<field>: <rule>`` (``events[3].id: expected 1..200 characters, ...``)."""


class ReauthIn(msgspec.Struct):
    """``{"session_id": ...}`` of reauthorize_jwt."""

    session_id: str


class AgentIn(msgspec.Struct):
    """``{"id": ..., "name": ...}`` of create_agent."""

    id: str
    name: str | None = None


class ProjectIn(msgspec.Struct):
    """``{"name": ...}`` of the admin API's create project."""

    name: str = "default"


class DeveloperErrorIn(msgspec.Struct, kw_only=True):
    """A client-side SDK error report (``/v2/developer_errors``)."""

    type: str | None = None
    message: str | None = None
    session_id: str | None = None
    sdk_version: str | None = None


decode_session_envelope = msgspec.json.Decoder(SessionEnvelope).decode
decode_session = msgspec.json.Decoder(SessionIn).decode
decode_sessions = msgspec.json.Decoder(SessionsIn).decode
decode_events = msgspec.json.Decoder(EventsIn).decode
_event_heads_decoder = msgspec.json.Decoder(EventHeadsIn, strict=False)
_session_heads_decoder = msgspec.json.Decoder(SessionHeadsIn, strict=False)
decode_reauth = msgspec.json.Decoder(ReauthIn).decode
decode_agent = msgspec.json.Decoder(AgentIn).decode
decode_developer_error = msgspec.json.Decoder(DeveloperErrorIn, strict=False).decode
decode_project = msgspec.json.Decoder(ProjectIn).decode

encoder = msgspec.json.Encoder()

_AT_FIELD = re.compile(r" - at `\$\.(?P<field>[^`]+)`$")
_NUMBER_RULES = {
    "cost": f"must be a finite number in [0, {MAX_COST:g}] (US dollars)",
    "prompt_tokens": f"must be an integer in [0, {MAX_INT}] (signed 64-bit)",
    "completion_tokens": f"must be an integer in [0, {MAX_INT}] (signed 64-bit)",
}


def decode_event_heads(body: bytes) -> EventHeadsIn:
    """The indexed columns of a create_events body.

    Raises:
        FieldRuleError: An event's id is empty or longer than ``MAX_ID_LENGTH``.
        msgspec.ValidationError: A field is missing or of the wrong type, or a number is out of
            its range; the message starts with the field (``events[3].cost: must be ...``).
    """
    try:
        return _event_heads_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc)) from None


def decode_session_heads(body: bytes) -> SessionHeadsIn:
    """The indexed columns of the events of a create_sessions body (errors as
    :func:`decode_event_heads`, the field named from ``sessions[i]``)."""
    try:
        return _session_heads_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc)) from None


def _explain(message: str) -> msgspec.ValidationError:
    """A decode error of an event's id or number as ``<field>: <its documented rule>``."""
    match = _AT_FIELD.search(message)
    if match is None:
        return msgspec.ValidationError(message)
    field = match["field"]
    name = field.rsplit(".", 1)[-1]
    if name == "id" and "length" in message:
        return FieldRuleError(f"{field}: {ID_RULE}")
    rule = _NUMBER_RULES.get(name)
    if rule is None:
        return msgspec.ValidationError(message)
    return msgspec.ValidationError(f"{field}: {rule}")


def encode(value: Any) -> bytes:
    """JSON bytes of ``value`` with the shared encoder."""
    return encoder.encode(value)
