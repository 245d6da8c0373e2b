"""The AgentOps v2 API client: one aiohttp session, retries, re-authorisation."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import aiohttp
import msgspec
import yarl
from opentelemetry import context as otel_context

from .._config import Config
from ..errors import ApiError
from ..telemetry._otel import suppressed_otel_context
from . import _wire as wire

log = logging.getLogger("agentops_async")

T = TypeVar("T")

_JSON = {"Content-Type": "application/json; charset=UTF-8", "Accept": "application/json"}
_MAX_RETRY_AFTER = 120.0
# Answers that mean "the service is unavailable, try again later" (as OTLP exporters treat them):
# retried for up to max_retry_time. Connection errors, timeouts and garbled answers are too.
_OUTAGE_STATUSES = frozenset({429, 502, 503, 504})
_QUIET = suppressed_otel_context()  # no current span, OTel instrumentation suppressed


# Bodies above this are written in pieces of this size with a yield to the loop in between: one
# send() of a 400 KB body on loopback costs ~1.7 ms of loop time (kernel copy and TCP work), a
# stall that shows up in the application's latency.
_CHUNK = 64 * 1024


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    view = memoryview(body)
    for start in range(0, len(body), _CHUNK):
        if start:
            await asyncio.sleep(0)
        yield view[start : start + _CHUNK].tobytes()


class SessionAuth:
    """The JWT of one session; refreshed in place by re-authorisation."""

    __slots__ = ("jwt", "session_id")

    def __init__(self, session_id: str, jwt: str | None = None) -> None:
        self.session_id = session_id
        self.jwt = jwt

    def __repr__(self) -> str:
        return f"SessionAuth(session_id={self.session_id!r}, jwt={'<set>' if self.jwt else None})"


class RetryPolicy:
    """Exponential backoff with full jitter, bounded by total time, honouring Retry-After."""

    def __init__(
        self,
        *,
        initial: float = 0.1,
        maximum: float = 10.0,
        max_elapsed: float = 300.0,
        server_error_attempts: int = 3,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.max_elapsed = max_elapsed
        self.server_error_attempts = server_error_attempts

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), _MAX_RETRY_AFTER)
        ceiling = min(self.maximum, self.initial * (2 ** (attempt - 1)))
        return random.uniform(0.0, ceiling)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OutageMonitor:
    """Says once when delivery has been failing for a while, and once when it works again.

    Each request's retries are logged at DEBUG only; this turns them into one WARNING per outage
    (after ``warn_after`` seconds without a success, with the reason and what is pending) and
    one INFO at the first success after it (with how long it lasted). A failure is an attempt
    that got no usable answer (connection refused or reset, timeout, garbled answer) or an
    "unavailable" status (429, 502, 503, 504). A plain 500 (usually about that request) and
    refusals of what was sent (4xx) are not outages.
    """

    def __init__(self, endpoint: str, warn_after: float, max_retry_time: float) -> None:
        self.endpoint = _without_credentials(endpoint)
        self.warn_after = warn_after
        self.max_retry_time = max_retry_time
        # Items the exporter holds that are not resolved yet (set by the exporter).
        self.pending: Callable[[], int] | None = None
        self._since: float | None = None  # loop time of the first failure of this outage
        self._reason = ""
        self._timer: asyncio.TimerHandle | None = None
        self._warned = False

    @property
    def failing(self) -> bool:
        """True from the first failure to the next success."""
        return self._since is not None

    def failed(self, reason: str) -> None:
        """An attempt failed (``reason`` is already redacted); starts the clock of an outage."""
        self._reason = reason
        if self._since is None:
            loop = asyncio.get_running_loop()
            self._since = loop.time()
            self._timer = loop.call_later(self.warn_after, self._warn)

    def succeeded(self) -> None:
        """An attempt succeeded: the outage, if any, is over."""
        if self._since is None:
            return
        lasted = asyncio.get_running_loop().time() - self._since
        if self._warned:
            log.info(
                "agentops_async: delivery to %s recovered after %.1fs of failures",
                self.endpoint,
                lasted,
            )
        self.close()

    def close(self) -> None:
        """Forget the outage in progress (no log line)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._since = None
        self._warned = False

    def _warn(self) -> None:
        self._timer = None
        if self._since is None:
            return
        self._warned = True
        lasted = asyncio.get_running_loop().time() - self._since
        pending = self.pending() if self.pending is not None else None
        held = f"{pending} item(s) pending" if pending is not None else "events pending"
        log.warning(
            "agentops_async: delivery to %s has been failing for %.1fs (last error: %s); %s "
            "(events and session updates). Each request is retried with backoff for up to "
            "max_retry_time=%gs, then its events are dropped and counted; an INFO line follows "
            "when delivery works again",
            self.endpoint,
            lasted,
            self._reason,
            held,
            self.max_retry_time,
        )


def _is_api_path(path: str) -> bool:
    """A path under the API's own ``/v2/`` (the API key is never sent anywhere else)."""
    return path.startswith("/v2/") and ".." not in path and "//" not in path and "?" not in path


def _without_credentials(endpoint: str) -> str:
    """``endpoint`` without a user or password in it (for log lines)."""
    try:
        return str(yarl.URL(endpoint).with_user(None))
    except (TypeError, ValueError):
        return "the API endpoint"


class ApiClient:
    """Talks to an AgentOps v2 API. One instance per client, one aiohttp session, keep-alive.

    Every call retries connection errors, timeouts, 429/502/503/504 (honouring Retry-After) and
    garbled 2xx answers with exponential backoff and full jitter until ``max_retry_time`` has
    passed; other 5xx get ``server_error_attempts`` quick attempts; a 401 on a JWT call
    re-authorises once and retries; other 4xx raise :class:`ApiError` at once.
    """

    def __init__(self, config: Config, retry: RetryPolicy | None = None) -> None:
        self._base = config.endpoint
        self._api_key = config.api_key or ""
        self._parent_key = config.parent_key
        self._timeout = aiohttp.ClientTimeout(total=config.request_timeout)
        self.retry = retry or RetryPolicy(max_elapsed=config.max_retry_time)
        self.outage = OutageMonitor(
            config.endpoint, config.outage_warning_after, self.retry.max_elapsed
        )
        self._http: aiohttp.ClientSession | None = None
        #: Where the server takes whole sessions in batches, once a create_session answer said
        #: so (our collector does; the AgentOps service does not): None means the standard calls.
        self.sessions_batch_path: str | None = None
        self._batches_allowed = config.session_batches

    def __repr__(self) -> str:
        return f"ApiClient(endpoint={self._base!r})"

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(limit=32, keepalive_timeout=30)
            self._http = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._http

    def close_now(self) -> None:
        """Close the HTTP session without awaiting anything: for a loop that is going away.

        The connections are closed (their transports finish closing on the loop, if it still
        runs); a later call opens a new session, on whatever loop is running then.
        """
        http, self._http = self._http, None
        if http is None or http.closed:
            return
        connector = http.connector
        http.detach()
        if connector is not None:
            # BaseConnector.close() is this synchronous part plus an awaitable for the TLS
            # shutdowns, which nothing can await here.
            with contextlib.suppress(Exception):
                connector._close()

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        self.outage.close()
        if self._http is not None and not self._http.closed:
            await self._http.close()

    # -- the five calls -----------------------------------------------------------------------
    async def create_session(self, body: bytes) -> wire.CreateSessionAnswer:
        """POST /v2/create_session with the API key; returns the session's JWT."""
        answer: wire.CreateSessionAnswer = await self._call(
            "/v2/create_session", body, None, wire.create_session_decoder.decode
        )
        path = answer.sessions_batch_path
        if (
            path is not None
            and self._batches_allowed
            and self.sessions_batch_path is None
            and _is_api_path(path)
        ):
            self.sessions_batch_path = path
        return answer

    async def create_sessions(self, body: bytes) -> wire.CreateSessionsAnswer:
        """POST whole sessions (each one's state and events) of many sessions, with the API key,
        where the server said it takes them (:attr:`sessions_batch_path`; our collector's
        extension of the v2 API)."""
        assert self.sessions_batch_path is not None
        answer: wire.CreateSessionsAnswer = await self._call(
            self.sessions_batch_path, body, None, wire.create_sessions_decoder.decode
        )
        return answer

    async def update_session(self, auth: SessionAuth, body: bytes) -> wire.UpdateSessionAnswer:
        """POST /v2/update_session; the answer carries the session's token cost."""
        answer: wire.UpdateSessionAnswer = await self._call(
            "/v2/update_session", body, auth, wire.update_session_decoder.decode
        )
        return answer

    async def create_events(self, auth: SessionAuth, body: bytes) -> None:
        """POST /v2/create_events with an already-encoded ``{"events": [...]}`` body."""
        await self._call("/v2/create_events", body, auth, None)

    async def create_agent(self, auth: SessionAuth, body: bytes) -> None:
        """POST /v2/create_agent."""
        await self._call("/v2/create_agent", body, auth, None)

    async def reauthorize(self, auth: SessionAuth) -> None:
        """POST /v2/reauthorize_jwt with the API key; stores the new JWT in ``auth``."""
        body = wire.encoder.encode(wire.ReauthBody(session_id=auth.session_id))
        answer = await self._call("/v2/reauthorize_jwt", body, None, wire.reauth_decoder.decode)
        auth.jwt = answer.jwt

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], decode: Callable[[bytes], T]
    ) -> T:
        """POST ``body`` to ``{endpoint}{path}`` with exactly ``headers`` (another protocol's
        credentials, e.g. OTLP), with the same retries, Retry-After and outage warning as the
        v2 calls; ``decode`` reads a 2xx answer.

        Raises:
            ApiError: as for the v2 calls (``retryable`` when it gave up on a transient failure).
        """
        answer: T = await self._call(path, body, None, decode, headers)
        return answer

    # -- machinery ------------------------------------------------------------------------------
    def _headers(self, auth: SessionAuth | None) -> dict[str, str]:
        headers = dict(_JSON)
        if auth is None:
            headers["X-Agentops-Api-Key"] = self._api_key
            if self._parent_key:
                headers["X-Agentops-Parent-Key"] = self._parent_key
        else:
            headers["Authorization"] = f"Bearer {auth.jwt or ''}"
        return headers

    def _redact(self, text: str, auth: SessionAuth | None) -> str:
        for secret in (self._api_key, self._parent_key, auth.jwt if auth else None):
            if secret:
                text = text.replace(secret, "<redacted>")
        return text

    async def _call(
        self,
        path: str,
        body: bytes,
        auth: SessionAuth | None,
        decode: Callable[[bytes], T] | None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        # Whoever calls: our requests are never spans (an instrumented aiohttp would otherwise
        # trace them into the current session, whose export makes another request...).
        token = otel_context.attach(_QUIET)
        try:
            return await self._call_with_retries(path, body, auth, decode, headers)
        finally:
            otel_context.detach(token)

    async def _call_with_retries(
        self,
        path: str,
        body: bytes,
        auth: SessionAuth | None,
        decode: Callable[[bytes], T] | None,
        fixed_headers: dict[str, str] | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.retry.max_elapsed
        attempt = server_errors = 0
        reauthorised = False
        while True:
            attempt += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                headers = dict(fixed_headers) if fixed_headers else self._headers(auth)
                data: bytes | AsyncIterator[bytes] = body
                if len(body) > _CHUNK:
                    data = _chunks(body)
                    headers["Content-Length"] = str(len(body))  # not chunked transfer encoding
                async with self._session().post(
                    self._base + path, data=data, headers=headers
                ) as resp:
                    status = resp.status
                    payload = await resp.read()
                    if 200 <= status < 300:
                        try:
                            answer = self._decode(path, payload, decode)
                        except ApiError as exc:
                            # A garbled 2xx is usually a proxy or gateway hiccup; retrying is safe
                            # because every call is idempotent on the server (ids made here).
                            status, reason = None, str(exc)
                        else:
                            if self.outage.failing:
                                self.outage.succeeded()
                            return answer
                    else:
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                        reason = f"HTTP {status}: {payload[:200].decode('utf-8', 'replace')}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            reason = self._redact(reason, auth)

            if status == 401 and auth is not None and not reauthorised:
                reauthorised = True
                log.debug(
                    "%s got 401 (%s); re-authorising session %s", path, reason, auth.session_id
                )
                await self.reauthorize(auth)
                continue
            if status is not None and status >= 500 and status not in _OUTAGE_STATUSES:
                # A 500 is about this request more often than about the server being down: a
                # few quick attempts, then the caller decides (the exporter bisects the batch).
                server_errors += 1
                if server_errors >= self.retry.server_error_attempts:
                    raise ApiError(f"{path} failed with a server error: {reason}", status=status)
            elif status is not None and status not in _OUTAGE_STATUSES:
                raise ApiError(f"{path} refused: {reason}", status=status)
            if status is None or status in _OUTAGE_STATUSES:
                self.outage.failed(reason)
            delay = self.retry.delay(attempt, retry_after)
            if loop.time() + delay > give_up_at:
                raise ApiError(
                    f"{path} failed after {attempt} attempts over "
                    f"{self.retry.max_elapsed:g}s: {reason}",
                    status=status,
                    retryable=True,
                )
            log.debug("%s attempt %d failed (%s); retrying in %.2fs", path, attempt, reason, delay)
            await asyncio.sleep(delay)

    @staticmethod
    def _decode(path: str, payload: bytes, decode: Callable[[bytes], T] | None) -> T | None:
        if decode is None:
            return None
        try:
            return decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            snippet = payload[:120].decode("utf-8", "replace")
            raise ApiError(f"{path} answered malformed JSON ({exc}): {snippet!r}") from None
