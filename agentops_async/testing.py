"""Test helpers: capture what your code records, in memory, with no server.

Like ``structlog.testing.capture_logs`` or httpx's ``MockTransport``: inside
:func:`capture_events`, every client created (and the default client) delivers to memory
instead of the network, through the same exporter as in production (batching, ``before_send``,
redaction, accounting), and the captured sessions and events are there to assert on::

    import agentops_async as agentops
    from agentops_async.testing import capture_events

    async def test_my_agent_records_its_search() -> None:
        with capture_events() as captured:
            async with agentops.AsyncSession(tags=["planner"]):
                await agentops.record(agentops.ActionEvent(action_type="search"))
        session = captured.session()
        assert session.state == "SUCCEEDED"
        assert session.tags == ["planner"]
        assert [e["action_type"] for e in session.events] == ["search"]

No API key is needed. Events arrive when they are delivered: end the session (its end waits
for its events), or ``await client.flush()``, before asserting. ``async with capture_events()``
also flushes the clients created inside it when the block ends.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .telemetry import _memory
from .telemetry import _targets as _seam
from .telemetry._targets import AgentSnapshot, SessionSnapshot

if TYPE_CHECKING:
    from ._client import AsyncClient

__all__ = [
    "AgentSnapshot",
    "Capture",
    "CapturedSession",
    "SessionSnapshot",
    "capture_events",
]


class CapturedSession:
    """Everything captured of one session.

    Attributes:
        session_id: The session's id.
        snapshots: The session's state each time it was sent (created, each update, the end),
            in order.
        agents: The agents added with ``session.create_agent()``, in order.
        events: The session's events, in the order they were recorded, as the JSON objects a
            receiver is sent (after ``before_send`` and redaction): ``event_type``, ``id``,
            ``params``, ``returns``, timestamps as ISO 8601 text, and each type's fields.
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.snapshots: list[SessionSnapshot] = []
        self.agents: list[AgentSnapshot] = []
        self.events: list[dict[str, Any]] = []
        self.ended = False

    def __repr__(self) -> str:
        return (
            f"CapturedSession(session_id={self.session_id!r}, state={self.state!r}, "
            f"events={len(self.events)})"
        )

    @property
    def snapshot(self) -> SessionSnapshot | None:
        """The latest snapshot (None if only agents or events were captured)."""
        return self.snapshots[-1] if self.snapshots else None

    @property
    def state(self) -> str | None:
        """The latest state: ``"RUNNING"``, then ``"SUCCEEDED"``, ``"FAILED"`` or
        ``"INDETERMINATE"`` once the session ended."""
        snapshot = self.snapshot
        return snapshot.state if snapshot is not None else None

    @property
    def tags(self) -> list[str]:
        """The latest tags."""
        snapshot = self.snapshot
        return list(snapshot.tags) if snapshot is not None else []

    @property
    def end_state_reason(self) -> str | None:
        """Why the session ended, if it said."""
        snapshot = self.snapshot
        return snapshot.end_state_reason if snapshot is not None else None

    def events_of_type(self, event_type: str) -> list[dict[str, Any]]:
        """The session's events of one type (``"actions"``, ``"llms"``, ``"tools"``...)."""
        return [event for event in self.events if event.get("event_type") == event_type]


class Capture:
    """What :func:`capture_events` captured.

    Attributes:
        sessions: The captured sessions by id, in the order they were first seen.
        events: Every captured event, of all sessions, in delivery order (each session's in
            the order recorded).
    """

    def __init__(self) -> None:
        self.sessions: dict[str, CapturedSession] = {}
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # the sync facade delivers from its own thread
        self._clients: list[AsyncClient] = []  # created inside the block
        self._default: AsyncClient | None = None  # the default client before the block

    def __repr__(self) -> str:
        return f"Capture(sessions={len(self.sessions)}, events={len(self.events)})"

    def session(self, session_id: str | None = None) -> CapturedSession:
        """One captured session: the one with ``session_id``, or the only one.

        Raises:
            LookupError: no such session, or ``session_id`` is None and there is not exactly one.
        """
        if session_id is not None:
            try:
                return self.sessions[session_id]
            except KeyError:
                raise LookupError(
                    f"no session {session_id!r} was captured (captured: "
                    f"{list(self.sessions) or 'none'})"
                ) from None
        if len(self.sessions) != 1:
            raise LookupError(
                f"{len(self.sessions)} sessions were captured, not one: pass a session_id "
                f"(captured: {list(self.sessions) or 'none'})"
            )
        return next(iter(self.sessions.values()))

    def events_of_type(self, event_type: str) -> list[dict[str, Any]]:
        """Every captured event of one type (``"actions"``, ``"llms"``, ``"tools"``...)."""
        return [event for event in self.events if event.get("event_type") == event_type]

    def clear(self) -> None:
        """Forget what was captured so far."""
        with self._lock:
            self.sessions.clear()
            self.events.clear()

    # -- filled in by the in-memory target ------------------------------------------------------
    def _session(self, session_id: str) -> CapturedSession:
        session = self.sessions.get(session_id)
        if session is None:
            session = self.sessions[session_id] = CapturedSession(session_id)
        return session

    def _add_op(self, kind: str, snapshot: SessionSnapshot | AgentSnapshot, final: bool) -> None:
        with self._lock:
            session = self._session(snapshot.session_id)
            if kind == _seam.AGENT_ADDED:
                assert isinstance(snapshot, AgentSnapshot)
                session.agents.append(snapshot)
            else:
                assert isinstance(snapshot, SessionSnapshot)
                session.snapshots.append(snapshot)
                session.ended = session.ended or final

    def _add_events(self, session_id: str, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self._session(session_id).events += events
            self.events += events


class capture_events:
    """Make clients deliver to memory; yields the :class:`Capture`.

    Usable as ``with`` and ``async with`` (the latter also flushes, at the end, the clients
    created inside). Clients created inside the block (``AsyncClient``, ``Client``, and the
    default client, which is replaced by a fresh one for the duration of the block) deliver to
    the capture for as long as they live, and need no API key; clients created before keep
    delivering where they did. Blocks may nest: the innermost captures.

    Example:
        >>> with capture_events() as captured:
        ...     client = agentops_async.Client()
        ...     session = client.start_session(tags=["t"])
        ...     session.end_session("Success")
        >>> captured.session().state
        'SUCCEEDED'
    """

    def __init__(self) -> None:
        self._capture = Capture()

    def __enter__(self) -> Capture:
        from . import _client

        capture = self._capture
        capture._default = _client._swap_default(None)
        _memory.push_capture(capture)
        return capture

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from . import _client

        capture = self._capture
        _memory.pop_capture(capture)
        _client._swap_default(capture._default)
        capture._default = None
        capture._clients.clear()  # they keep delivering here; the capture need not hold them

    async def __aenter__(self) -> Capture:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for client in list(self._capture._clients):
                await client._flush_if_on_this_loop()
        finally:
            self.__exit__(exc_type, exc, tb)
