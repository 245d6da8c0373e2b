"""The embeddable collector: storage + HTTP app + a listening socket, as one async context.

Also what guards the connections themselves (below the app): timeouts for idle connections and
for slow request headers, a cap on open connections, JSON answers to requests that aiohttp's
parser refuses, and condensed logging when the process runs out of file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ._app import build_app
from ._auth import new_project, new_secret
from ._context import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_DASHBOARD_SIGNIN_EXPIRY,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_PROJECT_TOKEN_EXPIRY,
    DEFAULT_SIGNIN_ATTEMPTS_PER_MINUTE,
    CollectorSettings,
)
from ._jwt import JwtSigner
from ._prices import PriceTable
from ._storage import Storage, checked_pool_size, is_postgres_dsn, open_storage, prune

__all__ = ["Collector"]

log = logging.getLogger("agentops_async")

DEFAULT_RETENTION_INTERVAL = 3600.0  # seconds between two passes of the retention job


class Collector:
    """A running collector: the AgentOps v2 API, OTLP ingest and the read API on one port.

    Args:
        database: A SQLite file path (default), ``":memory:"``, or a ``postgresql://`` DSN.
        host: Interface to listen on.
        port: TCP port; 0 picks a free one (read it back from :attr:`url`).
        jwt_expiry: Lifetime of session tokens in seconds.
        project_token_expiry: Lifetime of the project tokens of ``POST /v3/auth/token`` (the
            agentops SDK 0.4 never refreshes its token), in seconds; default 30 days.
        prices: A price table, or the path of a JSON file overriding the built-in one.
        max_body_size: Largest accepted request body in bytes (also once decompressed).
        admin_token: Enables ``POST /admin/projects`` for this token (None: disabled).
        body_timeout: Seconds to receive a whole request body (then 408).
        idle_timeout: Seconds a connection may wait for a request before it is closed.
        header_timeout: Seconds from a request's first byte to the end of its headers.
        max_connections: Open connections at most (lowered to fit the open-files limit).
        retention_days: Delete sessions older than this many days, in the background (None:
            keep everything). See :func:`agentops_async.collector.prune` for "older".
        retention_interval: Seconds between two retention passes (the first runs at start).
        pool_size: PostgreSQL: connections open at most (default: the environment's
            ``AGENTOPS_COLLECTOR_PG_POOL_SIZE``, else 10). Not for SQLite.
        pg_synchronous_commit: PostgreSQL: False acknowledges writes before their WAL reaches
            the disk (``synchronous_commit = off``): faster ingest where a request waits for
            its commit (the SDK's), but a crash of the database or its machine can lose the
            last ~0.6 s of acknowledged events, never corrupt. True (the default) waits for the
            disk. Not for SQLite. See docs/deploy.md.
        dashboard_signin_expiry: Seconds a dashboard sign-in lasts (default 12 hours).
        signin_attempts_per_minute: Failed dashboard sign-ins allowed per client address and
            minute (then 429 until the allowance refills).

    Example:
        >>> async with Collector(database="demo.db", port=0) as collector:
        ...     api_key = await collector.create_project("demo")
        ...     client = agentops_async.AsyncClient(api_key=api_key, endpoint=collector.url)
    """

    def __init__(
        self,
        database: str = "agentops.db",
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        jwt_expiry: float = 3600.0,
        project_token_expiry: float = DEFAULT_PROJECT_TOKEN_EXPIRY,
        prices: PriceTable | str | Path | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        admin_token: str | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        retention_days: float | None = None,
        retention_interval: float = DEFAULT_RETENTION_INTERVAL,
        pool_size: int | None = None,
        pg_synchronous_commit: bool = True,
        dashboard_signin_expiry: float = DEFAULT_DASHBOARD_SIGNIN_EXPIRY,
        signin_attempts_per_minute: int = DEFAULT_SIGNIN_ATTEMPTS_PER_MINUTE,
    ) -> None:
        self.database = database
        self.host = host
        self.port = port
        if isinstance(prices, (str, Path)):
            prices = PriceTable.from_file(prices)
        self.settings = CollectorSettings(
            jwt_expiry=jwt_expiry,
            project_token_expiry=project_token_expiry,
            max_body_size=max_body_size,
            prices=prices or PriceTable(),
            admin_token=admin_token,
            body_timeout=body_timeout,
            idle_timeout=idle_timeout,
            header_timeout=header_timeout,
            max_connections=max_connections,
            dashboard_signin_expiry=dashboard_signin_expiry,
            signin_attempts_per_minute=signin_attempts_per_minute,
        )
        if not dashboard_signin_expiry > 0:
            raise ValueError("dashboard_signin_expiry: expected seconds > 0")
        if signin_attempts_per_minute < 1:
            raise ValueError("signin_attempts_per_minute: expected at least 1")
        if retention_days is not None and not retention_days > 0:
            raise ValueError("retention_days: expected a number of days > 0 (or None: keep all)")
        if not retention_interval > 0:
            raise ValueError("retention_interval: expected seconds > 0")
        self.pool_size = checked_pool_size(database, pool_size)
        if not pg_synchronous_commit and not is_postgres_dsn(database):
            raise ValueError(
                "pg_synchronous_commit: only for a PostgreSQL database (SQLite's commits are"
                " set by its WAL with synchronous=NORMAL); leave it True"
            )
        self.pg_synchronous_commit = pg_synchronous_commit
        self.retention_days = retention_days
        self.retention_interval = retention_interval
        self._retention: asyncio.Task[None] | None = None
        self._storage: Storage | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._exception_handler: Any = None

    def __repr__(self) -> str:
        return f"Collector(url={self.url!r})" if self._runner else "Collector(<stopped>)"

    @property
    def storage(self) -> Storage:
        """The open storage (raises if the collector is not started)."""
        if self._storage is None:
            raise RuntimeError("the collector is not started")
        return self._storage

    @property
    def url(self) -> str:
        """The base URL clients use as their endpoint, e.g. ``http://127.0.0.1:41234``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Open the storage (creating the schema) and start listening."""
        storage = open_storage(
            self.database,
            pool_size=self.pool_size,
            pg_synchronous_commit=self.pg_synchronous_commit,
        )
        await storage.open()
        try:
            secret = await storage.get_secret(new_secret())
            signer = JwtSigner(secret, self.settings.jwt_expiry)
            app = build_app(storage, signer, self.settings)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            assert runner.server is not None  # made by setup()
            try:
                listener = await self._listen(runner.server)
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            await storage.close()
            raise
        self._storage, self._runner, self._listener = storage, runner, listener
        self.port = int(listener.sockets[0].getsockname()[1])
        self._install_exception_handler()
        if self.retention_days is not None:
            self._retention = asyncio.create_task(
                _retain(storage, self.retention_days, self.retention_interval),
                name="agentops-collector-retention",
            )
        log.info("collector listening on %s (database: %s)", self.url, _safe_db(self.database))

    async def _listen(self, server: web.Server) -> asyncio.Server:
        """Listen with :class:`_Connection` handlers (aiohttp's TCPSite cannot set the class)."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        max_connections, backlog = connection_limits(settings.max_connections)
        guard = _ConnectionGuard(
            max_connections=max_connections, header_timeout=settings.header_timeout
        )

        def connection() -> _Connection:
            return _Connection(
                server,
                guard,
                loop=loop,
                keepalive_timeout=settings.idle_timeout,
                access_log=None,
                # Unread bodies (a request refused before its body was read) are drained as
                # raw bytes for at most this long, so the client still reads the answer.
                lingering_time=min(settings.body_timeout, _LINGER_SECONDS),
                # Bodies are inflated by _Api.body, bounded and in slices, after authentication.
                auto_decompress=False,
            )

        return await loop.create_server(
            connection, self.host, self.port, reuse_address=True, backlog=backlog
        )

    def _install_exception_handler(self) -> None:
        """Condense asyncio's per-accept "Too many open files" tracebacks (unless the
        application has its own exception handler)."""
        loop = asyncio.get_running_loop()
        if loop.get_exception_handler() is None:
            loop.set_exception_handler(_loop_exception_handler)
            self._exception_handler = loop

    async def stop(self) -> None:
        """Stop listening, finish in-flight requests and close the storage."""
        runner, storage, listener = self._runner, self._storage, self._listener
        self._runner = self._storage = self._listener = None
        retention, self._retention = self._retention, None
        if retention is not None:
            retention.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retention
        if listener is not None:
            listener.close()
        if runner is not None:
            await runner.cleanup()
        if listener is not None:
            await listener.wait_closed()
        if storage is not None:
            await storage.close()
        loop, self._exception_handler = self._exception_handler, None
        if loop is not None and loop.get_exception_handler() is _loop_exception_handler:
            loop.set_exception_handler(None)

    async def create_project(self, name: str) -> str:
        """Create a project and return its new API key."""
        _, api_key = await new_project(self.storage, name)
        return api_key

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def _retain(storage: Storage, days: float, interval: float) -> None:
    """The retention job: prune sessions older than ``days`` now, then every ``interval``."""
    while True:
        try:
            pruned = await prune(storage, days * 86400.0)
        except Exception as exc:  # the database away for a while: the next pass retries
            log.warning("retention: pass failed, next in %g s: %s", interval, exc)
        else:
            log.log(
                logging.INFO if pruned.sessions else logging.DEBUG,
                "retention: deleted %d sessions (%d events) older than %g days",
                pruned.sessions,
                pruned.events,
                days,
            )
        await asyncio.sleep(interval)


def _safe_db(database: str) -> str:
    """The database name for logs, without a DSN password."""
    if "://" in database and "@" in database:
        scheme, rest = database.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return database


# --- connections -------------------------------------------------------------------------

_LINGER_SECONDS = 2.0
# Descriptors kept free for the database, log files, threads' pipes and the listening socket.
_FD_RESERVE = 32
_BACKLOG = 128
_RATE_LIMIT_SECONDS = 10.0


class _RateLimitedLog:
    """Log a kind of record at most once per interval; the next one says how many were skipped.

    For what a client (or an overloaded machine) can trigger at will: a log line per bad request
    would let anyone fill the disk.
    """

    def __init__(self, interval: float = _RATE_LIMIT_SECONDS) -> None:
        self.interval = interval
        self._next: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, level: int, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next.get(kind, 0.0):
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        self._next[kind] = now + self.interval
        skipped = self._skipped.pop(kind, 0)
        if skipped:
            message += " (and %d more like it in the last %g s)"
            args = (*args, skipped, self.interval)
        log.log(level, message, *args)


_limited_log = _RateLimitedLog()


def connection_limits(configured: int) -> tuple[int, int]:
    """The connection cap and the listen backlog that fit the process's open-files limit.

    asyncio accepts up to ``backlog`` connections in a row, once per loop iteration, and the cap
    closes idle connections for them only a few iterations later; so the cap leaves room for
    four such bursts (measured: about three are in flight): then the process does not run out
    of descriptors because of connections. Connections beyond the backlog wait in the kernel
    until the cap makes room.
    """
    try:
        import resource
    except ImportError:  # Windows
        return configured, _BACKLOG
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured, _BACKLOG
    room = max(16, soft - _FD_RESERVE)
    backlog = min(_BACKLOG, room // 8)
    cap = room - 4 * backlog
    if cap < configured:
        log.info(
            "collector: at most %d connections (the open-files limit is %d; raise it with "
            "ulimit -n for more)",
            cap,
            soft,
        )
        return cap, backlog
    return configured, backlog


def _json_answer(status: int, message: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON error body that closes the connection."""
    body = msgspec.json.encode({"message": message})
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _parse_error_message(exc: BaseException | None) -> str:
    """A short description of what aiohttp's parser refused, never echoing the input."""
    if isinstance(exc, http_exceptions.LineTooLong):
        return "bad request: request line or header too long"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "bad request: invalid HTTP method"
    if isinstance(exc, http_exceptions.BadStatusLine):
        return "bad request: invalid request line"
    if isinstance(exc, http_exceptions.InvalidHeader):
        return "bad request: invalid header"
    if isinstance(exc, http_exceptions.InvalidURLError):
        return "bad request: invalid URL"
    if isinstance(exc, http_exceptions.PayloadEncodingError):
        return "bad request: invalid body framing (Transfer-Encoding or Content-Length)"
    return "bad request: malformed HTTP request"


@dataclass
class _ConnectionGuard:
    """What the connections of one listener share: the cap and the open connections."""

    max_connections: int
    header_timeout: float
    open: set[_Connection] = field(default_factory=set)

    def make_room(self, newcomer: _Connection) -> bool:
        """At the cap: close the longest-idle connection; False if none is idle."""
        idle = [c for c in self.open if c is not newcomer and c.is_idle()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since)
        oldest.force_close()
        _limited_log(
            logging.WARNING,
            "cap",
            "collector: %d connections open (the limit, --max-connections): closed the "
            "longest-idle one for a new client",
            self.max_connections,
        )
        return True


class _Connection(RequestHandler):
    """aiohttp's connection handler with a header timeout, the connection cap and JSON errors."""

    def __init__(self, manager: web.Server, guard: _ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._header_timer: asyncio.TimerHandle | None = None
        self.idle_since = time.monotonic()

    def is_idle(self) -> bool:
        """Waiting for a request (none in progress): what the cap may close."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self._guard
        guard.open.add(self)
        if len(guard.open) > guard.max_connections and not guard.make_room(self):
            _limited_log(
                logging.WARNING,
                "full",
                "collector: %d connections open (the limit, --max-connections) and none "
                "idle: refused a new one",
                guard.max_connections,
            )
            self._answer_and_close(503, "too many connections: try again later")

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.open.discard(self)
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done() and not self._messages:
            # Part of a request's head arrived while waiting for one: the clock starts.
            if data and self._header_timer is None and self.transport is not None:
                self._header_timer = self._loop.call_later(
                    self._guard.header_timeout, self._header_timed_out
                )
        else:
            self._cancel_header_timer()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if not self.is_idle() or self.transport is None:
            return
        timeout = self._guard.header_timeout
        _limited_log(
            logging.INFO,
            "headers",
            "collector: closed a connection that sent no complete request head in %g s "
            "(--header-timeout)",
            timeout,
        )
        self._answer_and_close(408, f"request headers not received within {timeout:g} s")

    def _answer_and_close(self, status: int, message: str) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(_json_answer(status, message))
        self.force_close()  # closes the transport once the answer is flushed

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super()._handle_request(
                request, start_time, functools.partial(_http_errors_as_json, request_handler)
            )
        finally:
            self.idle_since = time.monotonic()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """What aiohttp answers itself (a request its parser refused, a handler that failed
        outside the app's middlewares): JSON, short, never echoing the request."""
        if status >= 500:
            log.error("collector: error handling a request", exc_info=exc)
            text = "internal server error"
        else:
            text = _parse_error_message(exc)
            _limited_log(logging.INFO, "parse", "collector: refused a request: %s", text)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has started already: cannot send an error")
        response = web.Response(
            status=status,
            body=msgspec.json.encode({"message": text}),
            content_type="application/json",
        )
        response.force_close()
        return response


async def _http_errors_as_json(
    handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]], request: BaseRequest
) -> web.StreamResponse:
    """aiohttp's HTTP errors raised outside the app's middlewares (an ``Expect`` header on an
    unknown route, for one) as JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return web.Response(
            status=exc.status,
            body=msgspec.json.encode({"message": exc.reason}),
            content_type="application/json",
        )


_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The collector's asyncio exception handler: one condensed line when out of descriptors.

    asyncio reports each failed ``accept()`` with a traceback; when the process runs out of file
    descriptors that is a line a second per listening socket for as long as it lasts.
    """
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in _OUT_OF_DESCRIPTORS:
        _limited_log(
            logging.WARNING,
            "descriptors",
            "collector: cannot accept connections: %s; lower --max-connections or raise the "
            "open-files limit (ulimit -n)",
            os.strerror(exc.errno or 0),
        )
        return
    loop.default_exception_handler(context)
