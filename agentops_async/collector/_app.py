"""The collector's aiohttp app: the shared context, the error middleware and every API's routes.

How the collector is organised (open the files in this order to follow a request):

- ``_context.py``: what the routes share (storage, signer, settings, caches, body reading,
  decode threads), one :class:`~agentops_async.collector._context.Context` per app;
- ``_auth.py``: who is calling (API key, bearer API key, session JWT, project JWT);
- ``routes/``: one module per API (v2, v3, OTLP, reads, admin) and the dashboard, each with
  ``add_routes(app, ctx)`` (the dashboard's shared parts are in ``_dashboard/``);
- below them, the pure parts: ``_http.py`` (errors, parameters), ``_ingest.py`` (create_events
  bodies to rows), ``_otlp.py`` (OTLP decoding), ``_reads.py`` (the read model), ``_wire.py``,
  ``_jwt.py``, ``_prices.py`` and the storage (``_storage.py`` and its backends).

Every answer is JSON (the AgentOps clients parse even error bodies). Client mistakes are 4xx with a
``{"message": ...}`` that names the field; a storage outage (``StorageUnavailable``) is 503 with
``Retry-After``; anything unexpected is logged and answered with 500.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from ._context import CollectorSettings, Context
from ._http import Handler, HttpError, json_response
from ._jwt import JwtSigner
from ._storage import Storage, StorageUnavailable
from .routes import _admin, _dashboard, _otlp, _overview, _reads, _v2, _v3

__all__ = ["build_app"]

log = logging.getLogger("agentops_async")


def build_app(storage: Storage, signer: JwtSigner, settings: CollectorSettings) -> web.Application:
    """The aiohttp application of a collector over an open ``storage``."""
    ctx = Context(storage, signer, settings)
    # The body limit is enforced in Context.body (with a JSON answer); aiohttp's own limit is a
    # backstop a little above it.
    app = web.Application(middlewares=[_errors_as_json], client_max_size=settings.max_body_size + 1)
    app.on_cleanup.append(ctx.close)
    _v2.add_routes(app, ctx)
    _v3.add_routes(app, ctx)
    _otlp.add_routes(app, ctx)
    _reads.add_routes(app, ctx)
    _admin.add_routes(app, ctx)
    _dashboard.add_routes(app, ctx)
    _overview.add_routes(app, ctx)
    return app


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HttpError as exc:
        return json_response({"message": exc.message}, exc.status)
    except StorageUnavailable as exc:
        return _storage_unavailable(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"message": exc.reason}, exc.status)
    except Exception:
        log.exception("collector: unexpected error in %s %s", request.method, request.path)
        return json_response({"message": "internal server error"}, 500)


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
    response = json_response(
        {"message": f"storage temporarily unavailable, retry later: {exc.reason}"}, 503
    )
    response.headers["Retry-After"] = str(exc.retry_after)
    return response
