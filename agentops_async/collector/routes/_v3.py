"""The token call of the current agentops SDK (0.4): ``POST /v3/auth/token``.

``{"api_key": "..."}`` -> ``{"token": <project JWT>, "project_id": ..., "project_prem_status":
"free"}``. The token names the project only (no session); the SDK sends it as
``Authorization: Bearer <token>`` with its OTLP exports (``/v1/traces``). It lives
``project_token_expiry`` seconds (``--project-token-expiry``, default 30 days), because the SDK
fetches it once and never refreshes it. An unknown or revoked key is answered 401 with a JSON
message.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from .. import _auth as auth
from .._context import Context
from .._http import DECODE_ERRORS, decode_error, json_response

__all__ = ["add_routes"]


class _TokenIn(msgspec.Struct):
    """``{"api_key": ...}`` of /v3/auth/token."""

    api_key: str


_token_decoder = msgspec.json.Decoder(_TokenIn)


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

    app.add_routes([web.post("/v3/auth/token", token)])
