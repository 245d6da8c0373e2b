"""A ``create_events`` body to storage rows, without holding the event loop.

Everything here is CPU work on the body alone, so for a large body it runs in a decode thread
(:meth:`Context.off_loop <agentops_async.collector._context.Context.off_loop>`). A body is
sized up by cheap byte counts before msgspec decodes it, so one that is too deep or holds too many
events is refused without the cost of decoding it. :func:`nesting_exceeds` is also the depth check
of OTLP spans.
"""

from __future__ import annotations

import re
from typing import NamedTuple, NoReturn

import msgspec

from .._limits import MAX_EVENTS_PER_REQUEST, MAX_NESTING_DEPTH
from ..events import EventType
from . import _wire as wire
from ._http import DECODE_ERRORS, ID_RULE, HttpError, canonical_uuid, decode_error, fail
from ._storage import CANONICAL_UUID, EventBatch, widened

__all__ = [
    "SessionsBody",
    "add_event_rows",
    "brackets",
    "event_batch",
    "finish",
    "nesting_exceeds",
    "sessions_body",
    "too_deep_message",
]


# A JSON string (skipped whole, escapes included) or a bracket.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def nesting_exceeds(text: str, limit: int = MAX_NESTING_DEPTH) -> bool:
    """Whether the JSON ``text`` has containers nested deeper than ``limit``.

    The value itself counts as level 1. Brackets inside strings do not count. Cheap for the usual
    value: one with no more brackets than ``limit`` cannot be deeper, so only the rare value with
    many brackets is scanned (by a regex that skips strings).
    """
    if text.count("{") + text.count("[") <= limit:
        return False
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        char = text[match.start()]
        if char == '"':
            continue
        if char == "{" or char == "[":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _too_deep_event(body: bytes) -> str:
    """The 400 message for a create_events body too deep to decode: names the first such event
    (found by a bracket scan that gives up after a million brackets)."""
    depth, index = 0, -1
    for count, match in enumerate(_NEXT_BRACKET.finditer(body)):
        if count > 1_000_000:
            return too_deep_message("an event")
        char = body[match.start(1)]
        if char == 0x7B or char == 0x5B:  # { [
            depth += 1
            if depth == 3:  # {"events": [ {<event>
                index += 1
            elif depth > MAX_NESTING_DEPTH + 2:
                break
        else:
            depth -= 1
    return too_deep_message(f"events[{max(index, 0)}]")


def too_deep_message(what: str) -> str:
    return (
        f"{what}: nested deeper than {MAX_NESTING_DEPTH} levels (the limit for one event's "
        "JSON; flatten or cut the value)"
    )


# Everything up to the next bracket outside strings, capturing that bracket.
_NEXT_BRACKET = re.compile(rb'(?:"[^"\\]*(?:\\.[^"\\]*)*"|[^"\[\]{}]+)*([\[\]{}])')
_EVENTS_KEY = re.compile(rb'"events"\s*:\s*$')
_SLICE = 1024 * 1024


_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _sliced_count(body: bytes, sub: bytes) -> int:
    count = 0
    for start in range(0, len(body), _SLICE):
        count += body.count(sub, start, start + _SLICE + len(sub) - 1)
    return count


def brackets(body: bytes) -> bytes:
    """The body's brackets in order (those inside strings too): a cheap outline of its shape.

    Made in slices of a megabyte (each well under a millisecond), so that from a thread it
    never holds the GIL for long.
    """
    if len(body) <= _SLICE:
        return body.translate(None, _NOT_BRACKETS)
    return b"".join(
        body[start : start + _SLICE].translate(None, _NOT_BRACKETS)
        for start in range(0, len(body), _SLICE)
    )


def _may_nest_deeper(brackets: bytes, limit: int) -> bool:
    """False when the outline ``brackets`` is certainly no deeper than ``limit``.

    Each pass deletes the innermost pairs, so the number of passes is the depth. Brackets inside
    strings may unbalance the outline: then the answer is True and the caller looks closer.
    """
    shape = brackets.replace(b"[", b"{").replace(b"]", b"}")
    for _ in range(limit):
        inner = shape.replace(b"{}", b"")
        if not inner:
            return False
        if len(inner) == len(shape):
            return True
        shape = inner
    return True


def _more_events_than(body: bytes, braces: int, limit: int, depth: int = 3) -> bool:
    """Whether a body holds more than ``limit`` events, without decoding it.

    Events are the elements of the arrays keyed ``"events"`` at ``depth`` (3 in a create_events
    body, ``{"events": [{...``; 5 in a create_sessions body). A body of a million tiny events takes
    msgspec ~0.1 s in one call (holding the GIL, so even from a thread it stalls the loop) and ~100
    bytes of memory each, only to be refused. So two cheap counts first: every event is an object
    (``braces`` counts the ``{``), and every event names its ``"event_type"`` (counted in slices);
    a body with no more of either than ``limit`` is decoded as usual (one that spells the key with
    escapes is counted after decoding). Else the events are counted by a bracket scan that stops
    at ``limit + 1``.
    """
    if braces <= limit or _sliced_count(body, b'"event_type"') <= limit:
        return False
    level, events, in_events = 0, 0, False
    for match in _NEXT_BRACKET.finditer(body):
        at = match.start(1)
        char = body[at]
        if char == 0x7B or char == 0x5B:  # { [
            level += 1
            if level == depth - 1:
                in_events = _EVENTS_KEY.search(body, max(0, at - 64), at) is not None
            elif level == depth and in_events:
                events += 1
                if events > limit:
                    return True
        else:
            level -= 1
    return False


def _too_many_events(count: str) -> NoReturn:
    fail(
        413,
        f"too many events in one request: {count} (MAX_EVENTS_PER_REQUEST); send them in"
        " smaller batches",
    )


def _may_hold_nul(body: bytes) -> bool:
    """Whether some string of a JSON body may hold NUL: only as the escape ``\\u0000`` (msgspec
    refuses a raw NUL byte), so one search of the body answers for all its events (a false
    alarm, ``"\\\\u0000"``, only costs the per-event look). Most bodies have no backslash at
    all, which one ``memchr`` finds out (~40x faster than looking for the whole escape)."""
    return b"\\" in body and b"\\u0000" in body


def event_batch(body: bytes, own: str, outline: bytes | None = None) -> tuple[EventBatch, set[str]]:
    """Decode a create_events body into rows (see :func:`add_event_rows`); 400/413 on bad input.

    Runs in a worker thread for large bodies: everything here is CPU work on the body alone.
    Each event's depth is checked only when the body's outline (:func:`brackets`, made here
    unless given) may be too deep (events sit at depth 3 of ``{"events": [...]}``).
    """
    if outline is None:
        outline = brackets(body)
    if _more_events_than(body, outline.count(b"{"), MAX_EVENTS_PER_REQUEST):
        _too_many_events(f"more than {MAX_EVENTS_PER_REQUEST}")
    try:
        raw_events = wire.decode_events(body).events
        if len(raw_events) > MAX_EVENTS_PER_REQUEST:
            _too_many_events(f"{len(raw_events)} > {MAX_EVENTS_PER_REQUEST}")
        heads = wire.decode_event_heads(body).events
    except wire.FieldRuleError as exc:
        fail(400, str(exc))
    except RecursionError:
        fail(400, _too_deep_event(body))
    except msgspec.DecodeError as exc:
        decode_error("events", exc)
    rows = EventBatch(nul=_may_hold_nul(body))
    check_depth = _may_nest_deeper(outline, MAX_NESTING_DEPTH + 2)
    others = add_event_rows(rows, raw_events, heads, own, "events", check_depth)
    finish(rows)
    return rows, others


class SessionsBody(NamedTuple):
    """A create_sessions body, decoded: its entries, their events' indexed columns (entry by
    entry), and what :func:`add_event_rows` needs to know of the body as a whole."""

    entries: list[wire.SessionWithEventsIn]
    heads: list[wire.SessionEventHeads]
    nul: bool
    check_depth: bool


def sessions_body(body: bytes, outline: bytes | None = None) -> SessionsBody:
    """Decode a create_sessions body in two passes over it (entries with raw events, and the
    events' indexed columns), with the size and depth checks of :func:`event_batch`."""
    if outline is None:
        outline = brackets(body)
    if _more_events_than(body, outline.count(b"{"), MAX_EVENTS_PER_REQUEST, depth=5):
        fail(413, f"sessions: more than {MAX_EVENTS_PER_REQUEST} events per request")
    try:
        entries = wire.decode_sessions(body).sessions
        if len(entries) > MAX_EVENTS_PER_REQUEST:
            fail(413, f"sessions: {len(entries)}, more than {MAX_EVENTS_PER_REQUEST} per request")
        if sum(len(entry.events) for entry in entries) > MAX_EVENTS_PER_REQUEST:
            fail(413, f"sessions: more than {MAX_EVENTS_PER_REQUEST} events per request")
        heads = wire.decode_session_heads(body).sessions
    except wire.FieldRuleError as exc:
        fail(400, str(exc))
    except DECODE_ERRORS as exc:
        decode_error("sessions", exc)
    # Events sit at depth 5 of {"sessions": [{"events": [{...}]}]}.
    check_depth = _may_nest_deeper(outline, MAX_NESTING_DEPTH + 4)
    return SessionsBody(entries, heads, _may_hold_nul(body), check_depth)


def add_event_rows(
    rows: EventBatch,
    raw_events: list[msgspec.Raw],
    heads: list[wire.EventHead],
    own: str,
    field: str,
    check_depth: bool,
) -> set[str]:
    """Append the rows of events sent with ``own``'s token to ``rows``; returns the other
    sessions they name. ``field`` names the events in error messages (``events``).

    This loop is the collector's per-event Python work, so it is kept flat: what can be checked
    once per body is (ids' lengths inside msgspec's decode, NUL by one search of the body, depth
    by the body's outline); only a body that may break a rule takes :func:`_check_events`. The
    JSON is stored as text decoded here (it binds cheaper than bytes, and a fragment that is not
    UTF-8 is refused now rather than stored unreadable). Each event gets the shortest row that
    holds its columns (:data:`~agentops_async.collector._storage.EventRow`: 4 values, 6 for a
    tool call's timestamps, 10 with LLM usage), and :func:`finish` widens the batch's rows to
    the widest.
    """
    if rows.nul or check_depth:
        _check_events(raw_events, heads, field, check_depth)
    named: dict[str, str] = {}
    append = rows.append
    width = rows.width
    tool_type = EventType.TOOL
    try:
        for raw, head in zip(raw_events, heads, strict=True):
            sid = head.session_id
            if sid is None or sid == own:
                sid = own
            else:
                canonical = named.get(sid)
                if canonical is None:
                    canonical = named[sid] = _named_session(sid, heads, field)
                sid = canonical
            kind = head.event_type
            model = head.model
            prompt = head.prompt_tokens
            completion = head.completion_tokens
            cost = head.cost
            if model is None and prompt is None and completion is None and cost is None:
                if kind != tool_type:
                    append((sid, head.id, kind, str(raw, "utf-8")))
                    continue
                append(
                    (sid, head.id, kind, head.init_timestamp, head.end_timestamp, str(raw, "utf-8"))
                )
                if width == 4:
                    width = 6
                continue
            width = 10
            tool = kind == tool_type
            append(
                (
                    sid,
                    head.id,
                    kind,
                    head.init_timestamp if tool else None,
                    head.end_timestamp if tool else None,
                    str(raw, "utf-8"),
                    model,
                    prompt,
                    completion,
                    cost,
                )
            )
    except UnicodeDecodeError:
        _refuse_not_utf8(raw_events, field)
    rows.width = width
    others = set(named.values())
    others.discard(own)
    return others


def finish(rows: EventBatch) -> None:
    """Give every row of ``rows`` the batch's width (the widest row's: see ``EventRow``)."""
    width = rows.width
    if width > 4:
        rows[:] = [row if len(row) == width else widened(row, width) for row in rows]


def _named_session(session_id: str, heads: list[wire.EventHead], field: str) -> str:
    """The canonical form of another session named by an event; a 400 naming the first event
    that names it when it is no UUID."""
    if CANONICAL_UUID.fullmatch(session_id) is not None:  # as the SDKs send them: 5x faster
        return session_id
    try:
        return canonical_uuid(session_id, "")
    except HttpError:
        index = next(i for i, head in enumerate(heads) if head.session_id == session_id)
        fail(400, f"{field}[{index}].session_id: expected a UUID")


def _check_events(
    raw_events: list[msgspec.Raw], heads: list[wire.EventHead], field: str, check_depth: bool
) -> None:
    """The per-event checks of a body that may break a rule: NUL in an id, JSON too deep."""
    for index, (raw, head) in enumerate(zip(raw_events, heads, strict=True)):
        if "\x00" in head.id:
            fail(400, f"{field}[{index}].id: {ID_RULE}")
        if check_depth:
            try:
                data = str(raw, "utf-8")
            except UnicodeDecodeError as exc:
                fail(400, f"invalid {field}[{index}]: {exc}")
            if nesting_exceeds(data):
                fail(400, too_deep_message(f"{field}[{index}]"))


def _refuse_not_utf8(raw_events: list[msgspec.Raw], field: str) -> NoReturn:
    """The 400 naming the first event that is not UTF-8."""
    for index, raw in enumerate(raw_events):
        try:
            str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            fail(400, f"invalid {field}[{index}]: {exc}")
    raise AssertionError("an event that is not UTF-8 was not found again")
