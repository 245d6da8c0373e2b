"""The exception hierarchy of agentops_async.

Telemetry never raises into user code for network or server trouble: those are counted, logged and
reported in ``session.stats``. The exceptions below are for programming errors, raised at the call
site with a message that says what was wrong and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "AgentOpsError",
    "AmbiguousSession",
    "ApiError",
    "ConfigError",
    "InvalidEvent",
    "InvalidStateTransition",
    "NoActiveSession",
    "SessionNotRunning",
]


class AgentOpsError(Exception):
    """Base class of every error raised by agentops_async."""


class ConfigError(AgentOpsError, ValueError):
    """A configuration value is missing or malformed (names the setting and how to fix it)."""


class InvalidEvent(AgentOpsError, TypeError):
    """An event or one of its fields has the wrong type or value."""


class InvalidStateTransition(AgentOpsError, ValueError):
    """A session was asked to move between two states that are not linked (e.g. after it ended)."""


class SessionNotRunning(InvalidStateTransition):
    """An operation that needs a running session (record, add_tags, ...) met one that is not."""


class NoActiveSession(AgentOpsError, LookupError):
    """A module-level helper found no session to act on.

    In async code (``await agentops_async.record()``): no session is current in this task; a
    session another task opened is never used. In the sync facade: none is current in this
    thread and none is running.
    """


class AmbiguousSession(AgentOpsError, LookupError):
    """A sync facade helper was called with no current session and several running ones."""


class ApiError(AgentOpsError):
    """The AgentOps API refused a request or answered something the client cannot use.

    The SDK raises it only internally (the exporter catches it, counts and logs it); it is public so
    that tools built on the API client can catch it. Its message never contains credentials.
    """

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
