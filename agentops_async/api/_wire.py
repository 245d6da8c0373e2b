"""Wire objects of the AgentOps v2 API and their one encoder/decoders."""

from __future__ import annotations

import platform
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from ..events import _ENCODE_ERRORS, Event, _json_safe, _to_json_safe


class SessionBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The ``session`` object of create_session / update_session."""

    session_id: str
    init_timestamp: str  # ISO 8601, UTC (msgspec's encoding of the datetime)
    end_state: str  # always sent: "Indeterminate" until the session ends
    tags: list[str]  # always sent, so that set_tags([]) clears them
    end_timestamp: str | None = None
    end_state_reason: str | None = None
    video: str | None = None
    host_env: dict[str, Any] | None = None
    trace_id: str | None = None
    event_counts: dict[str, int] | None = None


class SessionEnvelope(msgspec.Struct):
    session: SessionBody


class AgentBody(msgspec.Struct):
    id: str
    name: str


class ReauthBody(msgspec.Struct):
    session_id: str


class CreateSessionAnswer(msgspec.Struct):
    jwt: str
    session_url: str | None = None
    # Our collector's extension: where it takes whole sessions of many sessions in one request
    # (absent from the AgentOps service's answers).
    sessions_batch_path: str | None = None


class SessionResult(msgspec.Struct):
    """One session's part of the create_sessions answer."""

    session_id: str
    token_cost: str | float | int | None = None
    session_url: str | None = None


class CreateSessionsAnswer(msgspec.Struct):
    sessions: list[SessionResult]


class UpdateSessionAnswer(msgspec.Struct):
    token_cost: str | float | int | None = None


class ReauthAnswer(msgspec.Struct):
    jwt: str


def _enc_hook(value: Any) -> Any:
    # Events are normalised at record time; this is a last line of defence (never raise).
    return _to_json_safe(value) if not isinstance(value, type) else repr(value)


class _BodyEncoder:
    """The encoder of the session, agent and reauthorisation bodies; never fails on a value.

    A body msgspec refuses (a tag with lone surrogates, from a non-UTF-8 file name) is encoded
    again from its :func:`~agentops_async.events._json_safe` copy.
    """

    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder(enc_hook=_enc_hook).encode

    def encode(self, body: Any) -> bytes:
        try:
            return self._encode(body)
        except _ENCODE_ERRORS:
            return self._encode(_json_safe(msgspec.to_builtins(body, enc_hook=_enc_hook), 1))


encoder = _BodyEncoder()
create_session_decoder = msgspec.json.Decoder(CreateSessionAnswer)
create_sessions_decoder = msgspec.json.Decoder(CreateSessionsAnswer)
update_session_decoder = msgspec.json.Decoder(UpdateSessionAnswer)
reauth_decoder = msgspec.json.Decoder(ReauthAnswer)


def parse_token_cost(raw: str | float | int | None) -> Decimal | None:
    """The server's token_cost as a Decimal (it may send a string, a number or nothing)."""
    if raw is None or isinstance(raw, bool):
        return None
    try:
        return Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return None


class EventsEnvelope(msgspec.Struct):
    """``{"events": [...]}``: finalized events and already-encoded ones (``msgspec.Raw``)."""

    events: list[Any]


_encode_events = msgspec.json.Encoder().encode  # no enc_hook: a value JSON cannot hold raises


def events_body(events: list[Event | msgspec.Raw]) -> bytes:
    """The ``create_events`` body of a batch, in one msgspec call.

    Raises what msgspec raises if some event holds what JSON cannot hold (text with lone
    surrogates, an object): the exporter then encodes each event on its own with
    :func:`~agentops_async.events._encode_event`, which makes such values sendable.
    """
    return _encode_events(EventsEnvelope(events))


_PREFIX = b'{"events":['


SESSIONS_BATCH = "create_sessions"


def session_entry(session_id: str, session_body: bytes | None, events_body: bytes | None) -> bytes:
    """One entry of a create_sessions body, made without decoding anything: from a session
    body (``{"session": {...}}``) and a create_events body, ``{"session": {...}, "events":
    [...]}``; with no session body (only events to add), ``{"session_id": ..., "events": [...]}``.
    """
    if session_body is None:
        head = b'{"session_id":' + msgspec.json.encode(session_id)
    else:
        head = bytes(memoryview(session_body)[:-1])
    if events_body is None:
        return head + b"}"
    return b"".join((head, b",", memoryview(events_body)[1:]))


def sessions_body(entries: list[bytes]) -> bytes:
    """The create_sessions body of entries made by :func:`whole_session`."""
    return b'{"sessions":[' + b",".join(entries) + b"]}"


def join_bodies(bodies: list[bytes]) -> bytes:
    """One ``{"events": [...]}`` body from several (each non-empty), in order, in one copy."""
    pieces: list[bytes | memoryview] = [_PREFIX]
    for body in bodies:
        if len(pieces) > 1:
            pieces.append(b",")
        pieces.append(memoryview(body)[len(_PREFIX) : -2])
    pieces.append(b"]}")
    return b"".join(pieces)


_host_env: dict[str, Any] | None = None


def host_env() -> dict[str, Any]:
    """What the AgentOps dashboard shows about the host (computed once per process)."""
    global _host_env
    if _host_env is None:
        from .. import __version__

        _host_env = {
            "SDK": {
                "AgentOps SDK Version": f"agentops_async {__version__}",
                "Python Version": platform.python_version(),
                "System Packages": {},
            },
            "OS": {
                "Hostname": platform.node(),
                "OS": platform.system(),
                "OS Version": platform.version(),
                "OS Release": platform.release(),
            },
            "Project Working Directory": {"Project Working Directory": sys.path[0] or "."},
        }
    return _host_env
