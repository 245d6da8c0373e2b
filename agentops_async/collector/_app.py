"""The collector's HTTP API: AgentOps v2, OTLP/HTTP traces, the read API and a tiny admin API.

Every answer is JSON (the AgentOps clients parse even error bodies). Client mistakes are 4xx with a
``{"message": ...}`` that names the field; a storage outage (``StorageUnavailable``) is 503 with
``Retry-After``; anything unexpected is logged and answered with 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import sys
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import msgspec
from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestPayloadError

from .._limits import MAX_EVENTS_PER_REQUEST, MAX_ID_LENGTH, MAX_NESTING_DEPTH, MAX_TAG_LENGTH
from . import _otlp as otlp
from . import _wire as wire
from ._jwt import Claims, ExpiredToken, InvalidToken, JwtSigner
from ._prices import PriceTable, format_cost
from ._reads import CursorCodec, InvalidCursor, list_session_views, session_views
from ._storage import (
    STATE_RUNNING,
    EventRow,
    SessionFilter,
    SessionWrite,
    Storage,
    StorageUnavailable,
)

__all__ = [
    "ApiError",
    "CollectorSettings",
    "build_app",
    "hash_key",
    "new_project",
    "new_secret",
]

log = logging.getLogger("agentops_async")

DEFAULT_MAX_BODY_SIZE = 32 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_IDLE_TIMEOUT = 75.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MAX_CONNECTIONS = 1024
# Ids are keys: PostgreSQL text cannot hold NUL, and replacing it would make "a\0b" and "a\ufffdb"
# one id (the second event silently not stored). Refused alike on both backends.
_ID_RULE = f"expected 1..{MAX_ID_LENGTH} characters, without NUL (U+0000)"
_CACHE_LIMIT = 100_000
# How long a collector trusts what it read about an API key: a key revoked (by the CLI, or by
# another collector on the same database) stops working within this many seconds.
KEY_CACHE_SECONDS = 5.0

_END_STATES = {
    "success": "SUCCEEDED",
    "succeeded": "SUCCEEDED",
    "fail": "FAILED",
    "failed": "FAILED",
    "indeterminate": "INDETERMINATE",
}
_STATE_FILTERS = {**_END_STATES, "running": STATE_RUNNING}

_T = TypeVar("_T")
# Bodies up to this size are decoded on the loop (about a millisecond even for the tiniest
# events); larger ones in a decode thread.
_INLINE_DECODE_BYTES = 16 * 1024
# Decompressed bytes produced per step before the loop gets a turn (about a millisecond).
_INFLATE_SLICE = 1024 * 1024


@dataclass
class CollectorSettings:
    """How a collector behaves (not where it listens or stores).

    Attributes:
        jwt_expiry: Lifetime of the session tokens in seconds.
        max_body_size: Largest accepted request body in bytes, after decompression (larger
            ones get 413).
        prices: Token prices for the cost of LLM events.
        admin_token: Enables ``POST /admin/projects`` for callers that send it in
            ``X-Agentops-Admin-Token``; None disables the admin API.
        body_timeout: Seconds to receive a whole request body (then 408).
        idle_timeout: Seconds a connection may wait for its next request (keep-alive) or
            for the first one before the collector closes it.
        header_timeout: Seconds from the first byte of a request to the end of its headers
            (then 408 and the connection is closed: slow senders cannot hold it).
        max_connections: Open connections at most; beyond it the longest-idle one is closed
            to make room, or the new one when none is idle. Lowered to what the process's
            open-files limit allows.
    """

    jwt_expiry: float = 3600.0
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    prices: PriceTable = field(default_factory=PriceTable)
    admin_token: str | None = None
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class ApiError(Exception):
    """An HTTP error answer: ``status`` and ``{"message": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _fail(status: int, message: str) -> NoReturn:
    raise ApiError(status, message)


def hash_key(api_key: str) -> str:
    """What is stored for an API key: its SHA-256 (keys are random UUIDs, so no salt needed)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


async def new_project(storage: Storage, name: str) -> tuple[str, str]:
    """Create a project with a fresh API key; returns ``(project_id, api_key)``."""
    project_id = str(uuid.uuid4())
    api_key = str(uuid.uuid4())
    await storage.create_project(project_id, name, hash_key(api_key))
    return project_id, api_key


async def new_key(storage: Storage, project_id: str) -> str | None:
    """A fresh API key for an existing project (to rotate keys); None when there is none."""
    api_key = str(uuid.uuid4())
    return api_key if await storage.add_key(project_id, hash_key(api_key)) else None


def canonical_uuid(value: object, what: str) -> str:
    """``value`` as a lowercase hyphenated UUID, or a 400 naming ``what``."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    _fail(400, f"{what}: expected a UUID")


def _trace_id(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    text = value.lower().removeprefix("0x")
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        _fail(400, "session.trace_id: expected 32 hex characters")
    return text


def parse_timestamp(value: str | None, what: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 timestamp (naive means UTC), or a 400."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        _fail(400, f"{what}: not an ISO 8601 timestamp: {value[:40]!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _time_param(value: str | None, what: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return parse_timestamp(value, what)


def _int_param(value: str | None, what: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        _fail(400, f"{what}: expected an integer")
    if not low <= number <= high:
        _fail(400, f"{what}: expected {low}..{high}")
    return number


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=wire.encode(data), status=status, content_type="application/json")


# What a body decoder raises on bad input: msgspec's errors, and RecursionError for JSON nested
# deeper than msgspec's recursion limit (~1,000 levels; the documented limit is far below).
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)


def _decode_error(what: str, exc: Exception) -> NoReturn:
    if isinstance(exc, RecursionError):
        _fail(400, f"invalid {what}: nested deeper than {MAX_NESTING_DEPTH} levels")
    _fail(400, f"invalid {what}: {exc}")


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
            return _too_deep_message("an event")
        char = body[match.start(1)]
        if char == 0x7B or char == 0x5B:  # { [
            depth += 1
            if depth == 3:  # {"events": [ {<event>
                index += 1
            elif depth > MAX_NESTING_DEPTH + 2:
                break
        else:
            depth -= 1
    return _too_deep_message(f"events[{max(index, 0)}]")


def _too_deep_message(what: str) -> str:
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


def _event_batch(body: bytes, own: str) -> tuple[list[EventRow], set[str]]:
    """Decode a create_events body into rows (see :func:`_event_rows`); 400/413 on bad input.

    Runs in a worker thread for large bodies: everything here is CPU work on the body alone.
    Each event's depth is checked only when the body's outline may be too deep (events sit at
    depth 3 of ``{"events": [...]}``).
    """
    brackets = _brackets(body)
    if _more_events_than(body, brackets.count(b"{"), MAX_EVENTS_PER_REQUEST):
        _fail(
            413,
            f"too many events in one request: more than {MAX_EVENTS_PER_REQUEST} "
            "(MAX_EVENTS_PER_REQUEST); send them in smaller batches",
        )
    try:
        raw_events = wire.decode_events(body).events
        if len(raw_events) > MAX_EVENTS_PER_REQUEST:
            _fail(
                413,
                f"too many events in one request: {len(raw_events)} > {MAX_EVENTS_PER_REQUEST} "
                "(MAX_EVENTS_PER_REQUEST); send them in smaller batches",
            )
        heads = wire.decode_event_heads(body).events
    except RecursionError:
        _fail(400, _too_deep_event(body))
    except msgspec.DecodeError as exc:
        _decode_error("events", exc)
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
            _fail(400, f"invalid events[{index}]: {exc}")
        if check_depth and nesting_exceeds(data):
            _fail(400, _too_deep_message(f"events[{index}]"))
        event_id = head.id
        if not event_id or len(event_id) > MAX_ID_LENGTH or "\x00" in event_id:
            _fail(400, f"events[{index}].id: {_ID_RULE}")
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


def _content_encoding(request: web.Request) -> str:
    """``""``, ``"gzip"`` or ``"deflate"``; a 415 for anything else."""
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "").strip().lower()
    if encoding in ("", "identity"):
        return ""
    if encoding in ("gzip", "x-gzip", "deflate"):
        return encoding
    _fail(415, "unsupported Content-Encoding (use gzip, deflate or none)")


def _inflater(encoding: str, first: bytes) -> Any:
    """A zlib decompressor for a body that starts with ``first``.

    gzip and zlib headers are detected (wbits 32 + 15); ``deflate`` without the zlib header (raw
    deflate, which some clients send) is recognised by its first byte, as aiohttp does.
    """
    if encoding == "deflate" and (first[0] & 0x0F) != 8 and first[0] != 0x1F:
        return zlib.decompressobj(wbits=-15)
    return zlib.decompressobj(wbits=47)


async def _read_body(request: web.Request, limit: int, encoding: str) -> bytes:
    """Read (and inflate) the body in chunks; 413 as soon as either size passes ``limit``."""
    content = request.content
    received = 0
    parts: list[bytes] = []
    size = 0
    inflater: Any = None
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        received += len(chunk)
        if received > limit:
            _fail(413, f"request body too large: more than {limit} bytes")
        if not encoding:
            parts.append(chunk)
            continue
        if inflater is None:
            inflater = _inflater(encoding, chunk)
        while chunk:
            try:
                out = inflater.decompress(chunk, min(_INFLATE_SLICE, limit - size + 1))
            except zlib.error:
                _fail(400, "invalid compressed body (Content-Encoding)")
            size += len(out)
            if size > limit:
                _fail(413, f"request body too large: more than {limit} bytes once decompressed")
            parts.append(out)
            chunk = inflater.unconsumed_tail
            if chunk:
                await asyncio.sleep(0)  # a bomb inflates slice by slice; others get the loop
    if encoding and (inflater is None or not inflater.eof):
        _fail(400, "invalid compressed body: truncated (Content-Encoding)")
    return b"".join(parts)


def _decode_spans(body: bytes, protobuf: bool) -> list[otlp.SpanRecord]:
    try:
        if protobuf:
            return otlp.decode_protobuf_request(body)
        return otlp.decode_json_request(body)
    except ValueError as exc:
        _fail(400, str(exc))
    except RecursionError:
        _fail(400, f"invalid OTLP body: nested deeper than {MAX_NESTING_DEPTH} levels")
    except ImportError:
        _fail(415, "OTLP/protobuf needs opentelemetry-proto: pip install agentops-async[collector]")


def _span_rows(spans: list[otlp.SpanRecord], sessions: dict[str, str]) -> list[EventRow]:
    """Rows of the spans of ``sessions`` (by trace id); a 400 if one is nested too deep."""
    rows: list[EventRow] = []
    for span in spans:
        session_id = sessions.get(span.trace_id)
        if session_id is None:
            continue
        span.session_id = session_id
        data = wire.encode(span).decode()
        if nesting_exceeds(data):
            _fail(400, _too_deep_message(f"span {span.span_id}"))
        rows.append(
            (session_id, span.id, span.event_type, span.init_timestamp, span.end_timestamp, data)
        )
    return rows


class _Api:
    """The request handlers and what they share (storage, signer, prices, caches)."""

    def __init__(self, storage: Storage, signer: JwtSigner, settings: CollectorSettings) -> None:
        self.storage = storage
        self.signer = signer
        self.settings = settings
        self.cursors = CursorCodec(signer.derive_key(b"read cursors"))
        # Sessions never move between projects, so that mapping is cached for good; keys can be
        # revoked, so what a key maps to is trusted for KEY_CACHE_SECONDS only.
        self._key_projects: dict[str, tuple[str, float]] = {}
        self._session_projects: dict[str, str] = {}
        # Decoding a large body is CPU work of tens of milliseconds: it runs here, off the event
        # loop. Two threads bound the memory of decodes in flight (the GIL bounds the speed-up).
        self._decoder = ThreadPoolExecutor(2, thread_name_prefix="agentops-collector-decode")

    async def close(self, app: web.Application | None = None) -> None:
        """Stop the decode threads (an ``on_cleanup`` hook)."""
        self._decoder.shutdown(wait=False, cancel_futures=True)

    async def off_loop(self, size: int, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)``: inline for a small body of ``size`` bytes, else in a decode thread.

        Small bodies are decoded inline (a thread hand-off costs more than decoding them). In
        the thread, what holds the GIL longest is one msgspec decode call (~10-25 ms for a
        32 MiB body of real events); bodies with too many events are refused before that.
        """
        if size <= _INLINE_DECODE_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._decoder, fn, *args)

    # --- authentication ------------------------------------------------------------------

    async def project_of_key(self, api_key: str | None) -> str:
        if not api_key:
            _fail(401, "missing API key (X-Agentops-Api-Key header)")
        if not api_key.isascii():  # keys are UUIDs; this one cannot be any project's
            _fail(401, "invalid API key: not ASCII")
        digest = hash_key(api_key.strip())
        now = time.monotonic()
        cached = self._key_projects.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        project = await self.storage.project_for_key(digest)
        if project is None:
            self._key_projects.pop(digest, None)
            _fail(401, "invalid or revoked API key")
        if len(self._key_projects) > _CACHE_LIMIT:
            self._key_projects.clear()
        self._key_projects[digest] = (project, now + KEY_CACHE_SECONDS)
        return project

    async def key_project(self, request: web.Request) -> str:
        return await self.project_of_key(request.headers.get("X-Agentops-Api-Key"))

    def claims(self, request: web.Request) -> Claims:
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            _fail(401, "missing session token (Authorization: Bearer <jwt>)")
        try:
            return self.signer.verify(token.strip())
        except ExpiredToken:
            _fail(401, "Expired Token")
        except InvalidToken:
            _fail(401, "Invalid Token")

    async def owner_of(self, session_id: str) -> str | None:
        project = self._session_projects.get(session_id)
        if project is None:
            project = await self.storage.session_project(session_id)
            if project is not None:
                self._remember(session_id, project)
        return project

    def _remember(self, session_id: str, project_id: str) -> None:
        if len(self._session_projects) > _CACHE_LIMIT:
            self._session_projects.clear()
        self._session_projects[session_id] = project_id

    async def body(self, request: web.Request) -> bytes:
        """The request body, decompressed; called only once the request is authenticated.

        Bounded three ways: ``max_body_size`` on the bytes received and on the decompressed
        bytes (a 2 MB gzip body of 2 GB is refused after 32 MiB of output), ``body_timeout`` on
        the time to receive it (408), and the loop is never held by decompression (it runs in
        slices of :data:`_INFLATE_SLICE` bytes with a yield between them).
        """
        limit = self.settings.max_body_size
        encoding = _content_encoding(request)
        if request.content_length is not None and request.content_length > limit:
            _fail(413, f"request body too large: {request.content_length} > {limit} bytes")
        timeout = self.settings.body_timeout
        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(timeout):
                    return await _read_body(request, limit, encoding)
            return await asyncio.wait_for(_read_body(request, limit, encoding), timeout)
        except asyncio.TimeoutError:
            _fail(408, f"request body not received within {timeout:g} s (--body-timeout)")
        except RequestPayloadError:
            _fail(400, "malformed request body (framing or Content-Length does not match)")

    # --- v2 API ----------------------------------------------------------------------------

    def _session_write(
        self, session: wire.SessionIn, session_id: str, project_id: str
    ) -> SessionWrite:
        end_timestamp = session.end_timestamp
        end_ts = parse_timestamp(end_timestamp, "session.end_timestamp")
        state = None
        end_key = (session.end_state or "").lower()
        if end_ts is not None or end_key in ("success", "succeeded", "fail", "failed"):
            state = _END_STATES.get(end_key, "INDETERMINATE")
            if end_ts is None:  # ended without saying when: now
                now = datetime.now(timezone.utc)
                end_timestamp, end_ts = now.isoformat(), now.timestamp()
        host_env = bytes(session.host_env)
        for index, tag in enumerate(session.tags or ()):
            if len(tag) > MAX_TAG_LENGTH:
                _fail(
                    400,
                    f"session.tags[{index}]: {len(tag)} characters, more than the limit of"
                    f" {MAX_TAG_LENGTH} (MAX_TAG_LENGTH); shorten the tag",
                )
        return SessionWrite(
            session_id=session_id,
            project_id=project_id,
            init_timestamp=session.init_timestamp,
            init_ts=parse_timestamp(session.init_timestamp, "session.init_timestamp"),
            end_timestamp=end_timestamp,
            end_ts=end_ts,
            state=state,
            end_state=session.end_state,
            end_state_reason=session.end_state_reason,
            tags=session.tags,
            video=session.video,
            trace_id=_trace_id(session.trace_id),
            host_env=None if host_env in (b"null", b"") else host_env.decode(),
        )

    def _decode_session(self, body: bytes) -> wire.SessionIn:
        try:
            return wire.decode_session(wire.decode_session_envelope(body).session)
        except _DECODE_ERRORS as exc:
            _decode_error("session", exc)

    def _session_url(self, request: web.Request, session_id: str) -> str:
        try:
            origin = str(request.url.origin())
        except (ValueError, UnicodeError):  # a Host header that is no host (client input)
            origin = ""
        return f"{origin}/api/sessions/{session_id}"

    async def create_session(self, request: web.Request) -> web.Response:
        project = await self.key_project(request)
        session = self._decode_session(await self.body(request))
        if session.session_id is None:
            _fail(400, "session.session_id: missing")
        session_id = canonical_uuid(session.session_id, "session.session_id")
        write = self._session_write(session, session_id, project)
        if write.init_ts is None:
            now = datetime.now(timezone.utc)
            write = dataclasses.replace(
                write, init_timestamp=now.isoformat(), init_ts=now.timestamp()
            )
        owner = await self.storage.upsert_session(write)
        if owner != project:
            _fail(403, "session belongs to another project")
        self._remember(session_id, project)
        return _json(
            {
                "status": "success",
                "jwt": self.signer.issue(session_id, project),
                "session_url": self._session_url(request, session_id),
            }
        )

    async def update_session(self, request: web.Request) -> web.Response:
        claims = self.claims(request)
        session = self._decode_session(await self.body(request))
        session_id = claims.session_id
        given = session.session_id
        if given is not None and canonical_uuid(given, "session.session_id") != session_id:
            _fail(403, "the token is for another session")
        write = self._session_write(session, session_id, claims.project_id)
        if not await self.storage.update_session(write):
            _fail(404, "session not found")
        costs = self.settings.prices.session_costs(await self.storage.llm_usage([session_id]))
        return _json(
            {
                "status": "success",
                "token_cost": format_cost(sum(costs.values(), start=Decimal(0))),
                "session_url": self._session_url(request, session_id),
            }
        )

    async def create_events(self, request: web.Request) -> web.Response:
        claims = self.claims(request)
        body = await self.body(request)
        rows, others = await self.off_loop(len(body), _event_batch, body, claims.session_id)
        for sid in others:
            owner = await self.owner_of(sid)
            if owner is None:
                _fail(404, f"session {sid} not found")
            if owner != claims.project_id:
                _fail(403, f"session {sid} belongs to another project")
        stored = await self.storage.insert_events(rows) if rows else 0
        return _json({"status": "success", "received": len(rows), "stored": stored})

    async def reauthorize_jwt(self, request: web.Request) -> web.Response:
        project = await self.key_project(request)
        try:
            body = wire.decode_reauth(await self.body(request))
        except _DECODE_ERRORS as exc:
            _decode_error("body", exc)
        session_id = canonical_uuid(body.session_id, "session_id")
        owner = await self.owner_of(session_id)
        if owner is None:
            _fail(404, "session not found")
        if owner != project:
            _fail(403, "session belongs to another project")
        return _json({"status": "success", "jwt": self.signer.issue(session_id, project)})

    async def create_agent(self, request: web.Request) -> web.Response:
        claims = self.claims(request)
        try:
            agent = wire.decode_agent(await self.body(request))
        except _DECODE_ERRORS as exc:
            _decode_error("agent", exc)
        if not agent.id or len(agent.id) > MAX_ID_LENGTH or "\x00" in agent.id:
            _fail(400, f"id: {_ID_RULE}")
        await self.storage.create_agent(claims.session_id, agent.id, agent.name)
        return _json({"status": "success"})

    async def developer_errors(self, request: web.Request) -> web.Response:
        project = await self.key_project(request)
        body = await self.body(request)
        try:
            report = wire.decode_developer_error(body)
        except _DECODE_ERRORS as exc:
            _decode_error("developer error", exc)
        session_id = None
        if report.session_id is not None:
            session_id = canonical_uuid(report.session_id, "session_id")
            if await self.owner_of(session_id) != project:  # as the read API: 404, not 403
                _fail(404, "session_id: session not found")
        log.info("developer error from a client: %s: %s", report.type, report.message)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            _fail(400, "invalid developer error: the body is not UTF-8")
        await self.storage.add_developer_error(project, session_id, text)
        return _json({"status": "success"})

    # --- OTLP ------------------------------------------------------------------------------

    async def trace_project(self, request: web.Request) -> str:
        """The project of an OTLP export: ``X-Agentops-Api-Key`` or ``Authorization: Bearer``."""
        api_key = request.headers.get("X-Agentops-Api-Key")
        if not api_key:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            api_key = token if scheme.lower() == "bearer" else None
        return await self.project_of_key(api_key)

    async def traces(self, request: web.Request) -> web.Response:
        project = await self.trace_project(request)
        protobuf = request.content_type == "application/x-protobuf"
        if not protobuf and request.content_type != "application/json":
            _fail(415, "Content-Type must be application/x-protobuf or application/json")
        body = await self.body(request)
        spans = await self.off_loop(len(body), _decode_spans, body, protobuf)
        sessions = await self.storage.sessions_for_traces(
            project, sorted({s.trace_id for s in spans})
        )
        rows = await self.off_loop(len(body), _span_rows, spans, sessions)
        if rows:
            await self.storage.insert_events(rows)
        rejected = len(spans) - len(rows)
        message = f"{rejected} spans belong to no session of this project" if rejected else ""
        return web.Response(
            body=otlp.encode_response(protobuf, rejected, message),
            content_type="application/x-protobuf" if protobuf else "application/json",
        )

    # --- read API --------------------------------------------------------------------------

    async def list_sessions(self, request: web.Request) -> web.Response:
        project = await self.key_project(request)
        query = request.query
        state = query.get("state")
        if state:
            canonical = _STATE_FILTERS.get(state.lower())
            if canonical is None:
                _fail(400, f"state: expected one of {', '.join(sorted(_STATE_FILTERS))}")
            state = canonical
        cursor = query.get("cursor")
        scope = f"sessions:{project}"
        flt = SessionFilter(
            project_id=project,
            tag=query.get("tag") or None,
            state=state or None,
            since=_time_param(query.get("since"), "since"),
            until=_time_param(query.get("until"), "until"),
            before_id=self._cursor_position(scope, cursor),
            limit=_int_param(query.get("limit"), "limit", 50, 1, 500),
        )
        views, after = await list_session_views(self.storage, self.settings.prices, flt)
        next_cursor = None if after is None else self.cursors.encode(scope, after)
        return _json({"sessions": views, "next_cursor": next_cursor})

    def _cursor_position(self, scope: str, cursor: str | None) -> str | None:
        if not cursor:
            return None
        try:
            return self.cursors.decode(scope, cursor)
        except InvalidCursor:
            _fail(400, "cursor: not a cursor of this listing; pass back its next_cursor unchanged")

    async def _own_session(self, request: web.Request) -> str:
        project = await self.key_project(request)
        session_id = canonical_uuid(request.match_info["session_id"], "session id")
        if await self.owner_of(session_id) != project:
            _fail(404, "session not found")
        return session_id

    async def get_session(self, request: web.Request) -> web.Response:
        session_id = await self._own_session(request)
        row = await self.storage.get_session(session_id)
        if row is None:
            _fail(404, "session not found")
        (view,) = await session_views(self.storage, self.settings.prices, [row])
        return _json(view)

    async def list_events(self, request: web.Request) -> web.Response:
        session_id = await self._own_session(request)
        query = request.query
        limit = _int_param(query.get("limit"), "limit", 100, 1, 1000)
        scope = f"events:{session_id}"  # the session belongs to the caller's project
        after = self._cursor_position(scope, query.get("cursor"))
        rows = await self.storage.list_events(
            session_id, after, limit + 1, query.get("event_type") or None
        )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = self.cursors.encode(scope, rows[-1][0])
        events = ",".join(data for _, data in rows)
        body = f'{{"events":[{events}],"next_cursor":{wire.encode(next_cursor).decode()}}}'
        return web.Response(text=body, content_type="application/json")

    # --- admin and health ------------------------------------------------------------------

    async def check_admin(self, request: web.Request) -> None:
        expected = self.settings.admin_token
        given = request.headers.get("X-Agentops-Admin-Token", "")
        if expected is None:
            _fail(404, "the admin API is disabled")
        # Header values are str with surrogate escapes for bytes that are not UTF-8.
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            _fail(401, "invalid admin token")

    async def check_token(self, request: web.Request) -> None:
        self.claims(request)

    async def create_project(self, request: web.Request) -> web.Response:
        await self.check_admin(request)
        try:
            body = wire.decode_project(await self.body(request))
        except _DECODE_ERRORS as exc:
            _decode_error("body", exc)
        project_id, api_key = await new_project(self.storage, body.name or "default")
        return _json({"project_id": project_id, "api_key": api_key})

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]


async def _no_check(request: web.Request) -> object:
    return None


def _continue_after(check: Callable[[web.Request], Awaitable[object]]) -> ExpectHandler:
    """An ``Expect: 100-continue`` handler that authenticates before the client sends the body.

    A client that waits for ``100 Continue`` (curl does for large bodies) gets the 401 instead,
    so an unauthenticated body is not even sent. Runs outside the middlewares: answers JSON here.
    """

    async def expect(request: web.Request) -> web.StreamResponse | None:
        if request.headers.get(hdrs.EXPECT, "").strip().lower() != "100-continue":
            return _json({"message": "unsupported Expect header (only 100-continue)"}, 417)
        try:
            await check(request)
        except ApiError as exc:
            return _json({"message": exc.message}, exc.status)
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer proper has not started
        return None

    return expect


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _json({"message": exc.message}, exc.status)
    except StorageUnavailable as exc:
        return _storage_unavailable(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json({"message": exc.reason}, exc.status)
    except Exception:
        log.exception("collector: unexpected error in %s %s", request.method, request.path)
        return _json({"message": "internal server error"}, 500)


class _OutageLog:
    """One WARNING per ``interval`` seconds about storage outages, with how many were not logged."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._next = 0.0
        self._quiet = 0

    def warn(self, request: web.Request, exc: StorageUnavailable) -> None:
        now = time.monotonic()
        if now < self._next:
            self._quiet += 1
            return
        quiet, self._quiet, self._next = self._quiet, 0, now + self.interval
        more = f" (and {quiet} more since the last warning)" if quiet else ""
        log.warning(
            "collector: storage unavailable, answered 503 to %s %s%s: %s",
            request.method,
            request.path,
            more,
            exc.reason,
        )


_outage_log = _OutageLog()


def _storage_unavailable(request: web.Request, exc: StorageUnavailable) -> web.Response:
    """503 with Retry-After: the database is restarting, locked or full; clients retry."""
    _outage_log.warn(request, exc)
    response = _json(
        {"message": f"storage temporarily unavailable, retry later: {exc.reason}"}, 503
    )
    response.headers["Retry-After"] = str(exc.retry_after)
    return response


def build_app(storage: Storage, signer: JwtSigner, settings: CollectorSettings) -> web.Application:
    """The aiohttp application of a collector over an open ``storage``."""
    api = _Api(storage, signer, settings)
    # The body limit is enforced in _Api.body (with a JSON answer); aiohttp's own limit is a
    # backstop a little above it.
    app = web.Application(middlewares=[_errors_as_json], client_max_size=settings.max_body_size + 1)
    app.on_cleanup.append(api.close)
    key, token = _continue_after(api.key_project), _continue_after(api.check_token)
    anyone = _continue_after(_no_check)
    app.add_routes(
        [
            web.post("/v2/create_session", api.create_session, expect_handler=key),
            web.post("/v2/update_session", api.update_session, expect_handler=token),
            web.post("/v2/create_events", api.create_events, expect_handler=token),
            web.post("/v2/reauthorize_jwt", api.reauthorize_jwt, expect_handler=key),
            web.post("/v2/create_agent", api.create_agent, expect_handler=token),
            web.post("/v2/developer_errors", api.developer_errors, expect_handler=key),
            web.post("/v1/traces", api.traces, expect_handler=_continue_after(api.trace_project)),
            web.get("/api/sessions", api.list_sessions, expect_handler=anyone),
            web.get("/api/sessions/{session_id}", api.get_session, expect_handler=anyone),
            web.get("/api/sessions/{session_id}/events", api.list_events, expect_handler=anyone),
            web.post(
                "/admin/projects",
                api.create_project,
                expect_handler=_continue_after(api.check_admin),
            ),
            web.get("/health", api.health, expect_handler=anyone),
        ]
    )
    return app


def new_secret() -> bytes:
    """A fresh JWT secret."""
    return secrets.token_bytes(32)
