"""Which session is current (per task, via contextvars) and which are active (process-wide)."""

from __future__ import annotations

import contextlib
import threading
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from ..errors import NoActiveSession

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


def require_current(what: str = "agentops_async.record()") -> AsyncSession:
    """The running session current in this context: what the async module-level helpers act on.

    There is deliberately no fallback to "the only active session": in async code that session
    belongs to another task (another request of a web service), and an event recorded after a
    request's ``async with`` block (post-processing, a background task) would land in it. The
    sync facade keeps that fallback for scripts (``agentops_async.sync``).

    Args:
        what: The helper, for the error message.

    Raises:
        NoActiveSession: no session is current in this context, or the current one has ended.
    """
    session = _current.get()
    if session is not None and not session.state.is_terminal:
        return session
    if session is None:
        problem = "no session is current in this task"
    else:
        problem = f"the session current in this task ({session.session_id}) has ended"
    raise NoActiveSession(
        f"{what}: {problem}, and sessions opened by other tasks are never used. Record inside "
        "the session's `async with AsyncSession() as session:` block (tasks started inside it "
        "inherit it), or keep the session object and call `await session.record(event)` (pass "
        "it to the background task or callback that records)"
    )
