"""The collector's HTTP API: AgentOps v2, OTLP/HTTP traces, the read API and a tiny admin API.

Every answer is JSON (the AgentOps clients parse even error bodies). Client mistakes are 4xx with a
``{"message": ...}`` that names the field; a storage outage (``StorageUnavailable``) is 503 with
``Retry-After``; anything unexpected is logged and answered with 500.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NoReturn

import msgspec
from aiohttp import web

from .._limits import MAX_TAG_LENGTH
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
_MAX_ID_LENGTH = 200
# Ids are keys: PostgreSQL text cannot hold NUL, and replacing it would make "a\0b" and "a\ufffdb"
# one id (the second event silently not stored). Refused alike on both backends.
_ID_RULE = f"expected 1..{_MAX_ID_LENGTH} characters, without NUL (U+0000)"
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


@dataclass
class CollectorSettings:
    """How a collector behaves (not where it listens or stores).

    Attributes:
        jwt_expiry: Lifetime of the session tokens in seconds.
        max_body_size: Largest accepted request body in bytes (larger ones get 413).
        prices: Token prices for the cost of LLM events.
        admin_token: Enables ``POST /admin/projects`` for callers that send it in
            ``X-Agentops-Admin-Token``; None disables the admin API.
    """

    jwt_expiry: float = 3600.0
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    prices: PriceTable = field(default_factory=PriceTable)
    admin_token: str | None = None


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


def _decode_error(what: str, exc: Exception) -> NoReturn:
    _fail(400, f"invalid {what}: {exc}")


def _event_rows(
    raw_events: list[msgspec.Raw], heads: list[wire.EventHead], own: str
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
        event_id = head.id
        if not event_id or len(event_id) > _MAX_ID_LENGTH or "\x00" in event_id:
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

    # --- authentication ------------------------------------------------------------------

    async def project_of_key(self, api_key: str | None) -> str:
        if not api_key:
            _fail(401, "missing API key (X-Agentops-Api-Key header)")
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
        limit = self.settings.max_body_size
        if request.content_length is not None and request.content_length > limit:
            _fail(413, f"request body too large: {request.content_length} > {limit} bytes")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            _fail(413, f"request body too large: more than {limit} bytes")

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
        except msgspec.DecodeError as exc:
            _decode_error("session", exc)

    def _session_url(self, request: web.Request, session_id: str) -> str:
        return f"{request.url.origin()}/api/sessions/{session_id}"

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
        try:
            raw_events = wire.decode_events(body).events
            heads = wire.decode_event_heads(body).events
        except msgspec.DecodeError as exc:
            _decode_error("events", exc)
        rows, others = _event_rows(raw_events, heads, claims.session_id)
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
        except msgspec.DecodeError as exc:
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
        except msgspec.DecodeError as exc:
            _decode_error("agent", exc)
        if not agent.id or len(agent.id) > _MAX_ID_LENGTH or "\x00" in agent.id:
            _fail(400, f"id: {_ID_RULE}")
        await self.storage.create_agent(claims.session_id, agent.id, agent.name)
        return _json({"status": "success"})

    async def developer_errors(self, request: web.Request) -> web.Response:
        project = await self.key_project(request)
        body = await self.body(request)
        try:
            report = wire.decode_developer_error(body)
        except msgspec.DecodeError as exc:
            _decode_error("developer error", exc)
        session_id = None
        if report.session_id is not None:
            session_id = canonical_uuid(report.session_id, "session_id")
            if await self.owner_of(session_id) != project:  # as the read API: 404, not 403
                _fail(404, "session_id: session not found")
        log.info("developer error from a client: %s: %s", report.type, report.message)
        await self.storage.add_developer_error(project, session_id, body.decode())
        return _json({"status": "success"})

    # --- OTLP ------------------------------------------------------------------------------

    async def traces(self, request: web.Request) -> web.Response:
        api_key = request.headers.get("X-Agentops-Api-Key")
        if not api_key:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            api_key = token if scheme.lower() == "bearer" else None
        project = await self.project_of_key(api_key)
        protobuf = request.content_type == "application/x-protobuf"
        if not protobuf and request.content_type != "application/json":
            _fail(415, "Content-Type must be application/x-protobuf or application/json")
        body = await self.body(request)
        try:
            spans = (otlp.decode_protobuf_request if protobuf else otlp.decode_json_request)(body)
        except ValueError as exc:
            _fail(400, str(exc))
        except ImportError:
            _fail(
                415,
                "OTLP/protobuf needs opentelemetry-proto: pip install agentops-async[collector]",
            )
        sessions = await self.storage.sessions_for_traces(
            project, sorted({s.trace_id for s in spans})
        )
        rows: list[EventRow] = []
        for span in spans:
            session_id = sessions.get(span.trace_id)
            if session_id is None:
                continue
            span.session_id = session_id
            rows.append(
                (
                    session_id,
                    span.id,
                    span.event_type,
                    span.init_timestamp,
                    span.end_timestamp,
                    wire.encode(span).decode(),
                )
            )
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

    async def create_project(self, request: web.Request) -> web.Response:
        expected = self.settings.admin_token
        given = request.headers.get("X-Agentops-Admin-Token", "")
        if expected is None:
            _fail(404, "the admin API is disabled")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            _fail(401, "invalid admin token")
        try:
            body = wire.decode_project(await self.body(request))
        except msgspec.DecodeError as exc:
            _decode_error("body", exc)
        project_id, api_key = await new_project(self.storage, body.name or "default")
        return _json({"project_id": project_id, "api_key": api_key})

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    app.add_routes(
        [
            web.post("/v2/create_session", api.create_session),
            web.post("/v2/update_session", api.update_session),
            web.post("/v2/create_events", api.create_events),
            web.post("/v2/reauthorize_jwt", api.reauthorize_jwt),
            web.post("/v2/create_agent", api.create_agent),
            web.post("/v2/developer_errors", api.developer_errors),
            web.post("/v1/traces", api.traces),
            web.get("/api/sessions", api.list_sessions),
            web.get("/api/sessions/{session_id}", api.get_session),
            web.get("/api/sessions/{session_id}/events", api.list_events),
            web.post("/admin/projects", api.create_project),
            web.get("/health", api.health),
        ]
    )
    return app


def new_secret() -> bytes:
    """A fresh JWT secret."""
    return secrets.token_bytes(32)
