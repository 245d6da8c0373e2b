"""The v3 and v4 calls of the current agentops SDK (0.4): its token and its uploads.

``POST /v3/auth/token``:

``{"api_key": "..."}`` -> ``{"token": <project JWT>, "project_id": ..., "project_prem_status":
"free"}``. The token names the project only (no session); the SDK sends it as
``Authorization: Bearer <token>`` with its OTLP exports (``/v1/traces``). It lives
``project_token_expiry`` seconds (``--project-token-expiry``, default 30 days), because the SDK
fetches it once and never refreshes it. An unknown or revoked key is answered 401 with a JSON
message.

``POST /v4/logs/upload/`` (``{"body": "<log text>"}``, header ``Trace-Id``: the trace id as a
DECIMAL integer, with a project credential): the text is stored with the session of that trace
(made now, RUNNING, when its spans have not arrived yet) and read back with
``GET /api/sessions/{id}/logs``. ``POST /v4/objects/upload/`` (``{"body": "<text>"}`` as the
agentops SDK sends it, stored as text/plain; or raw bytes with their own Content-Type): stored in
the database and served back at the ``url`` of the answer, ``{"url", "size"}``:
``GET /v4/objects/{id}``, no key needed (the id is a random UUID: whoever has the URL can read
the object, as with the SaaS's object URLs).
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime, timezone

import msgspec
from aiohttp import web

from .. import _auth as auth
from .. import _traces as traces
from .._context import Context
from .._http import DECODE_ERRORS, canonical_uuid, continue_after, decode_error, fail, json_response
from .._storage import SessionWrite

__all__ = ["add_routes"]


class _TokenIn(msgspec.Struct):
    """``{"api_key": ...}`` of /v3/auth/token."""

    api_key: str


_token_decoder = msgspec.json.Decoder(_TokenIn)


class _LogIn(msgspec.Struct):
    """``{"body": ...}`` of /v4/logs/upload/ and /v4/objects/upload/."""

    body: str


_log_decoder = msgspec.json.Decoder(_LogIn)

# Served as their own type; anything else as bytes to download (never rendered on this origin).
_SAFE_TYPES = ("image/", "text/plain", "application/json", "audio/", "video/")


def _trace_id(request: web.Request) -> str:
    """The ``Trace-Id`` header (a decimal integer, as agentops 0.4 sends it) as 32 hex digits."""
    text = request.headers.get("Trace-Id", "").strip()
    try:
        value = int(text, 10) if text.isdigit() else -1
    except ValueError:
        value = -1
    if not 0 < value < 2**128:
        fail(400, "Trace-Id: expected the trace id as a decimal integer (1..2^128-1)")
    return f"{value:032x}"


def _origin(request: web.Request) -> str:
    try:
        return str(request.url.origin())
    except (ValueError, UnicodeError):  # a Host header that is no host (client input)
        return ""


def add_routes(app: web.Application, ctx: Context) -> None:
    """Add ``POST /v3/auth/token`` to ``app``."""

    async def token(request: web.Request) -> web.Response:
        try:
            body = _token_decoder.decode(await ctx.body(request))
        except DECODE_ERRORS as exc:
            decode_error("body", exc)
        project = await auth.project_for_api_key(ctx, body.api_key)
        jwt = ctx.signer.issue(None, project, expiry=ctx.settings.project_token_expiry)
        return json_response({"token": jwt, "project_id": project, "project_prem_status": "free"})

    async def upload_log(request: web.Request) -> web.Response:
        project = (await auth.project_credential(ctx, request)).project_id
        trace_id = _trace_id(request)
        try:
            text = _log_decoder.decode(await ctx.body(request)).body
        except DECODE_ERRORS as exc:
            decode_error("body", exc)
        text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates cannot be stored
        session_id = await _session_of(ctx, project, trace_id)
        await ctx.storage.add_session_log(session_id, text)
        return json_response(
            {"url": f"{_origin(request)}/api/sessions/{session_id}/logs", "size": len(text)}
        )

    async def upload_object(request: web.Request) -> web.Response:
        project = (await auth.project_credential(ctx, request)).project_id
        data = await ctx.body(request)
        object_id = str(uuid.uuid4())
        content_type = request.content_type or "application/octet-stream"
        if content_type == "application/json":  # agentops 0.4: {"body": "<the object as text>"}
            try:
                text = _log_decoder.decode(data).body
            except DECODE_ERRORS as exc:
                decode_error("body", exc)
            data = text.encode("utf-8", "replace")
            content_type = "text/plain; charset=utf-8"
        await ctx.storage.put_object(object_id, project, content_type, data)
        return json_response(
            {"url": f"{_origin(request)}/v4/objects/{object_id}", "size": len(data)}
        )

    async def get_object(request: web.Request) -> web.Response:
        object_id = canonical_uuid(request.match_info["object_id"], "object id")
        found = await ctx.reader.get_object(object_id)
        if found is None:
            fail(404, "object not found")
        content_type, data = found
        if not content_type.startswith(_SAFE_TYPES):
            content_type = "application/octet-stream"
        return web.Response(
            body=data, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"}
        )

    sender = continue_after(functools.partial(auth.project_credential, ctx))
    app.add_routes(
        [
            web.post("/v3/auth/token", token),
            web.post("/v4/logs/upload/", upload_log, expect_handler=sender),
            web.post("/v4/objects/upload/", upload_object, expect_handler=sender),
            web.get("/v4/objects/{object_id}", get_object),
        ]
    )


async def _session_of(ctx: Context, project: str, trace_id: str) -> str:
    """The project's session of ``trace_id``; made now (RUNNING) from the trace when none is.

    Its start is now until the trace's spans arrive (the earliest of them moves it back).
    """
    known = await ctx.storage.sessions_for_traces(project, [trace_id])
    if trace_id in known:
        return known[trace_id]
    session_id = traces.trace_session_id(trace_id)
    now = datetime.now(timezone.utc)
    write = SessionWrite(
        session_id=session_id,
        project_id=project,
        trace_id=trace_id,
        init_timestamp=now.isoformat(),
        init_ts=now.timestamp(),
    )
    # Only a new session gets "now" as its start (spans that arrived first set an earlier one;
    # in the rare race with them the start is moved back by the next export of the trace).
    owner = await ctx.owner_of(session_id)
    if owner is None:
        owner = await ctx.storage.upsert_session(write)
    if owner != project:
        fail(403, "Trace-Id: the session of this trace belongs to another project")
    ctx.remember_owner(session_id, project)
    return session_id
