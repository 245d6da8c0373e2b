"""The generic ASGI piece: a pure ASGI middleware that runs each HTTP request in a session."""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from .._client import AsyncClient, default_client
from .._config import check_tags
from .._ids import new_session_id
from .._limits import MAX_TAG_LENGTH
from .._sampling import is_sampled
from ..errors import ConfigError
from ..events import ErrorEvent
from ..session._session import AsyncSession
from ..session._state import SessionState

log = logging.getLogger("agentops_async")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where the FastAPI/Starlette lifespan helper leaves its client in the lifespan state (which
# servers copy into each request's ``scope["state"]``).
CLIENT_STATE_KEY = "agentops_async.client"


class SessionMiddleware:
    """Runs each HTTP request in a session of its own, without ever waiting on the network.

    A pure ASGI middleware: it works for FastAPI, Starlette and any ASGI application, added the
    conventional way (``app.add_middleware(SessionMiddleware, client=client)``) or by wrapping
    (``app = SessionMiddleware(app, client=client)``).

    The session is current (``await agentops_async.record(event)`` finds it) in the handler, its
    dependencies and the BackgroundTasks that run after the response: it stays open until the
    application's ASGI call returns, which is after the background tasks finished. It is tagged
    with the method (``http.method:GET``), and at its end with the route template
    (``http.route:/items/{item_id}``, known once routing ran) and the status
    (``http.status:200``). It ends SUCCEEDED for a 2xx/3xx/4xx answer, FAILED with an
    ErrorEvent for an exception or a 5xx answer, INDETERMINATE when the request is cancelled.

    Its exit does not wait for delivery (``flush_on_exit=False``): the final session update is
    queued behind the request's events and the client's exporter delivers both in the
    background. With the API down, requests take no longer: events wait in the client's bounded
    queue (or are dropped and counted when it is full) and are sent when the API is back.

    Args:
        app: The ASGI application.
        client: The client to send through. By default the one the lifespan helper
            (:func:`agentops_async.integrations.fastapi.lifespan`) started, else the process's
            default client.
        exclude_paths: Paths served without a session (exact matches, e.g. ``["/health"]``; an
            entry ending with ``/`` excludes everything below it, e.g. ``"/static/"``).
        tags: Tags added to every request's session.
        sample_rate: The fraction of requests that get a recorded session, from 0.0 to 1.0,
            decided once per session from its id (deterministic: the same id always gets the
            same answer). The others run with a disabled session, so ``record()`` in the
            handler is a cheap no-op there. The client's own ``sample_rate`` (which applies
            to every session) is the same decision: with both set, a request is traced when
            its session id passes the lower rate.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncClient | None = None,
        exclude_paths: Iterable[str] = (),
        tags: Iterable[str] = (),
        sample_rate: float = 1.0,
    ) -> None:
        if isinstance(exclude_paths, str):
            raise ConfigError(
                f"exclude_paths must be a list of paths, got the string {exclude_paths!r}: "
                f"pass exclude_paths=[{exclude_paths!r}]"
            )
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)):
            raise ConfigError(
                f"sample_rate must be a number from 0.0 to 1.0, got {type(sample_rate).__name__}"
            )
        if not 0.0 <= sample_rate <= 1.0:
            raise ConfigError(
                f"sample_rate={sample_rate!r} is out of range: pass a fraction from 0.0 (no "
                "request recorded) to 1.0 (every request)"
            )
        self.app = app
        self.client = client
        self.tags = check_tags(list(tags), "tags")
        self.sample_rate = float(sample_rate)
        paths = list(exclude_paths)
        self._excluded = frozenset(p for p in paths if not p.endswith("/"))
        self._excluded_prefixes = tuple(p for p in paths if p.endswith("/"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_excluded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        session = self._start(scope)
        try:
            await session.start()
        except Exception:  # telemetry never breaks the request
            log.exception("agentops_async: could not start the request's session")
            await self.app(scope, receive, send)
            return

        watch = _StatusWatch(send)
        try:
            await self.app(scope, receive, watch)
        except BaseException as exc:  # an error; or cancelled (client went away, shutdown)
            _finish(session, scope, watch.status, exc)
            raise
        _finish(session, scope, watch.status, None)

    def _is_excluded(self, path: str) -> bool:
        return path in self._excluded or (
            bool(self._excluded_prefixes) and path.startswith(self._excluded_prefixes)
        )

    def _start(self, scope: Scope) -> AsyncSession:
        """A new session for the request (a disabled one when sampling leaves it out)."""
        session_id = new_session_id()
        if self._sampled(session_id):
            client = self.client or _client_from(scope)
        else:
            client = _unsampled_client()
        method = str(scope.get("method", "GET"))
        return AsyncSession(
            client=client,
            session_id=session_id,
            tags=[*self.tags, _tag("http.method", method)],
            flush_on_exit=False,
        )

    def _sampled(self, session_id: str) -> bool:
        # The same deterministic decision as the client's sample_rate (applied again when the
        # session starts): a request is traced only when both keep its session id.
        return is_sampled(session_id, self.sample_rate)


class _StatusWatch:
    """The ``send`` the application gets: passes messages on and notes the response status.

    One object per request (a closure would be three: function, cells, and a list).
    """

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status: int | None = None

    async def __call__(self, message: Message) -> None:
        if self.status is None and message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self.send(message)


def _finish(
    session: AsyncSession, scope: Scope, status: int | None, exc: BaseException | None
) -> None:
    """End the session without waiting (queued; the exporter delivers it)."""
    try:
        _end(session, scope, status, exc)
    except Exception:  # telemetry never breaks the request
        log.exception("agentops_async: could not end the request's session")


def _end(
    session: AsyncSession, scope: Scope, status: int | None, exc: BaseException | None
) -> None:
    if session.state.is_terminal:  # the handler ended it itself
        return
    route = scope.get("route")
    template = getattr(route, "path", None)
    tags = session.tags
    if isinstance(template, str):
        tags.append(_tag("http.route", template))
    if status is not None:
        tags.append(_tag("http.status", str(status)))
    if len(set(tags)) < len(tags):  # sent with the final update (no extra request)
        session.tags = list(dict.fromkeys(tags))
    if exc is None and (status is None or status < 500):
        session._end_nowait(SessionState.SUCCEEDED)  # queued: never waits on the network
        return
    where = f"{scope.get('method', '')} {template or scope.get('path', '')}"
    if isinstance(exc, Exception):
        session.record_nowait(ErrorEvent.from_exception(exc))
        state, reason = SessionState.FAILED, f"{type(exc).__name__} in {where}"
    elif exc is not None:
        state, reason = SessionState.INDETERMINATE, f"{type(exc).__name__} in {where}"
    else:
        details = f"{where} answered HTTP {status}"
        session.record_nowait(ErrorEvent(error_type="HTTPError", code=str(status), details=details))
        state, reason = SessionState.FAILED, details
    session._end_nowait(state, reason)


def _tag(name: str, value: str) -> str:
    tag = f"{name}:{value}"
    return tag if len(tag) <= MAX_TAG_LENGTH else tag[: MAX_TAG_LENGTH - 3] + "..."


def _client_from(scope: Scope) -> AsyncClient:
    state = scope.get("state")
    if isinstance(state, MutableMapping):
        client = state.get(CLIENT_STATE_KEY)
        if isinstance(client, AsyncClient):
            return client
    return default_client()


_unsampled: AsyncClient | None = None
_unsampled_lock = threading.Lock()


def _unsampled_client() -> AsyncClient:
    """A disabled client for the sessions sampling leaves out (made once, without the log line
    a disabled client writes: the service's client is not disabled)."""
    global _unsampled
    with _unsampled_lock:
        if _unsampled is None:
            from .. import _client

            warned, _client._disabled_warned = _client._disabled_warned, True
            try:
                _unsampled = AsyncClient(enabled=False)
            finally:
                _client._disabled_warned = warned
        return _unsampled
