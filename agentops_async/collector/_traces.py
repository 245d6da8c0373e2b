"""Traces as sessions: the rules by which an OTLP trace becomes (and completes) a session.

Any OTLP sender with a project credential (the agentops SDK 0.4, this SDK's OTLP target, any
OpenTelemetry application) gets one session per trace:

- A trace that no session of the project names (by ``trace_id``) becomes a session whose id is
  :func:`session_id_of`: the ``agentops.session.id`` its spans carry (this SDK's OTLP target
  puts the session's own id there), else :func:`trace_session_id`, the trace id's 32 hex digits
  read as a UUID (``0af7651916cd43dd8448eb211c80319c`` -> ``0af76519-16cd-43dd-8448-eb211c80319c``).
- It is RUNNING from its earliest span (a span that arrives later but started earlier moves the
  start back). Spans that arrive before their root are kept.
- It is completed by its root span (a span without a parent): end time, end state, end reason,
  tags and host environment come from the root. With two roots, the one that ends last decides.
- Before its root arrives, a session marker (a span with ``agentops.marker = session`` that is
  not a root: this SDK's OTLP target sends one when a session starts or its tags change) gives
  the RUNNING session its tags and host environment; the latest marker (by end time) wins.
- End state: ``agentops.session.end_state`` when it is a known string (``Success``,
  ``Fail``, ``Indeterminate``, any case), else the root's status: OK -> SUCCEEDED, ERROR ->
  FAILED, otherwise INDETERMINATE.

A session that a v2 client created with a ``trace_id`` (this SDK, agentops 0.3) keeps its own
id and lifecycle: the spans of its trace become its events, and these rules do not touch it.

Everything here is pure (no I/O): :func:`session_for_trace` says what to write.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from .._limits import MAX_TAG_LENGTH
from .._spans import MARKER_ATTRIBUTE, SESSION_ID_ATTRIBUTE, FinishedSpan
from ._otlp import ns_to_iso
from ._storage import SessionRow, SessionWrite
from ._wire import END_STATES

__all__ = [
    "END_REASON_ATTRIBUTES",
    "END_STATE_ATTRIBUTE",
    "HOST_ENV_ATTRIBUTE",
    "HOST_ENV_PREFIXES",
    "TAGS_ATTRIBUTE",
    "VIDEO_ATTRIBUTE",
    "end_state_of",
    "group_by_trace",
    "session_for_trace",
    "session_id_of",
    "trace_session_id",
]

END_STATE_ATTRIBUTE = "agentops.session.end_state"
END_REASON_ATTRIBUTES = ("agentops.session.end_reason", "agentops.session.end_state_reason")
TAGS_ATTRIBUTE = "agentops.tags"
HOST_ENV_ATTRIBUTE = "agentops.session.host_env"
"""The host environment as JSON text (this SDK's OTLP target); else the prefixes below."""
VIDEO_ATTRIBUTE = "agentops.session.video"
HOST_ENV_PREFIXES = ("host.", "cpu.", "memory.", "disk.", "os.")
"""Resource and root span attributes kept as the session's host environment."""

_STATE_NAMES = {"SUCCEEDED": "Success", "FAILED": "Fail", "INDETERMINATE": "Indeterminate"}
_STATUS_STATES = {"OK": "SUCCEEDED", "ERROR": "FAILED"}


def trace_session_id(trace_id: str) -> str:
    """The id of the session made from a trace: its 32 hex digits as a UUID (canonical form)."""
    return str(uuid.UUID(hex=trace_id))


def session_id_of(trace_id: str, spans: Sequence[FinishedSpan]) -> str:
    """The id of the session of ``trace_id``: the first ``agentops.session.id`` of ``spans``
    that is a UUID (canonical form), else :func:`trace_session_id`."""
    for span in spans:
        given = span.attributes.get(SESSION_ID_ATTRIBUTE)
        if isinstance(given, str):
            try:
                return str(uuid.UUID(given))
            except ValueError:
                continue
    return trace_session_id(trace_id)


def end_state_of(root: FinishedSpan) -> tuple[str, str]:
    """``(state, end_state)`` of a session completed by ``root``.

    ``state`` is SUCCEEDED, FAILED or INDETERMINATE; ``end_state`` is the string the sender gave
    in ``agentops.session.end_state``, else ``Success``/``Fail``/``Indeterminate``.
    """
    given = root.attributes.get(END_STATE_ATTRIBUTE)
    if isinstance(given, str) and given.strip().lower() in END_STATES:
        return END_STATES[given.strip().lower()], given
    state = _STATUS_STATES.get(root.status_code, "INDETERMINATE")
    return state, _STATE_NAMES[state]


def _end_reason(root: FinishedSpan) -> str | None:
    for name in END_REASON_ATTRIBUTES:
        value = root.attributes.get(name)
        if isinstance(value, str) and value:
            return value
    return root.status_message


def _tags(root: FinishedSpan) -> list[str] | None:
    """``agentops.tags`` of the root (else of its resource): a list, a JSON list or a comma list.

    Tags longer than MAX_TAG_LENGTH are left out (a span cannot be refused for them: its
    events would be lost).
    """
    value: Any = root.attributes.get(TAGS_ATTRIBUTE, root.resource.get(TAGS_ATTRIBUTE))
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                value = text.strip("[]").split(",")
        else:
            value = text.split(",")
    elif isinstance(value, list):  # an array attribute: the tags exactly as given
        given = dict.fromkeys(t for t in value if isinstance(t, str))
        return [t for t in given if t and len(t) <= MAX_TAG_LENGTH]
    if not isinstance(value, list):
        return None
    tags = [str(t).strip() for t in value if t is not None]
    return [t for t in dict.fromkeys(tags) if t and len(t) <= MAX_TAG_LENGTH]


def _host_env(root: FinishedSpan) -> str | None:
    given = root.attributes.get(HOST_ENV_ATTRIBUTE)
    if isinstance(given, str) and given.startswith("{"):
        try:
            return json.dumps(json.loads(given))
        except ValueError:
            pass
    found: dict[str, Any] = {}
    for attributes in (root.resource, root.attributes):
        found.update((k, v) for k, v in attributes.items() if k.startswith(HOST_ENV_PREFIXES))
    return json.dumps(found) if found else None


def _video(root: FinishedSpan) -> str | None:
    value = root.attributes.get(VIDEO_ATTRIBUTE)
    return value if isinstance(value, str) and value else None


def _latest_marker(spans: Sequence[FinishedSpan]) -> FinishedSpan | None:
    markers = [
        s
        for s in spans
        if s.parent_span_id is not None and s.attributes.get(MARKER_ATTRIBUTE) == "session"
    ]
    if not markers:
        return None
    return max(markers, key=lambda s: s.end_ns or s.start_ns)


def _root(spans: Sequence[FinishedSpan]) -> FinishedSpan | None:
    roots = [s for s in spans if s.parent_span_id is None]
    if not roots:
        return None
    return max(roots, key=lambda s: s.end_ns or s.start_ns)


def session_for_trace(
    project_id: str,
    trace_id: str,
    spans: Sequence[FinishedSpan],
    stored: SessionRow | None,
) -> SessionWrite | None:
    """What to write for the session of ``trace_id`` after ``spans`` of it arrived.

    Args:
        project_id: The sender's project.
        trace_id: The trace (32 hex digits); the session id is :func:`session_id_of`.
        spans: The spans of this trace in one export (at least one).
        stored: The session as stored, or None when it does not exist yet.

    Returns:
        The write (create, or update the start and/or the end), or None when nothing changes.
    """
    session_id = session_id_of(trace_id, spans)
    earliest = min(s.start_ns for s in spans)
    fields: dict[str, Any] = {}
    if stored is None or stored.init_ts is None or earliest / 1e9 < stored.init_ts:
        fields.update(init_timestamp=ns_to_iso(earliest), init_ts=earliest / 1e9)
    root = _root(spans)
    if root is not None:
        end_ns = root.end_ns or root.start_ns
        if stored is None or stored.end_ts is None or end_ns / 1e9 >= stored.end_ts:
            state, end_state = end_state_of(root)
            fields.update(
                end_timestamp=ns_to_iso(end_ns),
                end_ts=end_ns / 1e9,
                state=state,
                end_state=end_state,
                end_state_reason=_end_reason(root),
                tags=_tags(root),
                host_env=_host_env(root),
            )
            video = _video(root)
            if video is not None:
                fields["video"] = video
    elif stored is None or stored.end_ts is None:
        marker = _latest_marker(spans)
        if marker is not None:  # a running session's tags, before its root arrives
            fields.update(tags=_tags(marker) or [], host_env=_host_env(marker))
    if stored is not None and not fields:
        return None
    return SessionWrite(session_id=session_id, project_id=project_id, trace_id=trace_id, **fields)


def group_by_trace(spans: Sequence[FinishedSpan]) -> Mapping[str, list[FinishedSpan]]:
    """The spans of an export by trace id, in order of first appearance."""
    traces: dict[str, list[FinishedSpan]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    return traces
