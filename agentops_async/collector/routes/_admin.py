"""The admin API (``POST /admin/projects``, only with an admin token) and ``GET /health``."""

from __future__ import annotations

import hmac

from aiohttp import web

from .. import _wire as wire
from .._auth import new_project
from .._context import Context
from .._http import DECODE_ERRORS, continue_after, decode_error, fail, json_response

__all__ = ["add_routes"]

ADMIN_TOKEN_HEADER = "X-Agentops-Admin-Token"


def add_routes(app: web.Application, ctx: Context) -> None:
    """Add the admin API and the health check to ``app``."""
    api = _AdminApi(ctx)
    app.add_routes(
        [
            web.post(
                "/admin/projects",
                api.create_project,
                expect_handler=continue_after(api.check_admin),
            ),
            web.get("/health", api.health, expect_handler=continue_after()),
        ]
    )


class _AdminApi:
    """The admin and health handlers."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def check_admin(self, request: web.Request) -> None:
        """A 404 when the admin API is disabled, a 401 without the right admin token."""
        expected = self.ctx.settings.admin_token
        given = request.headers.get(ADMIN_TOKEN_HEADER, "")
        if expected is None:
            fail(404, "the admin API is disabled")
        # Header values are str with surrogate escapes for bytes that are not UTF-8.
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
            fail(401, "invalid admin token")

    async def create_project(self, request: web.Request) -> web.Response:
        await self.check_admin(request)
        try:
            body = wire.decode_project(await self.ctx.body(request))
        except DECODE_ERRORS as exc:
            decode_error("body", exc)
        project_id, api_key = await new_project(self.ctx.storage, body.name or "default")
        return json_response({"project_id": project_id, "api_key": api_key})

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok"})
