"""A ``create_events`` body to storage rows, without holding the event loop.

Everything here is CPU work on the body alone, so for a large body it runs in a decode thread
(:meth:`Context.off_loop <agentops_async.collector._context.Context.off_loop>`). A body is
sized up by cheap byte counts before msgspec decodes it, so one that is too deep or holds too many
events is refused without the cost of decoding it. :func:`nesting_exceeds` is also the depth check
of OTLP spans.
"""

from __future__ import annotations

import re

import msgspec

from .._limits import MAX_EVENTS_PER_REQUEST, MAX_ID_LENGTH, MAX_NESTING_DEPTH
from . import _wire as wire
from ._http import ID_RULE, canonical_uuid, decode_error, fail
from ._storage import EventRow

__all__ = ["event_batch", "nesting_exceeds", "too_deep_message"]


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


def _brackets(body: bytes) -> bytes:
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


def _more_events_than(body: bytes, braces: int, limit: int) -> bool:
    """Whether a create_events body holds more than ``limit`` events, without decoding it.

    A body of a million tiny events takes msgspec ~0.1 s in one call (holding the GIL, so even
    from a thread it stalls the loop) and ~100 bytes of memory each, only to be refused. So two
    cheap counts first: every event is an object (``braces`` counts the ``{``), and every event
    names its ``"event_type"`` (counted in slices); a body with no more of either than ``limit``
    is decoded as usual (one that spells the key with escapes is counted after decoding). Else
    the elements of ``"events"`` are counted by a bracket scan that stops at ``limit + 1``.
    """
    if braces <= limit or _sliced_count(body, b'"event_type"') <= limit:
        return False
    depth, events, in_events = 0, 0, False
    for match in _NEXT_BRACKET.finditer(body):
        at = match.start(1)
        char = body[at]
        if char == 0x7B or char == 0x5B:  # { [
            depth += 1
            if depth == 2:
                in_events = _EVENTS_KEY.search(body, max(0, at - 64), at) is not None
            elif depth == 3 and in_events:
                events += 1
                if events > limit:
                    return True
        else:
            depth -= 1
    return False


def event_batch(body: bytes, own: str) -> tuple[list[EventRow], set[str]]:
    """Decode a create_events body into rows (see :func:`_event_rows`); 400/413 on bad input.

    Runs in a worker thread for large bodies: everything here is CPU work on the body alone.
    Each event's depth is checked only when the body's outline may be too deep (events sit at
    depth 3 of ``{"events": [...]}``).
    """
    brackets = _brackets(body)
    if _more_events_than(body, brackets.count(b"{"), MAX_EVENTS_PER_REQUEST):
        fail(
            413,
            f"too many events in one request: more than {MAX_EVENTS_PER_REQUEST} "
            "(MAX_EVENTS_PER_REQUEST); send them in smaller batches",
        )
    try:
        raw_events = wire.decode_events(body).events
        if len(raw_events) > MAX_EVENTS_PER_REQUEST:
            fail(
                413,
                f"too many events in one request: {len(raw_events)} > {MAX_EVENTS_PER_REQUEST} "
                "(MAX_EVENTS_PER_REQUEST); send them in smaller batches",
            )
        heads = wire.decode_event_heads(body).events
    except RecursionError:
        fail(400, _too_deep_event(body))
    except msgspec.DecodeError as exc:
        decode_error("events", exc)
    check_depth = _may_nest_deeper(brackets, MAX_NESTING_DEPTH + 2)
    return _event_rows(raw_events, heads, own, check_depth)


def _event_rows(
    raw_events: list[msgspec.Raw], heads: list[wire.EventHead], own: str, check_depth: bool
) -> tuple[list[EventRow], set[str]]:
    """The rows of a create_events batch sent with ``own``'s token, and the other sessions named.

    This loop is the collector's per-event Python work, so it is kept flat. The JSON is stored as
    text decoded here (it binds cheaper than bytes, and a fragment that is not UTF-8 is refused
    now rather than stored unreadable); events without LLM usage get the short row.
    """
    others: set[str] = set()
    rows: list[EventRow] = []
    append = rows.append
    for index, (raw, head) in enumerate(zip(raw_events, heads, strict=True)):
        try:
            data = str(raw, "utf-8")
        except UnicodeDecodeError as exc:
            fail(400, f"invalid events[{index}]: {exc}")
        if check_depth and nesting_exceeds(data):
            fail(400, too_deep_message(f"events[{index}]"))
        event_id = head.id
        if not event_id or len(event_id) > MAX_ID_LENGTH or "\x00" in event_id:
            fail(400, f"events[{index}].id: {ID_RULE}")
        sid = head.session_id
        if sid is None or sid == own:
            sid = own
        else:
            sid = canonical_uuid(sid, f"events[{index}].session_id")
            if sid != own:
                others.add(sid)
        model = head.model
        prompt = head.prompt_tokens
        completion = head.completion_tokens
        cost = head.cost
        if model is None and prompt is None and completion is None and cost is None:
            append((sid, event_id, head.event_type, head.init_timestamp, head.end_timestamp, data))
        else:
            append(
                (
                    sid,
                    event_id,
                    head.event_type,
                    head.init_timestamp,
                    head.end_timestamp,
                    data,
                    model,
                    prompt,
                    completion,
                    cost,
                )
            )
    return rows, others
