"""AsyncSession: one trace of an agent's work, and the events recorded into it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextvars import Token
from datetime import datetime
from decimal import Decimal
from time import time as _now
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace

from .._config import check_tags
from .._ids import new_session_id
from .._limits import MAX_ID_LENGTH
from .._sampling import is_sampled
from ..api._wire import host_env
from ..errors import ConfigError, InvalidEvent, SessionNotRunning
from ..events import (
    ErrorEvent,
    Event,
    _describe_oversize,
    _safe_repr,
    _utcnow,
)
from ..telemetry._exporter import Exporter, NullExporter, Op, SessionChannel
from ..telemetry._otel import context_only_tracer, router, session_links, session_tracer
from ..telemetry._targets import (
    AGENT_ADDED,
    SESSION_CREATED,
    SESSION_UPDATED,
    AgentSnapshot,
    SessionSnapshot,
)
from . import _registry as registry
from ._state import SessionState, SessionStateProperty

if TYPE_CHECKING:
    from .._client import AsyncClient

log = logging.getLogger("agentops_async")

_RUNNING = SessionState.RUNNING


# The links of a session opened outside any span (nearly all): one shared empty list, not one
# more tracked object per session for the garbage collector (never mutated).
_NO_LINKS: list[tuple[str, str]] = []


class SessionStats(msgspec.Struct, frozen=True, kw_only=True):
    """What a session did, as known to the client.

    Attributes:
        session_id: The session's id.
        state: Its state when the stats were taken.
        end_state_reason: Why it ended, when it did.
        duration: Seconds from start to end (or to now while running).
        event_counts: Recorded events by event type (``llms``, ``tools``, ...).
        recorded: Events accepted by ``record()``.
        delivered: Events acknowledged by the API.
        dropped: Events that will not be delivered (queue full, refused, shutdown timeout).
        filtered: Events the client's ``before_send`` dropped on purpose (not lost).
        token_cost: Cost in USD computed by the server, when it answered one.
        session_url: Where to look at the session, when the server gave a URL.
    """

    session_id: str
    state: SessionState
    end_state_reason: str | None
    duration: float
    event_counts: dict[str, int]
    recorded: int
    delivered: int
    dropped: int
    token_cost: Decimal | None
    session_url: str | None
    filtered: int = 0

    def summary(self) -> str:
        """The one-line stats summary logged when a session ends."""
        counts = self.event_counts
        cost = f"${self.token_cost:.6f}" if self.token_cost is not None else "n/a"
        return (
            f"Session {self.session_id} {self.state.value}"
            f" | Duration: {_fmt_duration(self.duration)}"
            f" | Cost: {cost} | LLMs: {counts.get('llms', 0)} | Tools: {counts.get('tools', 0)}"
            f" | Actions: {counts.get('actions', 0)} | Errors: {counts.get('errors', 0)}"
            f" | Delivered: {self.delivered} | Dropped: {self.dropped}"
        )


def _fmt_duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}h {minutes}m {secs:.1f}s"
    if minutes:
        return f"{minutes}m {secs:.1f}s"
    return f"{secs:.2f}s"


class AsyncSession:
    """A session: one trace (a root span) of an agent's work, and the events recorded into it.

    Use it as an async context manager; a normal exit ends it SUCCEEDED, an exception FAILED (and
    records an ErrorEvent), a cancellation INDETERMINATE. Or call ``await start()`` and
    ``await end(...)`` yourself.

    Example:
        >>> async def main() -> None:
        ...     async with AsyncSession(tags=["planner"]) as session:
        ...         await session.record(ActionEvent(action_type="plan"))
        ...         await record(ToolEvent(name="search"))  # the current session, via contextvars

    Args:
        tags: Tags of the session (a list of strings); the client's default tags are added.
        client: The :class:`~agentops_async.AsyncClient` to send through; by default the process's
            default client, configured from the environment (``AGENTOPS_API_KEY``...).
        session_id: Use this id instead of a new one (e.g. to continue a session id you own).
            New ids are UUIDv7: they start with the time, so that storage appends them.
        video: URL of a recording of the session.
        flush_on_exit: True (the default) makes leaving the ``async with`` block wait (up to
            the client's ``shutdown_timeout``) until this session's own events and final update
            are acknowledged, never for other sessions'. False returns at once: the final update
            is queued behind the session's events and the exporter delivers both in the
            background (counted in :attr:`stats` and ``client.stats`` as usual). Use False in
            services (one session per request) so that no request waits on the network.
    """

    state = SessionStateProperty()

    def __init__(
        self,
        *,
        tags: Iterable[str] | str | None = None,
        client: AsyncClient | None = None,
        session_id: str | uuid.UUID | None = None,
        video: str | None = None,
        flush_on_exit: bool = True,
    ) -> None:
        self._client = client
        self.flush_on_exit = flush_on_exit
        #: False when the client's ``sample_rate`` left this session out (decided at start):
        #: it then runs as usual but records and sends nothing.
        self.sampled = True
        self.session_id = (
            _checked_id(str(session_id), "session_id")
            if session_id is not None
            else new_session_id()
        )
        self.tags: list[str] = _session_tags(tags, "tags")
        self.video = video
        self.end_state_reason: str | None = None
        self.init_timestamp: datetime | None = None
        self.end_timestamp: datetime | None = None
        self.trace_id: str = ""
        self._span_id = ""  # the root span's id, in hex
        # (trace id, span id) of the ambient span(s); read only (snapshots share it)
        self._links: list[tuple[str, str]] = _NO_LINKS
        self._counts: dict[str, int] = {}  # recorded on the loop thread
        self._locked_counts: dict[str, int] = {}  # recorded from other threads, and spans
        self._state_value = SessionState.INITIALIZING  # storage of the `state` descriptor
        self._disabled = False
        self._recording = False  # running and enabled: the hot path's one test
        self._exporter: Exporter | NullExporter = NullExporter()
        self._offer: Callable[[SessionChannel, Event | bytes], bool] = self._exporter.offer
        self._max_event_bytes = 0
        self._channel: SessionChannel | None = None
        self._span: trace.Span | None = None
        self._span_trace_id = 0
        self._routed = False  # its trace's spans are routed to it (unregistered at the end)
        self._otel_token: object | None = None
        # Links of the root span when the caller is elsewhere (the sync facade starts sessions
        # on its loop thread): None means "link to the span current where start() runs".
        self._root_links: list[trace.Link] | None = None
        self._ctx_token: Token[AsyncSession | None] | None = None
        self._t0 = 0.0
        self._t1: float | None = None

    def __repr__(self) -> str:
        return (
            f"AsyncSession(session_id={self.session_id!r}, state={self.state.value}, "
            f"tags={self.tags!r})"
        )

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def client(self) -> AsyncClient:
        """The client this session sends through."""
        if self._client is None:
            from .._client import default_client

            self._client = default_client()
        return self._client

    @property
    def span(self) -> trace.Span | None:
        """The session's OpenTelemetry root span while the session runs (None otherwise)."""
        return self._span

    @property
    def is_running(self) -> bool:
        """True between start and end."""
        return self.state is _RUNNING

    async def start(self) -> AsyncSession:
        """Start the session: make it current in this task, open its root span, queue its creation.

        Does not wait for the network. Returns the session itself.

        Raises:
            InvalidStateTransition: the session was started before.
        """
        client = self.client
        exporter: Exporter | NullExporter = client._exporter_for_running_loop()
        self.state = SessionState.RUNNING
        config = client.config
        if config.sample_rate < 1.0 and not is_sampled(self.session_id, config.sample_rate):
            exporter.count_sampled_out()
            exporter = NullExporter()  # runs, records nothing, sends nothing
            self.sampled = False
        self.tags = list(dict.fromkeys([*config.default_tags, *self.tags]))
        self._exporter = exporter
        self._offer = exporter.offer
        self._max_event_bytes = config.max_batch_bytes - 16  # room for {"events":[...]}
        self._disabled = isinstance(exporter, NullExporter)
        self._recording = not self._disabled
        self.init_timestamp = _utcnow()
        self._t0 = time.monotonic()
        self._open_span(config.instrument_otel and not self._disabled)
        self._ctx_token = registry.set_current(self)
        registry.register(self)
        if not self._disabled:
            self._channel = exporter.open_channel(self.session_id, self.trace_id)
            exporter.enqueue_op(Op(SESSION_CREATED, self._snapshot(), channel=self._channel))
        return self

    def _open_span(self, capture: bool) -> None:
        tracer = session_tracer(capture)
        # A new trace (an empty parent context), linked to the ambient span if there is one: two
        # sessions opened under one request span must not share a trace (capture routes by it).
        links = session_links() if self._root_links is None else self._root_links
        if links or tracer is not context_only_tracer:
            span = tracer.start_span(
                "agentops.session",
                context=otel_context.Context(),
                links=links,
                attributes={
                    "agentops.session.id": self.session_id,
                    "agentops.session.tags": self.tags,
                },
            )
        else:  # nothing records it (the common case in a service): no attributes to build
            span = context_only_tracer.new_trace_span()
        ctx = span.get_span_context()
        self._span = span
        self._span_trace_id = ctx.trace_id
        self.trace_id = trace.format_trace_id(ctx.trace_id)
        self._span_id = trace.format_span_id(ctx.span_id)
        if links:
            self._links = [
                (
                    trace.format_trace_id(link.context.trace_id),
                    trace.format_span_id(link.context.span_id),
                )
                for link in links
            ]
        self._otel_token = otel_context.attach(trace.set_span_in_context(span))
        if capture:
            router().register(ctx.trace_id, ctx.span_id, self.session_id, self._capture_span)
            self._routed = True

    def _close_span(self, state: SessionState) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        if self._routed:
            router().unregister(self._span_trace_id)
        if span.is_recording():
            span.set_attribute("agentops.session.end_state", state.value)
            if state is SessionState.FAILED:
                span.set_status(trace.Status(trace.StatusCode.ERROR, self.end_state_reason))
            span.end()
        token, self._otel_token = self._otel_token, None
        # Detach only in the context that attached (explicit end() may run in another task, where
        # OTel would log a "Failed to detach context" error).
        if token is not None and trace.get_current_span() is span:
            otel_context.detach(token)  # type: ignore[arg-type]

    async def end(
        self,
        end_state: SessionState | str = SessionState.SUCCEEDED,
        end_state_reason: str | None = None,
        video: str | None = None,
        *,
        timeout: float | None = None,
        wait: bool = True,
    ) -> SessionStats:
        """End the session and (by default) wait until its events are acknowledged.

        Only this session's events and its final update are waited for, not what other sessions
        of the client have queued.

        Args:
            end_state: ``SessionState`` or ``"Success"`` / ``"Fail"`` / ``"Indeterminate"``.
            end_state_reason: Why it ended (shown on the dashboard).
            video: URL of a recording of the session.
            timeout: Longest wait for acknowledgement (default: the client's shutdown_timeout).
                A timeout is not an error: what is still pending keeps being sent.
            wait: False returns at once (the final update is queued behind the session's
                events; both are delivered in the background).

        Returns:
            The session's stats, also logged as one line when ``log_session_stats`` is on.

        Raises:
            InvalidStateTransition: the session is not running (never started, or ended).
        """
        self._end_queued(end_state, end_state_reason, video)
        if wait and self._channel is not None:
            limit = self.client.config.shutdown_timeout if timeout is None else timeout
            await self._exporter.flush_session(self._channel, limit)
        stats = self.stats
        if self.client.config.log_session_stats:
            _log_stats(stats)
        return stats

    def _end_nowait(self, end_state: SessionState, end_state_reason: str | None = None) -> None:
        """``end(..., wait=False)`` for callers that do not read its stats (the per-request
        middleware): they are built only for the log line when ``log_session_stats`` is on
        (``session.stats`` builds them whenever read).

        Raises:
            InvalidStateTransition: the session is not running (never started, or ended).
        """
        self._end_queued(end_state, end_state_reason)
        if self.client.config.log_session_stats:
            _log_stats(self.stats)

    def _end_queued(
        self,
        end_state: SessionState | str,
        end_state_reason: str | None = None,
        video: str | None = None,
    ) -> None:
        """End the session and queue its final update (what every end does, before any wait)."""
        state = SessionState.parse(end_state)
        if self.state is SessionState.INITIALIZING:
            raise self._not_running("end the session")
        self.state = state  # validates the transition (ending twice raises)
        self._recording = False
        if end_state_reason is not None:
            self.end_state_reason = str(end_state_reason)
        if video is not None:
            self.video = video
        self.end_timestamp = _utcnow()
        self._t1 = time.monotonic()
        self._close_span(state)
        registry.unregister(self)
        if self._ctx_token is not None:
            registry.reset_current(self._ctx_token)
            self._ctx_token = None
        if self._channel is not None:
            final = Op(SESSION_UPDATED, self._snapshot(), True, channel=self._channel)
            self._exporter.enqueue_op(final)

    async def __aenter__(self) -> AsyncSession:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.state.is_terminal:  # ended inside the block
            return
        wait = self.flush_on_exit
        if exc is None:
            await self.end(SessionState.SUCCEEDED, wait=wait)
        elif isinstance(exc, asyncio.CancelledError):
            # A cancelled task should finish promptly: queue the end, do not wait for the network.
            await self.end(SessionState.INDETERMINATE, "cancelled", wait=False)
        elif isinstance(exc, Exception):
            if not self._disabled:
                self.record_nowait(ErrorEvent.from_exception(exc))
            await self.end(SessionState.FAILED, _describe(exc), wait=wait)
        else:  # KeyboardInterrupt, SystemExit, GeneratorExit
            await self.end(
                SessionState.INDETERMINATE, f"interrupted by {type(exc).__name__}", wait=False
            )

    # -- recording ------------------------------------------------------------------------------
    async def record(self, event: Event) -> None:
        """Record ``event`` into this session. Never waits for the network.

        The event is checked and stamped (``end_timestamp``) now, and encoded by the exporter
        when its batch is sent: do not change it, or the values it holds, afterwards. When the
        queue is full (the API is down or slow) the event is dropped at once, counted in
        :attr:`stats` and warned about once, or written to the disk spool when ``spool_dir`` is
        set; only the explicit ``backpressure="block"`` makes it wait for room (bounded by
        ``backpressure_timeout``).

        Raises:
            SessionNotRunning: the session has not started or has ended.
            InvalidEvent: ``event`` is not an Event or a field has the wrong type.
        """
        # The hot path: every line here costs on each event (see benchmarks/bench_record.py).
        if not self._recording:  # not running (raises), or disabled
            self._not_recording()
            return
        try:
            event._check(_now())
        except AttributeError:
            if isinstance(event, Event):  # a bug inside the check itself: let it show
                raise
            raise _not_an_event(event) from None
        counts = self._counts  # loop thread only: no lock (other threads count in _locked_counts)
        event_type = event.event_type
        counts[event_type] = counts.get(event_type, 0) + 1
        if not self._offer(self._channel, event):  # type: ignore[arg-type]
            await self._exporter.put(self._channel, event)  # type: ignore[arg-type]

    def _not_recording(self) -> None:
        """record() when not recording: an error before start and after end; a no-op when the
        client is disabled (as every other call then)."""
        if self._state_value is not _RUNNING:
            raise self._not_running("record an event")

    def record_nowait(self, event: Event) -> bool:
        """Record ``event`` from synchronous code running on the event loop (a callback).

        Never waits: when the event cannot be buffered (a full queue, a closed client, or an
        event loop that has closed) it is dropped and counted. Returns False then.
        """
        if self._state_value is not _RUNNING:
            raise self._not_running("record an event")
        if self._disabled:
            return True
        _check(event)
        counts = self._counts
        counts[event.event_type] = counts.get(event.event_type, 0) + 1
        channel = self._channel
        assert channel is not None
        if self._offer(channel, event):
            return True
        self._exporter.refuse(channel)  # counted with the reason (full, closed, loop closed)
        return False

    def record_threadsafe(self, event: Event) -> bool:
        """Record ``event`` from any thread; never waits. False when it was dropped (counted).

        The event is encoded in the calling thread (what is sent is the event as it is now);
        only the hand-over touches the loop.

        Raises:
            SessionNotRunning: the session has not started or has ended.
            InvalidEvent: a field has the wrong type, or the event is larger than
                ``max_batch_bytes`` (the message names its largest field).
        """
        if self._state_value is not _RUNNING:
            raise self._not_running("record an event")
        if self._disabled:
            return True
        if not isinstance(event, Event):
            raise _not_an_event(event)
        sent = self._through_hooks(event)
        if sent is None:  # filtered or a failing hook: counted by the exporter
            with _count_lock:
                counts = self._locked_counts
                counts[event.event_type] = counts.get(event.event_type, 0) + 1
            return True
        data = sent.prepare(self.session_id, self.trace_id)
        if len(data) > self._max_event_bytes:
            raise InvalidEvent(_describe_oversize(event, len(data), self._max_event_bytes))
        with _count_lock:  # may run in several threads at once
            counts = self._locked_counts
            counts[event.event_type] = counts.get(event.event_type, 0) + 1
        assert self._channel is not None
        return self._exporter.submit_threadsafe(self._channel, data)

    def _capture_span(self, event: Event) -> None:
        """Sink of the OTel span router: an event made from an ended span of this session's
        trace (any thread), counted under its event type like a recorded one."""
        if self._state_value is not _RUNNING or self._channel is None:
            return
        sent = self._through_hooks(event)
        data = sent.prepare(self.session_id, self.trace_id) if sent is not None else None
        with _count_lock:
            counts = self._locked_counts
            counts[event.event_type] = counts.get(event.event_type, 0) + 1
        if data is not None:
            self._exporter.submit_threadsafe(self._channel, data)

    def _through_hooks(self, event: Event) -> Event | None:
        """An event encoded outside the exporter (other threads, captured spans) goes through
        the client's hooks here; None (counted) when they do not let it through."""
        hooks = self._exporter.hooks
        if hooks is None:
            return event
        event.session_id = self.session_id
        result = hooks.apply(event)
        if type(result) is str:
            assert self._channel is not None
            self._exporter.not_sent_threadsafe(self._channel, result)
            return None
        return result  # type: ignore[return-value]

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is resolved: acknowledged by the API, or
        counted as dropped (see :attr:`stats`).

        Returns False if ``timeout`` (default: the client's shutdown_timeout) passed first.
        """
        limit = self.client.config.shutdown_timeout if timeout is None else timeout
        return await self._exporter.flush(limit)

    # -- metadata ---------------------------------------------------------------------------------
    def add_tags(self, tags: Iterable[str] | str) -> None:
        """Add tags (kept unique, in order); sent with the next session update."""
        new = _session_tags(tags, "tags")
        self._require_running("add tags")
        self.tags = list(dict.fromkeys([*self.tags, *new]))
        self._send_update()

    def set_tags(self, tags: Iterable[str] | str) -> None:
        """Replace the session's tags."""
        new = _session_tags(tags, "tags")
        self._require_running("set tags")
        self.tags = new
        self._send_update()

    def create_agent(self, name: str, agent_id: str | None = None) -> str:
        """Register an agent in this session; returns its id (pass it as events' ``agent_id``)."""
        if not isinstance(name, str) or not name:
            raise InvalidEvent(f"create_agent(name=...) must be a non-empty str, got {name!r}")
        self._require_running("create an agent")
        agent_id = (
            _checked_id(str(agent_id), "agent_id") if agent_id is not None else str(uuid.uuid4())
        )
        if self._channel is not None:
            agent = AgentSnapshot(session_id=self.session_id, agent_id=agent_id, name=name)
            self._exporter.enqueue_op(Op(AGENT_ADDED, agent, channel=self._channel))
        return agent_id

    def _send_update(self) -> None:
        if self._channel is not None:
            self._exporter.enqueue_op(Op(SESSION_UPDATED, self._snapshot(), channel=self._channel))

    def _snapshot(self) -> SessionSnapshot:
        """The session's state now, as the export target encodes it (immutable)."""
        assert self.init_timestamp is not None
        end = self.end_timestamp
        return SessionSnapshot(
            session_id=self.session_id,
            trace_id=self.trace_id,
            span_id=self._span_id,
            init_timestamp=_iso(self.init_timestamp),
            end_timestamp=_iso(end) if end is not None else None,
            state=self.state.value,
            end_state_reason=self.end_state_reason,
            tags=_shared_tags(self.tags),
            host_env=host_env(),
            video=self.video,
            links=self._links,
            event_counts=_shared_counts(self.event_counts),
        )

    def _require_running(self, what: str) -> None:
        if self.state is not _RUNNING:
            raise self._not_running(what)

    def _not_running(self, what: str) -> SessionNotRunning:
        state = self.state
        if state is SessionState.INITIALIZING:
            hint = "start it first (`async with session:` or `await session.start()`)"
        else:
            hint = "it has ended; start a new session"
        return SessionNotRunning(
            f"cannot {what}: session {self.session_id} is {state.value}; {hint}"
        )

    # -- reporting ------------------------------------------------------------------------------
    @property
    def event_counts(self) -> dict[str, int]:
        """Events recorded so far, by event type (captured OTel spans under the type they map
        to: ``llms``, ``tools``, ``errors``, and ``actions`` for plain spans)."""
        counts = dict(self._counts)
        if self._locked_counts:  # (only ever grows: empty means nothing to add)
            with _count_lock:
                for key, value in self._locked_counts.items():
                    counts[key] = counts.get(key, 0) + value
        return counts

    @property
    def session_url(self) -> str | None:
        """The dashboard URL the server gave for this session, once it answered."""
        return self._channel.session_url if self._channel is not None else None

    @property
    def token_cost(self) -> Decimal | None:
        """The cost the server computed at the last session update, if any."""
        return self._channel.token_cost if self._channel is not None else None

    @property
    def stats(self) -> SessionStats:
        """A snapshot of what this session recorded, delivered and dropped."""
        channel = self._channel
        counts = self.event_counts
        if self._t1 is not None:
            duration = self._t1 - self._t0
        elif self.state is _RUNNING:
            duration = time.monotonic() - self._t0
        else:
            duration = 0.0
        return SessionStats(
            session_id=self.session_id,
            state=self.state,
            end_state_reason=self.end_state_reason,
            duration=max(0.0, duration),
            event_counts=counts,
            recorded=sum(counts.values()),
            delivered=channel.delivered if channel else 0,
            dropped=channel.dropped if channel else 0,
            token_cost=channel.token_cost if channel else None,
            session_url=channel.session_url if channel else None,
            filtered=channel.filtered if channel else 0,
        )


# Snapshots are immutable, and a service's sessions repeat the same few tag sets and event
# counts (a route's requests): each snapshot shares one interned tuple and dict for them instead
# of a new pair per request, which would stay alive until exported and count towards the
# garbage collector's young collections. Bounded; past the bound, snapshots get their own.
_INTERNED_MAX = 1024
_V = TypeVar("_V")
_interned_tags: dict[tuple[str, ...], tuple[str, ...]] = {}
_interned_counts: dict[tuple[tuple[str, int], ...], dict[str, int]] = {}


def _shared_tags(tags: list[str]) -> tuple[str, ...]:
    key = tuple(tags)
    return _interned(_interned_tags, key, key)


def _shared_counts(counts: dict[str, int]) -> dict[str, int]:
    return _interned(_interned_counts, tuple(counts.items()), counts)


def _interned(table: dict[Any, _V], key: Any, value: _V) -> _V:
    """The value ``table`` holds for ``key``, else ``value`` (kept while the table has room):
    snapshots of sessions alike (a route's requests) share one object instead of one each."""
    shared = table.get(key)
    if shared is not None:
        return shared
    if len(table) < _INTERNED_MAX:
        table[key] = value
    return value


def _log_stats(stats: SessionStats) -> None:
    log.info("%s", stats.summary())
    if stats.session_url:
        log.info("Session replay: %s", stats.session_url)


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = _safe_repr(exc)
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__


def _session_tags(tags: Any, field: str) -> list[str]:
    if tags is None:
        return []
    try:
        return check_tags(tags, field)
    except ConfigError as exc:
        raise InvalidEvent(str(exc)) from None


def _checked_id(value: str, field: str) -> str:
    """A caller-chosen id, if the API can take it (1 to MAX_ID_LENGTH characters)."""
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise InvalidEvent(
            f"{field}={value[:40]!r}{'...' if len(value) > 40 else ''} has {len(value)} "
            f"characters: an id takes 1 to {MAX_ID_LENGTH} (MAX_ID_LENGTH; the API refuses "
            f"others): pass a shorter {field}, or none to get a UUID"
        )
    return value


def _check(event: Event) -> None:
    """Check ``event`` and stamp its end (what ``record()`` does inline)."""
    try:
        event._check(_now())
    except AttributeError:
        if isinstance(event, Event):  # a bug inside the check itself: let it show
            raise
        raise _not_an_event(event) from None


def _not_an_event(event: object) -> InvalidEvent:
    return InvalidEvent(
        "record() takes an Event (LLMEvent, ActionEvent, ToolEvent, ErrorEvent, ApiEvent), "
        f"got {type(event).__name__}: wrap the data in an event, e.g. ActionEvent(params=...)"
    )


_encode_json = msgspec.json.Encoder().encode
# Guards every session's ``_locked_counts`` (counts from other threads and captured spans: rare,
# and short critical sections): one lock for all rather than one more object per session.
_count_lock = threading.Lock()


def _iso(when: datetime) -> str:
    """``when`` as ISO 8601 text, exactly as msgspec writes a datetime on the wire."""
    return _encode_json(when)[1:-1].decode()
