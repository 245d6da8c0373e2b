"""The dashboard: sign-in, the sessions list and the session page, served at ``/``.

Pages are server-rendered (templates in ``collector/_dashboard/templates``); the live parts are
ES modules in ``collector/_dashboard/static`` that call the JSON endpoints under ``/ui/api/``.
Every page and JSON call starts with :meth:`Pages.require_project` (the sign-in cookie) and reads
through ``ctx.reader`` only; see :mod:`agentops_async.collector._dashboard` for how another module
adds a page.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode

import msgspec
from aiohttp import web

from .. import _auth as auth
from .. import _wire as wire
from .._context import Context
from .._dashboard import MAX_FORM_BYTES, Pages, pages_of, safe_next
from .._http import (
    HttpError,
    canonical_uuid,
    continue_after,
    fail,
    int_param,
    json_response,
    parse_timestamp,
)
from .._prices import PriceTable, format_cost
from .._reads import (
    STATE_FILTERS,
    InvalidCursor,
    SessionView,
    session_views_with_tokens,
)
from .._storage import SessionFilter

__all__ = ["add_routes"]

WRONG_KEY = "That key is not a valid API key of any project here."
PAGE_SIZE = 50
STATES = ("RUNNING", "SUCCEEDED", "FAILED", "INDETERMINATE")
RANGES = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
MAX_STATUS_IDS = 100
EVENTS_PAGE = 2000
MAX_EVENTS_PAGE = 5000
MAX_LOG_CHARS = 200_000


def add_routes(app: web.Application, ctx: Context) -> None:
    """Add the dashboard's routes to ``app``."""
    pages = pages_of(ctx)
    dash = _Dashboard(ctx, pages)
    anyone = continue_after()
    app.add_routes(
        [
            web.get("/", pages.page(dash.home), expect_handler=anyone),
            web.get("/signin", pages.page(dash.signin_form), expect_handler=anyone),
            web.post("/signin", pages.page(dash.signin), expect_handler=anyone),
            web.post("/signout", pages.page(dash.signout), expect_handler=anyone),
            web.get("/static/{name}", pages.static_file, expect_handler=anyone),
            web.get("/sessions", pages.page(dash.sessions), expect_handler=anyone),
            web.get("/ui/api/sessions/status", pages.api(dash.status), expect_handler=anyone),
            web.get("/sessions/{session_id}", pages.page(dash.session), expect_handler=anyone),
            web.get("/drilldown", pages.page(dash.drilldown), expect_handler=anyone),
            web.get(
                "/ui/api/sessions/{session_id}/events",
                pages.api(dash.events),
                expect_handler=anyone,
            ),
        ]
    )


class _Dashboard:
    """The dashboard's request handlers."""

    def __init__(self, ctx: Context, pages: Pages) -> None:
        self.ctx = ctx
        self.pages = pages

    async def home(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/sessions")

    async def signin_form(self, request: web.Request) -> web.StreamResponse:
        next_path = safe_next(request.query.get("next"))
        if await self.pages.signed_in_project(request) is not None:
            raise web.HTTPSeeOther(next_path)
        return await self.pages.render(
            request, "signin.html", None, title="Sign in", next=next_path, message=None
        )

    async def signin(self, request: web.Request) -> web.StreamResponse:
        pages = self.pages
        pages.check_origin(request)
        address = request.remote or "unknown"
        wait = pages.limiter.retry_after(address)
        if wait:
            response = await self._signin_page(
                request, 429, f"Too many sign-in attempts; try again in {wait} s."
            )
            response.headers["Retry-After"] = str(wait)
            return response
        form = await _read_form(request)
        next_path = safe_next(form.get("next"))
        key = (form.get("key") or "").strip()
        project = None
        if key and key.isascii():
            key_hash = auth.hash_key(key)
            project = await auth.live_key_project(self.ctx, key_hash)
        if project is None:
            pages.limiter.failed(address)
            return await self._signin_page(request, 401, WRONG_KEY, next_path)
        response = web.HTTPSeeOther(next_path)
        pages.sign_in(response, request, project, key_hash)
        raise response

    async def _signin_page(
        self, request: web.Request, status: int, message: str, next_path: str = "/sessions"
    ) -> web.Response:
        return await self.pages.render(
            request,
            "signin.html",
            None,
            status=status,
            title="Sign in",
            next=next_path,
            message=message,
        )

    async def signout(self, request: web.Request) -> web.StreamResponse:
        self.pages.check_origin(request)
        response = web.HTTPSeeOther("/signin")
        self.pages.sign_out(response)
        raise response

    # --- the sessions list ------------------------------------------------------------------

    async def sessions(self, request: web.Request) -> web.StreamResponse:
        """``/sessions``: a page of the project's sessions, newest first, with filters.

        ``?trace_id=<32 hex>`` (the link the agentops SDK 0.4 prints) redirects to the page of
        that trace's session without sign-in: the redirect says no more than that a session
        exists; its page asks for the key.
        """
        if "trace_id" in request.query:
            return await self._session_of_trace(request.query["trace_id"])
        pages = self.pages
        project = await pages.require_project(request)
        query = request.query
        find = query.get("find", "").strip()
        if find:
            found = await self._find(project, find)
            if found is not None:
                raise web.HTTPFound(f"/sessions/{found}")
        filters = _ListFilters.parse(query)
        scope = f"dashboard-sessions:{project}"
        before = None
        if filters.cursor:
            try:
                before = self.ctx.cursors.decode(scope, filters.cursor)
            except InvalidCursor:
                fail(400, "cursor: not a page of this list; start again from the newest")
        flt = SessionFilter(
            project_id=project,
            tag=filters.tag or None,
            state=filters.state or None,
            since=filters.since_ts(),
            until=filters.until_ts(),
            before_id=before,
            limit=PAGE_SIZE + 1,
        )
        rows = await self.ctx.reader.list_sessions(flt)
        next_url = None
        if len(rows) > PAGE_SIZE:
            rows = rows[:PAGE_SIZE]
            next_url = filters.url(cursor=self.ctx.cursors.encode(scope, rows[-1].id))
        views = await session_views_with_tokens(self.ctx.reader, self.ctx.prices, rows)
        return await pages.render(
            request,
            "sessions.html",
            project,
            section="sessions",
            title="Sessions",
            sessions=[_display(view, tokens) for view, tokens in views],
            filters=filters,
            states=STATES,
            ranges=list(RANGES),
            next_url=next_url,
            first_url=filters.url() if filters.cursor else None,
            find=find,
            not_found=bool(find),
        )

    async def _find(self, project: str, text: str) -> str | None:
        try:
            session_id = canonical_uuid(text, "session id")
        except HttpError:
            return None
        return session_id if await self.ctx.owner_of(session_id) == project else None

    async def _session_of_trace(self, text: str) -> web.StreamResponse:
        trace = text.strip().lower()
        if len(trace) != 32 or any(c not in "0123456789abcdef" for c in trace):
            fail(400, "trace_id: expected the trace id as 32 hex digits")
        session_id = await self.ctx.reader.session_of_trace(trace)
        if session_id is None:
            fail(404, "no session for this trace (yet: its spans may not have arrived)")
        raise web.HTTPFound(f"/sessions/{session_id}")

    async def drilldown(self, request: web.Request) -> web.StreamResponse:
        """``/drilldown?session_id=<id>``: the agentops SDK 0.3 prints
        ``https://app.agentops.ai/drilldown?session_id=...`` (its host is fixed); with the
        collector's host instead, the link opens the session page."""
        session_id = canonical_uuid(request.query.get("session_id"), "session_id")
        raise web.HTTPFound(f"/sessions/{session_id}")

    async def status(self, request: web.Request) -> web.StreamResponse:
        """``/ui/api/sessions/status?id=...``: the list's cells of these sessions (live rows).

        Sessions of other projects (and unknown ids) are left out, as if they did not exist.
        """
        project = await self.pages.require_project(request, page=False)
        ids = request.query.getall("id", [])
        if len(ids) > MAX_STATUS_IDS:
            fail(400, f"id: at most {MAX_STATUS_IDS} sessions per call")
        wanted = list(dict.fromkeys(canonical_uuid(text, "id") for text in ids))
        found = {row.id: row for row in await self.ctx.reader.get_sessions(wanted)}
        rows = [found[i] for i in wanted if i in found and found[i].project_id == project]
        views = await session_views_with_tokens(self.ctx.reader, self.ctx.prices, rows)
        return json_response({"sessions": [_display(view, tokens) for view, tokens in views]})

    # --- the session page -------------------------------------------------------------------

    async def _own_session(self, request: web.Request, project: str) -> str:
        """The session id of the URL if it is one of ``project``'s sessions, else 404."""
        try:
            session_id = canonical_uuid(request.match_info["session_id"], "session id")
        except HttpError:
            fail(404, "No such session in this project.")
        if await self.ctx.owner_of(session_id) != project:
            fail(404, "No such session in this project.")
        return session_id

    async def session(self, request: web.Request) -> web.StreamResponse:
        """``/sessions/<id>``: the header, the waterfall (drawn by session.js) and the logs."""
        project = await self.pages.require_project(request)
        session_id = await self._own_session(request, project)
        reader = self.ctx.reader
        row = await reader.get_session(session_id)
        if row is None:
            fail(404, "No such session in this project.")
        ((view, tokens),) = await session_views_with_tokens(reader, self.ctx.prices, [row])
        agents = await reader.session_agents(session_id)
        logs = await reader.session_logs(session_id)
        return await self.pages.render(
            request,
            "session.html",
            project,
            section="sessions",
            title=f"Session {session_id[:8]}",
            s=_display(view, tokens),
            view=view,
            init_ts=row.init_ts,
            end_ts=row.end_ts,
            agents=[{"id": a, "name": n or ""} for a, n in agents],
            host_env=_host_env(row.host_env),
            video=_safe_link(row.video),
            logs=[
                {
                    "when": _epoch_text(created),
                    "body": body[:MAX_LOG_CHARS],
                    "cut": max(0, len(body) - MAX_LOG_CHARS),
                }
                for body, created in logs
            ],
        )

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``/ui/api/sessions/<id>/events?cursor=&limit=``: a page of the session's events
        (arrival order) with the cost of each LLM event, the next page's cursor (None on the
        last page) and ``resume_cursor``, from where events stored later will be listed."""
        project = await self.pages.require_project(request, page=False)
        session_id = await self._own_session(request, project)
        limit = int_param(request.query.get("limit"), "limit", EVENTS_PAGE, 1, MAX_EVENTS_PAGE)
        scope = f"dashboard-events:{session_id}"
        cursor = request.query.get("cursor")
        after = None
        if cursor:
            try:
                after = self.ctx.cursors.decode(scope, cursor)
            except InvalidCursor:
                fail(400, "cursor: not a cursor of this session's events")
        rows = await self.ctx.reader.list_events(session_id, after, limit + 1, None)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = self.ctx.cursors.encode(scope, rows[-1][0])
        # Where to ask again for events that arrive later (a running session): after the last
        # one of this page, or where this page started when it is empty.
        resume = self.ctx.cursors.encode(scope, rows[-1][0]) if rows else cursor or None
        costs = _llm_costs(self.ctx.prices, [data for _, data in rows])
        events = ",".join(data for _, data in rows)
        body = (
            f'{{"events":[{events}],"costs":{wire.encode(costs).decode()},'
            f'"next_cursor":{wire.encode(next_cursor).decode()},'
            f'"resume_cursor":{wire.encode(resume).decode()}}}'
        )
        return web.Response(text=body, content_type="application/json")


class _CostFields(msgspec.Struct):
    """What the cost of an event needs (the rest of its JSON is skipped when decoding)."""

    id: str = ""
    event_type: str = ""
    model: Any = None
    prompt_tokens: Any = None
    completion_tokens: Any = None
    cost: Any = None


_cost_fields = msgspec.json.Decoder(_CostFields)


def _llm_costs(prices: PriceTable, events: list[str]) -> dict[str, str]:
    """``{event id: dollars}`` of the LLM events: their own ``cost``, else from the prices."""
    costs: dict[str, str] = {}
    for data in events:
        if '"llms"' not in data:
            continue
        try:
            fields = _cost_fields.decode(data)
        except msgspec.DecodeError:
            continue
        if fields.event_type != "llms":
            continue
        if isinstance(fields.cost, (int, float)) and math.isfinite(fields.cost):
            costs[fields.id] = format_cost(Decimal(repr(fields.cost)))
            continue
        prompt = fields.prompt_tokens if isinstance(fields.prompt_tokens, int) else 0
        completion = fields.completion_tokens if isinstance(fields.completion_tokens, int) else 0
        model = fields.model if isinstance(fields.model, str) else None
        costs[fields.id] = format_cost(prices.cost_of(model, prompt, completion))
    return costs


def _host_env(raw: str | None) -> list[tuple[str, str]]:
    """The host env JSON as ``(key, text)`` pairs (nested values as compact JSON)."""
    if not raw:
        return []
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return [("host_env", raw[:2000])]
    if not isinstance(data, dict):
        return [("host_env", raw[:2000])]
    pairs = []
    for key, value in data.items():
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        pairs.append((str(key), text[:2000]))
    return pairs


def _safe_link(url: str | None) -> dict[str, str] | None:
    """A video URL as ``{"href", "text"}``; only http(s) and same-site links get an href."""
    if not url:
        return None
    lowered = url.strip().lower()
    if lowered.startswith(("http://", "https://")) or (
        lowered.startswith("/") and not lowered.startswith("//")
    ):
        return {"href": url.strip(), "text": url}
    return {"href": "", "text": url}


def _epoch_text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


class _ListFilters:
    """The sessions list's filters, as the URL holds them."""

    def __init__(self, state: str, tag: str, range_: str, since: str, until: str, cursor: str):
        self.state = state
        self.tag = tag
        self.range = range_
        self.since = since
        self.until = until
        self.cursor = cursor

    @classmethod
    def parse(cls, query: Any) -> _ListFilters:
        state = query.get("state", "").strip()
        if state:
            canonical = STATE_FILTERS.get(state.lower())
            if canonical is None:
                fail(400, f"state: expected one of {', '.join(s.lower() for s in STATES)}")
            state = canonical
        range_ = query.get("range", "").strip()
        if range_ and range_ not in RANGES:
            fail(400, f"range: expected one of {', '.join(RANGES)}")
        filters = cls(
            state,
            query.get("tag", "").strip(),
            range_,
            query.get("since", "").strip(),
            query.get("until", "").strip(),
            query.get("cursor", "").strip(),
        )
        filters.since_ts()
        filters.until_ts()
        return filters

    def since_ts(self) -> float | None:
        if self.since:
            return parse_timestamp(self.since, "since")
        if self.range:
            return time.time() - RANGES[self.range]
        return None

    def until_ts(self) -> float | None:
        return parse_timestamp(self.until, "until") if self.until else None

    def url(self, **changes: str) -> str:
        """The list's URL with these filters (and ``changes``)."""
        values = {
            "state": self.state.lower(),
            "tag": self.tag,
            "range": self.range,
            "since": self.since,
            "until": self.until,
            **changes,
        }
        query = urlencode({k: v for k, v in values.items() if v})
        return "/sessions" + ("?" + query if query else "")


def _when(timestamp: str | None) -> str:
    """A stored ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` UTC ("" when there is none)."""
    if not timestamp:
        return ""
    try:
        seconds = parse_timestamp(timestamp, "timestamp")
    except HttpError:
        return timestamp[:40]
    if seconds is None:
        return ""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def duration_text(seconds: float | None) -> str:
    """``12.3 ms``, ``1.23 s``, ``2 min 5 s``, ``1 h 2 min`` (``""`` for None)."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _display(view: SessionView, tokens: tuple[int, int]) -> dict[str, Any]:
    """One row of the sessions list: display strings (the template and the live JSON)."""
    prompt, completion = tokens
    return {
        "id": view.id,
        "state": view.state,
        "tags": view.tags,
        "start": _when(view.init_timestamp),
        "duration": duration_text(view.duration_s),
        "events": view.events_total,
        "event_types": ", ".join(f"{t} {n}" for t, n in view.event_counts.items()),
        "tokens": prompt + completion,
        "tokens_detail": f"{prompt} prompt + {completion} completion",
        "cost": f"${view.token_cost}",
        "end_reason": view.end_state_reason or "",
    }


async def _read_form(request: web.Request) -> dict[str, str]:
    """The fields of a small urlencoded form (at most MAX_FORM_BYTES; 413 beyond)."""
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        fail(413, f"form too large: more than {MAX_FORM_BYTES} bytes")
    body = await request.content.read(MAX_FORM_BYTES + 1)
    if len(body) > MAX_FORM_BYTES:
        fail(413, f"form too large: more than {MAX_FORM_BYTES} bytes")
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        fail(400, "malformed form")
    return {name: values[0] for name, values in fields.items() if values}
