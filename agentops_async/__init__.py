"""agentops_async: asyncio-native session tracking for AI agents.

Open a session with ``async with AsyncSession():`` (or ``client.session()``), record events with
``await record(event)`` anywhere below it, and a background task ships them in batches to an
AgentOps-compatible API. See the README for the sync facade and the local collector.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._client import AsyncClient, default_client, set_default_client
from ._config import Config
from .errors import (
    AgentOpsError,
    AmbiguousSession,
    ApiError,
    ConfigError,
    InvalidEvent,
    InvalidStateTransition,
    NoActiveSession,
    SessionNotRunning,
)
from .events import ActionEvent, ApiEvent, ErrorEvent, Event, EventType, LLMEvent, ToolEvent
from .session import (
    AsyncSession,
    SessionState,
    SessionStats,
    get_active_sessions,
    get_current_session,
)
from .session._registry import resolve_session
from .telemetry._exporter import ExportStats


async def record(event: Event) -> None:
    """Record ``event`` into the current session (of this task), or the only active one.

    Raises:
        NoActiveSession: no session is current and none is active.
        AmbiguousSession: none is current and several are active: use ``session.record``.
    """
    await resolve_session().record(event)


__all__ = [
    "ActionEvent",
    "AgentOpsError",
    "AmbiguousSession",
    "ApiError",
    "ApiEvent",
    "AsyncClient",
    "AsyncSession",
    "Config",
    "ConfigError",
    "ErrorEvent",
    "Event",
    "EventType",
    "ExportStats",
    "InvalidEvent",
    "InvalidStateTransition",
    "LLMEvent",
    "NoActiveSession",
    "SessionNotRunning",
    "SessionState",
    "SessionStats",
    "ToolEvent",
    "__version__",
    "default_client",
    "get_active_sessions",
    "get_current_session",
    "record",
    "set_default_client",
]
