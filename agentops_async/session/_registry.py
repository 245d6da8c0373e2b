"""Which session is current (per task, via contextvars) and which are active (process-wide)."""

from __future__ import annotations

import contextlib
import threading
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from ..errors import AmbiguousSession, NoActiveSession

if TYPE_CHECKING:
    from ._session import AsyncSession

_current: ContextVar[AsyncSession | None] = ContextVar("agentops_async_session", default=None)
_active: dict[str, AsyncSession] = {}
_lock = threading.Lock()


def set_current(session: AsyncSession | None) -> Token[AsyncSession | None]:
    """Make ``session`` current in this context (a task and the tasks it starts later)."""
    return _current.set(session)


def reset_current(token: Token[AsyncSession | None]) -> None:
    """Undo :func:`set_current`; a token from another context is ignored."""
    # A token made in another context (explicit start()/end() across tasks) raises ValueError.
    with contextlib.suppress(ValueError):
        _current.reset(token)


def register(session: AsyncSession) -> None:
    """Add ``session`` to the process-wide list of active sessions."""
    with _lock:
        _active[session.session_id] = session


def unregister(session: AsyncSession) -> None:
    """Remove ``session`` from the active list (no error when absent)."""
    with _lock:
        _active.pop(session.session_id, None)


def get_current_session() -> AsyncSession | None:
    """The session of the current task (or of the task that started it), if any."""
    return _current.get()


def get_active_sessions() -> list[AsyncSession]:
    """Every session started and not yet ended in this process, oldest first."""
    with _lock:
        return list(_active.values())


def resolve_session() -> AsyncSession:
    """The session module-level helpers act on: the current one, else the only active one.

    Raises:
        NoActiveSession: no session is current and none is active.
        AmbiguousSession: no session is current and several are active.
    """
    session = _current.get()
    if session is not None and not session.state.is_terminal:
        return session
    with _lock:
        count = len(_active)
        if count == 1:
            return next(iter(_active.values()))
    if count == 0:
        raise NoActiveSession(
            "no session is active: open one with `async with AsyncSession():` (or "
            "client.session()) and record inside it, or call session.record() on a session object"
        )
    raise AmbiguousSession(
        f"{count} sessions are active and none is current in this task: call record() on the "
        "session object you mean (session.record(event)), or record inside its `async with` block"
    )
