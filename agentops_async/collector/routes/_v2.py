"""The AgentOps v2 API: sessions, events, agents, re-authorisation and SDK error reports.

One call is ours, not AgentOps': ``POST /v2/create_sessions`` creates or updates many sessions
and stores their events in one request, with the API key. The ``create_session`` answer names it
(``"sessions_batch_path"``), so an SDK that knows it sends what its sessions did between two
exports that way (a service's requests: one request for many sessions instead of three requests
each); an SDK that does not, or that talks to the AgentOps service (which never names it), keeps
the standard calls.

``create_session`` and ``reauthorize_jwt`` take the project's API key and answer a session JWT;
the other session calls take that JWT. A ``create_events`` request, in order: the token
(:func:`~agentops_async.collector._auth.session_token`), the body
(:meth:`Context.body <agentops_async.collector._context.Context.body>`), its rows
(:func:`~agentops_async.collector._ingest.event_batch`, off the loop when large), then
``storage.insert_events``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from datetime import datetime, timezone
from decimal import Decimal
from typing import NamedTuple

from aiohttp import web

from ..._limits import MAX_ID_LENGTH, MAX_TAG_LENGTH
from .. import _auth as auth
from .. import _wire as wire
from .._context import Context
from .._http import (
    DECODE_ERRORS,
    ID_RULE,
    canonical_uuid,
    continue_after,
    decode_error,
    fail,
    json_response,
    parse_timestamp,
)
from .._ingest import add_event_rows, event_batch, finish, sessions_body
from .._prices import format_cost
from .._storage import EventBatch, SessionWrite

__all__ = ["SESSIONS_BATCH_PATH", "add_routes"]

SESSIONS_BATCH_PATH = "/v2/create_sessions"
"""Where whole sessions of many sessions are stored in one request (named in create_session's
answer as ``sessions_batch_path``)."""

log = logging.getLogger("agentops_async")


def add_routes(app: web.Application, ctx: Context) -> None:
    """Add the v2 API's routes to ``app``."""
    api = _V2Api(ctx)
    key = continue_after(functools.partial(auth.api_key_header, ctx))
    token = continue_after(functools.partial(auth.session_token, ctx))
    app.add_routes(
        [
            web.post("/v2/create_session", api.create_session, expect_handler=key),
            web.post(SESSIONS_BATCH_PATH, api.create_sessions, expect_handler=key),
            web.post("/v2/update_session", api.update_session, expect_handler=token),
            web.post("/v2/create_events", api.create_events, expect_handler=token),
            web.post("/v2/reauthorize_jwt", api.reauthorize_jwt, expect_handler=key),
            web.post("/v2/create_agent", api.create_agent, expect_handler=token),
            web.post("/v2/developer_errors", api.developer_errors, expect_handler=key),
        ]
    )


def _trace_id(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    text = value.lower().removeprefix("0x")
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        fail(400, "session.trace_id: expected 32 hex characters")
    return text


def _session_write(session: wire.SessionIn, session_id: str, project_id: str) -> SessionWrite:
    end_timestamp = session.end_timestamp
    end_ts = parse_timestamp(end_timestamp, "session.end_timestamp")
    state = None
    end_key = (session.end_state or "").lower()
    if end_ts is not None or end_key in ("success", "succeeded", "fail", "failed"):
        state = wire.END_STATES.get(end_key, "INDETERMINATE")
        if end_ts is None:  # ended without saying when: now
            now = datetime.now(timezone.utc)
            end_timestamp, end_ts = now.isoformat(), now.timestamp()
    host_env = bytes(session.host_env)
    for index, tag in enumerate(session.tags or ()):
        if len(tag) > MAX_TAG_LENGTH:
            fail(
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


def _decode_session(body: bytes) -> wire.SessionIn:
    try:
        return wire.decode_session(wire.decode_session_envelope(body).session)
    except DECODE_ERRORS as exc:
        decode_error("session", exc)


def _new_session_write(session: wire.SessionIn, project: str, field: str) -> SessionWrite:
    """The write of a session being created: its id checked, its start now if it has none."""
    if session.session_id is None:
        fail(400, f"{field}.session_id: missing")
    session_id = canonical_uuid(session.session_id, f"{field}.session_id")
    write = _session_write(session, session_id, project)
    if write.init_ts is None:
        now = datetime.now(timezone.utc)
        write = dataclasses.replace(write, init_timestamp=now.isoformat(), init_ts=now.timestamp())
    return write


class _Batch(NamedTuple):
    """A create_sessions body, read: the sessions to write, the existing sessions it only adds
    events to, the event rows, and the other sessions those events name."""

    writes: list[SessionWrite]
    existing: list[str]
    rows: EventBatch
    others: set[str]


def _session_batch(body: bytes, project: str, outline: bytes | None = None) -> _Batch:
    """A create_sessions body to rows (CPU work on the body alone)."""
    decoded = sessions_body(body, outline)
    batch = _Batch([], [], EventBatch(nul=decoded.nul), set())
    seen: set[str] = set()
    for index, (entry, heads) in enumerate(zip(decoded.entries, decoded.heads, strict=True)):
        field = f"sessions[{index}]"
        if bytes(entry.session) != b"null":
            try:
                session = wire.decode_session(entry.session)
            except DECODE_ERRORS as exc:
                decode_error(f"{field}.session", exc)
            write = _new_session_write(session, project, f"{field}.session")
            batch.writes.append(write)
            session_id = write.session_id
        elif entry.session_id is not None:
            session_id = canonical_uuid(entry.session_id, f"{field}.session_id")
            batch.existing.append(session_id)
        else:
            fail(400, f"{field}: give a session object, or the session_id of its events")
        if session_id in seen:
            fail(400, f"{field}: session {session_id} appears twice; send each session once")
        seen.add(session_id)
        if entry.events:
            named = add_event_rows(
                batch.rows,
                entry.events,
                heads.events,
                session_id,
                f"{field}.events",
                decoded.check_depth,
            )
            batch.others.update(named)
    finish(batch.rows)
    batch.others.difference_update(seen)
    return batch


def _session_url(request: web.Request, session_id: str) -> str:
    try:
        origin = str(request.url.origin())
    except (ValueError, UnicodeError):  # a Host header that is no host (client input)
        origin = ""
    return f"{origin}/sessions/{session_id}"  # the dashboard's session page


class _V2Api:
    """The v2 request handlers."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def create_session(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        project = (await auth.api_key_header(ctx, request)).project_id
        write = _new_session_write(_decode_session(await ctx.body(request)), project, "session")
        session_id = write.session_id
        owner = await ctx.storage.upsert_session(write)
        if owner != project:
            fail(403, "session belongs to another project")
        ctx.remember_owner(session_id, project)
        return json_response(
            {
                "status": "success",
                "jwt": ctx.signer.issue(session_id, project),
                "session_url": _session_url(request, session_id),
                "sessions_batch_path": SESSIONS_BATCH_PATH,
            }
        )

    async def create_sessions(self, request: web.Request) -> web.Response:
        """Many sessions in one request, with the API key: each created or updated (with the
        state it sends, as create_session does) and its events stored; or only events added
        to an existing session of the project.

        All or nothing, in one transaction: a session of another project (403), one that does
        not exist (404), a field the collector refuses (400) or too many events (413) fail the
        request with nothing stored, and the SDK sends those sessions again with the standard
        calls, which isolate the offending one.
        """
        ctx = self.ctx
        project = (await auth.api_key_header(ctx, request)).project_id
        body = await ctx.body(request)
        batch = await ctx.decode_json(body, _session_batch, project)
        for sid in (*batch.existing, *batch.others):
            owner = await ctx.owner_of(sid)
            if owner is None:
                fail(404, f"session {sid} not found")
            if owner != project:
                fail(403, f"session {sid} belongs to another project")
        owners, stored = await ctx.storage.upsert_sessions(batch.writes, batch.rows)
        for write, owner in zip(batch.writes, owners, strict=True):
            if owner != project:
                fail(403, f"session {write.session_id} belongs to another project")
            ctx.remember_owner(write.session_id, project)
        ids = [write.session_id for write in batch.writes] + batch.existing
        costs = ctx.prices.session_costs(await ctx.storage.llm_usage(ids))
        return json_response(
            {
                "status": "success",
                "received": len(batch.rows),
                "stored": stored,
                "sessions": [
                    {
                        "session_id": sid,
                        "token_cost": format_cost(costs.get(sid, Decimal(0))),
                        "session_url": _session_url(request, sid),
                    }
                    for sid in ids
                ],
            }
        )

    async def update_session(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        caller = await auth.session_token(ctx, request)
        session = _decode_session(await ctx.body(request))
        session_id = caller.session_id
        given = session.session_id
        if given is not None and canonical_uuid(given, "session.session_id") != session_id:
            fail(403, "the token is for another session")
        write = _session_write(session, session_id, caller.project_id)
        if not await ctx.storage.update_session(write):
            fail(404, "session not found")
        costs = ctx.prices.session_costs(await ctx.storage.llm_usage([session_id]))
        return json_response(
            {
                "status": "success",
                "token_cost": format_cost(sum(costs.values(), start=Decimal(0))),
                "session_url": _session_url(request, session_id),
            }
        )

    async def create_events(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        caller = await auth.session_token(ctx, request)
        body = await ctx.body(request)
        rows, others = await ctx.decode_json(body, event_batch, caller.session_id)
        for sid in others:
            owner = await ctx.owner_of(sid)
            if owner is None:
                fail(404, f"session {sid} not found")
            if owner != caller.project_id:
                fail(403, f"session {sid} belongs to another project")
        stored = await ctx.storage.insert_events(rows) if rows else 0
        return json_response({"status": "success", "received": len(rows), "stored": stored})

    async def reauthorize_jwt(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        project = (await auth.api_key_header(ctx, request)).project_id
        try:
            body = wire.decode_reauth(await ctx.body(request))
        except DECODE_ERRORS as exc:
            decode_error("body", exc)
        session_id = canonical_uuid(body.session_id, "session_id")
        owner = await ctx.owner_of(session_id)
        if owner is None:
            fail(404, "session not found")
        if owner != project:
            fail(403, "session belongs to another project")
        return json_response({"status": "success", "jwt": ctx.signer.issue(session_id, project)})

    async def create_agent(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        caller = await auth.session_token(ctx, request)
        try:
            agent = wire.decode_agent(await ctx.body(request))
        except DECODE_ERRORS as exc:
            decode_error("agent", exc)
        if not agent.id or len(agent.id) > MAX_ID_LENGTH or "\x00" in agent.id:
            fail(400, f"id: {ID_RULE}")
        await ctx.storage.create_agent(caller.session_id, agent.id, agent.name)
        return json_response({"status": "success"})

    async def developer_errors(self, request: web.Request) -> web.Response:
        ctx = self.ctx
        project = (await auth.api_key_header(ctx, request)).project_id
        body = await ctx.body(request)
        try:
            report = wire.decode_developer_error(body)
        except DECODE_ERRORS as exc:
            decode_error("developer error", exc)
        session_id = None
        if report.session_id is not None:
            session_id = canonical_uuid(report.session_id, "session_id")
            if await ctx.owner_of(session_id) != project:  # as the read API: 404, not 403
                fail(404, "session_id: session not found")
        log.info("developer error from a client: %s: %s", report.type, report.message)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            fail(400, "invalid developer error: the body is not UTF-8")
        await ctx.storage.add_developer_error(project, session_id, text)
        return json_response({"status": "success"})
