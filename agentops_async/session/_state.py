"""Session states and the one place where transitions are validated."""

from __future__ import annotations

import enum
from typing import Any, overload

from ..errors import InvalidStateTransition


class SessionState(str, enum.Enum):
    """Where a session is in its life.

    ``INITIALIZING -> RUNNING -> SUCCEEDED | FAILED | INDETERMINATE``; the last three are final.
    The AgentOps end-state strings ``"Success"``, ``"Fail"`` and ``"Indeterminate"`` map onto them.
    """

    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    INDETERMINATE = "INDETERMINATE"

    @property
    def is_terminal(self) -> bool:
        """True for SUCCEEDED, FAILED and INDETERMINATE."""
        return self in _TERMINAL

    @property
    def wire_name(self) -> str:
        """The AgentOps API's ``end_state`` string for this state."""
        return _WIRE[self]

    @classmethod
    def parse(cls, value: SessionState | str) -> SessionState:
        """Accept an enum member, its name (any case) or an AgentOps end-state string.

        Raises:
            InvalidStateTransition: ``value`` names no state (the message lists the valid ones).
        """
        if isinstance(value, SessionState):
            return value
        if isinstance(value, str):
            found = _ALIASES.get(value.strip().lower())
            if found is not None:
                return found
        valid = ", ".join(repr(s) for s in ("Success", "Fail", "Indeterminate"))
        raise InvalidStateTransition(
            f"end_state={value!r} is not a session state: use {valid} or a SessionState member"
        )


_TERMINAL = frozenset({SessionState.SUCCEEDED, SessionState.FAILED, SessionState.INDETERMINATE})
_WIRE = {
    SessionState.INITIALIZING: "Indeterminate",
    SessionState.RUNNING: "Indeterminate",
    SessionState.SUCCEEDED: "Success",
    SessionState.FAILED: "Fail",
    SessionState.INDETERMINATE: "Indeterminate",
}
_ALIASES: dict[str, SessionState] = {s.value.lower(): s for s in SessionState}
_ALIASES.update(
    {
        "success": SessionState.SUCCEEDED,
        "succeeded": SessionState.SUCCEEDED,
        "fail": SessionState.FAILED,
        "failed": SessionState.FAILED,
        "failure": SessionState.FAILED,
        "indeterminate": SessionState.INDETERMINATE,
    }
)

LEGAL_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.INITIALIZING: frozenset({SessionState.RUNNING} | _TERMINAL),
    SessionState.RUNNING: _TERMINAL,
    SessionState.SUCCEEDED: frozenset(),
    SessionState.FAILED: frozenset(),
    SessionState.INDETERMINATE: frozenset(),
}


class SessionStateProperty:
    """Descriptor holding a session's state; every assignment is checked against the legal moves.

    Assigning accepts a :class:`SessionState` or any string :meth:`SessionState.parse` takes.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = f"_{name}_value"

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> SessionStateProperty: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> SessionState: ...

    def __get__(self, obj: object | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        state: SessionState = getattr(obj, self._attr, SessionState.INITIALIZING)
        return state

    def __set__(self, obj: object, value: SessionState | str) -> None:
        new = SessionState.parse(value)
        current: SessionState = getattr(obj, self._attr, SessionState.INITIALIZING)
        if new is current and not current.is_terminal:
            return
        if new not in LEGAL_TRANSITIONS[current]:
            hint = (
                "a session ends once; start a new session instead"
                if current.is_terminal
                else f"legal next states: {sorted(s.value for s in LEGAL_TRANSITIONS[current])}"
            )
            raise InvalidStateTransition(
                f"cannot move a session from {current.value} to {new.value}: {hint}"
            )
        setattr(obj, self._attr, new)
