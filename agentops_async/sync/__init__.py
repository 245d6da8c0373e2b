"""The sync facade: the seeds' API for scripts, notebooks and threads, on the async engine.

Everything here delegates to the async engine (``AsyncClient``, ``AsyncSession``, the exporter)
running on one background event-loop thread per process (an anyio blocking portal), started on
first use. Nothing is implemented twice.

The module-level helpers act on the *current* session of the calling thread (the one it started
with ``start_session()`` or ``with Session():``), else on the only running session of the sync
facade (the scripts' fallback; sessions opened with the async API are never picked by it); with
several running and none current they raise :class:`~agentops_async.AmbiguousSession`.

``Client``, ``Session``, ``init``, ``start_session`` and ``end_session`` are also exported by
``agentops_async`` itself. ``record``, ``add_tags``, ``set_tags``, ``get_active_sessions`` and
``get_current_session`` live here only: ``agentops_async.record`` is the async helper
(``await agentops_async.record(event)``) and the two must not be confused.

Example:
    >>> import agentops_async
    >>> from agentops_async import ActionEvent, sync
    >>> agentops_async.init(api_key="...", endpoint="http://127.0.0.1:8000")
    >>> agentops_async.start_session(tags=["script"])
    >>> sync.record(ActionEvent(action_type="search"))
    >>> stats = agentops_async.end_session("Success")
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from ..errors import AgentOpsError, AmbiguousSession, NoActiveSession
from ..events import Event
from ..session import _registry
from ..session._session import SessionStats
from ..session._state import SessionState
from . import _runtime
from ._client import Client, default_client, init
from ._runtime import shutdown
from ._session import Session

__all__ = [
    "Client",
    "Session",
    "add_tags",
    "default_client",
    "end_session",
    "get_active_sessions",
    "get_current_session",
    "init",
    "record",
    "set_tags",
    "shutdown",
    "start_session",
]


def start_session(
    tags: Iterable[str] | str | None = None,
    *,
    session_id: str | uuid.UUID | None = None,
    video: str | None = None,
) -> Session:
    """Start a session on the default client; it becomes current in this thread.

    Returns:
        The running :class:`Session` (keep it to act on it when several sessions run).
    """
    return default_client().start_session(tags, session_id=session_id, video=video)


def end_session(
    end_state: SessionState | str = "Success",
    end_state_reason: str | None = None,
    video: str | None = None,
    *,
    timeout: float | None = None,
) -> SessionStats:
    """End the current (or only running) session; waits for acknowledgement up to ``timeout``.

    Returns:
        The session's stats.

    Raises:
        NoActiveSession: no session is running.
        AmbiguousSession: several are running and none is current in this thread.
    """
    return _resolve("end_session").end(end_state, end_state_reason, video, timeout=timeout)


def record(event: Event) -> bool:
    """Record ``event`` into the current (or only running) session. Never waits.

    Returns:
        False when the queue was full and the event was dropped (counted), else True.

    Raises:
        NoActiveSession: no session is running.
        AmbiguousSession: several are running and none is current in this thread.
    """
    return _resolve("record").record(event)


def add_tags(tags: Iterable[str] | str) -> None:
    """Add tags to the current (or only running) session."""
    _resolve("add_tags").add_tags(tags)


def set_tags(tags: Iterable[str] | str) -> None:
    """Replace the tags of the current (or only running) session."""
    _resolve("set_tags").set_tags(tags)


def get_active_sessions() -> list[Session]:
    """The sync sessions started and not yet ended in this process, oldest first."""
    return _runtime.running_sessions()


def get_current_session() -> Session | None:
    """The sync session current in this thread (context), if any and still running."""
    current = _registry.get_current_session()
    if current is None or not current.is_running:
        return None
    return _runtime.session_for(current.session_id)


def _resolve(what: str) -> Session:
    """The session a module-level helper acts on: the current one, else the only running sync one.

    The fallback is the scripts' rule and only ever picks a session of the sync facade: a session
    that async code opened (``AsyncSession``) is never used unless it is current here.
    """
    current = _registry.get_current_session()
    if current is not None and current.is_running:
        session = _runtime.session_for(current.session_id)
        if session is None:
            raise AgentOpsError(
                f"agentops_async.sync.{what}(): session {current.session_id} was started by the "
                "async API (AsyncSession); call its methods from async code (await "
                "session.end(), ...)"
            )
        return session
    running = _runtime.running_sessions()
    if len(running) == 1:
        return running[0]
    if not running:
        raise NoActiveSession(
            f"agentops_async.sync.{what}(): no session is running; start one with "
            "agentops_async.start_session() or `with agentops_async.Session():`"
        )
    raise AmbiguousSession(
        f"{len(running)} sessions are running and none is current in this thread, so "
        f"agentops_async.sync.{what}() cannot tell which one you mean: call {what}() on the "
        f"session object instead (session = start_session(...); session.{what}(...)), or call "
        "it inside that session's `with Session():` block"
    )
