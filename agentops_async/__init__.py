"""agentops_async: asyncio-native session tracking for AI agents.

Open a session with ``async with AsyncSession():`` (or ``client.session()``), record events with
``await record(event)`` anywhere below it, and a background task ships them in batches to an
AgentOps-compatible API. See the README for the sync facade and the local collector.
"""

__version__ = "0.1.0"

# The sync facade (scripts, notebooks, threads) and the decorators for both worlds. The sync
# module-level record/add_tags/set_tags live in ``agentops_async.sync`` (``record`` here is async).
from . import decorators, sync
from ._client import AsyncClient, default_client, set_default_client
from ._config import Config
from ._decorators import record_action, record_tool
from ._decorators import trace_session as trace
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
from .session._registry import require_current as _require_current
from .sync import Client, Session, end_session, init, start_session
from .telemetry._exporter import ExportStats
from .telemetry._instrument import instrument, uninstrument


async def record(event: Event) -> None:
    """Record ``event`` into the session current in this task (see :meth:`AsyncSession.record`).

    The current session is the one whose ``async with`` block (or ``start()``) this task runs
    under, or the task that started this one did. A session that another task opened is never
    used, even when it is the only one running: outside a session's block, keep the session
    object and call ``await session.record(event)``.

    Raises:
        NoActiveSession: no session is current in this task (or the current one has ended); the
            message says how to pass the session instead.
    """
    await _require_current().record(event)


__all__ = [
    "ActionEvent",
    "AgentOpsError",
    "AmbiguousSession",
    "ApiError",
    "ApiEvent",
    "AsyncClient",
    "AsyncSession",
    "Client",
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
    "Session",
    "SessionNotRunning",
    "SessionState",
    "SessionStats",
    "ToolEvent",
    "__version__",
    "decorators",
    "default_client",
    "end_session",
    "get_active_sessions",
    "get_current_session",
    "init",
    "instrument",
    "record",
    "record_action",
    "record_tool",
    "set_default_client",
    "start_session",
    "sync",
    "trace",
    "uninstrument",
]
