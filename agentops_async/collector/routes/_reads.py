"""The read API (``GET /api/sessions...``): a project's sessions, their events and log uploads,
and its overview (``GET /api/overview``).

(``GET /sessions?trace_id=<32 hex>``, the link the agentops SDK 0.4 prints, is the dashboard's:
it opens the session's page.)

Authenticated by the project's API key; a session of another project is answered 404, as one
that does not exist. Reads go through ``Context.reader`` (the read side of the storage) and the
read model of :mod:`agentops_async.collector._reads`, never through a write.
"""

from __future__ import annotations

import time

from aiohttp import web

from .. import _auth as auth
from .. import _wire as wire
from .._context import Context
from .._http import canonical_uuid, continue_after, fail, int_param, json_response, time_param
from .._overview import InvalidRange, build_overview, overview_range
from .._reads import STATE_FILTERS, InvalidCursor, list_session_views, session_views
from .._storage import SessionFilter

__all__ = ["add_routes"]


def add_routes(app: web.Application, ctx: Context) -> None:
    """Add the read API's routes to ``app``."""
    api = _ReadApi(ctx)
    anyone = continue_after()  # no body to hold back: the handler authenticates
    app.add_routes(
        [
            web.get("/api/sessions", api.list_sessions, expect_handler=anyone),
            web.get("/api/sessions/{session_id}", api.get_session, expect_handler=anyone),
            web.get("/api/sessions/{session_id}/events", api.list_events, expect_handler=anyone),
            web.get("/api/sessions/{session_id}/logs", api.list_logs, expect_handler=anyone),
            web.get("/api/overview", api.overview, expect_handler=anyone),
        ]
    )


class _ReadApi:
    """The read request handlers."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def list_sessions(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        project = (await auth.api_key_header(ctx, request)).project_id
        query = request.query
        state = query.get("state")
        if state:
            canonical = STATE_FILTERS.get(state.lower())
            if canonical is None:
                fail(400, f"state: expected one of {', '.join(sorted(STATE_FILTERS))}")
            state = canonical
        cursor = query.get("cursor")
        scope = f"sessions:{project}"
        flt = SessionFilter(
            project_id=project,
            tag=query.get("tag") or None,
            state=state or None,
            since=time_param(query.get("since"), "since"),
            until=time_param(query.get("until"), "until"),
            before_id=self._cursor_position(scope, cursor),
            limit=int_param(query.get("limit"), "limit", 50, 1, 500),
        )
        views, after = await list_session_views(ctx.reader, ctx.prices, flt)
        next_cursor = None if after is None else ctx.cursors.encode(scope, after)
        return json_response({"sessions": views, "next_cursor": next_cursor})

    def _cursor_position(self, scope: str, cursor: str | None) -> str | None:
        if not cursor:
            return None
        try:
            return self.ctx.cursors.decode(scope, cursor)
        except InvalidCursor:
            fail(400, "cursor: not a cursor of this listing; pass back its next_cursor unchanged")

    async def _own_session(self, request: web.Request) -> str:
        project = (await auth.api_key_header(self.ctx, request)).project_id
        session_id = canonical_uuid(request.match_info["session_id"], "session id")
        if await self.ctx.owner_of(session_id) != project:
            fail(404, "session not found")
        return session_id

    async def get_session(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        session_id = await self._own_session(request)
        row = await ctx.reader.get_session(session_id)
        if row is None:
            fail(404, "session not found")
        (view,) = await session_views(ctx.reader, ctx.prices, [row])
        return json_response(view)

    async def list_events(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        session_id = await self._own_session(request)
        query = request.query
        limit = int_param(query.get("limit"), "limit", 100, 1, 1000)
        scope = f"events:{session_id}"  # the session belongs to the caller's project
        after = self._cursor_position(scope, query.get("cursor"))
        rows = await ctx.reader.list_events(
            session_id, after, limit + 1, query.get("event_type") or None
        )
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = ctx.cursors.encode(scope, rows[-1][0])
        events = ",".join(data for _, data in rows)
        body = f'{{"events":[{events}],"next_cursor":{wire.encode(next_cursor).decode()}}}'
        return web.Response(text=body, content_type="application/json")

    async def list_logs(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        session_id = await self._own_session(request)
        logs = await ctx.reader.session_logs(session_id)
        return json_response(
            {"logs": [{"body": body, "created_at": created} for body, created in logs]}
        )

    async def overview(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        project = (await auth.api_key_header(ctx, request)).project_id
        query = request.query
        try:
            since, until = overview_range(
                time_param(query.get("since"), "since"),
                time_param(query.get("until"), "until"),
                time.time(),
            )
        except InvalidRange as exc:
            fail(400, str(exc))
        return json_response(await build_overview(ctx.reader, ctx.prices, project, since, until))
