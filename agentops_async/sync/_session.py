"""Session: the sync face of an AsyncSession that lives on the facade's loop thread."""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Iterable
from contextvars import Token
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace

from ..errors import SessionNotRunning
from ..events import Event
from ..session import _registry as registry
from ..session._session import AsyncSession, SessionStats
from ..session._state import SessionState
from ..telemetry._otel import session_links
from . import _runtime as runtime

if TYPE_CHECKING:
    from ._client import Client

log = logging.getLogger("agentops_async")


# Sessions ended out of order, waiting for the context above them to leave (see _leave_context).
_left_open: dict[AsyncSession, Session] = {}


class Session:
    """A session for synchronous code: the seeds' ``Session``, backed by an :class:`AsyncSession`.

    Use it as a context manager (normal exit: SUCCEEDED; an exception: FAILED plus an ErrorEvent),
    or call :meth:`start` and :meth:`end` yourself. The session runs on the sync facade's single
    background event-loop thread; :meth:`record` hands events over without waiting, and only
    :meth:`end`, :meth:`flush` and the first :meth:`start` wait (each bounded by a timeout).

    While it runs, the session is *current* in the thread (more precisely, the context) that
    started it, so module-level helpers (``agentops_async.sync.record``) and the decorators
    (``@record_action``) find it there; sessions started in other threads stay separate.

    Example:
        >>> from agentops_async import ActionEvent, Session
        >>> with Session(tags=["script"]) as session:
        ...     session.record(ActionEvent(action_type="search", params={"q": "weather"}))

    Args:
        tags: Tags of the session; the client's default tags are added.
        client: The :class:`~agentops_async.Client` to send through; by default the one made by
            :func:`~agentops_async.init`, else one configured from the environment.
        session_id: Use this id instead of a new UUID.
        video: URL of a recording of the session.
    """

    def __init__(
        self,
        tags: Iterable[str] | str | None = None,
        *,
        client: Client | None = None,
        session_id: str | uuid.UUID | None = None,
        video: str | None = None,
    ) -> None:
        if client is None:
            from ._client import default_client

            client = default_client()
        self.client: Client = client
        self._async = AsyncSession(
            tags=tags, client=client.async_client, session_id=session_id, video=video
        )
        self._ctx_token: Token[AsyncSession | None] | None = None
        self._otel_token: object | None = None
        self._root_span: trace.Span | None = None
        self._thread_id: int | None = None
        self._disowned = False

    def __repr__(self) -> str:
        return (
            f"Session(session_id={self.session_id!r}, state={self.state.value}, tags={self.tags!r})"
        )

    # -- what it is -------------------------------------------------------------------------------
    @property
    def async_session(self) -> AsyncSession:
        """The engine's session behind this one (for async code on the facade's loop)."""
        return self._async

    @property
    def session_id(self) -> str:
        """The session's id (a UUID string, made locally)."""
        return self._async.session_id

    @property
    def state(self) -> SessionState:
        """Where the session is in its life (INITIALIZING, RUNNING, SUCCEEDED...)."""
        return self._async.state

    @property
    def is_running(self) -> bool:
        """True between start and end."""
        return self._async.is_running

    @property
    def tags(self) -> list[str]:
        """The session's tags (a copy)."""
        return list(self._async.tags)

    @property
    def trace_id(self) -> str:
        """The OpenTelemetry trace id of the session's root span (hex), once started."""
        return self._async.trace_id

    @property
    def end_state_reason(self) -> str | None:
        """Why the session ended, when it did."""
        return self._async.end_state_reason

    @property
    def session_url(self) -> str | None:
        """The dashboard URL the server gave for this session, once it answered."""
        return self._async.session_url

    @property
    def token_cost(self) -> Decimal | None:
        """The cost the server computed at the last session update, if any."""
        return self._async.token_cost

    @property
    def stats(self) -> SessionStats:
        """A snapshot of what this session recorded, delivered and dropped."""
        if self._async.is_running and not self._disowned:
            return runtime.call_soon_or_now(_read_stats, self._async)
        return self._async.stats

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> Session:
        """Start the session and make it current in this thread. Does not wait for the network.

        Returns:
            The session itself.

        Raises:
            InvalidStateTransition: the session was started before.
            AgentOpsError: called on the facade's own loop thread.
        """
        self._check_owned("start")
        # The loop thread runs start() in an empty context: the link to the span current here
        # (the session is a new trace, joined to where it began) is made in this thread.
        self._async._root_links = session_links()
        runtime.call(self._async.start, what="Session.start()")
        self._enter_context()
        runtime.add_session(self)
        return self

    def end(
        self,
        end_state: SessionState | str = SessionState.SUCCEEDED,
        end_state_reason: str | None = None,
        video: str | None = None,
        *,
        timeout: float | None = None,
    ) -> SessionStats:
        """End the session and wait until its events are acknowledged or ``timeout`` passes.

        Args:
            end_state: ``SessionState`` or ``"Success"`` / ``"Fail"`` / ``"Indeterminate"``.
            end_state_reason: Why it ended.
            video: URL of a recording of the session.
            timeout: Longest wait for acknowledgement (default: the client's
                ``shutdown_timeout``). A timeout is not an error; what is pending keeps going.

        Returns:
            The session's stats (also logged as one line when ``log_session_stats`` is on).

        Raises:
            InvalidStateTransition: the session is not running.
            AgentOpsError: called on the facade's own loop thread.
        """
        if self._disowned:
            return self._async.stats
        end = functools.partial(
            self._async.end, end_state, end_state_reason, video, timeout=timeout
        )
        stats: SessionStats = runtime.call(end, what="Session.end()")
        self._leave_context()
        runtime.remove_session(self)
        return stats

    def end_session(
        self,
        end_state: SessionState | str = "Success",
        end_state_reason: str | None = None,
        video: str | None = None,
        *,
        timeout: float | None = None,
    ) -> SessionStats:
        """The seeds' name of :meth:`end`: ``session.end_session(end_state="Success")``."""
        return self.end(end_state, end_state_reason, video, timeout=timeout)

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._disowned:
            return
        if not self._async.state.is_terminal:
            # The engine's rules: normal exit SUCCEEDED; an exception FAILED with an ErrorEvent;
            # KeyboardInterrupt/SystemExit INDETERMINATE without waiting.
            runtime.call(self._async.__aexit__, exc_type, exc, tb, what="Session.__exit__")
        self._leave_context()
        runtime.remove_session(self)

    # -- recording --------------------------------------------------------------------------------
    def record(self, event: Event) -> bool:
        """Record ``event`` into this session, from any thread. Never waits.

        Returns:
            True when the event was queued; False when the queue was full and it was dropped
            (drops are counted in :attr:`stats`).

        Raises:
            SessionNotRunning: the session has not started or has ended.
            InvalidEvent: ``event`` is not an Event or a field has the wrong type.
        """
        if self._disowned:
            raise self._disowned_error("record an event")
        return self._async.record_threadsafe(event)

    def add_tags(self, tags: Iterable[str] | str) -> None:
        """Add tags (kept unique, in order); sent with the next session update."""
        self._check_owned("add tags")
        runtime.call_soon_or_now(self._async.add_tags, tags)

    def set_tags(self, tags: Iterable[str] | str) -> None:
        """Replace the session's tags."""
        self._check_owned("set tags")
        runtime.call_soon_or_now(self._async.set_tags, tags)

    def create_agent(self, name: str, agent_id: str | None = None) -> str:
        """Register an agent in this session; returns its id (pass it as events' ``agent_id``)."""
        self._check_owned("create an agent")
        agent: str = runtime.call_soon_or_now(self._async.create_agent, name, agent_id)
        return agent

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is resolved (acknowledged by the API, or counted
        as dropped); False if ``timeout`` passed."""
        self._check_owned("flush")
        done: bool = runtime.call(self._async.flush, timeout, what="Session.flush()")
        return done

    # -- internals --------------------------------------------------------------------------------
    def _enter_context(self) -> None:
        """Make the session current in the caller's context, for helpers and OTel spans."""
        self._ctx_token = registry.set_current(self._async)
        self._thread_id = threading.get_ident()
        span = self._root_span = self._span()
        if span is not None:
            self._otel_token = otel_context.attach(trace.set_span_in_context(span))

    def _leave_context(self) -> None:
        """Undo :meth:`_enter_context` when called where it was done (else leave it be).

        Contexts nest like a stack. A session ended while a later one is current (sessions ended
        in start order) cannot restore its context yet: it waits in ``_left_open`` and is
        unwound when the later one leaves and its context is on top again, so no ended session
        (nor its root span) is left current.
        """
        if self._thread_id != threading.get_ident():
            self._ctx_token = self._otel_token = None
            return
        if self._ctx_token is not None and registry.get_current_session() is not self._async:
            _left_open[self._async] = self
            return
        self._restore_context()
        while (below := registry.get_current_session()) is not None and not below.is_running:
            waiting = _left_open.pop(below, None)
            if waiting is None:  # current through a token of another context
                registry.set_current(None)
                break
            waiting._restore_context()

    def _restore_context(self) -> None:
        token, self._ctx_token = self._ctx_token, None
        otel_token, self._otel_token = self._otel_token, None
        if token is not None:
            registry.reset_current(token)
            if registry.get_current_session() is self._async:  # token of another context
                registry.set_current(None)
        # Detach only where the span is still current (as the engine does), else OTel logs an error.
        if otel_token is not None and trace.get_current_span() is self._root_span:
            otel_context.detach(otel_token)  # type: ignore[arg-type]

    def _span(self) -> trace.Span | None:
        return self._async.span

    async def _end_at_exit(self, reason: str) -> None:
        """End the session INDETERMINATE without waiting (runs on the loop, at exit)."""
        if self._async.is_running:
            await self._async.end(SessionState.INDETERMINATE, reason, wait=False)
        runtime.remove_session(self)

    def _disown_after_fork(self) -> None:
        """In a forked child: this session belongs to the parent process."""
        self._disowned = True

    def _check_owned(self, what: str) -> None:
        if self._disowned:
            raise self._disowned_error(what)

    def _disowned_error(self, what: str) -> SessionNotRunning:
        return SessionNotRunning(
            f"cannot {what}: session {self.session_id} belongs to the parent process (this "
            "process was forked from it); start a new session in this process"
        )


def _read_stats(session: AsyncSession) -> SessionStats:
    return session.stats
