"""Sessions: the state machine, the registry of current/active sessions, and AsyncSession."""

from ._registry import get_active_sessions, get_current_session
from ._session import AsyncSession, SessionStats
from ._state import SessionState

__all__ = [
    "AsyncSession",
    "SessionState",
    "SessionStats",
    "get_active_sessions",
    "get_current_session",
]
